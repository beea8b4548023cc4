//! The HTML report of an analyzed run (`cfmem report`): one self-contained page with inline
//! CSS and SVG, no script, and a Content-Security-Policy that forbids every request, so it
//! opens offline (from a mail attachment too) and nothing in it can run.
//!
//! It is drawn from the run's `run.toml`, `corpus.parquet` (texts for the previews), the
//! completion records of its logs and `analysis/*.parquet`. It never trains or estimates:
//! every number shown is a value of those files or one of the run's [`Summary`] numbers,
//! the same ones the printed summary ([`crate::printed_summary`]) shows (ranking, quantiles,
//! per-source table, cluster means, copy sweep, previews and the label of a document
//! without a source). Sections for files another analysis adds (influence, reliability)
//! appear when the file exists, as does the membership section (`membership.rs`). Document text and ids are untrusted input: every
//! interpolated string goes through maud, which escapes it.

mod membership;
pub mod plot;

use std::path::Path;
use std::time::SystemTime;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use subsets::base::{BaseDir, PretrainingRecord};
use subsets::canaries::CANARY_SOURCE;
use subsets::config::{Adapter, RunConfig, Unit};
use subsets::layout::RunDir;
use subsets::schema::{
    self, ClusterTable, CopiesTable, CorpusTable, InfluenceTable, JobTable, ReliabilityTable, ScoreTable, Table,
};

use crate::diagnosis::Diagnosis;
use crate::measure::{ByMeasure, Measure};
use crate::profile::{ProfileSummary, percent};
use crate::spectrum::SpectrumSummary;
use crate::summary::{self, CopyRow, SourceRow, Summary, preview, source_label};
use crate::{Error, Result};
use plot::{Axis, BoxGroup, Point, Scale, Step};

/// Scatter plots draw at most this many documents (every k-th beyond), to keep pages light.
const MAX_POINTS: usize = 4000;
/// Characters of a document's text in its row, before it is opened: a page has room for
/// twice the printed summary's.
const PREVIEW_CHARS: usize = 120;
/// Text shown when a document's row is opened; longer documents are cut here.
const FULL_TEXT_CHARS: usize = 2000;
/// Okabe–Ito colours, told apart with colour-vision deficiencies too.
const PALETTE: [&str; 8] = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C7A00", "#000000"];
/// The normal quantile of a two-sided 95% interval.
const Z95: f64 = 1.96;

const STYLE: &str = include_str!("report.css");

/// Everything the report shows, read from a run directory.
pub struct ReportData {
    /// The run directory's name.
    pub name: String,
    pub config: RunConfig,
    /// Document texts, by `doc`.
    pub texts: Vec<String>,
    pub scores: ScoreTable,
    pub clusters: ClusterTable,
    pub copies: CopiesTable,
    pub influence: Option<InfluenceTable>,
    pub reliability: Option<ReliabilityTable>,
    /// The diagnosis of `analysis/summary.json`, when the analysis wrote one.
    pub diagnosis: Option<Diagnosis>,
    /// The memorization spectrum, for runs with levels beyond the document.
    pub spectrum: Option<SpectrumSummary>,
    /// Memorization over training, for runs evaluated at more than one checkpoint.
    pub profile: Option<ProfileSummary>,
    /// Membership exposure and the attacks, for runs analyzed since cfmem measures them.
    pub membership: Option<membership::MembershipReport>,
    /// Per score, `summary.json`'s command that grows the run to a stable ranking by it,
    /// with the models it plans, when that ranking is not stable.
    pub growth: ByMeasure<Option<(String, u64)>>,
    /// The score that orders the lists and leads each section.
    pub rank_by: Measure,
    /// For a run from a base: how `cfmem pretrain` made it, when it did (a base from
    /// elsewhere, or one moved away since planning, has no record here).
    pub pretraining: Option<PretrainingRecord>,
    /// Jobs with a completion record, of all jobs.
    pub jobs_complete: (usize, usize),
    pub planned: Option<SystemTime>,
    pub last_log: Option<SystemTime>,
    pub analyzed: Option<SystemTime>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_if_present<T: Table>(path: &Path) -> Result<Option<T>> {
    Ok(if path.exists() { Some(schema::read(path)?) } else { None })
}

impl ReportData {
    /// Reads an analyzed run, ranked by `rank_by`, or else as its analysis ranked (by
    /// mem_loss for a run analyzed before that was recorded); a run that was not analyzed,
    /// or whose scores no longer match its corpus, is refused with the command to run.
    pub fn load(run: &RunDir, rank_by: Option<Measure>) -> Result<ReportData> {
        let root = run.root().display();
        if !run.config().exists() {
            return Err(queue::Error::NotPlanned(run.root().to_path_buf()).into());
        }
        if !run.scores().exists() {
            return Err(Error::NotAnalyzed { run: run.root().to_path_buf() });
        }
        let config = RunConfig::from_file(&run.config())?;
        let corpus: CorpusTable = schema::read(&run.corpus())?;
        let scores: ScoreTable = schema::read(&run.scores())?;
        if scores.doc.len() != corpus.len() || scores.doc.iter().enumerate().any(|(row, &doc)| doc as usize != row) {
            return Err(Error::Message(format!(
                "{}: its {} rows do not match the {} documents of corpus.parquet: run `cfmem analyze {root}` again",
                run.scores().display(),
                scores.doc.len(),
                corpus.len()
            )));
        }
        let spectrum = SpectrumSummary::load(run, &corpus)?;
        let jobs: JobTable = schema::read(&run.jobs())?;
        let mut job_ids = jobs.job;
        job_ids.sort_unstable();
        job_ids.dedup();
        let records: Vec<SystemTime> = job_ids.iter().filter_map(|&job| modified(&run.log_done(job))).collect();
        let SummaryParts { diagnosis, profile, growth, rank_by: analyzed_by } = read_summary(&run.summary())?;
        let name = std::fs::canonicalize(run.root())
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| root.to_string());
        Ok(ReportData {
            name,
            texts: corpus.text,
            clusters: schema::read(&run.clusters())?,
            copies: schema::read(&run.copies())?,
            influence: read_if_present(&run.influence())?,
            reliability: read_if_present(&run.reliability())?,
            diagnosis,
            profile,
            membership: membership::MembershipReport::load(run)?,
            growth,
            rank_by: rank_by.or(analyzed_by).unwrap_or_default(),
            pretraining: match config.train.base() {
                Some(dir) => PretrainingRecord::read(&BaseDir::new(dir))?,
                None => None,
            },
            spectrum,
            jobs_complete: (records.len(), job_ids.len()),
            planned: modified(&run.config()),
            last_log: records.iter().max().copied(),
            analyzed: modified(&run.scores()),
            config,
            scores,
        })
    }
}

/// What the report shows of `summary.json`, all None where there is none.
#[derive(Debug, Default)]
struct SummaryParts {
    diagnosis: Option<Diagnosis>,
    /// None also for a run evaluated only at the end, or analyzed by an older cfmem.
    profile: Option<ProfileSummary>,
    /// Per score, the command that grows the run to a stable ranking by it and the models
    /// it plans, when that ranking is not stable.
    growth: ByMeasure<Option<(String, u64)>>,
    /// The score the analysis ranked by, when it recorded one.
    rank_by: Option<Measure>,
}

/// Reads `summary.json` once for the parts the report shows; the diagnosis must be there.
fn read_summary(path: &Path) -> Result<SummaryParts> {
    if !path.exists() {
        return Ok(SummaryParts::default());
    }
    let text = std::fs::read_to_string(path).map_err(subsets::Error::io(path))?;
    let malformed = |e: serde_json::Error| Error::Message(format!("{}: no diagnosis in it: {e}", path.display()));
    let mut summary: serde_json::Value = serde_json::from_str(&text).map_err(malformed)?;
    let diagnosis = serde_json::from_value(summary["diagnosis"].take()).map_err(malformed)?;
    let profile = match summary["profile"].take() {
        serde_json::Value::Null => None,
        part => Some(
            ProfileSummary::from_json(part)
                .map_err(|e| Error::Message(format!("{}: `profile`: {e}", path.display())))?,
        ),
    };
    let rank_by = summary["rank_by"].as_str().and_then(|name| name.parse().ok());
    // One entry per score; an analysis before both scores had one wrote mem_acc's alone.
    let reliability = &summary["reliability"];
    let of_score = |m: Measure| match reliability.get(m.score()) {
        Some(verdict) => verdict,
        None if m == Measure::Accuracy => reliability,
        None => &serde_json::Value::Null,
    };
    let growth = ByMeasure::from_fn(|m| {
        let verdict = of_score(m);
        verdict["command"].as_str().zip(verdict["extend_to"].as_u64()).map(|(c, n)| (c.to_string(), n))
    });
    Ok(SummaryParts { diagnosis: Some(diagnosis), profile, growth, rank_by })
}

/// The legend of lines coloured in palette order, one per name.
fn palette_legend<'a>(names: impl Iterator<Item = &'a str>) -> Markup {
    html! {
        ul class="legend" {
            @for (i, name) in names.enumerate() {
                li { span class="swatch" style=(format!("background:{}", PALETTE[i % PALETTE.len()])) {} (name) }
            }
        }
    }
}

/// A colour per source, in the order of the summary's sources.
struct SourceColors<'a> {
    names: Vec<&'a str>,
}

impl<'a> SourceColors<'a> {
    fn new(summary: &'a Summary) -> SourceColors<'a> {
        SourceColors { names: summary.sources.iter().map(SourceRow::label).collect() }
    }

    fn of(&self, name: &str) -> &'static str {
        let index = self.names.iter().position(|&n| n == name).unwrap_or(0);
        PALETTE[index % PALETTE.len()]
    }

    fn legend(&self) -> Markup {
        html! {
            ul class="legend" {
                @for name in &self.names {
                    li { span class="swatch" style=(format!("background:{}", self.of(name))) {} (name) }
                }
            }
        }
    }
}

fn signed(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:+.3}"))
}

fn unsigned(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"))
}

fn time(value: Option<SystemTime>) -> String {
    value.map_or_else(
        || "–".to_string(),
        |t| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// One section of the page: its anchor, heading and content.
struct Section {
    id: &'static str,
    title: &'static str,
    body: Markup,
}

/// How many of the most and of the least memorized documents a report lists by default.
pub const DEFAULT_TOP: usize = 20;

/// The whole report page for `data`, with the `top` most and least memorized documents.
pub fn render(data: &ReportData, top: usize) -> String {
    let summary = Summary::new(&data.scores, &data.clusters, &data.copies, data.rank_by);
    let colors = SourceColors::new(&summary);
    let mut sections = vec![
        Section { id: "glance", title: "The run at a glance", body: glance(data, &summary) },
        Section {
            id: "distribution",
            title: "Distribution of mem_loss and mem_acc",
            body: distribution(data, &summary, &colors),
        },
        Section { id: "duplicates", title: "Memorization and duplication", body: duplication(data, &colors) },
        Section { id: "clusters", title: "Near-duplicate clusters", body: clusters(&summary) },
    ];
    if let Some(diagnosis) = &data.diagnosis {
        sections.push(Section { id: "regime", title: "Do the models generalize?", body: regime(diagnosis) });
    }
    if !summary.copies.is_empty() {
        sections.push(Section { id: "copies", title: "Copy sweep", body: copy_sweep(&summary.copies, data.rank_by) });
    }
    if let Some(spectrum) = &data.spectrum {
        let body = spectrum_section(spectrum, data.rank_by);
        sections.push(Section { id: "spectrum", title: "The memorization spectrum", body });
    }
    if let Some(profile) = &data.profile {
        let body = profile_section(profile, data.rank_by);
        sections.push(Section { id: "profile", title: "Memorization over training", body });
    }
    if let Some(reliability) = &data.reliability {
        let body = stability(reliability, &data.growth, data.rank_by);
        sections.push(Section { id: "reliability", title: "Reliability of the ranking", body });
    }
    if let Some(report) = &data.membership {
        let body = membership::section(report, &data.scores, &data.texts);
        sections.push(Section { id: "membership", title: "Membership inference", body });
    }
    if let Some(influence) = &data.influence {
        sections.push(Section { id: "influence", title: "Strongest influence", body: influence_pairs(influence, top) });
    }
    sections.push(Section {
        id: "most",
        title: "Most memorized documents",
        body: documents(data, summary.most_memorized(top), &summary),
    });
    sections.push(Section {
        id: "least",
        title: "Least memorized documents",
        body: documents(data, summary.least_memorized(top), &summary),
    });

    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                title { "cfmem report: " (data.name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Counterfactual memorization of " code { (data.name) } }
                    p class="meta" {
                        "cfmem " (env!("CARGO_PKG_VERSION")) " · mem_loss = mean per-token loss of models not \
                         trained on a document − of models trained on it · mem_acc = mean accuracy of models trained \
                         on it − of models not · ranked by " (data.rank_by.score())
                    }
                    nav {
                        @for section in &sections {
                            a href=(format!("#{}", section.id)) { (section.title) }
                        }
                    }
                }
                main {
                    @for section in &sections {
                        section id=(section.id) {
                            h2 { (section.title) }
                            (section.body)
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

fn glance(data: &ReportData, summary: &Summary) -> Markup {
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

fn distribution(data: &ReportData, summary: &Summary, colors: &SourceColors<'_>) -> Markup {
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

fn duplication(data: &ReportData, colors: &SourceColors<'_>) -> Markup {
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

fn clusters(summary: &Summary) -> Markup {
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

fn copy_sweep(rows: &[CopyRow], lead: Measure) -> Markup {
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

fn regime(diagnosis: &Diagnosis) -> Markup {
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

fn stability(reliability: &ReliabilityTable, growth: &ByMeasure<Option<(String, u64)>>, lead: Measure) -> Markup {
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
fn profile_section(profile: &ProfileSummary, lead: Measure) -> Markup {
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
fn spectrum_section(spectrum: &SpectrumSummary, lead: Measure) -> Markup {
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

fn influence_pairs(influence: &InfluenceTable, top: usize) -> Markup {
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
fn interval(s: &ScoreTable, d: usize, measure: Measure) -> String {
    let c = measure.columns(s);
    match (c.lo[d], c.hi[d], c.value[d], c.se[d]) {
        (Some(lo), Some(hi), _, _) => format!("[{lo:+.3}, {hi:+.3}]"),
        (_, _, Some(m), Some(se)) => format!("≈[{:+.3}, {:+.3}]", m - Z95 * se, m + Z95 * se),
        _ => "–".to_string(),
    }
}

fn documents(data: &ReportData, docs: impl Iterator<Item = usize>, summary: &Summary) -> Markup {
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

/// The document as written (line breaks kept), cut at [`FULL_TEXT_CHARS`].
fn preview_block(text: &str) -> String {
    let total = text.chars().count();
    if total <= FULL_TEXT_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(FULL_TEXT_CHARS).collect();
    format!("{cut}\n… ({} more characters)", total - FULL_TEXT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    use subsets::config::{CorpusConfig, DesignConfig, JobsConfig, ModelConfig, TokensConfig, TrainConfig};

    /// Three documents of two sources, the third held out; one cluster of the first two.
    fn data(texts: [&str; 3]) -> ReportData {
        let design = DesignConfig { holdout: 0.3, unit: Unit::Cluster, ..DesignConfig::documents(4, 0.5) };
        let corpus = CorpusConfig { path: "c.jsonl".into(), sha256: "ab".repeat(32), documents: 3 };
        let config = RunConfig {
            seed: 5,
            corpus,
            design,
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            jobs: JobsConfig::default(),
            tokens: TokensConfig {
                vocab: 256,
                bos: None,
                tokenizer_sha256: None,
                corpus: 60,
                capped: 0,
                background: 0,
            },
            background: None,
            base: None,
        };
        let scores = ScoreTable {
            doc: vec![0, 1, 2],
            doc_id: vec!["a".into(), "<b>".into(), "c".into()],
            source: vec![Some("x".into()), Some("y".into()), None],
            holdout: vec![false, false, true],
            n_in: vec![2, 2, 0],
            n_out: vec![2, 2, 4],
            mem_acc: vec![Some(0.5), Some(-0.25), None],
            mem_acc_se: vec![Some(0.1), None, None],
            mem_acc_lo: vec![None; 3],
            mem_acc_hi: vec![None; 3],
            mem_loss: vec![Some(0.0), Some(1.0), None],
            mem_loss_se: vec![Some(0.05), Some(0.05), None],
            mem_loss_lo: vec![None; 3],
            mem_loss_hi: vec![None; 3],
            loss_out: vec![Some(2.0), Some(2.5), Some(3.0)],
            exact_dup_count: vec![0, 0, 0],
            near_dup_count: vec![1, 1, 0],
            max_jaccard: vec![0.9, 0.9, 0.0],
            cluster: vec![0, 0, 2],
            cluster_size: vec![2, 2, 1],
            repeat_fraction: vec![0.0, 0.5, 0.0],
            ..ScoreTable::default()
        };
        let clusters = ClusterTable {
            cluster: vec![0],
            cluster_size: vec![2],
            group_mem_acc: vec![Some(0.75)],
            group_mem_loss: vec![Some(0.5)],
            ..ClusterTable::default()
        };
        ReportData {
            name: "run".into(),
            config,
            texts: texts.map(String::from).to_vec(),
            scores,
            clusters,
            copies: CopiesTable::default(),
            influence: None,
            reliability: None,
            diagnosis: None,
            spectrum: None,
            profile: None,
            membership: None,
            growth: ByMeasure::default(),
            rank_by: Measure::Accuracy,
            pretraining: None,
            jobs_complete: (2, 2),
            planned: None,
            last_log: None,
            analyzed: None,
        }
    }

    #[test]
    fn a_page_has_its_sections_numbers_and_escaped_text() {
        let page = render(&data(["<script>x()</script>", "a \"quoted\" & <i>marked</i> text", "held out"]), 1);
        for id in ["glance", "distribution", "duplicates", "clusters", "most", "least"] {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "section {id}");
        }
        assert!(!page.contains("id=\"copies\"") && !page.contains("id=\"influence\""));
        assert!(!page.contains("<script") && !page.contains("<i>") && !page.contains("<b>"));
        assert!(page.contains("&lt;script&gt;x()&lt;/script&gt;"));
        assert!(page.contains("a &quot;quoted&quot; &amp; &lt;i&gt;marked&lt;/i&gt; text"));
        assert!(page.contains("2 scored documents: median +0.125"), "the median of +0.5 and -0.25");
        assert!(page.contains("(none)</td><td>1</td><td>0</td>"), "the held-out document has no source: {page}");
        assert!(!page.contains("(no source)"), "one label for a document without a source");
        assert!(page.contains("1 of them have a group score"));
        assert!(page.contains("2 of 2 jobs complete · 4 of 4 models in the analysis · 2 of 3 documents scored"));
        let most = &page[page.find("<section id=\"most\">").unwrap()..page.find("<section id=\"least\">").unwrap()];
        assert!(most.contains("≈[+0.304, +0.696]") && !most.contains("&lt;b&gt;"), "--top 1: only the best");
        let kinds = page.matches("<svg class=\"plot\"").count();
        assert_eq!(kinds, 7, "a histogram and a box plot per score, two scatters and the cluster plot");
    }

    #[test]
    fn a_documents_text_keeps_its_spaces_and_line_breaks() {
        let art = "  /\\_/\\\n ( o.o )   <- a cat\n  > ^ <\n\tfn main() {}";
        let page = render(&data([art, "second", "third"]), 3);
        assert!(page.contains("<pre>  /\\_/\\\n ( o.o )   &lt;- a cat\n  &gt; ^ &lt;\n\tfn main() {}</pre>"), "{page}");
        assert!(STYLE.contains("td.text pre { font-family: ui-monospace") && STYLE.contains("white-space: pre;"));
    }

    #[test]
    fn a_fine_tuning_audit_says_it_is_one_naming_its_base_and_adapters() {
        let scratch = render(&data(["first", "second", "third"]), 1);
        assert!(!section(&scratch, "glance").contains("Base"), "a run from scratch has no base");
        let mut from_base = data(["first", "second", "third"]);
        from_base.config.train.init = "/bases/gpt2-web".into();
        from_base.config.train.adapter = Adapter::Lora;
        from_base.config.base = Some(subsets::config::BaseConfig { weights_sha256: "f00d".repeat(16) });
        from_base.pretraining = Some(PretrainingRecord {
            fingerprint: "ab".into(),
            corpus: "web.jsonl".into(),
            documents: 900,
            held_out_documents: 100,
            seed: 3,
            steps: 1200,
            tokens_trained: 450_000,
            held_out_loss: Some(2.3456),
            held_out_accuracy: Some(0.5),
        });
        let glance = section(&render(&from_base, 1), "glance").to_string();
        for shown in [
            "every model fine-tuned from <code>/bases/gpt2-web</code> · gpt2 · model.safetensors sha256 <code>f00df00df00d</code>",
            "pretrained by cfmem on <code>web.jsonl</code> (900 documents, 100 held out, seed 3) for 1200 steps",
            "held-out loss 2.346 nats per token, accuracy 0.500",
            "LoRA rank 8, alpha 16 on c_attn",
        ] {
            assert!(glance.contains(shown), "{shown:?} in\n{glance}");
        }
    }

    /// The section of `page` with anchor `id`.
    fn section<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page.find(&format!("<section id=\"{id}\">")).unwrap();
        &page[start..start + page[start..].find("</section>").unwrap()]
    }

    #[test]
    fn the_ranking_score_orders_the_lists_and_leads_every_section() {
        let by_accuracy = render(&data(["first", "second", "third"]), 1);
        let by_loss = render(&ReportData { rank_by: Measure::Loss, ..data(["first", "second", "third"]) }, 1);
        // mem_acc ranks a (+0.5) over <b> (−0.25); mem_loss ranks <b> (+1.0) over a (0.0).
        assert!(section(&by_accuracy, "most").contains(">a<br>"));
        assert!(section(&by_loss, "most").contains(">&lt;b&gt;<br>"), "{}", section(&by_loss, "most"));
        assert!(section(&by_loss, "least").contains(">a<br>"));
        // Both scores, each with its interval, the ranking one first.
        let most = section(&by_loss, "most");
        let header = &most[most.find("<thead>").unwrap()..most.find("</thead>").unwrap()];
        assert!(header.find("mem_loss").unwrap() < header.find("mem_acc").unwrap(), "{header}");
        assert!(most.contains("≈[+0.902, +1.098]"), "mem_loss ± 1.96 se: {most}");
        // Both distributions, the ranking score's first, and how to read mem_loss at this
        // run's scale: the median OUT loss of the scored documents is 2.25 nats.
        let distribution = section(&by_loss, "distribution");
        assert!(
            distribution.find("Histogram of mem_loss").unwrap() < distribution.find("Histogram of mem_acc").unwrap()
        );
        assert!(distribution.contains("median per-token loss of 2.25 nats"), "{distribution}");
        assert!(section(&by_loss, "duplicates").contains("mem_loss against near_dup_count"));
        assert!(by_loss.contains("ranked by mem_loss") && by_accuracy.contains("ranked by mem_acc"));
    }

    #[test]
    fn a_memorizing_regime_is_shown_with_its_warning() {
        let memorizing = |source: &str| crate::diagnosis::DocumentAccuracy {
            source: Some(source.into()),
            acc_in: Some(0.9),
            acc_out: Some(0.2),
            bigram: Some(0.25),
            unigram: Some(0.1),
            ..Default::default()
        };
        let mut report = data(["a", "b", "c"]);
        report.diagnosis = Some(crate::diagnosis::diagnose(&[memorizing("x"), memorizing("<y>")]));
        let page = render(&report, 1);
        let regime = &page[page.find("<section id=\"regime\">").unwrap()..];
        let regime = &regime[..regime.find("</section>").unwrap()];
        assert!(regime.contains("<p class=\"warning\">warning: the models do not generalize"), "{regime}");
        assert!(regime.contains("<td>&lt;y&gt;</td>"), "source names are escaped: {regime}");
        assert_eq!(regime.matches("<td>memorizing</td>").count(), 3, "overall and both sources: {regime}");
        assert!(!render(&data(["a", "b", "c"]), 1).contains("id=\"regime\""), "no summary.json, no section");
    }

    #[test]
    fn a_summary_without_a_diagnosis_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        assert!(read_summary(&path).unwrap().diagnosis.is_none(), "no file, no section");
        std::fs::write(&path, r#"{"models": 4}"#).unwrap();
        let err = read_summary(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: no diagnosis in it: ", path.display())), "{err}");
        // A profile that is not one is named too.
        let diagnosis = serde_json::to_value(crate::diagnosis::diagnose(&[])).unwrap();
        std::fs::write(&path, serde_json::json!({"diagnosis": diagnosis, "profile": [1]}).to_string()).unwrap();
        let err = read_summary(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: `profile`: ", path.display())), "{err}");
    }

    #[test]
    fn whole_texts_are_cut_with_a_count() {
        assert_eq!(preview_block(&"x".repeat(FULL_TEXT_CHARS + 5)).lines().last(), Some("… (5 more characters)"));
    }

    #[test]
    fn intervals_prefer_the_bootstrap() {
        let mut s = ScoreTable {
            mem_acc: vec![Some(0.5)],
            mem_acc_se: vec![Some(0.1)],
            mem_acc_lo: vec![None],
            mem_acc_hi: vec![None],
            ..ScoreTable::default()
        };
        assert_eq!(interval(&s, 0, Measure::Accuracy), "≈[+0.304, +0.696]");
        s.mem_acc_lo[0] = Some(0.25);
        s.mem_acc_hi[0] = Some(0.75);
        assert_eq!(interval(&s, 0, Measure::Accuracy), "[+0.250, +0.750]");
        s.mem_loss = vec![Some(0.2)];
        s.mem_loss_se = vec![None];
        s.mem_loss_lo = vec![None];
        s.mem_loss_hi = vec![None];
        assert_eq!(interval(&s, 0, Measure::Loss), "–", "no interval and no standard error");
    }
}
