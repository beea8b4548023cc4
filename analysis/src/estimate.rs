//! The counterfactual memorization estimators, computed in one streaming pass over logs.
//!
//! For document x, with M(f, x) a model's per-token accuracy (correct/tokens) or loss
//! (nll/tokens): `mem_acc = mean over IN models − mean over OUT models` and
//! `mem_loss = loss OUT − loss IN`, each with the standard error of a difference of two
//! independent means. For a near-duplicate cluster the metric of a model is the mean over
//! the cluster's members, and a model counts as IN (OUT) for the cluster only when every
//! member is IN (OUT) for it; models with mixed membership are left out of the group
//! estimate (all of them when the sampling unit was the document).
//!
//! The scores rest on the rows of the final checkpoint (the end of training); rows of
//! earlier checkpoints (`train.eval_at`) are gathered per checkpoint and document into
//! [`Accumulated::earlier`], the profile of memorization over training.
//!
//! Logs are read batch by batch, files in parallel; besides the per-model matrix it fills
//! ([`ModelValues`]), each thread holds one [`Metrics`] per document and checkpoint (about
//! 100 bytes) and its log's (model, cluster) cells.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use subsets::schema::{self, FINAL_CHECKPOINT, LogTable, Table};

use crate::Result;
use crate::per_model::{Cell, LogRows, ModelValues};
use crate::stats::{self, Moments};

/// IN and OUT moments of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sides {
    pub inside: Moments,
    pub outside: Moments,
}

impl Sides {
    fn push(&mut self, in_train: bool, value: f64) {
        if in_train { self.inside.push(value) } else { self.outside.push(value) }
    }

    fn merge(&mut self, other: &Sides) {
        self.inside.merge(&other.inside);
        self.outside.merge(&other.outside);
    }
}

/// Accuracy and loss sides of one document or cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    pub acc: Sides,
    pub loss: Sides,
}

impl Metrics {
    /// mem_acc = acc_in − acc_out and its standard error (None where a side is empty).
    pub fn mem_acc(&self) -> (Option<f64>, Option<f64>) {
        stats::difference(&self.acc.inside, &self.acc.outside)
    }

    /// mem_loss = loss_out − loss_in and its standard error: positive means memorized.
    pub fn mem_loss(&self) -> (Option<f64>, Option<f64>) {
        stats::difference(&self.loss.outside, &self.loss.inside)
    }

    /// [`Metrics::mem_acc`] and [`Metrics::mem_loss`] of a document with a score, nulls
    /// for one without (its unit too large to sample as one).
    pub fn scores_if(&self, scored: bool) -> [(Option<f64>, Option<f64>); 2] {
        if scored { [self.mem_acc(), self.mem_loss()] } else { [(None, None); 2] }
    }

    pub(crate) fn push(&mut self, in_train: bool, acc: f64, loss: f64) {
        self.acc.push(in_train, acc);
        self.loss.push(in_train, loss);
    }

    fn merge(&mut self, other: &Metrics) {
        self.acc.merge(&other.acc);
        self.loss.merge(&other.loss);
    }
}

/// What all logs say at the end of training, per document and per multi-member cluster,
/// and at each earlier checkpoint, per document.
#[derive(Debug, Clone, Default)]
pub struct Accumulated {
    pub docs: Vec<Metrics>,
    /// Training steps at the end (the largest over the models; 0 in logs written before
    /// checkpoints).
    pub step: u32,
    /// Keyed by cluster id, only clusters of two or more documents.
    pub clusters: HashMap<u32, Metrics>,
    /// The checkpoints before the end, in training order.
    pub earlier: Vec<Checkpoint>,
    pub rows: u64,
    /// Distinct models seen, sorted.
    pub models: Vec<u32>,
}

/// Every document's metrics at one checkpoint before the end of training.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The fraction of training (`train.eval_at`).
    pub fraction: f64,
    /// Training steps taken (the largest over the models).
    pub step: u32,
    pub docs: Vec<Metrics>,
}

impl Checkpoint {
    fn merge(&mut self, other: &Checkpoint) {
        for (mine, theirs) in self.docs.iter_mut().zip(&other.docs) {
            mine.merge(theirs);
        }
    }
}

impl Accumulated {
    fn new(docs: usize) -> Accumulated {
        Accumulated { docs: vec![Metrics::default(); docs], ..Default::default() }
    }

    /// The checkpoint at `fraction` (before the end), added empty where this is its first
    /// row; `step` raises its step.
    fn earlier_at(&mut self, fraction: f64, step: u32) -> &mut Checkpoint {
        let at = match self.earlier.binary_search_by(|c| c.fraction.total_cmp(&fraction)) {
            Ok(at) => at,
            Err(at) => {
                let docs = vec![Metrics::default(); self.docs.len()];
                self.earlier.insert(at, Checkpoint { fraction, step, docs });
                at
            }
        };
        let checkpoint = &mut self.earlier[at];
        checkpoint.step = checkpoint.step.max(step);
        checkpoint
    }

    fn merge(mut self, other: Accumulated) -> Accumulated {
        for (mine, theirs) in self.docs.iter_mut().zip(&other.docs) {
            mine.merge(theirs);
        }
        self.step = self.step.max(other.step);
        for theirs in &other.earlier {
            self.earlier_at(theirs.fraction, theirs.step).merge(theirs);
        }
        for (cluster, theirs) in other.clusters {
            self.clusters.entry(cluster).or_default().merge(&theirs);
        }
        self.rows += other.rows;
        self.models.extend(other.models);
        self.models.sort_unstable();
        self.models.dedup();
        self
    }
}

/// A model's running sums over the members of one cluster.
#[derive(Default)]
struct GroupCell {
    acc: f64,
    loss: f64,
    members: u32,
    members_in: u32,
}

/// Reads every log in `logs`, and copies each model's accuracies and membership into
/// `values`. `cluster` gives each document's cluster and `cluster_size` each cluster's size.
/// With `only` (sorted model ids), rows of other models are left out.
pub fn accumulate(
    logs: &[PathBuf],
    only: Option<&[u32]>,
    cluster: &[u32],
    cluster_size: &[u32],
    values: &Mutex<ModelValues>,
) -> Result<Accumulated> {
    // Logs are read a thread's worth at a time and their sums merged in log order, so that
    // the floating-point sums do not depend on how rayon splits the work (a reduce tree
    // would): the scores are the same bits from run to run.
    let mut total = Accumulated::new(cluster.len());
    for chunk in logs.chunks(rayon::current_num_threads().max(1)) {
        let parts: Vec<Accumulated> = chunk
            .par_iter()
            .map(|log| accumulate_file(log, only, cluster, cluster_size, values))
            .collect::<Result<_>>()?;
        total = parts.into_iter().fold(total, Accumulated::merge);
    }
    Ok(total)
}

fn accumulate_file(
    path: &Path,
    only: Option<&[u32]>,
    cluster: &[u32],
    cluster_size: &[u32],
    values: &Mutex<ModelValues>,
) -> Result<Accumulated> {
    let mut acc = Accumulated::new(cluster.len());
    let mut rows = LogRows::new(path, &values.lock().expect("no panics while locked"));
    // Ordered by (model, cluster), so that each cluster's sums are taken in one order.
    let mut groups: BTreeMap<(u32, u32), GroupCell> = BTreeMap::new();
    let mut row = 0usize;
    schema::for_each_batch(path, |batch: LogTable| {
        for i in 0..batch.len() {
            row += 1;
            if only.is_some_and(|models| models.binary_search(&batch.model[i]).is_err()) {
                continue;
            }
            let doc = batch.doc[i] as usize;
            let bad = |message: String| subsets::Error::Row { path: path.to_path_buf(), row, message };
            if doc >= cluster.len() {
                return Err(bad(format!("doc {doc} is not in corpus.parquet ({} documents)", cluster.len())));
            }
            let tokens = f64::from(batch.tokens[i]);
            if tokens == 0.0 {
                return Err(bad("tokens is 0".into()));
            }
            let accuracy = f64::from(batch.correct[i]) / tokens;
            let loss = batch.nll[i] / tokens;
            if batch.checkpoint[i] != FINAL_CHECKPOINT {
                acc.earlier_at(batch.checkpoint[i], batch.step[i]).docs[doc].push(batch.in_train[i], accuracy, loss);
                continue;
            }
            acc.step = acc.step.max(batch.step[i]);
            acc.docs[doc].push(batch.in_train[i], accuracy, loss);
            let cell = Cell {
                in_train: batch.in_train[i],
                acc: accuracy,
                loss,
                min_k: batch.min_k[i],
                min_k_pp: batch.min_k_pp[i],
            };
            rows.push(batch.model[i], doc, cell);
            let c = cluster[doc];
            if cluster_size[c as usize] > 1 {
                let cell = groups.entry((batch.model[i], c)).or_default();
                cell.acc += accuracy;
                cell.loss += loss;
                cell.members += 1;
                cell.members_in += u32::from(batch.in_train[i]);
            }
            acc.models.push(batch.model[i]);
        }
        acc.models.sort_unstable();
        acc.models.dedup();
        Ok(())
    })?;
    acc.rows = row as u64;
    rows.finish(values)?;
    for ((_, c), cell) in groups {
        let whole = cell.members == cluster_size[c as usize];
        let uniform = cell.members_in == 0 || cell.members_in == cell.members;
        if whole && uniform {
            let members = f64::from(cell.members);
            acc.clusters.entry(c).or_default().push(cell.members_in > 0, cell.acc / members, cell.loss / members);
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;
    use subsets::schema::LogRow;

    /// `accumulate` with room for models 0 to 15.
    fn accumulate_all(logs: &[PathBuf], cluster: &[u32], cluster_size: &[u32]) -> Result<Accumulated> {
        let values = Mutex::new(ModelValues::all_documents((0..16).collect(), cluster.len()));
        accumulate(logs, None, cluster, cluster_size, &values)
    }

    fn write_log(dir: &Path, name: &str, rows: &[(u32, u32, bool, u32, f64, u32)]) -> PathBuf {
        let path = dir.join(name);
        let mut log = LogTable::default();
        for &(model, doc, in_train, tokens, nll, correct) in rows {
            let copies = u16::from(in_train);
            log.push(LogRow {
                checkpoint: 1.0,
                step: 10,
                model,
                doc,
                in_train,
                tokens,
                nll,
                correct,
                copies,
                min_k: None,
                min_k_pp: None,
            });
        }
        schema::write(&path, &log, None).unwrap();
        path
    }

    #[test]
    fn hand_computed_document_estimates() {
        let dir = tempfile::tempdir().unwrap();
        // Document 0, 10 tokens: IN for models 0 and 1 (accuracy 0.8, 0.6; loss 1.0, 2.0),
        // OUT for models 2 and 3 (accuracy 0.2, 0.4; loss 3.0, 5.0).
        let a = write_log(dir.path(), "a.parquet", &[(0, 0, true, 10, 10.0, 8), (1, 0, true, 10, 20.0, 6)]);
        let b = write_log(dir.path(), "b.parquet", &[(2, 0, false, 10, 30.0, 2), (3, 0, false, 10, 50.0, 4)]);
        let result = accumulate_all(&[a, b], &[0], &[1]).unwrap();
        let doc = result.docs[0];
        let (mem_acc, se) = stats::difference(&doc.acc.inside, &doc.acc.outside);
        assert!((mem_acc.unwrap() - 0.4).abs() < 1e-12);
        // Both sides have sample variance 0.02: se = sqrt(0.02/2 + 0.02/2).
        assert!((se.unwrap() - 0.02f64.sqrt()).abs() < 1e-12);
        let (mem_loss, loss_se) = stats::difference(&doc.loss.outside, &doc.loss.inside);
        assert!((mem_loss.unwrap() - 2.5).abs() < 1e-12);
        // OUT variance 2.0, IN variance 0.5.
        assert!((loss_se.unwrap() - (2.0f64 / 2.0 + 0.5 / 2.0).sqrt()).abs() < 1e-12);
        assert_eq!(result.rows, 4);
        assert_eq!(result.models, [0, 1, 2, 3]);
    }

    #[test]
    fn cluster_estimates_use_only_models_with_uniform_membership() {
        let dir = tempfile::tempdir().unwrap();
        // Documents 0 and 1 form cluster 0; document 2 is alone.
        let rows = [
            (0, 0, true, 4, 4.0, 4),
            (0, 1, true, 4, 4.0, 2),
            (0, 2, true, 4, 4.0, 4),
            (1, 0, false, 4, 8.0, 0),
            (1, 1, false, 4, 8.0, 2),
            (1, 2, false, 4, 8.0, 0),
            (2, 0, true, 4, 8.0, 0),
            (2, 1, false, 4, 8.0, 0),
            (2, 2, false, 4, 8.0, 0),
        ];
        let log = write_log(dir.path(), "log.parquet", &rows);
        let result = accumulate_all(&[log], &[0, 0, 1], &[2, 1]).unwrap();
        let group = result.clusters[&0];
        assert_eq!(group.acc.inside.n, 1);
        assert_eq!(group.acc.outside.n, 1);
        assert_eq!(group.acc.inside.mean(), Some(0.75));
        assert_eq!(group.acc.outside.mean(), Some(0.25));
        assert!(!result.clusters.contains_key(&1), "singletons have no group entry");
    }

    #[test]
    fn matches_a_direct_computation_on_many_random_logs() {
        let dir = tempfile::tempdir().unwrap();
        let (docs, models) = (7u32, 12u32);
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut all_rows = Vec::new();
        let mut logs = Vec::new();
        for job in 0..4 {
            let mut rows = Vec::new();
            for model in (job * 3)..(job * 3 + 3) {
                for doc in 0..docs {
                    let tokens = 1 + next() % 50;
                    let row =
                        (model, doc, next() % 2 == 0, tokens, f64::from(next() % 1000) / 7.0, next() % (tokens + 1));
                    rows.push(row);
                }
            }
            all_rows.extend(rows.clone());
            logs.push(write_log(dir.path(), &format!("job{job}.parquet"), &rows));
        }
        assert_eq!(all_rows.len() as u32, docs * models);
        let result = accumulate_all(
            &logs,
            &vec![0; docs as usize].iter().enumerate().map(|(i, _)| i as u32).collect::<Vec<_>>(),
            &vec![1; docs as usize],
        )
        .unwrap();
        for doc in 0..docs {
            // Two-pass textbook formulas over the rows of this document.
            let side = |in_train: bool| -> Vec<f64> {
                all_rows
                    .iter()
                    .filter(|r| r.1 == doc && r.2 == in_train)
                    .map(|r| f64::from(r.5) / f64::from(r.3))
                    .collect()
            };
            let (inside, outside) = (side(true), side(false));
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let var = |v: &[f64]| {
                let m = mean(v);
                v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
            };
            let expected = mean(&inside) - mean(&outside);
            let expected_se = (var(&inside) / inside.len() as f64 + var(&outside) / outside.len() as f64).sqrt();
            let m = result.docs[doc as usize];
            let (got, got_se) = stats::difference(&m.acc.inside, &m.acc.outside);
            assert!((got.unwrap() - expected).abs() < 1e-12, "doc {doc}");
            assert!((got_se.unwrap() - expected_se).abs() < 1e-12, "doc {doc}");
        }
    }

    #[test]
    fn a_row_naming_an_unknown_document_is_an_error_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let log = write_log(dir.path(), "bad.parquet", &[(0, 0, true, 3, 1.0, 1), (0, 5, true, 3, 1.0, 1)]);
        let err = accumulate_all(&[log], &[0, 1], &[1, 1]).unwrap_err().to_string();
        assert!(err.contains("bad.parquet: row 2: doc 5 is not in corpus.parquet (2 documents)"), "{err}");
    }
}
