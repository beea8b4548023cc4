//! `analysis/summary.json`, typed: [`SummaryFile`] is what `cfmem analyze` writes (built by
//! [`crate::printed_summary::PrintedSummary::file`]) and what the HTML report reads back.
//!
//! The file's objects list their keys in alphabetical order, as they always have, so every
//! struct here declares its fields in alphabetical order of their JSON names and keys named
//! by the data (sources, levels) are [`BTreeMap`]s. The parts whose types other modules own
//! ([`Diagnosis`], [`ProfileSummary`], [`MembershipSummary`], [`ByMeasure`]) declare their
//! fields in an order of their own; they are written through a [`serde_json::Value`], whose
//! objects sort their keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::diagnosis::Diagnosis;
use crate::measure::{ByMeasure, Measure};
use crate::membership::{MembershipSummary, Variance};
use crate::profile::ProfileSummary;
use crate::reliability::ScoreReliability;

/// `summary.json`: the numbers of the summary `cfmem analyze` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryFile {
    /// The attacks on the run's models; null when membership was not measured or the
    /// attacks were skipped.
    pub attacks: Option<Attacks>,
    /// The generalization check ([`Diagnosis`]).
    #[serde(serialize_with = "keys_sorted")]
    pub diagnosis: Diagnosis,
    pub documents: usize,
    /// Held-out documents.
    pub holdout: usize,
    /// Jobs of the run.
    pub jobs: usize,
    /// Jobs whose logs were analyzed.
    pub jobs_analyzed: usize,
    /// Null when no document has a score.
    pub mem_acc_quantiles: Option<ScoreQuantiles>,
    /// Null when no document has a score.
    pub mem_loss_quantiles: Option<ScoreQuantiles>,
    /// The documents' membership exposure ([`MembershipSummary`]); null when not measured.
    #[serde(serialize_with = "keys_sorted")]
    pub membership: Option<MembershipSummary>,
    pub models: usize,
    /// Memorization over training ([`ProfileSummary`]); null for a run evaluated only at
    /// the end.
    #[serde(serialize_with = "keys_sorted")]
    pub profile: Option<ProfileSummary>,
    /// The score that ranks: `loss` or `accuracy`.
    pub rank_by: Measure,
    /// The verdict on each score's ranking, by score name (`mem_loss`, `mem_acc`).
    pub reliability: BTreeMap<String, ScoreReliability>,
    /// Per named source, over its scored documents. Documents without a source have no
    /// entry, as a key could not tell them from a source named like the label the views
    /// give them.
    pub sources: BTreeMap<String, SourceScores>,
    /// The memorization spectrum; null for a run without levels beyond the document.
    pub spectrum: Option<Spectrum>,
}

/// Quantiles of a score over the scored documents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreQuantiles {
    pub max: f64,
    pub median: f64,
    pub min: f64,
    pub p10: f64,
    pub p90: f64,
}

/// A named source's scored documents and both scores over them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SourceScores {
    /// Scored documents of the source.
    pub count: usize,
    pub mem_acc: MedianAndMean,
    pub mem_loss: MedianAndMean,
}

/// A score's median and mean over some documents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MedianAndMean {
    pub mean: Option<f64>,
    pub median: Option<f64>,
}

/// The memorization spectrum's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spectrum {
    /// The documents memorized only at a coarser level (found on mem_acc), most different
    /// first.
    pub coarser_only: Vec<CoarserOnlyDocument>,
    /// The levels, finest first.
    pub levels: Vec<SpectrumLevel>,
    /// Per source (`(none)` for documents without one), the documents at each place on the
    /// spectrum, by level name, and `none` for those placed at no level.
    pub places: BTreeMap<String, BTreeMap<String, usize>>,
    /// Per named source, by level name, each score's median.
    #[serde(serialize_with = "keys_sorted")]
    pub sources: BTreeMap<String, BTreeMap<String, ByMeasure<Option<f64>>>>,
}

/// One level of the spectrum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectrumLevel {
    /// Documents without a score at the level because their unit was over the size limit.
    pub fallen_back: usize,
    pub level: String,
    pub models: u32,
    /// Each score's split-half reliability stepped up to the level's models.
    #[serde(serialize_with = "keys_sorted")]
    pub reliability: ByMeasure<Option<f64>>,
    /// The most documents one unit OUT removes from a model's training set.
    pub removal_largest: u32,
    /// The documents one unit OUT removes, mean over units.
    pub removal_mean: f64,
}

/// A document memorized only at a coarser level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoarserOnlyDocument {
    /// mem_acc at the finest level.
    pub finest: f64,
    /// The 95% interval of `mem_acc`.
    pub hi: f64,
    pub id: String,
    /// The coarser level.
    pub level: String,
    pub lo: f64,
    /// mem_acc at the coarser level.
    pub mem_acc: f64,
    /// The start of the document's text.
    pub preview: String,
    /// What the document's unit at `level` shares.
    pub shared: String,
    pub source: Option<String>,
    /// Documents of the unit at `level`.
    pub unit_size: u32,
}

/// The attacks on the run's models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attacks {
    /// The rows of `attacks.parquet`, one an attack.
    pub attacks: Vec<AttackRow>,
    /// The variance rule LiRA used: `per-document` or `fixed`.
    pub variance: Variance,
}

/// One attack: a row of `attacks.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackRow {
    pub attack: String,
    pub auc: Option<f64>,
    pub auc_hi: Option<f64>,
    pub auc_lo: Option<f64>,
    /// Why the attack has no score, or what it left out.
    pub note: Option<String>,
    pub spearman_mem_loss: Option<f64>,
    pub targets: u32,
    pub tpr_at_0_1pct_fpr: Option<f64>,
    pub tpr_at_0_1pct_fpr_hi: Option<f64>,
    pub tpr_at_0_1pct_fpr_lo: Option<f64>,
    pub tpr_at_1pct_fpr: Option<f64>,
    pub tpr_at_1pct_fpr_hi: Option<f64>,
    pub tpr_at_1pct_fpr_lo: Option<f64>,
}

/// Writes `value` with the keys of each of its objects in alphabetical order, through a
/// [`serde_json::Value`] (whose objects sort their keys), whatever the order of its type's
/// fields.
fn keys_sorted<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value).map_err(serde::ser::Error::custom)?.serialize(serializer)
}

#[cfg(test)]
mod tests {
    use subsets::config::Unit;
    use subsets::corpus::Document;
    use subsets::layout::RunDir;

    use super::*;
    use crate::per_model::RunLogs;
    use crate::printed_summary::PrintedSummary;
    use crate::scores::analyze;
    use crate::settings::AnalyzeSettings;
    use crate::synthetic_run::{self, Row, Spec};

    /// 18 documents of two named sources and none, four of them sharing a passage, six
    /// copies of one text (a near-duplicate cluster).
    fn spec() -> Spec {
        let mut documents = synthetic_run::documents(12, 7);
        let shared = " and this sentence of more than fifty bytes is shared word for word by four documents";
        for doc in &mut documents[4..8] {
            doc.text.push_str(shared);
        }
        let text = "the same sentence copied six times over, word for word".to_string();
        documents.extend((0..6).map(|i| Document { id: format!("copy-{i}"), text: text.clone(), source: None }));
        for (i, doc) in documents.iter_mut().enumerate() {
            doc.source = [Some("prose".to_string()), Some("code".to_string()), None][i % 3].clone();
        }
        Spec { documents, models: 16, stack: 4, seed: 5, unit: Unit::Document, holdout_ids: vec!["doc-3".into()] }
    }

    /// Accuracy 0.3 plus a model's offset, plus 4·(doc mod 9) points IN at the end of
    /// training (that times the checkpoint before it); the loss falls as the accuracy rises
    /// and with training.
    fn row(checkpoint: f64, model: u32, doc: usize, in_train: &[bool]) -> Row {
        let gain = (checkpoint * f64::from(4 * (doc as u32 % 9))).round() as u32;
        let correct = 30 + model % 5 + if in_train[doc] { gain } else { 0 };
        Row { tokens: 100, correct, nll: f64::from(200 - correct) / checkpoint }
    }

    fn analyzed(run: &RunDir) -> PrintedSummary {
        analyze(run, &RunLogs::open(run).unwrap(), AnalyzeSettings::default()).unwrap().summary
    }

    /// A run with levels beyond the document, and one evaluated at three checkpoints: both
    /// with membership and the attacks.
    fn summaries() -> Vec<PrintedSummary> {
        let dir = tempfile::tempdir().unwrap();
        let spectrum = RunDir::new(dir.path().join("spectrum"));
        let levels = [Unit::Document, Unit::Cluster, Unit::Passage];
        synthetic_run::write_spectrum(&spectrum, &spec(), &levels, 1.0, |m, d, i| row(1.0, m, d, i)).unwrap();
        let profile = RunDir::new(dir.path().join("profile"));
        synthetic_run::write_checkpoints(&profile, &spec(), &[0.25, 0.5, 1.0], row).unwrap();
        vec![analyzed(&spectrum), analyzed(&profile)]
    }

    #[test]
    fn the_golden_summary_reads_and_writes_back_byte_for_byte() {
        let golden = include_str!("../../tests/golden/summary.json");
        let file: SummaryFile = serde_json::from_str(golden).unwrap();
        assert!(file.spectrum.is_some() && file.membership.is_some() && file.attacks.is_some());
        assert_eq!(serde_json::to_string_pretty(&file).unwrap(), golden);
    }

    #[test]
    fn a_written_file_reads_back_equal() {
        let summaries = summaries();
        let file = summaries[0].file();
        assert!(file.spectrum.is_some_and(|s| s.levels.len() == 3), "levels beyond the document");
        assert!(file.membership.is_some() && file.attacks.is_some() && file.sources.len() == 2);
        assert!(summaries[1].file().profile.is_some(), "three checkpoints");
        for summary in summaries {
            let file = summary.file();
            let read: SummaryFile = serde_json::from_str(&serde_json::to_string_pretty(&file).unwrap()).unwrap();
            assert_eq!(read, file);
        }
    }
}
