//! What the runner and the trainer tell a front end while jobs run, and what became of
//! each job.

use crate::claim::ClaimInfo;

/// What a worker did with a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The log was already complete.
    Skipped,
    Ran,
    /// The log was damaged (the reason says how); it was redone.
    Redone(&'static str),
}

/// What a front end is told while jobs run. Every method has an empty default.
pub trait Progress {
    fn job_started(&self, _job: u32, _models: usize) {}
    /// A stack of these models starts training for `steps` steps.
    fn stack_started(&self, _models: &[u32], _steps: usize) {}
    /// After each step; `loss` (the stack's mean) every few steps, as often as the trainer
    /// reads it.
    fn training_step(&self, _step: usize, _loss: Option<f64>) {}
    /// The stack is evaluated at `checkpoint`, a fraction of its training (1.0 at the end).
    fn evaluating(&self, _models: &[u32], _checkpoint: f64) {}
    fn job_finished(&self, _job: u32, _outcome: &JobOutcome) {}
    /// The stale claim `stale` on `job` was broken and the job taken over.
    fn claim_taken_over(&self, _job: u32, _stale: &ClaimInfo) {}
    /// These jobs are claimed by other workers; the runner polls until they are done.
    fn waiting_for_claims(&self, _jobs: &[u32]) {}
}

/// A progress sink that reports nothing.
pub struct Silent;
impl Progress for Silent {}
