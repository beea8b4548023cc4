//! What the runner and the trainer tell a front end while jobs run, what became of each
//! job, and where a job's time went ([`JobClock`]), from those events.

use std::fmt;
use std::time::{Duration, Instant};

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

/// What a worker did with its jobs, as `N jobs ran, M redone, K already complete`.
pub fn describe_outcomes(outcomes: &[(u32, JobOutcome)]) -> String {
    let count = |f: fn(&JobOutcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    format!(
        "{} jobs ran, {} redone, {} already complete",
        count(|o| *o == JobOutcome::Ran),
        count(|o| matches!(o, JobOutcome::Redone(_))),
        count(|o| *o == JobOutcome::Skipped)
    )
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

/// Where the time of the job in progress goes, kept from the events a [`Progress`] is told:
/// the whole job, and how much of it evaluating, at how many checkpoints.
#[derive(Debug, Default)]
pub struct JobClock {
    started: Option<Instant>,
    /// Since when the stack is evaluated, while it is.
    evaluating_since: Option<Instant>,
    evaluating: Duration,
    checkpoints: usize,
}

/// What a job spent, as [`JobClock::finish`] tells it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobTime {
    pub total: Duration,
    pub evaluating: Duration,
    pub checkpoints: usize,
}

impl JobClock {
    /// The clock of a job that starts now.
    pub fn start() -> JobClock {
        JobClock { started: Some(Instant::now()), ..JobClock::default() }
    }

    /// A training step: the evaluation in progress, if any, has ended.
    pub fn training(&mut self) {
        if let Some(since) = self.evaluating_since.take() {
            self.evaluating += since.elapsed();
        }
    }

    /// An evaluation at a checkpoint starts.
    pub fn evaluating(&mut self) {
        self.training();
        self.evaluating_since = Some(Instant::now());
        self.checkpoints += 1;
    }

    /// The job has ended: what it spent, if it was started; the clock is stopped.
    pub fn finish(&mut self) -> Option<JobTime> {
        self.training();
        let started = self.started.take()?;
        Some(JobTime { total: started.elapsed(), evaluating: self.evaluating, checkpoints: self.checkpoints })
    }
}

impl fmt::Display for JobTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.checkpoints == 1 { "" } else { "s" };
        write!(
            f,
            "done in {:.1} s, {:.1} s of it evaluating at {} checkpoint{plural}",
            self.total.as_secs_f64(),
            self.evaluating.as_secs_f64(),
            self.checkpoints
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_clock_counts_the_evaluations_and_their_time() {
        let mut clock = JobClock::start();
        clock.evaluating();
        std::thread::sleep(Duration::from_millis(20));
        clock.training();
        std::thread::sleep(Duration::from_millis(20));
        clock.evaluating();
        let time = clock.finish().expect("started");
        assert_eq!(time.checkpoints, 2);
        assert!(
            time.evaluating >= Duration::from_millis(20) && time.total >= time.evaluating + Duration::from_millis(20)
        );
        assert!(time.to_string().ends_with("s of it evaluating at 2 checkpoints"), "{time}");
        assert_eq!(clock.finish(), None, "a finished clock is stopped");
        assert_eq!(JobClock::default().finish(), None, "a clock never started has nothing to tell");
    }
}
