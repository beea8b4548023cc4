//! Progress bars for `cfmem run`: jobs done with an ETA, and the current model's steps.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use jobs::JobOutcome;

pub struct Bars {
    multi: MultiProgress,
    jobs: ProgressBar,
    model: ProgressBar,
}

impl Bars {
    pub fn new(jobs: usize) -> Bars {
        let multi = MultiProgress::new();
        let style = |template: &str| ProgressStyle::with_template(template).expect("valid template");
        let job_bar = multi.add(
            ProgressBar::new(jobs as u64)
                .with_style(style("jobs  {bar:30} {pos}/{len} {msg} elapsed {elapsed} eta {eta}")),
        );
        let model = multi.add(ProgressBar::new(0).with_style(style("steps {bar:30} {pos}/{len} {msg}")));
        Bars { multi, jobs: job_bar, model }
    }

    pub fn finish(&self) {
        self.model.finish_and_clear();
        self.jobs.finish();
    }
}

impl jobs::Progress for Bars {
    fn job_started(&self, job: u32, models: usize) {
        self.jobs.set_message(format!("job {job} ({models} models)"));
    }

    fn model_started(&self, model: u32, steps: usize) {
        self.model.reset();
        self.model.set_length(steps as u64);
        self.model.set_message(format!("model {model} training"));
    }

    fn training_step(&self, model: u32, step: usize, loss: Option<f64>) {
        self.model.set_position(step as u64);
        if let Some(loss) = loss {
            self.model.set_message(format!("model {model} loss {loss:.3}"));
        }
    }

    fn evaluating(&self, model: u32) {
        self.model.set_message(format!("model {model} evaluating"));
    }

    fn job_finished(&self, job: u32, outcome: &JobOutcome) {
        if let JobOutcome::Redone(reason) = outcome {
            // Printed above the bars so it stays on screen.
            let _ = self.multi.println(format!("job {job}: {reason}; ran it again"));
        }
        self.jobs.inc(1);
    }
}
