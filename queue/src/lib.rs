//! The job queue of a planned run: which jobs there are, who trains which, which are done,
//! and the loop that trains them, for workers and for the commands that only look.
//!
//! - [`Queue`] is a run's jobs (job id → its models, from `jobs.parquet`), opened without
//!   reading the corpus or tokenizing anything, so `cfmem status` and `cfmem slurm` stay
//!   fast and work whatever became of the tokenizer file.
//! - [`log`] writes a job's log and its completion record, the only proof that a job is
//!   complete, and tells whether a log can be trusted ([`log::LogState`]).
//! - [`claim`] makes sure each job is trained by one worker at a time: create-exclusive
//!   claim files with a heartbeat, taken over when stale.
//! - [`status`] is every job's state ([`status::JobState`]) with throughput and an ETA, and
//!   the report `cfmem status` prints of it ([`status::StatusReport`], text or JSON).
//! - [`slurm`] writes and submits the Slurm job array of a run and reads its tasks' states.
//! - [`verify`] checks every log in full, once per command: the completeness check of
//!   `analyze` and the set of logs the analysis reads.
//! - [`runner`] chooses, claims, skips complete jobs, redoes damaged ones, waits on jobs
//!   other workers hold, and streams and publishes each log, driving a [`Trainer`] and
//!   telling a [`Progress`].
//!
//! It must not know how models are trained (no tch: the trainer is behind [`Trainer`]) nor
//! compute statistics, and it draws nothing on a terminal: it builds and tests without
//! libtorch.

use std::collections::BTreeMap;
use std::path::PathBuf;

use subsets::config::RunConfig;
use subsets::layout::RunDir;
use subsets::membership;
use subsets::schema::{self, JobTable};

pub mod claim;
pub mod log;
pub mod progress;
pub mod runner;
pub mod slurm;
pub mod status;
pub mod verify;

pub use progress::{JobOutcome, Progress, Silent};
pub use runner::{Selection, Trainer, parse_jobs};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Files(#[from] subsets::Error),
    #[error("{0} is not a planned run: no run.toml here (run `cfmem plan` first)")]
    NotPlanned(PathBuf),
    #[error("{path}: {message}")]
    Plan { path: PathBuf, message: String },
    #[error("job {job}: another worker took over its claim")]
    ClaimLost { job: u32 },
    #[error(transparent)]
    Slurm(#[from] slurm::SlurmError),
}

/// The jobs of a planned run, read from `run.toml`, `jobs.parquet` and the header of
/// `membership.bin` only.
pub struct Queue {
    run: RunDir,
    config: RunConfig,
    jobs: BTreeMap<u32, Vec<u32>>,
}

impl Queue {
    pub fn open(run: RunDir) -> Result<Queue> {
        if !run.config().exists() {
            return Err(Error::NotPlanned(run.root().to_path_buf()));
        }
        let config = RunConfig::from_file(&run.config())?;
        let table: JobTable = schema::read(&run.jobs())?;
        let (models, _) = membership::header(&run.membership())?;
        if let Some(model) = table.model.iter().find(|&&m| m >= models) {
            return Err(Error::Plan {
                path: run.jobs(),
                message: format!("model {model} has no row in membership.bin ({models} models)"),
            });
        }
        let mut jobs: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (&job, &model) in table.job.iter().zip(&table.model) {
            jobs.entry(job).or_default().push(model);
        }
        Ok(Queue { run, config, jobs })
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn job_ids(&self) -> Vec<u32> {
        self.jobs.keys().copied().collect()
    }

    /// The models of each job.
    pub fn jobs(&self) -> &BTreeMap<u32, Vec<u32>> {
        &self.jobs
    }

    /// Seconds without a heartbeat after which a claim is stale (`[jobs] claim_timeout`).
    fn claim_timeout(&self) -> f64 {
        self.config.jobs.claim_timeout
    }
}

/// A planned run of `documents` (ids `doc-N`) and `models` models, `stack` per job, whose
/// claims go stale after `claim_timeout` seconds, for the tests of this crate.
#[cfg(test)]
pub(crate) fn test_run(dir: &std::path::Path, documents: usize, models: u32, stack: u32, claim_timeout: f64) -> Queue {
    use subsets::config::{DesignConfig, Hyperparameters};
    use subsets::corpus::Document;
    use subsets::plan::{self, PlanRequest};

    let documents: Vec<Document> = (0..documents)
        .map(|i| Document {
            id: format!("doc-{i}"),
            text: format!("document {i} {}", "ab".repeat(i + 1)),
            source: None,
        })
        .collect();
    let mut hyperparameters = Hyperparameters::default();
    hyperparameters.jobs.stack = stack;
    hyperparameters.jobs.claim_timeout = claim_timeout;
    let request = PlanRequest {
        corpus_path: "test".into(),
        documents,
        seed: 3,
        design: DesignConfig::documents(models, 0.5),
        hyperparameters,
        background: None,
        base: None,
        fields: Default::default(),
    };
    let run = RunDir::new(dir.join("run"));
    plan::write(&run, &plan::build(request).unwrap()).unwrap();
    Queue::open(run).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_the_jobs_of_the_plan_and_needs_no_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 6, 8, 3, 60.0);
        assert_eq!(queue.job_ids(), [0, 1, 2]);
        assert_eq!(queue.jobs()[&2], [6, 7]);
        assert_eq!(queue.config().jobs.claim_timeout, 60.0);
        std::fs::remove_file(queue.run_dir().corpus()).unwrap();
        assert!(Queue::open(queue.run_dir().clone()).is_ok(), "the corpus is not read");

        let err = Queue::open(RunDir::new(dir.path())).err().unwrap();
        let root = dir.path().display();
        assert_eq!(err.to_string(), format!("{root} is not a planned run: no run.toml here (run `cfmem plan` first)"));
    }
}
