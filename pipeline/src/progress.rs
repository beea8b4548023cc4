//! Progress bars for `cfmem run`: jobs done with an ETA, and the current stack's steps.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use jobs::JobOutcome;

pub struct Bars {
    multi: MultiProgress,
    jobs: ProgressBar,
    stack: ProgressBar,
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
        Bars { multi, jobs: job_bar, stack }
    }

    pub fn finish(&self) {
        self.stack.finish_and_clear();
        self.jobs.finish();
    }
}

impl jobs::Progress for Bars {
    fn job_started(&self, job: u32, models: usize) {
        self.jobs.set_message(format!("job {job} ({models} models)"));
    }

    fn stack_started(&self, models: &[u32], steps: usize) {
        self.stack.reset();
        self.stack.set_length(steps as u64);
        self.stack.set_message(format!("{} training", models_label(models)));
    }

    fn training_step(&self, step: usize, loss: Option<f64>) {
        self.stack.set_position(step as u64);
        if let Some(loss) = loss {
            self.stack.set_message(format!("mean loss {loss:.3}"));
        }
    }

    fn evaluating(&self, models: &[u32]) {
        self.stack.set_message(format!("{} evaluating", models_label(models)));
    }

    fn job_finished(&self, job: u32, outcome: &JobOutcome) {
        if let JobOutcome::Redone(reason) = outcome {
            // Printed above the bars so it stays on screen.
            let _ = self.multi.println(format!("job {job}: {reason}; ran it again"));
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
