//! The report's sections, each a function of the loaded run and its summary to markup.

use maud::{Markup, html};
use subsets::canaries::CANARY_SOURCE;
use subsets::config::{Adapter, Unit};
use subsets::schema::{InfluenceTable, ReliabilityTable, ScoreTable};

use super::plot::{self, Axis, BoxGroup, Point, Scale, Step};
use crate::diagnosis::Diagnosis;
use crate::measure::{ByMeasure, Measure};
use crate::profile::{ProfileSummary, percent};
use crate::spectrum::SpectrumSummary;
use crate::summary::{self, CopyRow, Summary, preview, source_label};

use super::load::ReportData;
use super::parts::{
    MAX_POINTS, PALETTE, PREVIEW_CHARS, SourceColors, Z95, palette_legend, preview_block, signed, time, unsigned,
};

pub(super) fn glance(data: &ReportData, summary: &Summary) -> Markup {
    let c = &data.config;
    let s = &data.scores;
    let documents = summary.documents;
    let held_out = summary.held_out;
    let scored = summary.ranking.len();
    let models_seen = (0..documents).map(|d| s.n_in[d] + s.n_out[d]).max().unwrap_or(0);
    let describe = |unit: &Unit| match unit {
        Unit::Document => "document".to_string(),
        Unit::Cluster => "near-duplicate cluster".to_string(),
        Unit::Passage => format!("passage group (documents sharing {} bytes or more)", c.design.duplicates.min_repeat),
        Unit::Topic(k) => format!("topic (one of {k} found from the text)"),
        Unit::Field(name) => format!("value of the field {name}"),
    };
    let unit = if c.design.spectrum.is_empty() {
        describe(&c.design.unit)
    } else {
        let blocks: Vec<String> =
            c.design.spectrum.iter().map(|b| format!("{} ({} models)", describe(&b.level), b.size())).collect();
        format!("spectrum of {}; the scores below are of the first level", blocks.join(", "))
    };
    let t = &c.train;
    html! {
        dl class="glance" {
            dt { "Corpus" } dd { code { (c.corpus.path) } " · " (documents) " documents · sha256 " code { (c.corpus.sha256.chars().take(12).collect::<String>()) } }
            @if let (capped @ 1.., Some(cap)) = (c.tokens.capped, c.model.max_tokens_per_doc) {
                dt { "Capped" } dd { (capped) " documents cut to " (cap) " tokens (model.max_tokens_per_doc)" }
            }
            @if let Some(background) = &c.background {
                dt { "Background" } dd { code { (background.path) } " · " (background.documents) " documents · " (c.tokens.background) " tokens every model trains on" }
            }
            dt { "Models" } dd { (c.design.models) " models, each trained on a keep fraction of " (c.design.keep) " of the units" }
            dt { "Unit" } dd { (unit) " (what is IN or OUT together)" }
            dt { "Holdout" } dd { (c.design.holdout) " · " (held_out) " documents no model trains on" }
            dt { "Model" } dd { (c.model.n_layer) " layers · " (c.model.n_head) " heads · d_model " (c.model.d_model) " · context " (c.model.context) " · tokenizer " (c.model.tokenizer) " (vocabulary " (c.tokens.vocab) ")" }
            @if let (Some(dir), Some(base)) = (c.train.base(), &c.base) {
                dt { "Base" } dd {
                    "every model fine-tuned from " code { (dir.display()) } " · " (c.model.architecture) " · model.safetensors sha256 "
                    code { (base.weights_sha256.chars().take(12).collect::<String>()) }
                    @if let Some(record) = &data.pretraining {
                        br;
                        "pretrained by cfmem on " code { (record.corpus) } " (" (record.documents) " documents, " (record.held_out_documents)
                        " held out, seed " (record.seed) ") for " (record.steps) " steps, " (record.tokens_trained) " tokens"
                        @if let Some(loss) = record.held_out_loss {
                            " · held-out loss " (format!("{loss:.3}")) " nats per token"
                        }
                        @if let Some(accuracy) = record.held_out_accuracy {
                            ", accuracy " (format!("{accuracy:.3}"))
                        }
                    }
                }
                dt { "Adapters" } dd {
                    @match t.adapter {
                        Adapter::Full => "none: every weight of every model trains (full fine-tuning)",
                        Adapter::Lora => {
                            "LoRA rank " (t.lora_rank) ", alpha " (t.lora_alpha) " on " (t.lora_targets_of(c.model.architecture).join(", "))
                            " · the base frozen, each model its own adapters"
                        }
                    }
                }
            }
            dt { "Training" } dd {
                (t.epochs) " epochs · batch " (t.batch_size) " · AdamW lr " (t.lr) " (warmup " (t.warmup_fraction) ", weight decay "
                (t.weight_decay) ", betas " (t.beta1) "/" (t.beta2) ", clip " (t.grad_clip) ") · " (c.jobs.stack) " models per job"
            }
            dt { "Completeness" } dd {
                (data.jobs_complete.0) " of " (data.jobs_complete.1) " jobs complete · " (models_seen) " of " (c.design.models)
                " models in the analysis · " (scored) " of " (documents) " documents scored"
            }
            dt { "Seed" } dd { (c.seed) }
            dt { "Time" } dd { "planned " (time(data.planned)) " · last log " (time(data.last_log)) " · analyzed " (time(data.analyzed)) }
        }
    }
}

fn score_axis(scores: &ScoreTable, measure: Measure) -> Axis {
    Axis::fit(measure.score(), Scale::Linear, measure.columns(scores).value.iter().flatten().copied())
}

pub(super) fn distribution(data: &ReportData, summary: &Summary, colors: &SourceColors<'_>) -> Markup {
    let [lead, other] = summary.rank_by.leading();
    if summary.quantiles.of(lead).is_none() {
        return html! { p { "No document has a score: each needs models on both sides (IN and OUT)." } };
    }
    let figures = |m: Measure| -> Markup {
        let Some(quantiles) = *summary.quantiles.of(m) else {
            return html! { h3 { (m.score()) } p { "No document has a " (m.score()) " (an analysis by an older cfmem)." } };
        };
        let x = score_axis(&data.scores, m);
        let groups: Vec<BoxGroup<'_>> = summary
            .sources
            .iter()
            .filter(|row| !row.values(m).is_empty())
            .map(|row| BoxGroup { name: row.label(), color: colors.of(row.label()), values: row.values(m).to_vec() })
            .collect();
        let name = m.score();
        html! {
            h3 { (name) " (" (m.unit()) ")" }
            p {
                (summary.values.of(m).len()) " scored documents: median " (signed(Some(quantiles.median))) ", middle 80% from "
                (signed(Some(quantiles.p10))) " to " (signed(Some(quantiles.p90))) "."
            }
            div class="figures" {
                figure { (plot::histogram(&format!("Histogram of {name} over all scored documents"), summary.values.of(m), &x)) figcaption { "All scored documents." } }
                figure {
                    (plot::box_plot(&format!("{name} by source"), &groups, &x))
                    figcaption { "By source, on the same scale: box from the 25% to the 75% quantile, bar at the median, \
                                  whiskers to the furthest value within 1.5 box lengths, points beyond." }
                }
            }
        }
    };
    let s = &data.scores;
    let mut loss_out: Vec<f64> =
        (0..s.doc.len()).filter(|&d| s.mem_loss[d].is_some()).filter_map(|d| s.loss_out[d]).collect();
    loss_out.sort_by(f64::total_cmp);
    let typical_loss = crate::stats::quantile(&loss_out, 0.5);
    html! {
        (figures(lead))
        (figures(other))
        p class="note" {
            "How to read mem_loss: it is in nats per token, the mean loss of the models that did not train on a document \
             minus that of the models that did, so a positive value means training on the document lowered its loss. \
             A value of 0.1 means the models that saw the document give its tokens about e"
            sup { "0.1" } " ≈ 1.11 times the probability (geometric mean over tokens) that the others give them"
            @if let Some(loss) = typical_loss {
                "; next to this run's median per-token loss of " (format!("{loss:.2}")) " nats on documents a model did not \
                 train on, 0.1 is " (format!("{:.0}%", 10.0 / loss)) " of it"
            }
            ". mem_acc is the gain in the share of tokens predicted exactly (argmax), from −1 to 1. Both are in every \
             table; the lists are ranked by " (lead.score()) " (" code { "--rank-by " (other.name()) } " ranks by "
            (other.score()) ")."
        }
        div class="table-wrap" {
            table class="numbers" id="sources" {
                thead {
                    tr { th colspan="3" {} th colspan="6" { (lead.score()) } th colspan="2" { (other.score()) } }
                    tr { th { "source" } th { "documents" } th { "scored" } th { "mean" } th { "median" } th { "10%" } th { "90%" } th { "min" } th { "max" } th { "mean" } th { "median" } }
                }
                tbody {
                    @for row in &summary.sources {
                        tr {
                            td { span class="swatch" style=(format!("background:{}", colors.of(row.label()))) {} (row.label()) }
                            td { (row.documents) } td { (row.values(lead).len()) } td { (signed(row.mean(lead))) } td { (signed(row.median(lead))) }
                            td { (signed(row.quantile(lead, 0.1))) } td { (signed(row.quantile(lead, 0.9))) }
                            td { (signed(row.values(lead).first().copied())) } td { (signed(row.values(lead).last().copied())) }
                            td { (signed(row.mean(other))) } td { (signed(row.median(other))) }
                        }
                    }
                }
            }
        }
    }
}

/// Scored documents to draw: all of them, or every k-th when there are more than
/// [`MAX_POINTS`]; the note says which.
fn sampled_documents(scores: &ScoreTable, measure: Measure) -> (Vec<usize>, Option<String>) {
    let value = measure.columns(scores).value;
    let scored: Vec<usize> = (0..scores.doc.len()).filter(|&d| value[d].is_some()).collect();
    if scored.len() <= MAX_POINTS {
        return (scored, None);
    }
    let step = scored.len().div_ceil(MAX_POINTS);
    let drawn: Vec<usize> = scored.iter().copied().step_by(step).collect();
    let note = format!("Showing every {step}th of {} scored documents ({} points).", scored.len(), drawn.len());
    (drawn, Some(note))
}

pub(super) fn duplication(data: &ReportData, colors: &SourceColors<'_>) -> Markup {
    let s = &data.scores;
    let lead = data.rank_by;
    let value = lead.columns(s).value;
    let (drawn, note) = sampled_documents(s, lead);
    if drawn.is_empty() {
        return html! { p { "No document has a score." } };
    }
    let label = |d: usize| {
        format!(
            "{} ({}): mem_loss {}, mem_acc {}, {} near-duplicates, repeat fraction {:.3}",
            s.doc_id[d],
            source_label(s.source[d].as_deref()),
            signed(s.mem_loss[d]),
            signed(s.mem_acc[d]),
            s.near_dup_count[d],
            s.repeat_fraction[d]
        )
    };
    let points = |x: &dyn Fn(usize) -> f64| -> Vec<Point<'_>> {
        drawn
            .iter()
            .map(|&d| Point {
                x: x(d),
                y: value[d].expect("scored"),
                color: colors.of(source_label(s.source[d].as_deref())),
                label: label(d),
            })
            .collect()
    };
    let y = score_axis(s, lead);
    let name = lead.score();
    let max_near = drawn.iter().map(|&d| s.near_dup_count[d]).max().unwrap_or(0);
    let near_axis = Axis::between("near_dup_count (log scale, 0 included)", Scale::LogCount, 0.0, f64::from(max_near));
    let repeat_axis = Axis::between("repeat_fraction", Scale::Linear, 0.0, 1.0);
    html! {
        p { "A document with many near-duplicates and a low " (name) " is not safe: its twins carry it (see the clusters below)." }
        div class="figures" {
            figure {
                (plot::scatter("near-dups", &format!("{name} against near_dup_count"),
                    &points(&|d| f64::from(s.near_dup_count[d])), &near_axis, &y, false))
                figcaption { "Other documents within the near-duplicate threshold." }
            }
            figure {
                (plot::scatter("repeats", &format!("{name} against repeat_fraction"), &points(&|d| s.repeat_fraction[d]), &repeat_axis, &y, false))
                figcaption { "Share of the document's bytes in substrings that occur in another document." }
            }
        }
        (colors.legend())
        @if let Some(note) = note { p class="note" { (note) } }
    }
}

pub(super) fn clusters(summary: &Summary) -> Markup {
    let rows = &summary.clusters;
    let lead = summary.rank_by;
    let name = lead.score();
    let Some(largest) = rows.iter().map(|row| row.size).max() else {
        return html! { p { "No near-duplicate clusters of two or more documents." } };
    };
    let points: Vec<Point<'_>> = rows
        .iter()
        .filter_map(|row| {
            let (group, mean) = ((*row.group.of(lead))?, (*row.member_mean.of(lead))?);
            Some(Point {
                x: mean,
                y: group,
                color: PALETTE[0],
                label: format!(
                    "cluster {} of {} documents: group {name} {group:+.3}, members' mean {name} {mean:+.3}",
                    row.cluster, row.size
                ),
            })
        })
        .collect();
    let summary = html! {
        p { (rows.len()) " clusters of two or more documents (largest " (largest) ")." }
    };
    if points.is_empty() {
        return html! {
            (summary)
            p class="note" {
                "None has a group score: a model counts for a cluster only when all its members are IN or all OUT, \
                 which a " code { "--unit document" } " run rarely gives. Plan with " code { "--unit cluster" }
                " to see whether a group is memorized while each twin looks safe."
            }
        };
    }
    let values = points.iter().flat_map(|p| [p.x, p.y]);
    let axis = |label: &str| Axis::fit(label, Scale::Linear, values.clone());
    html! {
        (summary)
        p { (points.len()) " of them have a group score: enough models trained on the whole cluster, and enough on none of it." }
        figure class="single" {
            (plot::scatter("clusters", &format!("group {name} against the members' mean {name}"),
                &points, &axis(&format!("members' mean {name}")), &axis(&format!("group {name}")), true))
            figcaption {
                "One point per cluster. Above the dashed line y = x, the group is memorized more than any single \
                 twin shows: each twin is low because the others carry it."
            }
        }
    }
}

pub(super) fn copy_sweep(rows: &[CopyRow], lead: Measure) -> Markup {
    let name = lead.score();
    let steps: Vec<Step> = rows
        .iter()
        .filter_map(|row| {
            let (mem, se) = match lead {
                Measure::Loss => (row.mem_loss?, row.mem_loss_se),
                Measure::Accuracy => (row.mem_acc?, row.mem_acc_se),
            };
            Some(Step {
                x: f64::from(row.copies),
                y: mem,
                bar: se.map(|se| (mem - Z95 * se, mem + Z95 * se)),
                label: format!("{} copies, {} canaries: {name} {mem:+.3} ± {}", row.copies, row.canaries, unsigned(se)),
            })
        })
        .collect();
    let x = Axis::fit("copies in a training set (log scale)", Scale::Log2, steps.iter().map(|s| s.x));
    let y = Axis::fit(
        name,
        Scale::Linear,
        steps.iter().flat_map(|s| [s.y, s.bar.map_or(s.y, |b| b.0), s.bar.map_or(s.y, |b| b.1)]),
    );
    html! {
        @if !steps.is_empty() {
            figure class="single" {
                (plot::line_chart("copies", &format!("{name} of canaries against their copies"), &steps, &x, &y))
                figcaption { "Mean " (name) " of the canaries planted with each copy count; bars: 95% interval (± 1.96 standard errors across canaries)." }
            }
        }
        div class="table-wrap" {
            table class="numbers" {
                thead { tr { th { "copies" } th { "canaries" } th { "mem_acc" } th { "se" } th { "mem_loss" } th { "se" } } }
                tbody {
                    @for row in rows {
                        tr {
                            td { (row.copies) } td { (row.canaries) } td { (signed(row.mem_acc)) }
                            td { (unsigned(row.mem_acc_se)) } td { (signed(row.mem_loss)) } td { (unsigned(row.mem_loss_se)) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn regime(diagnosis: &Diagnosis) -> Markup {
    let has_canaries = diagnosis.sources.iter().any(|s| s.source.as_deref() == Some(CANARY_SOURCE));
    let overall = if has_canaries { "all documents but canaries" } else { "all documents" };
    let rows = std::iter::once((overall, &diagnosis.overall))
        .chain(diagnosis.sources.iter().map(|s| (source_label(s.source.as_deref()), &s.accuracy)));
    html! {
        @if let Some(warning) = &diagnosis.warning {
            p class="warning" { (warning) }
        }
        div class="table-wrap" {
            table class="numbers" {
                thead { tr {
                    th { "source" } th { "documents" } th { "accuracy IN" } th { "accuracy OUT" }
                    th { "bigram baseline" } th { "unigram baseline" } th { "loss IN" } th { "loss OUT" } th { "regime" }
                } }
                tbody {
                    @for (name, group) in rows {
                        tr {
                            td { (name) } td class="num" { (group.documents) }
                            td class="num" { (unsigned(group.acc_in)) } td class="num" { (unsigned(group.acc_out)) }
                            td class="num" { (unsigned(group.bigram_baseline)) } td class="num" { (unsigned(group.unigram_baseline)) }
                            td class="num" { (unsigned(group.loss_in)) } td class="num" { (unsigned(group.loss_out)) }
                            td { @if group.memorizing { "memorizing" } @else { "–" } }
                        }
                    }
                }
            }
        }
        p class="note" {
            "Mean per-token accuracy and loss (nats) over documents; loss OUT − loss IN is the mean mem_loss, accuracy \
             IN − OUT the mean mem_acc. The regime is judged on accuracy, which the baselines are in. The baselines \
             predict each token from the one before it (bigram) or from nothing (unigram), fit on the training pool without the document itself, as if it were OUT. \
             A group is memorizing when its OUT accuracy is less than " (diagnosis.generalization_margin)
            " above the bigram baseline while IN accuracy is more than " (diagnosis.memorization_margin) " above OUT."
        }
    }
}

pub(super) fn stability(
    reliability: &ReliabilityTable,
    growth: &ByMeasure<Option<(String, u64)>>,
    lead: Measure,
) -> Markup {
    let rows = 0..reliability.measure.len();
    // A file of an analysis before mem_loss had rows holds mem_acc's only.
    let measures: Vec<Measure> =
        lead.leading().into_iter().filter(|m| rows.clone().any(|r| reliability.score[r] == m.score())).collect();
    let lines: Vec<plot::Line<'_>> = measures
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let steps = rows
                .clone()
                .filter(|&r| reliability.score[r] == m.score() && reliability.measure[r] == "convergence")
                .filter_map(|r| {
                    let rho = reliability.spearman[r]?;
                    let models = reliability.models[r];
                    Some(Step {
                        x: f64::from(models),
                        y: rho,
                        bar: None,
                        label: format!("{m}, first {models} models: Spearman {rho:.3} with the ranking of all models"),
                    })
                })
                .collect();
            plot::Line { color: PALETTE[i % PALETTE.len()], steps }
        })
        .collect();
    let drawn = || lines.iter().flat_map(|line| &line.steps);
    let x = Axis::fit("models", Scale::Linear, drawn().map(|s| s.x));
    let y = Axis::fit("Spearman with all models", Scale::Linear, drawn().map(|s| s.y).chain([1.0]));
    let split_half = |m: Measure| {
        rows.clone().filter(move |&r| reliability.score[r] == m.score() && reliability.measure[r] == "split-half")
    };
    html! {
        @for &m in &measures {
            h3 { (m.score()) @if m == lead { " (ranks the lists)" } }
            @for r in split_half(m) {
                p {
                    "Split-half: the " (m.score()) " rankings of two halves of " (reliability.models[r]) " models agree with \
                     Spearman " (unsigned(reliability.spearman[r])) "; the Spearman–Brown prediction for all models is "
                    (unsigned(reliability.predicted[r])) "."
                    @if let Some(needed) = reliability.models_for_stable[r] {
                        " About " (needed) " models would give it " (crate::reliability::STABLE) "."
                    }
                }
            }
            @if let Some((command, total)) = growth.of(m) {
                p class=(if m == lead { "warning" } else { "note" }) {
                    "The " (m.score()) " ranking is not stable (Spearman–Brown below " (crate::reliability::STABLE) "). \
                     Inverting the same formula, the run needs about " (total) " models: " code { (command) } ", then "
                    code { "cfmem run" } "."
                }
            }
        }
        @if drawn().next().is_some() {
            figure class="single" {
                (plot::lines("convergence", "Convergence of the rankings", &lines, &x, &y))
                figcaption {
                    "Spearman correlation between the ranking from the first m models and the ranking from all of them."
                    (palette_legend(measures.iter().map(|m| m.score())))
                }
            }
        }
    }
}

/// Per source, memorization against training progress (one plot), then the regime and the
/// ranking's agreement with the final one at each checkpoint.
pub(super) fn profile_section(profile: &ProfileSummary, lead: Measure) -> Markup {
    let leading = profile.of(lead);
    let name = leading.measure.score();
    let lines: Vec<plot::Line<'_>> = leading
        .sources
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let label = summary::source_label(row.source.as_deref()).to_string();
            let steps = profile
                .checkpoints
                .iter()
                .enumerate()
                .filter_map(|(c, checkpoint)| {
                    let mean = row.mean[c]?;
                    let bar = row.lo[c].zip(row.hi[c]);
                    let interval =
                        bar.map_or_else(String::new, |(lo, hi)| format!(", 95% interval {lo:+.3} to {hi:+.3}"));
                    Some(Step {
                        x: checkpoint.checkpoint,
                        y: mean,
                        bar,
                        label: format!(
                            "{label} at {} of training (step {}): mean {name} {mean:+.3}{interval}",
                            percent(checkpoint.checkpoint),
                            checkpoint.step
                        ),
                    })
                })
                .collect();
            plot::Line { color: PALETTE[i % PALETTE.len()], steps }
        })
        .collect();
    let x = Axis::between("fraction of training", Scale::Linear, 0.0, 1.0);
    let y = Axis::fit(
        &format!("mean {name}"),
        Scale::Linear,
        leading
            .sources
            .iter()
            .flat_map(|row| row.lo.iter().chain(&row.hi).chain(&row.mean).flatten().copied())
            .chain([0.0]),
    );
    html! {
        p {
            "Every model was evaluated on every document at " (profile.checkpoints.len()) " points of its training, \
             without stopping it. Hard-to-predict text usually gains memorization with every epoch; text a model predicts \
             without having seen it has little to gain."
        }
        figure class="single" {
            (plot::lines("profile", "Memorization against training progress, per source", &lines, &x, &y))
            figcaption {
                "Mean " (name) " of each source's documents at each checkpoint; bars: its 95% interval (±1.96 √(Σ se²)/n)."
                (palette_legend(leading.sources.iter().map(|row| summary::source_label(row.source.as_deref()))))
            }
        }
        div class="table-wrap" {
            table class="numbers" {
                caption { "The regime and the ranking at each checkpoint (all documents but canaries)" }
                thead { tr {
                    th { "checkpoint" } th { "step" } th { "accuracy IN" } th { "accuracy OUT" } th { "bigram baseline" }
                    th { "OUT − bigram" } th { "IN − OUT" } th { "regime" }
                    @for score in &profile.scores { th { (score.measure.score()) ": Spearman with the end" } }
                } }
                tbody {
                    @for (i, c) in profile.checkpoints.iter().enumerate() {
                        tr {
                            td { (percent(c.checkpoint)) } td class="num" { (c.step) }
                            td class="num" { (unsigned(c.regime.acc_in)) } td class="num" { (unsigned(c.regime.acc_out)) }
                            td class="num" { (unsigned(c.regime.bigram_baseline)) }
                            td class="num" { (signed(c.regime.generalization_gap)) } td class="num" { (signed(c.regime.memorization_gap)) }
                            td { @if c.regime.memorizing { "memorizing" } @else { "–" } }
                            @for score in &profile.scores { td class="num" { (unsigned(score.spearman_with_final[i])) } }
                        }
                    }
                }
            }
        }
        @for score in &profile.scores {
            p { "Ranking over training by " (score.measure.score()) ": " (profile.ranking_answer(score)) "." }
        }
    }
}

/// Per source, memorization by level (one plot), then the documents memorized only at a
/// coarser level.
pub(super) fn spectrum_section(spectrum: &SpectrumSummary, lead: Measure) -> Markup {
    let name = lead.score();
    let names: Vec<String> = spectrum.levels.iter().map(|(level, _)| level.clone()).collect();
    let x = Axis::categories("level (finest to coarsest)", &names);
    let lines: Vec<plot::Line<'_>> = spectrum
        .sources
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let label = summary::source_label(row.source.as_deref()).to_string();
            let steps = row
                .quartiles
                .of(lead)
                .iter()
                .enumerate()
                .filter_map(|(l, q)| {
                    let [q1, median, q3] = (*q)?;
                    Some(Step {
                        x: l as f64,
                        y: median,
                        bar: Some((q1, q3)),
                        label: format!("{label} at {}: median {median:+.3}, quartiles {q1:+.3} to {q3:+.3}", names[l]),
                    })
                })
                .collect();
            plot::Line { color: PALETTE[i % PALETTE.len()], steps }
        })
        .collect();
    let y = Axis::fit(
        name,
        Scale::Linear,
        spectrum
            .sources
            .iter()
            .flat_map(|row| row.quartiles.of(lead).iter().flatten().flat_map(|q| q.iter().copied()))
            .chain([0.0]),
    );
    html! {
        p {
            "Each level removes more with a document: itself, its near-duplicates, every document sharing a passage              with it, a whole group. Each level has its own models ("
            @for (i, (level, models)) in spectrum.levels.iter().enumerate() {
                @if i > 0 { ", " }
                (level) " " (models)
            }
            "). A document low at the first level and high at a coarser one is memorized, but only as a group."
        }
        figure class="single" {
            (plot::lines("spectrum", "Memorization by level, per source", &lines, &x, &y))
            figcaption {
                "Median " (name) " of each source's documents at each level; bars from the 25% to the 75% quantile."
                (palette_legend(spectrum.sources.iter().map(|row| summary::source_label(row.source.as_deref()))))
            }
        }
        (places(spectrum, lead))
        @for (i, (level, _)) in spectrum.levels.iter().enumerate() {
            @if spectrum.fallen_back[i] > 0 {
                p { (spectrum.fallen_back[i]) " documents are in " (level) " units over the size limit: they were sampled by a finer level and have no " (level) " score." }
            }
        }
        @if spectrum.coarser_only.is_empty() {
            p { "No document is clearly memorized only at a coarser level." }
        } @else {
            table {
                caption { "Memorized only at a coarser level: low at " (names[0]) ", and at the coarser level with a 95% interval wholly above" }
                thead { tr { th { "document" } th class="num" { (names[0]) } th { "level" } th class="num" { "mem_acc" } th { "95% interval" } th { "what the unit shares" } } }
                tbody {
                    @for c in &spectrum.coarser_only {
                        tr {
                            td class="id" { (c.id) br; span class="source" { (summary::source_label(c.source.as_deref())) } br; span class="preview" { (summary::preview(&c.text, PREVIEW_CHARS)) } }
                            td class="num" { (format!("{:+.3}", c.finest)) }
                            td { (c.level) }
                            td class="num" { (format!("{:+.3}", c.mem_acc)) }
                            td { (format!("[{:+.3}, {:+.3}]", c.lo, c.hi)) }
                            td { (summary::shared_words(&c.shared, c.unit_size, PREVIEW_CHARS)) }
                        }
                    }
                }
            }
        }
    }
}

/// Per source, the share of its documents at each place on the spectrum, and what one
/// unit of each level removes.
fn places(spectrum: &SpectrumSummary, lead: Measure) -> Markup {
    let mut parts: Vec<&str> = spectrum.levels.iter().map(|(level, _)| level.as_str()).collect();
    parts.push("none");
    let mut colors: Vec<&str> = (0..spectrum.levels.len()).map(|i| PALETTE[i % PALETTE.len()]).collect();
    colors.push("#BBBBBB");
    let rows: Vec<plot::StackedRow<'_>> = spectrum
        .places
        .iter()
        .map(|row| plot::StackedRow {
            name: summary::source_label(row.source.as_deref()),
            counts: row.counts.iter().copied().chain([row.unplaced]).collect(),
        })
        .collect();
    html! {
        figure class="single" {
            (plot::stacked_bars("places", "Each document's place on the spectrum, per source", &rows, &parts, &colors))
            figcaption {
                "A document's place is the finest level whose " (lead.score()) " (the score the analysis ranked by) reaches "
                (format!("{:.0}%", 100.0 * crate::spectrum::PLACE_SHARE))
                " of its largest over the levels, when that largest is significant (its interval above zero): \
                 the level at which removing what the document belongs to destroys most of what can be destroyed. \
                 Grey: no level significant, generalized at every level measured."
                (palette_legend(parts[..parts.len() - 1].iter().copied()))
            }
        }
        table class="numbers" {
            caption { "Documents one unit OUT removes from a model's training set (the units sampled as one)" }
            thead { tr { th { "level" } th { "mean" } th { "largest" } } }
            tbody {
                @for ((level, _), removal) in spectrum.levels.iter().zip(&spectrum.removal) {
                    tr { td { (level) } td { (format!("{:.1}", removal.mean)) } td { (removal.largest) } }
                }
            }
        }
    }
}

pub(super) fn influence_pairs(influence: &InfluenceTable, top: usize) -> Markup {
    let mut rows: Vec<usize> = (0..influence.target.len()).collect();
    rows.sort_by(|&a, &b| influence.infl_acc[b].total_cmp(&influence.infl_acc[a]).then(a.cmp(&b)));
    html! {
        p { "The " (top.min(rows.len())) " strongest pairs: how much training on the first document raises the accuracy on the second." }
        div class="table-wrap" {
            table class="numbers" id="influence-pairs" {
                thead { tr { th { "training document" } th { "⇒ target" } th { "rank" } th { "infl_acc" } th { "se" } th { "infl_loss" } th { "se" } } }
                tbody {
                    @for &r in rows.iter().take(top) {
                        tr {
                            td class="id" { (influence.source_id[r]) } td class="id" { (influence.target_id[r]) } td { (influence.rank[r]) }
                            td { (signed(Some(influence.infl_acc[r]))) } td { (unsigned(influence.infl_acc_se[r])) }
                            td { (signed(Some(influence.infl_loss[r]))) } td { (unsigned(influence.infl_loss_se[r])) }
                        }
                    }
                }
            }
        }
    }
}

/// The 95% interval of a document's score `measure`: the bootstrap interval of the analysis
/// when it has one, else ± 1.96 standard errors (marked ≈).
pub(super) fn interval(s: &ScoreTable, d: usize, measure: Measure) -> String {
    let c = measure.columns(s);
    match (c.lo[d], c.hi[d], c.value[d], c.se[d]) {
        (Some(lo), Some(hi), _, _) => format!("[{lo:+.3}, {hi:+.3}]"),
        (_, _, Some(m), Some(se)) => format!("≈[{:+.3}, {:+.3}]", m - Z95 * se, m + Z95 * se),
        _ => "–".to_string(),
    }
}

pub(super) fn documents(data: &ReportData, docs: impl Iterator<Item = usize>, summary: &Summary) -> Markup {
    let s = &data.scores;
    let measures = summary.rank_by.leading();
    html! {
        div class="table-wrap" {
            table class="documents" {
                thead { tr {
                    th { "document" }
                    @for m in measures { th { (m.score()) } th { "95% interval" } }
                    th { "IN/OUT" } th { "near/exact dups" } th { "cluster" } th { "repeat" } th { "text" }
                } }
                tbody {
                    @for d in docs {
                        @let text = &data.texts[d];
                        tr {
                            td class="id" { (s.doc_id[d]) br; span class="source" { (source_label(s.source[d].as_deref())) } }
                            @for m in measures {
                                td class="num" { (signed(m.columns(s).value[d])) } td class="num" { (interval(s, d, m)) }
                            }
                            td class="num" { (s.n_in[d]) "/" (s.n_out[d]) }
                            td class="num" { (s.near_dup_count[d]) " / " (s.exact_dup_count[d]) }
                            td class="num" { (s.cluster_size[d]) } td class="num" { (format!("{:.2}", s.repeat_fraction[d])) }
                            td class="text" {
                                details {
                                    summary { (preview(text, PREVIEW_CHARS)) }
                                    pre { (preview_block(text)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        p class="note" {
            "Ranked by " (summary.rank_by.score()) ". Interval: the bootstrap interval of the analysis, or ≈ ± 1.96 \
             standard errors where it has none. Open a row's text to read the whole document."
        }
    }
}
