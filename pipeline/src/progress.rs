//! Progress bars for `cfmem run`: jobs done with an ETA, and the current stack's steps.
//! Events that say what this worker does (a job started or done, with the time it spent
//! evaluating; a claim taken over; waiting for other workers) are also printed as lines,
//! which stay in logs where no bar is drawn.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use queue::JobOutcome;
use queue::claim::ClaimInfo;
use queue::progress::JobClock;

pub struct Bars {
    multi: MultiProgress,
    jobs: ProgressBar,
    stack: ProgressBar,
    /// The jobs last reported as claimed elsewhere, so each wait is told once.
    waiting: std::sync::Mutex<Vec<u32>>,
    clock: std::sync::Mutex<JobClock>,
}

impl Bars {
    pub fn new(jobs: usize) -> Bars {
        let multi = MultiProgress::new();
        let style = |template: &str| ProgressStyle::with_template(template).expect("valid template");
        let job_bar = multi.add(
            ProgressBar::new(jobs as u64)
                .with_style(style("jobs  {bar:30} {pos}/{len} {msg} elapsed {elapsed} eta {eta}")),
        );
        let stack = multi.add(ProgressBar::new(0).with_style(style("steps {bar:30} {pos}/{len} {msg}")));
        Bars { multi, jobs: job_bar, stack, waiting: Default::default(), clock: Default::default() }
    }

    /// Prints `line` above the bars (or alone when there are none).
    fn say(&self, line: String) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, JobClock> {
        self.clock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn finish(&self) {
        self.stack.finish_and_clear();
        self.jobs.finish();
    }
}

impl queue::Progress for Bars {
    fn job_started(&self, job: u32, models: usize) {
        self.say(format!("job {job}: training {models} models (pid {})", std::process::id()));
        *self.clock() = JobClock::start();
        self.jobs.set_message(format!("job {job} ({models} models)"));
    }

    fn claim_taken_over(&self, job: u32, stale: &ClaimInfo) {
        self.say(format!("job {job}: took over the stale claim of {} ({})", stale.describe(), stale.staleness()));
    }

    fn waiting_for_claims(&self, jobs: &[u32]) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *waiting != jobs {
            self.say(format!("waiting for jobs {jobs:?}, claimed by other workers"));
            *waiting = jobs.to_vec();
        }
    }

    fn stack_started(&self, models: &[u32], steps: usize) {
        self.stack.reset();
        self.stack.set_length(steps as u64);
        self.stack.set_message(format!("{} training", models_label(models)));
    }

    fn training_step(&self, step: usize, loss: Option<f64>) {
        self.clock().training();
        self.stack.set_position(step as u64);
        if let Some(loss) = loss {
            self.stack.set_message(format!("mean loss {loss:.3}"));
        }
    }

    fn evaluating(&self, models: &[u32], checkpoint: f64) {
        let at = if checkpoint < 1.0 { format!(" at {:.0}% of training", 100.0 * checkpoint) } else { String::new() };
        self.stack.set_message(format!("{} evaluating{at}", models_label(models)));
        self.clock().evaluating();
    }

    fn job_finished(&self, job: u32, outcome: &JobOutcome) {
        if let JobOutcome::Redone(reason) = outcome {
            self.say(format!("job {job}: {reason}; ran it again"));
        }
        let time = self.clock().finish();
        if let Some(time) = time {
            self.say(format!("job {job}: {time}"));
        }
        self.jobs.inc(1);
    }
}

/// "models 4–7" for a stack, "model 3" for one model.
fn models_label(models: &[u32]) -> String {
    match models {
        [one] => format!("model {one}"),
        [first, .., last] => format!("models {first}–{last}"),
        [] => "no models".to_string(),
    }
}
