//! The complete logs of a run, as the job queue verified them, and, read from them, every
//! model's metrics on chosen documents at the end of training (the final checkpoint), one
//! `f32` row per model, with whether each document was in the model's training set (from
//! the logs' `in_train`, never from `membership.bin`): the matrices that the bootstrap, the reliability measures and the influence GEMMs
//! multiply.
//!
//! At M models, N documents and K documents whose metrics are kept that is M·N bytes of
//! membership plus 4·M·K bytes of accuracy (and as many of loss when asked for): 500 MB
//! at 1,000 × 100,000 with every accuracy kept. A log is read into rows of its own models
//! (its stack: a few rows of N) and copied in when complete, so reading in parallel adds
//! only a few rows per thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use queue::Queue;
use queue::verify::Verified;
use subsets::config::DesignConfig;
use subsets::layout::RunDir;
use subsets::schema::{self, FINAL_CHECKPOINT, LogTable, Table};

use crate::{Error, Result};

/// The complete logs of a run and the models they hold.
#[derive(Debug, Clone)]
pub struct RunLogs {
    pub logs: Vec<PathBuf>,
    /// Models of the complete jobs, sorted.
    pub models: Vec<u32>,
    /// Jobs of the plan, complete or not.
    pub jobs: usize,
}

impl RunLogs {
    /// The complete logs of `run`, each checked in full against its completion record; an
    /// unplanned run or one without a complete log is an error that says what to do.
    pub fn open(run: &RunDir) -> Result<RunLogs> {
        RunLogs::new(&Queue::open(run.clone())?.verify()?)
    }

    /// The logs `verified` found complete, without reading them again.
    pub fn new(verified: &Verified) -> Result<RunLogs> {
        let logs = verified.complete_logs();
        if logs.is_empty() {
            return Err(Error::NoCompleteLogs { run: verified.run_dir().root().to_path_buf() });
        }
        Ok(RunLogs { logs, models: verified.complete_models(), jobs: verified.jobs().len() })
    }
}

impl RunLogs {
    /// In a spectrum run, the models of its finest level (its first block) among the
    /// complete ones: what its scores and influence rest on. None in a single-level run,
    /// whose scores rest on every model.
    fn finest_level_models(&self, design: &DesignConfig) -> Option<Vec<u32>> {
        let block = design.spectrum.first()?.model_ids();
        Some(self.models.iter().copied().filter(|m| block.binary_search(m).is_ok()).collect())
    }

    /// Room for the values of the models the run's scores rest on (see
    /// `RunLogs::finest_level_models`), rows of the others skipped when reading.
    pub fn scored_values(&self, design: &DesignConfig, docs: usize, kept: Vec<u32>, with_loss: bool) -> ModelValues {
        let only = self.finest_level_models(design);
        let mut values = ModelValues::new(only.clone().unwrap_or_else(|| self.models.clone()), docs, kept, with_loss);
        values.only_these = only.is_some();
        values
    }
}

/// Metrics by model (rows, `models` order) and kept document (columns, `kept` order), and
/// membership by model and document.
#[derive(Debug, Clone, Default)]
pub struct ModelValues {
    /// Model ids, sorted: row r is model `models[r]`.
    pub models: Vec<u32>,
    pub docs: usize,
    /// Documents whose metrics are kept: column c is document `kept[c]`.
    pub kept: Vec<u32>,
    /// Per-token accuracy, `models.len() × kept.len()`, row-major.
    pub acc: Vec<f32>,
    /// Per-token loss, same layout, only when asked for.
    pub loss: Option<Vec<f32>>,
    /// The logs' Min-K% and Min-K%++ statistics, same layout, only when asked for
    /// ([`ModelValues::with_token_statistics`]; NaN where a log has none: written before
    /// schema version 4).
    pub min_k: Option<[Vec<f32>; 2]>,
    /// In the model's training set, `models.len() × docs`.
    pub member: Vec<bool>,
    /// Whether a model's rows were read.
    filled: Vec<bool>,
    /// Rows of models not in `models` are skipped rather than refused: the values of some
    /// of a run's models (one block of a spectrum run).
    pub only_these: bool,
}

impl ModelValues {
    /// Room for `models` (any order) over `docs` documents, keeping the metrics of `kept`.
    pub fn new(mut models: Vec<u32>, docs: usize, kept: Vec<u32>, with_loss: bool) -> ModelValues {
        models.sort_unstable();
        models.dedup();
        let cells = models.len() * kept.len();
        ModelValues {
            filled: vec![false; models.len()],
            member: vec![false; models.len() * docs],
            acc: vec![f32::NAN; cells],
            loss: with_loss.then(|| vec![f32::NAN; cells]),
            min_k: None,
            models,
            docs,
            kept,
            only_these: false,
        }
    }

    /// The same room, keeping the logs' Min-K% and Min-K%++ statistics too.
    pub fn with_token_statistics(self) -> ModelValues {
        let cells = self.models.len() * self.kept.len();
        ModelValues { min_k: Some([vec![f32::NAN; cells], vec![f32::NAN; cells]]), ..self }
    }

    /// Room for `models` over `docs` documents, keeping every document's accuracy.
    pub fn all_documents(models: Vec<u32>, docs: usize) -> ModelValues {
        ModelValues::new(models, docs, (0..docs as u32).collect(), false)
    }

    /// Fails naming a model none of whose log rows was read.
    pub fn check_complete(&self) -> Result<()> {
        match self.filled.iter().position(|&filled| !filled) {
            Some(r) => Err(Error::ModelWithoutRows { model: self.models[r] }),
            None => Ok(()),
        }
    }

    pub fn row(&self, model: u32) -> Option<usize> {
        self.models.binary_search(&model).ok()
    }

    /// The accuracies of model row `row` on the kept documents.
    pub fn acc_row(&self, row: usize) -> &[f32] {
        let width = self.kept.len();
        &self.acc[row * width..(row + 1) * width]
    }

    pub fn member_row(&self, row: usize) -> &[bool] {
        &self.member[row * self.docs..(row + 1) * self.docs]
    }
}

/// The rows of one log, collected before they are copied into the shared [`ModelValues`].
pub(crate) struct LogRows<'a> {
    path: &'a Path,
    docs: usize,
    with_loss: bool,
    with_token_statistics: bool,
    rows: HashMap<u32, ModelRow>,
}

/// One model's rows of a log, over all documents.
struct ModelRow {
    acc: Vec<f32>,
    /// Empty unless losses are kept.
    loss: Vec<f32>,
    /// Min-K% and Min-K%++, empty unless kept.
    min_k: [Vec<f32>; 2],
    member: Vec<bool>,
    seen: usize,
}

/// One log row's numbers at the end of training.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cell {
    pub in_train: bool,
    /// Per-token accuracy and loss.
    pub acc: f64,
    pub loss: f64,
    pub min_k: Option<f64>,
    pub min_k_pp: Option<f64>,
}

impl<'a> LogRows<'a> {
    /// Rows of the log at `path` for the room of `values`: its losses and token statistics
    /// kept if it keeps them.
    pub(crate) fn new(path: &'a Path, values: &ModelValues) -> LogRows<'a> {
        LogRows {
            path,
            docs: values.docs,
            with_loss: values.loss.is_some(),
            with_token_statistics: values.min_k.is_some(),
            rows: HashMap::new(),
        }
    }

    pub(crate) fn push(&mut self, model: u32, doc: usize, cell: Cell) {
        let docs = self.docs;
        let (with_loss, with_token_statistics) = (self.with_loss, self.with_token_statistics);
        let kept = |keep: bool| if keep { vec![f32::NAN; docs] } else { Vec::new() };
        let row = self.rows.entry(model).or_insert_with(|| ModelRow {
            acc: vec![f32::NAN; docs],
            loss: kept(with_loss),
            min_k: [kept(with_token_statistics), kept(with_token_statistics)],
            member: vec![false; docs],
            seen: 0,
        });
        row.acc[doc] = cell.acc as f32;
        if with_loss {
            row.loss[doc] = cell.loss as f32;
        }
        if with_token_statistics {
            row.min_k[0][doc] = cell.min_k.map_or(f32::NAN, |v| v as f32);
            row.min_k[1][doc] = cell.min_k_pp.map_or(f32::NAN, |v| v as f32);
        }
        row.member[doc] = cell.in_train;
        row.seen += 1;
    }

    /// Copies the rows in; every model of the log must have one row per document.
    pub(crate) fn finish(self, target: &Mutex<ModelValues>) -> Result<()> {
        let mut values = target.lock().expect("no panics while locked");
        for (model, ModelRow { acc, loss, min_k, member, seen }) in self.rows {
            let bad = |problem: String| Error::BadLog { path: self.path.to_path_buf(), model, problem };
            if seen != self.docs || acc.iter().any(|a| a.is_nan()) {
                return Err(bad(format!("has {seen} rows, not one per document ({})", self.docs)));
            }
            let row = match values.row(model) {
                Some(row) => row,
                None if values.only_these => continue,
                None => return Err(bad("is not a model of its job in jobs.parquet".into())),
            };
            let width = values.kept.len();
            for c in 0..width {
                let doc = values.kept[c] as usize;
                values.acc[row * width + c] = acc[doc];
                if let Some(all) = values.loss.as_mut() {
                    all[row * width + c] = loss[doc];
                }
                if let Some(all) = values.min_k.as_mut() {
                    all[0][row * width + c] = min_k[0][doc];
                    all[1][row * width + c] = min_k[1][doc];
                }
            }
            values.member[row * self.docs..(row + 1) * self.docs].copy_from_slice(&member);
            values.filled[row] = true;
        }
        Ok(())
    }
}

/// Reads `logs` into `values` (their rows name only its models).
pub fn read(logs: &[PathBuf], values: ModelValues) -> Result<ModelValues> {
    let docs = values.docs;
    let target = Mutex::new(values);
    logs.par_iter().try_for_each(|path| {
        let mut rows = LogRows::new(path, &target.lock().expect("no panics while locked"));
        let mut row = 0usize;
        schema::for_each_batch(path, |batch: LogTable| {
            for i in 0..batch.len() {
                row += 1;
                if batch.checkpoint[i] != FINAL_CHECKPOINT {
                    continue;
                }
                let doc = batch.doc[i] as usize;
                let tokens = f64::from(batch.tokens[i]);
                if doc >= docs || tokens == 0.0 {
                    let message = format!("doc {doc} of {docs} documents with {tokens} tokens");
                    return Err(subsets::Error::Row { path: path.to_path_buf(), row, message });
                }
                let cell = Cell {
                    in_train: batch.in_train[i],
                    acc: f64::from(batch.correct[i]) / tokens,
                    loss: batch.nll[i] / tokens,
                    min_k: batch.min_k[i],
                    min_k_pp: batch.min_k_pp[i],
                };
                rows.push(batch.model[i], doc, cell);
            }
            Ok(())
        })?;
        rows.finish(&target)
    })?;
    let values = target.into_inner().expect("no panics while locked");
    values.check_complete()?;
    Ok(values)
}
