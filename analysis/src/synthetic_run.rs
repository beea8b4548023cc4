//! Planned runs with synthetic logs, for tests and benchmarks of the analysis: a real plan
//! (`subsets::plan`, duplicate scores included) of given documents, and for every model
//! and document a log row whose numbers a caller-given function chooses from the model's
//! training set, so that the right answer is known; or the logs alone of a run `cfmem plan`
//! planned ([`write_logs`]). Logs are written with completion records, as `cfmem run` writes
//! them.

use rayon::prelude::*;

use queue::log::{JobRecord, LogWriter};
use subsets::config::{DesignConfig, Hyperparameters, RunConfig, Unit};
use subsets::corpus::Document;
use subsets::layout::RunDir;
use subsets::membership::Membership;
use subsets::plan::{self, Plan, PlanRequest};
use subsets::schema::{FINAL_CHECKPOINT, LogRow, LogTable};

use crate::Result;

/// What to plan.
#[derive(Debug, Clone)]
pub struct Spec {
    pub documents: Vec<Document>,
    pub models: u32,
    /// Models per job (one log each).
    pub stack: u32,
    pub seed: u64,
    pub unit: Unit,
    pub holdout_ids: Vec<String>,
}

/// A log row's numbers: predicted positions, correct ones and summed loss (nats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub tokens: u32,
    pub correct: u32,
    pub nll: f64,
}

/// Plans `spec` into `run` and writes every job's log, row (model, doc) from
/// `row(model, doc, in_train)` where `in_train[d]` says whether document d is in the
/// model's training set. Returns the plan. Every unit is sampled whole, however large.
pub fn write(run: &RunDir, spec: &Spec, row: impl Fn(u32, usize, &[bool]) -> Row + Sync) -> Result<Plan> {
    write_limited(run, spec, 1.0, row)
}

/// As [`write()`], with units of more than `max_unit_fraction` of the documents falling back.
pub fn write_limited(
    run: &RunDir,
    spec: &Spec,
    max_unit_fraction: f64,
    row: impl Fn(u32, usize, &[bool]) -> Row + Sync,
) -> Result<Plan> {
    let design = DesignConfig {
        unit: spec.unit.clone(),
        max_unit_fraction: Some(max_unit_fraction),
        holdout_ids: spec.holdout_ids.clone(),
        ..DesignConfig::documents(spec.models, 0.5)
    };
    write_design(run, spec, design, &[FINAL_CHECKPOINT], |_, model, doc, in_train| row(model, doc, in_train))
}

/// As [`write()`], every model evaluated at the checkpoints `eval_at` (ending in 1.0), row
/// (checkpoint, model, doc) from `row(checkpoint, model, doc, in_train)`.
pub fn write_checkpoints(
    run: &RunDir,
    spec: &Spec,
    eval_at: &[f64],
    row: impl Fn(f64, u32, usize, &[bool]) -> Row + Sync,
) -> Result<Plan> {
    let design = DesignConfig {
        unit: spec.unit.clone(),
        holdout_ids: spec.holdout_ids.clone(),
        ..DesignConfig::documents(spec.models, 0.5)
    };
    write_design(run, spec, design, eval_at, row)
}

/// As [`write()`], a spectrum run over `levels` (finest first, `spec.unit` ignored), units of
/// more than `max_unit_fraction` of the documents falling back.
pub fn write_spectrum(
    run: &RunDir,
    spec: &Spec,
    levels: &[Unit],
    max_unit_fraction: f64,
    row: impl Fn(u32, usize, &[bool]) -> Row + Sync,
) -> Result<Plan> {
    let design = DesignConfig {
        unit: levels[0].clone(),
        spectrum: subsets::config::blocks(levels, spec.models),
        max_unit_fraction: Some(max_unit_fraction),
        holdout_ids: spec.holdout_ids.clone(),
        ..DesignConfig::documents(spec.models, 0.5)
    };
    write_design(run, spec, design, &[FINAL_CHECKPOINT], |_, model, doc, in_train| row(model, doc, in_train))
}

/// Checkpoint c of `eval_at` is logged as this many steps: 100 per tenth of training.
fn synthetic_step(checkpoint: f64) -> u32 {
    (checkpoint * 1000.0).round() as u32
}

fn write_design(
    run: &RunDir,
    spec: &Spec,
    design: DesignConfig,
    eval_at: &[f64],
    row: impl Fn(f64, u32, usize, &[bool]) -> Row + Sync,
) -> Result<Plan> {
    let mut hyperparameters = Hyperparameters::default();
    hyperparameters.jobs.stack = spec.stack;
    hyperparameters.train.eval_at = eval_at.to_vec();
    let request = PlanRequest {
        corpus_path: "synthetic".into(),
        documents: spec.documents.clone(),
        seed: spec.seed,
        design,
        hyperparameters,
        background: None,
        base: None,
        fields: Default::default(),
    };
    let plan = plan::build(request)?;
    plan::write(run, &plan)?;
    write_logs(run, row)?;
    Ok(plan)
}

/// Writes every job's log of the planned run `run` (as `cfmem plan` or [`write()`] left it),
/// at each of its checkpoints, row (checkpoint, model, doc) from
/// `row(checkpoint, model, doc, in_train)`, with the completion records `cfmem run` writes.
pub fn write_logs(run: &RunDir, row: impl Fn(f64, u32, usize, &[bool]) -> Row + Sync) -> Result<()> {
    let config = RunConfig::from_file(&run.config())?;
    let membership = Membership::read(&run.membership())?;
    let (models, stack, docs) = (config.design.models, config.jobs.stack, membership.documents() as usize);
    (0..models.div_ceil(stack)).into_par_iter().try_for_each(|job| -> Result<()> {
        let mut log = LogTable::default();
        let models = job * stack..((job + 1) * stack).min(models);
        for &checkpoint in &config.train.eval_at {
            let step = synthetic_step(checkpoint);
            for model in models.clone() {
                let in_train: Vec<bool> = (0..docs as u32).map(|doc| membership.contains(model, doc)).collect();
                for (doc, &inside) in in_train.iter().enumerate() {
                    let Row { tokens, correct, nll } = row(checkpoint, model, doc, &in_train);
                    let copies = u16::from(inside);
                    let doc = doc as u32;
                    // No tokens to rank: the per-token statistics stand in as multiples of the mean
                    // log-likelihood, which they follow in real logs.
                    let mean = -nll / f64::from(tokens.max(1));
                    let (min_k, min_k_pp) = (Some(3.0 * mean), Some(2.0 * mean));
                    log.push(LogRow {
                        checkpoint,
                        step,
                        model,
                        doc,
                        in_train: inside,
                        tokens,
                        nll,
                        correct,
                        copies,
                        min_k,
                        min_k_pp,
                    });
                }
            }
        }
        let mut writer = LogWriter::create(run, job, config.seed)?;
        writer.write(&log)?;
        let models = models.len();
        writer.publish(JobRecord { models: models as u32, host: "synthetic".into(), started: 0.0 })?;
        Ok(())
    })
}

/// `n` distinct documents, `doc-N`, of about 60 bytes of words drawn from `seed`.
pub fn documents(n: usize, seed: u64) -> Vec<Document> {
    use rand::RngExt;
    let mut rng = subsets::seeds::rng(seed, "synthetic-run", 0);
    (0..n)
        .map(|i| {
            let words: Vec<String> = (0..8).map(|_| format!("w{:x}", rng.random::<u32>())).collect();
            Document { id: format!("doc-{i}"), text: words.join(" "), source: None }
        })
        .collect()
}
