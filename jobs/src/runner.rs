//! Choosing and running the jobs of a planned run. A job is one stack of models: the runner
//! hands the stack to [`train::train_and_evaluate`] and writes the rows it returns to the
//! job's own log file atomically, then a completion record with the log's checksum. A job
//! never touches another job's files, so jobs can run in separate processes.

use std::collections::BTreeMap;

use tch::Device;

use subsets::config::RunConfig;
use subsets::corpus;
use subsets::layout::{Completion, LogState, RunDir};
use subsets::schema::{self, CorpusTable, JobTable, LogTable, MembershipTable, Table};

use crate::progress::Progress;
use crate::train::{self, StackInput};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The log was already complete and matched its checksum.
    Skipped,
    Ran,
    /// The log was missing its completion record or failed its checksum; it was redone.
    Redone(&'static str),
}

/// A planned run, loaded once, whose jobs can be run.
pub struct RunJobs {
    run: RunDir,
    config: RunConfig,
    /// Byte tokens of every document, truncated to the model's context.
    texts: Vec<Vec<u8>>,
    copies: Vec<u16>,
    holdout: Vec<bool>,
    /// For each model, the documents it trains on, sorted.
    in_docs: Vec<Vec<u32>>,
    jobs: BTreeMap<u32, Vec<u32>>,
}

fn plan_error(path: std::path::PathBuf, message: String) -> Error {
    Error::Plan { path, message }
}

impl RunJobs {
    pub fn open(run: RunDir) -> Result<RunJobs> {
        if !run.config().exists() {
            return Err(plan_error(
                run.root().to_path_buf(),
                "no run.toml here: not a planned run (run `cfmem plan` first)".into(),
            ));
        }
        let config = RunConfig::from_file(&run.config())?;
        let corpus: CorpusTable = schema::read(&run.corpus())?;
        let max_tokens = config.model.max_tokens();
        let texts = corpus.text.iter().map(|text| corpus::byte_tokens(text, max_tokens).to_vec()).collect();
        let membership: MembershipTable = schema::read(&run.membership())?;
        let mut in_docs = vec![Vec::new(); config.design.models as usize];
        for (&model, &doc) in membership.model.iter().zip(&membership.doc) {
            let docs = in_docs.get_mut(model as usize).ok_or_else(|| {
                plan_error(
                    run.membership(),
                    format!("model {model} is not among the {} models of run.toml", config.design.models),
                )
            })?;
            if doc as usize >= corpus.doc.len() {
                return Err(plan_error(run.membership(), format!("document {doc} is not in corpus.parquet")));
            }
            docs.push(doc);
        }
        in_docs.iter_mut().for_each(|docs| docs.sort_unstable());
        let job_table: JobTable = schema::read(&run.jobs())?;
        let mut jobs: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (&job, &model) in job_table.job.iter().zip(&job_table.model) {
            jobs.entry(job).or_default().push(model);
        }
        Ok(RunJobs { run, config, texts, copies: corpus.copies, holdout: corpus.holdout, in_docs, jobs })
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn job_ids(&self) -> Vec<u32> {
        self.jobs.keys().copied().collect()
    }

    /// Runs every job whose log is not complete; returns each job's outcome.
    pub fn run_all(&self, device: Device, progress: &dyn Progress) -> Result<Vec<(u32, JobOutcome)>> {
        let mut outcomes = Vec::new();
        for job in self.job_ids() {
            let outcome = match self.run.log_state(job)? {
                LogState::Complete => JobOutcome::Skipped,
                LogState::NotRun => {
                    self.run_job(job, device, progress)?;
                    JobOutcome::Ran
                }
                LogState::Damaged(reason) => {
                    self.run_job(job, device, progress)?;
                    JobOutcome::Redone(reason)
                }
            };
            progress.job_finished(job, &outcome);
            outcomes.push((job, outcome));
        }
        Ok(outcomes)
    }

    /// Trains and evaluates the models of `job` and writes its log and completion record.
    pub fn run_job(&self, job: u32, device: Device, progress: &dyn Progress) -> Result<()> {
        let models =
            self.jobs.get(&job).ok_or_else(|| plan_error(self.run.jobs(), format!("there is no job {job}")))?;
        let done = self.run.log_done(job);
        if done.exists() {
            std::fs::remove_file(&done).map_err(subsets::Error::io(&done))?;
        }
        progress.job_started(job, models.len());
        let stack: Vec<(u32, &[u32])> = models.iter().map(|&m| (m, self.in_docs[m as usize].as_slice())).collect();
        let input = StackInput {
            config: &self.config,
            documents: &self.texts,
            copies: &self.copies,
            holdout: &self.holdout,
            models: &stack,
        };
        let mut log = LogTable::default();
        train::train_and_evaluate(&input, device, progress, &mut |part| {
            log.append(part);
            Ok(())
        })?;
        let path = self.run.log(job);
        schema::write(&path, &log)?;
        Completion::of_file(&path, log.model.len() as u64)?.write(&done)?;
        Ok(())
    }
}
