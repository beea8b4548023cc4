//! The report's membership section: the attacks on the run's own models (their table with
//! intervals and their ROC curves on log-log axes, as the LiRA paper draws them) and the
//! documents most exposed to membership inference, with their text. Drawn from
//! `analysis/membership.parquet`, `attacks.parquet` and `attack_roc.parquet`; the section
//! appears when the first exists, the attacks' parts when theirs do.

use maud::{Markup, html};

use subsets::layout::RunDir;
use subsets::schema::{self, AttackRocTable, AttackTable, MembershipTable, ScoreTable};

use super::parts::{PALETTE, PREVIEW_CHARS, palette_legend, preview_block, signed, unsigned};
use super::plot::{self, Axis, Scale, Step};
use crate::Result;
use crate::summary::{preview, source_label};

/// The documents the section lists, most exposed first.
const MOST_EXPOSED: usize = 10;
/// The ROC plot's lowest FPR and TPR: below it a curve is not drawn.
const ROC_FLOOR: f64 = 1e-4;

/// What the section shows, read from a run's analysis.
pub struct MembershipReport {
    pub exposure: MembershipTable,
    pub attacks: Option<AttackTable>,
    pub roc: Option<AttackRocTable>,
}

impl MembershipReport {
    /// The run's membership files, None where the analysis wrote none (before cfmem measured
    /// membership).
    pub fn load(run: &RunDir) -> Result<Option<MembershipReport>> {
        let Some(exposure) = schema::read_if_present(&run.membership_exposure())? else {
            return Ok(None);
        };
        Ok(Some(MembershipReport {
            exposure,
            attacks: schema::read_if_present(&run.attacks())?,
            roc: schema::read_if_present(&run.attack_roc())?,
        }))
    }
}

fn percent_interval(value: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> String {
    let percent = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{:.1}", 100.0 * v));
    match value {
        None => "–".to_string(),
        Some(_) => format!("{}% [{}, {}]", percent(value), percent(lo), percent(hi)),
    }
}

fn attack_table(t: &AttackTable) -> Markup {
    let targets = t.targets.iter().copied().max().unwrap_or(0);
    html! {
        p {
            "Each of " (targets) " models in turn is the target, the others its shadows: its members are the \
             documents it trained on, its non-members those it did not. The targets' scores are pooled into one ROC \
             per attack; intervals are 95% bootstrap intervals over the target models. AUC 0.5 is chance; what a \
             privacy audit reads is the TPR at a low FPR."
        }
        div class="table-wrap" {
            table {
                thead { tr {
                    th { "attack" } th { "AUC [95%]" } th { "TPR at 1% FPR" } th { "TPR at 0.1% FPR" }
                    th { "Spearman with mem_loss" } th { "note" }
                } }
                tbody {
                    @for i in 0..t.attack.len() {
                        tr {
                            td { code { (t.attack[i]) } }
                            td class="num" {
                                @if t.auc[i].is_some() {
                                    (unsigned(t.auc[i])) " [" (unsigned(t.auc_lo[i])) ", " (unsigned(t.auc_hi[i])) "]"
                                } @else { "–" }
                            }
                            td class="num" {
                                (percent_interval(t.tpr_at_1pct_fpr[i], t.tpr_at_1pct_fpr_lo[i], t.tpr_at_1pct_fpr_hi[i]))
                            }
                            td class="num" {
                                (percent_interval(t.tpr_at_0_1pct_fpr[i], t.tpr_at_0_1pct_fpr_lo[i], t.tpr_at_0_1pct_fpr_hi[i]))
                            }
                            td class="num" { (signed(t.spearman_mem_loss[i])) }
                            td { (t.note[i].as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        p class="note" {
            "Spearman with mem_loss: over documents, the attack's mean score on a document's members against its \
             counterfactual mem_loss. Near +1 the attack's signal ranks documents as the counterfactual estimate does; \
             a single-model signal that ranks them otherwise cannot stand in for it on this corpus."
        }
    }
}

/// Every curve of `roc` on log-log axes, with chance (TPR = FPR) in grey.
fn roc_plot(roc: &AttackRocTable) -> Markup {
    let mut names: Vec<&str> = Vec::new();
    for name in &roc.attack {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let curve = |name: &str| -> Vec<Step> {
        (0..roc.attack.len())
            .filter(|&i| roc.attack[i] == name && roc.tpr[i] >= ROC_FLOOR)
            .map(|i| Step {
                x: roc.fpr[i],
                y: roc.tpr[i],
                bar: None,
                label: format!("{name}: TPR {:.2}% at FPR {:.2}%", 100.0 * roc.tpr[i], 100.0 * roc.fpr[i]),
            })
            .collect()
    };
    let chance = plot::Line {
        color: "#999999",
        steps: [ROC_FLOOR, 1e-3, 1e-2, 1e-1, 1.0]
            .map(|v| Step { x: v, y: v, bar: None, label: format!("chance: TPR = FPR = {v}") })
            .into(),
    };
    let mut lines: Vec<plot::Line<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| plot::Line { color: PALETTE[i % PALETTE.len()], steps: curve(name) })
        .collect();
    lines.push(chance);
    let x = Axis::between("false positive rate", Scale::Log10, ROC_FLOOR, 1.0);
    let y = Axis::between("true positive rate", Scale::Log10, ROC_FLOOR, 1.0);
    html! {
        figure class="single" {
            (plot::lines("roc", "ROC curves of the attacks, log-log", &lines, &x, &y))
            figcaption {
                "Pooled ROC of each attack on log-log axes, as in the LiRA paper: the low-FPR end is where attacks \
                 differ. Grey: chance. A curve starts where its TPR reaches 10⁻⁴; left of one over the number of \
                 non-member pairs it shows the TPR at FPR 0."
                (palette_legend(names.iter().copied()))
            }
        }
    }
}

/// The documents with the largest d′, with their text.
fn most_exposed(exposure: &MembershipTable, scores: &ScoreTable, texts: &[String]) -> Markup {
    let mut ranked: Vec<(f64, usize)> =
        (0..exposure.doc.len()).filter_map(|i| Some((exposure.exposure_d[i]?, i))).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    html! {
        h3 { "Most exposed documents" }
        div class="table-wrap" {
            table class="documents" {
                thead { tr {
                    th { "document" } th { "d′" } th { "exposure AUC" } th { "μ IN" } th { "μ OUT" } th { "mem_loss" }
                    th { "text" }
                } }
                tbody {
                    @for &(d_prime, i) in ranked.iter().take(MOST_EXPOSED) {
                        @let doc = exposure.doc[i] as usize;
                        tr {
                            td class="id" {
                                (exposure.doc_id[i]) br; span class="source" { (source_label(exposure.source[i].as_deref())) }
                            }
                            td class="num" { (format!("{d_prime:+.2}")) }
                            td class="num" { (unsigned(exposure.exposure_auc[i])) }
                            td class="num" { (signed(exposure.mu_in[i])) } td class="num" { (signed(exposure.mu_out[i])) }
                            td class="num" { (signed(scores.mem_loss.get(doc).copied().flatten())) }
                            td class="text" {
                                details {
                                    summary { (preview(&texts[doc], PREVIEW_CHARS)) }
                                    pre { (preview_block(&texts[doc])) }
                                }
                            }
                        }
                    }
                }
            }
        }
        p class="note" {
            "A document's statistic is a model's mean log-likelihood per token of it; μ IN and μ OUT are its medians \
             over the models that trained on it and over those that did not. d′ = (μ IN − μ OUT) over their pooled \
             standard deviation: how far apart the two are, the ranking to read. The exposure AUC saturates at 1 once \
             they no longer overlap."
        }
    }
}

/// The section's content.
pub fn section(report: &MembershipReport, scores: &ScoreTable, texts: &[String]) -> Markup {
    html! {
        @if let Some(attacks) = &report.attacks {
            (attack_table(attacks))
        } @else {
            p class="note" { "The analysis skipped the attacks (cfmem analyze --no-attacks)." }
        }
        @if let Some(roc) = report.roc.as_ref().filter(|r| !r.attack.is_empty()) {
            (roc_plot(roc))
        }
        (most_exposed(&report.exposure, scores, texts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_shows_the_attacks_their_curves_and_the_most_exposed_documents_escaped() {
        let exposure = MembershipTable {
            doc: vec![0, 1, 2],
            doc_id: vec!["low".into(), "<high>".into(), "held".into()],
            source: vec![None, Some("code".into()), None],
            mu_in: vec![Some(-1.0), Some(-0.2), None],
            sd_in: vec![Some(0.1), Some(0.1), None],
            mu_out: vec![Some(-1.1), Some(-2.0), None],
            sd_out: vec![Some(0.1), Some(0.1), None],
            exposure_d: vec![Some(1.0), Some(18.0), None],
            exposure_auc: vec![Some(0.75), Some(1.0), None],
            zlib_bytes: vec![10, 10, 10],
        };
        let attacks = AttackTable {
            attack: vec!["lira_online".into(), "reference".into()],
            auc: vec![Some(0.9876), None],
            auc_lo: vec![Some(0.98), None],
            auc_hi: vec![Some(0.99), None],
            tpr_at_1pct_fpr: vec![Some(0.5), None],
            tpr_at_1pct_fpr_lo: vec![Some(0.4), None],
            tpr_at_1pct_fpr_hi: vec![Some(0.6), None],
            tpr_at_0_1pct_fpr: vec![Some(0.25), None],
            tpr_at_0_1pct_fpr_lo: vec![Some(0.2), None],
            tpr_at_0_1pct_fpr_hi: vec![Some(0.3), None],
            targets: vec![16, 0],
            spearman_mem_loss: vec![Some(0.99), None],
            note: vec![None, Some("needs a reference model".into())],
        };
        let roc = AttackRocTable {
            attack: vec!["lira_online".into(); 3],
            fpr: vec![1e-4, 1e-2, 1.0],
            tpr: vec![0.0, 0.5, 1.0],
        };
        let scores = ScoreTable { mem_loss: vec![Some(0.01), Some(0.9), None], ..Default::default() };
        let texts = ["a".to_string(), "<script>x</script>".to_string(), "c".to_string()];
        let report = MembershipReport { exposure, attacks: Some(attacks), roc: Some(roc) };
        let page = section(&report, &scores, &texts).into_string();
        assert!(page.contains("0.988 [0.980, 0.990]") && page.contains("50.0% [40.0, 60.0]"), "{page}");
        assert!(page.contains("25.0% [20.0, 30.0]") && page.contains("needs a reference model"), "{page}");
        assert!(page.contains("data-plot=\"roc\""), "the ROC plot");
        // The curve's point at TPR 0 is below the log axis: two points drawn, plus chance's five.
        assert_eq!(page.matches("lira_online: TPR").count(), 2, "{page}");
        let listed = &page[page.find("Most exposed").unwrap()..];
        assert!(listed.find("&lt;high&gt;").unwrap() < listed.find(">low<").unwrap(), "d′ 18 first: {listed}");
        assert!(listed.contains("+18.00") && !listed.contains(">held<"), "no d′, not listed");
        assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"), "text escaped");
        let skipped = MembershipReport { attacks: None, roc: None, ..report };
        assert!(section(&skipped, &scores, &texts).into_string().contains("skipped the attacks"));
    }
}
