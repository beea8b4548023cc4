//! Memorization over training: every document's scores at each checkpoint of
//! `train.eval_at` (`analysis/profile.parquet`), and what a reader takes from them
//! ([`ProfileSummary`]): the regime at each checkpoint (do the models still beat a bigram
//! table on text they never saw?) and, for each score (mem_loss and mem_acc, the ranking
//! one first): per source, its mean at each checkpoint with a 95% interval, and the
//! checkpoint from which on the ranking of documents by it is the final one's.
//!
//! It works on accumulated metrics and the scores; it reads no files.

use serde::{Deserialize, Serialize};

use subsets::schema::{FINAL_CHECKPOINT, ProfileTable, ScoreTable};

use crate::diagnosis::GroupAccuracy;
use crate::estimate::{Accumulated, Metrics};
use crate::measure::{ByMeasure, Measure};
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
        table.loss_in.push(scores.loss_in[doc]);
        table.loss_out.push(scores.loss_out[doc]);
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
    table.loss_in.push(metrics.loss.inside.mean());
    table.loss_out.push(metrics.loss.outside.mean());
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
    /// The diagnosis's overall numbers at this checkpoint (every document but the canaries).
    pub regime: GroupAccuracy,
}

/// One source's mean score at each checkpoint, with a 95% interval: the mean ± 1.96 × the
/// standard error of a mean of independent estimates, √(Σ se²) / n.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceProfile {
    pub source: Option<String>,
    /// Documents with a score at the end of training.
    pub documents: usize,
    /// Per checkpoint (`mem_acc` in summaries written before both scores were profiled).
    #[serde(alias = "mem_acc")]
    pub mean: Vec<Option<f64>>,
    pub lo: Vec<Option<f64>>,
    pub hi: Vec<Option<f64>>,
}

/// One score over training: per source, its mean at each checkpoint, and how its ranking of
/// the documents compares with the final one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreProfile {
    pub measure: Measure,
    /// Per checkpoint, Spearman between its ranking of the documents and the final one's
    /// (1 at the end).
    pub spearman_with_final: Vec<Option<f64>>,
    /// The earliest checkpoint from which every checkpoint's ranking agrees with the final
    /// one at Spearman ≥ [`STABLE_RANKING`] (the end itself when none before it does).
    pub stable_from: Option<f64>,
    /// The Spearman-Brown reliability of the final ranking (`reliability.parquet`'s
    /// `predicted`): below [`STABLE`], a checkpoint's disagreement with the final ranking is
    /// noise as much as training.
    pub end_reliability: Option<f64>,
    /// Sources without a scored document (held out) are left out.
    pub sources: Vec<SourceProfile>,
}

/// What the profile says, stored in `summary.json` under `"profile"` for runs evaluated at
/// more than one checkpoint.
///
/// JSON: `{"checkpoints": [{checkpoint, step, regime: GroupAccuracy}], "scores":
/// [{measure: "loss" | "accuracy", spearman_with_final: [...], stable_from: fraction or
/// null, end_reliability: number or null, sources: [{source, documents, mean: [...], lo:
/// [...], hi: [...]}]}], "stable_ranking": 0.9}`, the ranking score first, sources ordered
/// by name with documents without a source first. Summaries written before both scores
/// were profiled read through [`ProfileSummary::from_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSummary {
    pub checkpoints: Vec<CheckpointSummary>,
    pub scores: Vec<ScoreProfile>,
    pub stable_ranking: f64,
}

/// `summary.json`'s profile as cfmem wrote it before both scores were profiled: mem_acc's
/// only, its Spearman on each checkpoint's line.
#[derive(Deserialize)]
struct ProfileOfAccuracy {
    checkpoints: Vec<CheckpointOfAccuracy>,
    sources: Vec<SourceProfile>,
    stable_from: Option<f64>,
    stable_ranking: f64,
    end_reliability: Option<f64>,
}

#[derive(Deserialize)]
struct CheckpointOfAccuracy {
    checkpoint: f64,
    step: u32,
    spearman_with_final: Option<f64>,
    regime: GroupAccuracy,
}

impl ProfileSummary {
    /// The summary of `table`, with `regimes[c]` the diagnosis's overall numbers at its
    /// checkpoint c, and `end_reliability` each final ranking's; `rank_by`'s score first.
    /// None when the table has a single checkpoint.
    pub fn new(
        table: &ProfileTable,
        regimes: Vec<GroupAccuracy>,
        end_reliability: ByMeasure<Option<f64>>,
        rank_by: Measure,
    ) -> Option<ProfileSummary> {
        let checkpoints = checkpoints(table);
        if checkpoints.len() < 2 {
            return None;
        }
        let lines: Vec<CheckpointSummary> = checkpoints
            .iter()
            .zip(regimes)
            .map(|((checkpoint, step, _), regime)| CheckpointSummary { checkpoint: *checkpoint, step: *step, regime })
            .collect();
        let scores = rank_by
            .leading()
            .into_iter()
            .map(|m| score_profile(table, &checkpoints, m, *end_reliability.of(m)))
            .collect();
        Some(ProfileSummary { checkpoints: lines, scores, stable_ranking: STABLE_RANKING })
    }

    /// Reads `summary.json`'s `profile`, as this cfmem writes it or as earlier ones did
    /// (mem_acc's only).
    pub fn from_json(value: serde_json::Value) -> Result<ProfileSummary, serde_json::Error> {
        let current = match serde_json::from_value::<ProfileSummary>(value.clone()) {
            Ok(profile) => return Ok(profile),
            Err(e) => e,
        };
        let Ok(old) = serde_json::from_value::<ProfileOfAccuracy>(value) else { return Err(current) };
        let accuracy = ScoreProfile {
            measure: Measure::Accuracy,
            spearman_with_final: old.checkpoints.iter().map(|c| c.spearman_with_final).collect(),
            stable_from: old.stable_from,
            end_reliability: old.end_reliability,
            sources: old.sources,
        };
        let checkpoints = old
            .checkpoints
            .into_iter()
            .map(|c| CheckpointSummary { checkpoint: c.checkpoint, step: c.step, regime: c.regime })
            .collect();
        Ok(ProfileSummary { checkpoints, scores: vec![accuracy], stable_ranking: old.stable_ranking })
    }

    /// The profile of `measure`'s score, or of the first one it has (a summary written
    /// before both scores were profiled has mem_acc's only).
    pub fn of(&self, measure: Measure) -> &ScoreProfile {
        self.scores.iter().find(|s| s.measure == measure).unwrap_or(&self.scores[0])
    }

    /// The one-line answer for `score`: from which checkpoint on the documents rank as at
    /// the end, and so whether fewer epochs would have told the same story.
    pub fn ranking_answer(&self, score: &ScoreProfile) -> String {
        let last = self.checkpoints.last().expect("a profile has two checkpoints or more");
        let rho = self.stable_ranking;
        let measure = score.measure;
        match self.checkpoints.iter().find(|c| Some(c.checkpoint) == score.stable_from) {
            Some(c) if c.checkpoint < last.checkpoint => format!(
                "from {} of training (step {} of {}) on, the ranking of documents by {measure} is the final one's \
                 (Spearman ≥ {rho}): training that long would have told the same story at {} of the training cost",
                percent(c.checkpoint),
                c.step,
                last.step,
                percent(c.checkpoint)
            ),
            _ if score.end_reliability.is_none_or(|r| r < STABLE) => format!(
                "no earlier checkpoint ranks the documents by {measure} as the end does (Spearman ≥ {rho}), but the \
                 end's ranking is not stable itself (Spearman-Brown {}): that is noise as much as training; grow the \
                 run (see reliability) before choosing fewer epochs",
                score.end_reliability.map_or_else(|| "unknown".to_string(), |r| format!("{r:.2}"))
            ),
            _ => format!(
                "the ranking of documents by {measure} changes until the end (Spearman with the final ranking below \
                 {rho} at every earlier checkpoint): fewer steps would have told another story"
            ),
        }
    }
}

/// `measure`'s score over the `checkpoints` of `table`.
fn score_profile(
    table: &ProfileTable,
    checkpoints: &[(f64, u32, std::ops::Range<usize>)],
    measure: Measure,
    end_reliability: Option<f64>,
) -> ScoreProfile {
    let (value, se) = match measure {
        Measure::Loss => (&table.mem_loss, &table.mem_loss_se),
        Measure::Accuracy => (&table.mem_acc, &table.mem_acc_se),
    };
    let mem = |rows: &std::ops::Range<usize>| -> Vec<f64> {
        value[rows.clone()].iter().map(|m| m.unwrap_or(f64::NAN)).collect()
    };
    let final_rows = &checkpoints.last().expect("two or more").2;
    let last = mem(final_rows);
    let spearman_with_final: Vec<Option<f64>> =
        checkpoints.iter().map(|(_, _, rows)| spearman(&mem(rows), &last)).collect();
    let agrees = |rho: &Option<f64>| rho.is_some_and(|rho| rho >= STABLE_RANKING);
    let settled = spearman_with_final.iter().rev().take_while(|rho| agrees(rho)).count();
    let stable_from = (settled > 0).then(|| checkpoints[checkpoints.len() - settled].0);

    let mut sources: std::collections::BTreeMap<Option<&str>, Vec<usize>> = Default::default();
    for (i, doc) in final_rows.clone().enumerate() {
        sources.entry(table.source[doc].as_deref()).or_default().push(i);
    }
    let sources = sources
        .into_iter()
        .map(|(source, offsets)| {
            let mut profile = SourceProfile {
                source: source.map(str::to_string),
                documents: offsets.iter().filter(|&&i| value[final_rows.start + i].is_some()).count(),
                mean: Vec::new(),
                lo: Vec::new(),
                hi: Vec::new(),
            };
            for (_, _, rows) in checkpoints {
                let scored: Vec<(f64, Option<f64>)> =
                    offsets.iter().filter_map(|&i| Some((value[rows.start + i]?, se[rows.start + i]))).collect();
                let n = scored.len() as f64;
                let mean = (!scored.is_empty()).then(|| scored.iter().map(|(m, _)| m).sum::<f64>() / n);
                let se = scored.iter().map(|(_, se)| se.map(|s| s * s)).sum::<Option<f64>>().map(|v| v.sqrt() / n);
                let half = mean.and(se).map(|se| Z95 * se);
                profile.mean.push(mean);
                profile.lo.push(mean.zip(half).map(|(m, h)| m - h));
                profile.hi.push(mean.zip(half).map(|(m, h)| m + h));
            }
            profile
        })
        .filter(|profile| profile.mean.iter().any(Option::is_some))
        .collect();
    ScoreProfile { measure, spearman_with_final, stable_from, end_reliability, sources }
}

/// "25%" for 0.25: a checkpoint as a share of training.
pub fn percent(checkpoint: f64) -> String {
    format!("{}%", (100.0 * checkpoint * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of mem_acc `mem[c][d]` (None: unscored) and mem_loss its negative at
    /// checkpoints 0.5 and 1, every document with se 0.1 and source `s{d % 2}`.
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
                table.mem_loss.push(m.map(|m| -m));
                table.mem_loss_se.push(m.map(|_| 0.1));
                table.loss_in.push(None);
                table.loss_out.push(None);
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
            loss_in: None,
            loss_out: None,
            bigram_baseline: None,
            unigram_baseline: None,
            generalization_gap: None,
            memorization_gap: None,
            memorizing: false,
        };
        vec![group; n]
    }

    fn end_reliability(acc: Option<f64>) -> ByMeasure<Option<f64>> {
        ByMeasure { mem_loss: Some(0.99), mem_acc: acc }
    }

    #[test]
    fn source_means_intervals_and_the_stable_checkpoint_by_hand() {
        // Four documents: s0 holds d0 and d2, s1 holds d1 and d3 (d3 unscored).
        let early = vec![Some(0.1), Some(0.0), Some(0.3), Some(0.2)];
        let end = vec![Some(0.2), Some(0.1), Some(0.4), None];
        let table = table_of(&[early, end]);
        let summary = ProfileSummary::new(&table, regimes(2), end_reliability(Some(0.95)), Measure::Accuracy).unwrap();
        assert_eq!(summary.checkpoints.len(), 2);
        assert_eq!((summary.checkpoints[0].checkpoint, summary.checkpoints[0].step), (0.5, 5));
        assert_eq!(summary.scores.iter().map(|s| s.measure).collect::<Vec<_>>(), [Measure::Accuracy, Measure::Loss]);
        let acc = summary.of(Measure::Accuracy);
        // Ranks of d0, d1, d2 agree (d3 has no final score): Spearman 1.
        assert_eq!(acc.spearman_with_final, [Some(1.0), Some(1.0)]);
        assert_eq!(acc.stable_from, Some(0.5));
        assert!(
            summary
                .ranking_answer(acc)
                .starts_with("from 50% of training (step 5 of 10) on, the ranking of documents by mem_acc")
        );
        let s0 = &acc.sources[0];
        assert_eq!((s0.source.as_deref(), s0.documents), (Some("s0"), 2));
        assert!((s0.mean[0].unwrap() - 0.2).abs() < 1e-12 && (s0.mean[1].unwrap() - 0.3).abs() < 1e-12);
        // se of the mean: √(0.01 + 0.01) / 2.
        let half = 1.96 * 0.02f64.sqrt() / 2.0;
        assert!((s0.lo[1].unwrap() - (0.3 - half)).abs() < 1e-12 && (s0.hi[1].unwrap() - (0.3 + half)).abs() < 1e-12);
        let s1 = &acc.sources[1];
        assert_eq!(s1.documents, 1);
        assert!((s1.mean[0].unwrap() - 0.1).abs() < 1e-12, "both scored early: (0.0 + 0.2) / 2");
        assert!((s1.mean[1].unwrap() - 0.1).abs() < 1e-12);
        // mem_loss is the table's other column, mem_acc's negative here: each checkpoint's
        // ranking reversed, so it agrees with its own end as well.
        let loss = summary.of(Measure::Loss);
        assert_eq!(loss.spearman_with_final, [Some(1.0), Some(1.0)]);
        assert_eq!((loss.stable_from, loss.end_reliability), (Some(0.5), Some(0.99)));
        assert!((loss.sources[0].mean[1].unwrap() - -0.3).abs() < 1e-12);

        // A ranking that turns over late settles only at the end.
        let reversed = vec![Some(0.4), Some(0.3), Some(0.2), Some(0.1)];
        let end = vec![Some(0.1), Some(0.2), Some(0.3), Some(0.4)];
        let table = table_of(&[reversed, end]);
        let summary = ProfileSummary::new(&table, regimes(2), end_reliability(Some(0.95)), Measure::Loss).unwrap();
        let acc = summary.of(Measure::Accuracy);
        assert_eq!(summary.scores[0].measure, Measure::Loss, "the ranking score first");
        assert_eq!(acc.spearman_with_final[0], Some(-1.0));
        assert_eq!(acc.stable_from, Some(1.0));
        assert!(summary.ranking_answer(acc).starts_with("the ranking of documents by mem_acc changes until the end"));
        // Unless the end's ranking is itself noise.
        let noisy = ScoreProfile { end_reliability: Some(0.24), ..acc.clone() };
        let answer = summary.ranking_answer(&noisy);
        assert!(answer.contains("is not stable itself (Spearman-Brown 0.24)"), "{answer}");
        let single = table_of(&[vec![Some(0.1), Some(0.2)]]);
        assert!(ProfileSummary::new(&single, regimes(1), end_reliability(None), Measure::Loss).is_none());
    }

    #[test]
    fn a_profile_written_before_both_scores_reads_as_mem_accs() {
        let regime = serde_json::to_value(&regimes(1)[0]).unwrap();
        let old = serde_json::json!({
            "checkpoints": [
                {"checkpoint": 0.5, "step": 5, "spearman_with_final": 0.7, "regime": regime},
                {"checkpoint": 1.0, "step": 10, "spearman_with_final": 1.0, "regime": regime},
            ],
            "sources": [{"source": "s0", "documents": 2, "mem_acc": [0.1, 0.2], "lo": [0.0, 0.1], "hi": [0.2, 0.3]}],
            "stable_from": 1.0,
            "stable_ranking": 0.9,
            "end_reliability": 0.93,
        });
        let profile = ProfileSummary::from_json(old).unwrap();
        assert_eq!(profile.checkpoints.len(), 2);
        let acc = profile.of(Measure::Loss);
        assert_eq!(acc.measure, Measure::Accuracy, "the only score it has");
        assert_eq!((acc.spearman_with_final.clone(), acc.end_reliability), (vec![Some(0.7), Some(1.0)], Some(0.93)));
        assert_eq!(acc.sources[0].mean, [Some(0.1), Some(0.2)]);
        let current = ProfileSummary::new(
            &table_of(&[vec![Some(0.1), Some(0.2)], vec![Some(0.2), Some(0.1)]]),
            regimes(2),
            end_reliability(None),
            Measure::Loss,
        )
        .unwrap();
        assert_eq!(ProfileSummary::from_json(serde_json::to_value(&current).unwrap()).unwrap(), current);
        let err = ProfileSummary::from_json(serde_json::json!({"checkpoints": 3})).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
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
