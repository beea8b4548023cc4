//! Memorization over training: every document's scores at each checkpoint of
//! `train.eval_at` (`analysis/profile.parquet`), and what a reader takes from them
//! ([`ProfileSummary`]): per source, the mean mem_acc at each checkpoint with a 95%
//! interval; the regime at each checkpoint (do the models still beat a bigram table on
//! text they never saw?); and the checkpoint from which on the ranking of documents is
//! the final one's.
//!
//! It works on accumulated metrics and the scores; it reads no files.

use serde::{Deserialize, Serialize};

use subsets::schema::{FINAL_CHECKPOINT, ProfileTable, ScoreTable};

use crate::diagnosis::GroupAccuracy;
use crate::estimate::{Accumulated, Metrics};
use crate::reliability::STABLE;
use crate::stats::spearman;

/// Spearman with the final ranking from which a checkpoint's ranking is called the same.
pub const STABLE_RANKING: f64 = 0.9;
/// The normal quantile of a two-sided 95% interval.
const Z95: f64 = 1.96;

/// `profile.parquet`: the earlier checkpoints of `accumulated`, then the end of training,
/// whose rows are `scores`' values. A document whose unit fell back (`fell_back`) has no
/// mem_acc or mem_loss at any checkpoint, as in `scores`.
pub fn table(accumulated: &Accumulated, scores: &ScoreTable, fell_back: &[bool]) -> ProfileTable {
    let mut table = ProfileTable::default();
    let push_common = |table: &mut ProfileTable, checkpoint: f64, step: u32, doc: usize| {
        table.checkpoint.push(checkpoint);
        table.step.push(step);
        table.doc.push(doc as u32);
        table.doc_id.push(scores.doc_id[doc].clone());
        table.source.push(scores.source[doc].clone());
    };
    for checkpoint in &accumulated.earlier {
        for (doc, metrics) in checkpoint.docs.iter().enumerate() {
            push_common(&mut table, checkpoint.fraction, checkpoint.step, doc);
            push_metrics(&mut table, metrics, !fell_back[doc]);
        }
    }
    for doc in 0..scores.doc.len() {
        push_common(&mut table, FINAL_CHECKPOINT, accumulated.step, doc);
        table.n_in.push(scores.n_in[doc]);
        table.n_out.push(scores.n_out[doc]);
        table.acc_in.push(scores.acc_in[doc]);
        table.acc_out.push(scores.acc_out[doc]);
        table.mem_acc.push(scores.mem_acc[doc]);
        table.mem_acc_se.push(scores.mem_acc_se[doc]);
        table.mem_loss.push(scores.mem_loss[doc]);
        table.mem_loss_se.push(scores.mem_loss_se[doc]);
    }
    table
}

fn push_metrics(table: &mut ProfileTable, metrics: &Metrics, scored: bool) {
    let [(mem_acc, mem_acc_se), (mem_loss, mem_loss_se)] = metrics.scores_if(scored);
    table.n_in.push(metrics.acc.inside.n);
    table.n_out.push(metrics.acc.outside.n);
    table.acc_in.push(metrics.acc.inside.mean());
    table.acc_out.push(metrics.acc.outside.mean());
    table.mem_acc.push(mem_acc);
    table.mem_acc_se.push(mem_acc_se);
    table.mem_loss.push(mem_loss);
    table.mem_loss_se.push(mem_loss_se);
}

/// The rows of each checkpoint of a profile table: `(checkpoint, step, rows)`, in order.
pub fn checkpoints(table: &ProfileTable) -> Vec<(f64, u32, std::ops::Range<usize>)> {
    let mut found: Vec<(f64, u32, std::ops::Range<usize>)> = Vec::new();
    for (i, &checkpoint) in table.checkpoint.iter().enumerate() {
        match found.last_mut() {
            Some((last, _, rows)) if *last == checkpoint => rows.end = i + 1,
            _ => found.push((checkpoint, table.step[i], i..i + 1)),
        }
    }
    found
}

/// One checkpoint's line of the profile's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// The fraction of training.
    pub checkpoint: f64,
    pub step: u32,
    /// Spearman between this checkpoint's mem_acc ranking of the documents and the final
    /// one's (1 at the end).
    pub spearman_with_final: Option<f64>,
    /// The diagnosis's overall numbers at this checkpoint (every document but the canaries).
    pub regime: GroupAccuracy,
}

/// One source's mean mem_acc at each checkpoint, with a 95% interval: the mean ± 1.96 ×
/// the standard error of a mean of independent estimates, √(Σ se²) / n.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceProfile {
    pub source: Option<String>,
    /// Documents with a score at the end of training.
    pub documents: usize,
    pub mem_acc: Vec<Option<f64>>,
    pub lo: Vec<Option<f64>>,
    pub hi: Vec<Option<f64>>,
}

/// What the profile says, stored in `summary.json` under `"profile"` for runs evaluated at
/// more than one checkpoint. Sources without a scored document (held out) are left out.
///
/// JSON: `{"checkpoints": [{checkpoint, step, spearman_with_final, regime: GroupAccuracy}],
/// "sources": [{source, documents, mem_acc: [...], lo: [...], hi: [...]}],
/// "stable_from": fraction or null, "stable_ranking": 0.9, "end_reliability": number or
/// null}`, sources ordered by name with
/// documents without a source first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSummary {
    pub checkpoints: Vec<CheckpointSummary>,
    pub sources: Vec<SourceProfile>,
    /// The earliest checkpoint from which every checkpoint's ranking agrees with the final
    /// one at Spearman ≥ [`STABLE_RANKING`] (the end itself when none before it does).
    pub stable_from: Option<f64>,
    pub stable_ranking: f64,
    /// The Spearman-Brown reliability of the final ranking (`reliability.parquet`'s
    /// `predicted`): below [`STABLE`], a checkpoint's disagreement with the final ranking is
    /// noise as much as training.
    pub end_reliability: Option<f64>,
}

impl ProfileSummary {
    /// The summary of `table`, with `regimes[c]` the diagnosis's overall numbers at its
    /// checkpoint c, and `end_reliability` the final ranking's. None when the table has a
    /// single checkpoint.
    pub fn new(
        table: &ProfileTable,
        regimes: Vec<GroupAccuracy>,
        end_reliability: Option<f64>,
    ) -> Option<ProfileSummary> {
        let checkpoints = checkpoints(table);
        if checkpoints.len() < 2 {
            return None;
        }
        let mem = |rows: &std::ops::Range<usize>| -> Vec<f64> {
            table.mem_acc[rows.clone()].iter().map(|m| m.unwrap_or(f64::NAN)).collect()
        };
        let last = mem(&checkpoints.last().expect("two or more").2);
        let lines: Vec<CheckpointSummary> = checkpoints
            .iter()
            .zip(regimes)
            .map(|((checkpoint, step, rows), regime)| CheckpointSummary {
                checkpoint: *checkpoint,
                step: *step,
                spearman_with_final: spearman(&mem(rows), &last),
                regime,
            })
            .collect();
        let agrees = |c: &CheckpointSummary| c.spearman_with_final.is_some_and(|rho| rho >= STABLE_RANKING);
        let settled = lines.iter().rev().take_while(|c| agrees(c)).count();
        let stable_from = (settled > 0).then(|| lines[lines.len() - settled].checkpoint);

        let mut sources: std::collections::BTreeMap<Option<&str>, Vec<usize>> = Default::default();
        let final_rows = &checkpoints.last().expect("two or more").2;
        for (i, doc) in final_rows.clone().enumerate() {
            sources.entry(table.source[doc].as_deref()).or_default().push(i);
        }
        let sources = sources
            .into_iter()
            .map(|(source, offsets)| {
                let mut profile = SourceProfile {
                    source: source.map(str::to_string),
                    documents: offsets.iter().filter(|&&i| table.mem_acc[final_rows.start + i].is_some()).count(),
                    mem_acc: Vec::new(),
                    lo: Vec::new(),
                    hi: Vec::new(),
                };
                for (_, _, rows) in &checkpoints {
                    let scored: Vec<(f64, Option<f64>)> = offsets
                        .iter()
                        .filter_map(|&i| Some((table.mem_acc[rows.start + i]?, table.mem_acc_se[rows.start + i])))
                        .collect();
                    let n = scored.len() as f64;
                    let mean = (!scored.is_empty()).then(|| scored.iter().map(|(m, _)| m).sum::<f64>() / n);
                    let se = scored.iter().map(|(_, se)| se.map(|s| s * s)).sum::<Option<f64>>().map(|v| v.sqrt() / n);
                    let half = mean.and(se).map(|se| Z95 * se);
                    profile.mem_acc.push(mean);
                    profile.lo.push(mean.zip(half).map(|(m, h)| m - h));
                    profile.hi.push(mean.zip(half).map(|(m, h)| m + h));
                }
                profile
            })
            .filter(|profile| profile.mem_acc.iter().any(Option::is_some))
            .collect();
        Some(ProfileSummary {
            checkpoints: lines,
            sources,
            stable_from,
            stable_ranking: STABLE_RANKING,
            end_reliability,
        })
    }

    /// The one-line answer: from which checkpoint on the documents rank as at the end, and
    /// so whether fewer epochs would have told the same story.
    pub fn ranking_answer(&self) -> String {
        let last = self.checkpoints.last().expect("a profile has two checkpoints or more");
        let rho = self.stable_ranking;
        match self.stable_checkpoint() {
            Some(c) if c.checkpoint < last.checkpoint => format!(
                "from {} of training (step {} of {}) on, the ranking of documents is the final one's (Spearman ≥ \
                 {rho}): training that long would have told the same story at {} of the training cost",
                percent(c.checkpoint),
                c.step,
                last.step,
                percent(c.checkpoint)
            ),
            _ if self.end_reliability.is_none_or(|r| r < STABLE) => format!(
                "no earlier checkpoint ranks the documents as the end does (Spearman ≥ {rho}), but the end's ranking \
                 is not stable itself (Spearman-Brown {}): that is noise as much as training; grow the run (see \
                 reliability) before choosing fewer epochs",
                self.end_reliability.map_or_else(|| "unknown".to_string(), |r| format!("{r:.2}"))
            ),
            _ => format!(
                "the ranking of documents changes until the end (Spearman with the final ranking below {rho} at \
                 every earlier checkpoint): fewer steps would have told another story"
            ),
        }
    }

    /// The checkpoint line at fraction `stable_from`.
    pub fn stable_checkpoint(&self) -> Option<&CheckpointSummary> {
        self.checkpoints.iter().find(|c| Some(c.checkpoint) == self.stable_from)
    }
}

/// "25%" for 0.25: a checkpoint as a share of training.
pub fn percent(checkpoint: f64) -> String {
    format!("{}%", (100.0 * checkpoint * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `mem[c][d]` (None: unscored) at checkpoints 0.5 and 1, every document
    /// with se 0.1 and source `s{d % 2}`.
    fn table_of(mem: &[Vec<Option<f64>>]) -> ProfileTable {
        let mut table = ProfileTable::default();
        for (c, values) in mem.iter().enumerate() {
            for (d, &m) in values.iter().enumerate() {
                table.checkpoint.push([0.5, 1.0][c]);
                table.step.push([5, 10][c]);
                table.doc.push(d as u32);
                table.doc_id.push(format!("d{d}"));
                table.source.push(Some(format!("s{}", d % 2)));
                table.n_in.push(2);
                table.n_out.push(2);
                table.acc_in.push(Some(0.5));
                table.acc_out.push(Some(0.5));
                table.mem_acc.push(m);
                table.mem_acc_se.push(m.map(|_| 0.1));
                table.mem_loss.push(None);
                table.mem_loss_se.push(None);
            }
        }
        table
    }

    fn regimes(n: usize) -> Vec<GroupAccuracy> {
        let group = GroupAccuracy {
            documents: 0,
            holdout: 0,
            acc_in: None,
            acc_out: None,
            bigram_baseline: None,
            unigram_baseline: None,
            generalization_gap: None,
            memorization_gap: None,
            memorizing: false,
        };
        vec![group; n]
    }

    #[test]
    fn source_means_intervals_and_the_stable_checkpoint_by_hand() {
        // Four documents: s0 holds d0 and d2, s1 holds d1 and d3 (d3 unscored).
        let early = vec![Some(0.1), Some(0.0), Some(0.3), Some(0.2)];
        let end = vec![Some(0.2), Some(0.1), Some(0.4), None];
        let summary = ProfileSummary::new(&table_of(&[early, end]), regimes(2), Some(0.95)).unwrap();
        assert_eq!(summary.checkpoints.len(), 2);
        assert_eq!((summary.checkpoints[0].checkpoint, summary.checkpoints[0].step), (0.5, 5));
        // Ranks of d0, d1, d2 agree (d3 has no final score): Spearman 1.
        assert_eq!(summary.checkpoints[0].spearman_with_final, Some(1.0));
        assert_eq!(summary.stable_from, Some(0.5));
        assert!(summary.ranking_answer().starts_with("from 50% of training (step 5 of 10) on"));
        let s0 = &summary.sources[0];
        assert_eq!((s0.source.as_deref(), s0.documents), (Some("s0"), 2));
        assert!((s0.mem_acc[0].unwrap() - 0.2).abs() < 1e-12 && (s0.mem_acc[1].unwrap() - 0.3).abs() < 1e-12);
        // se of the mean: √(0.01 + 0.01) / 2.
        let half = 1.96 * 0.02f64.sqrt() / 2.0;
        assert!((s0.lo[1].unwrap() - (0.3 - half)).abs() < 1e-12 && (s0.hi[1].unwrap() - (0.3 + half)).abs() < 1e-12);
        let s1 = &summary.sources[1];
        assert_eq!(s1.documents, 1);
        assert!((s1.mem_acc[0].unwrap() - 0.1).abs() < 1e-12, "both scored early: (0.0 + 0.2) / 2");
        assert!((s1.mem_acc[1].unwrap() - 0.1).abs() < 1e-12);

        // A ranking that turns over late settles only at the end.
        let reversed = vec![Some(0.4), Some(0.3), Some(0.2), Some(0.1)];
        let end = vec![Some(0.1), Some(0.2), Some(0.3), Some(0.4)];
        let summary = ProfileSummary::new(&table_of(&[reversed, end]), regimes(2), Some(0.95)).unwrap();
        assert_eq!(summary.checkpoints[0].spearman_with_final, Some(-1.0));
        assert_eq!(summary.stable_from, Some(1.0));
        assert!(summary.ranking_answer().starts_with("the ranking of documents changes until the end"));
        // Unless the end's ranking is itself noise.
        let noisy = ProfileSummary { end_reliability: Some(0.24), ..summary };
        assert!(
            noisy.ranking_answer().contains("is not stable itself (Spearman-Brown 0.24)"),
            "{}",
            noisy.ranking_answer()
        );
        assert!(ProfileSummary::new(&table_of(&[vec![Some(0.1), Some(0.2)]]), regimes(1), None).is_none());
    }

    #[test]
    fn checkpoints_are_runs_of_rows_and_print_as_percentages() {
        let table = table_of(&[vec![Some(0.0); 3], vec![Some(0.0); 3]]);
        assert_eq!(checkpoints(&table), [(0.5, 5, 0..3), (1.0, 10, 3..6)]);
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(1.0 / 3.0), "33.33%");
    }
}
