//! What the runner and the trainer tell a front end while jobs run.

use crate::runner::JobOutcome;

/// What a front end is told while jobs run. Every method has an empty default.
pub trait Progress {
    fn job_started(&self, _job: u32, _models: usize) {}
    /// A stack of these models starts training for `steps` steps.
    fn stack_started(&self, _models: &[u32], _steps: usize) {}
    /// After each step; `loss` (the stack's mean) every [`crate::train::LOSS_EVERY`] steps.
    fn training_step(&self, _step: usize, _loss: Option<f64>) {}
    fn evaluating(&self, _models: &[u32]) {}
    fn job_finished(&self, _job: u32, _outcome: &JobOutcome) {}
}

/// A progress sink that reports nothing.
pub struct Silent;
impl Progress for Silent {}
