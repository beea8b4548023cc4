//! Choosing, claiming, running and publishing the jobs of a planned run. A worker tokenizes
//! the run's documents (and background) once. A job is one stack of models: a worker claims
//! it ([`crate::claim`]), reads only its models' membership rows, hands the stack to
//! [`train::train_and_evaluate`] and streams the rows it returns into the job's log, row
//! group by row group; the log is published (renamed into place, then its completion record
//! written) only when the whole stack is done, so a killed worker loses at most the stack it
//! was training. A job never touches another job's files, so any number
//! of workers can share a run.

use std::collections::BTreeMap;
use std::time::Duration;

use tch::Device;

use subsets::config::RunConfig;
use subsets::layout::{JobRecord, LogState, LogWriter, RunDir};
use subsets::membership;
use subsets::schema::{self, CorpusTable, JobTable};
use subsets::tokenizer::{RunTokens, Tokenizer};

use crate::claim::{Acquired, Claim};
use crate::progress::Progress;
use crate::train::{self, StackInput};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The log was already complete.
    Skipped,
    Ran,
    /// The log was damaged (the reason says how); it was redone.
    Redone(&'static str),
}

/// Which jobs a worker runs: all (None) or the listed ones, and at most `max_jobs` of them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub jobs: Option<Vec<u32>>,
    pub max_jobs: Option<usize>,
}

/// A planned run, loaded once, whose jobs can be run.
pub struct RunJobs {
    run: RunDir,
    config: RunConfig,
    /// Token ids of every document, whole or cut to `max_tokens_per_doc`.
    documents: Vec<Vec<u32>>,
    background: Vec<Vec<u32>>,
    copies: Vec<u16>,
    holdout: Vec<bool>,
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
        let job_table: JobTable = schema::read(&run.jobs())?;
        let mut jobs: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (&job, &model) in job_table.job.iter().zip(&job_table.model) {
            jobs.entry(job).or_default().push(model);
        }
        let (models, members) = membership::header(&run.membership())?;
        if members as usize != corpus.doc.len() {
            return Err(plan_error(
                run.membership(),
                format!("covers {members} documents, but corpus.parquet has {}", corpus.doc.len()),
            ));
        }
        if let Some(model) = job_table.model.iter().find(|&&m| m >= models) {
            return Err(plan_error(
                run.jobs(),
                format!("model {model} has no row in membership.bin ({models} models)"),
            ));
        }
        let RunTokens { documents, background } =
            Tokenizer::for_run(&run, &config)?.encode_run(&run, &config, &corpus)?;
        Ok(RunJobs { run, config, documents, background, copies: corpus.copies, holdout: corpus.holdout, jobs })
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

    /// Runs the selected jobs whose logs are not complete, claiming each first; returns each
    /// job's outcome. Jobs another worker holds are waited for, polling, until they are
    /// complete or their claims go stale and are taken over, so on return every selected job
    /// is complete (unless `max_jobs` stopped the worker first).
    pub fn run(
        &self,
        selection: &Selection,
        device: Device,
        progress: &dyn Progress,
    ) -> Result<Vec<(u32, JobOutcome)>> {
        let mut pending = match &selection.jobs {
            None => self.job_ids(),
            Some(jobs) => {
                if let Some(job) = jobs.iter().find(|job| !self.jobs.contains_key(job)) {
                    return Err(plan_error(
                        self.run.jobs(),
                        format!("there is no job {job}: the run has jobs 0 to {}", self.jobs.len().saturating_sub(1)),
                    ));
                }
                jobs.clone()
            }
        };
        let timeout = self.config.jobs.claim_timeout;
        self.run.remove_old_temporaries(timeout)?;
        let mut outcomes = Vec::new();
        let mut trained = 0;
        loop {
            let mut waiting = Vec::new();
            for job in pending {
                if selection.max_jobs.is_some_and(|max| trained >= max) {
                    return Ok(outcomes);
                }
                // A complete job whose claim is still there goes through the claim: its
                // holder is releasing it, or died after publishing and the claim goes stale.
                if self.run.quick_log_state(job)? == LogState::Complete && !self.run.claim(job).exists() {
                    progress.job_finished(job, &JobOutcome::Skipped);
                    outcomes.push((job, JobOutcome::Skipped));
                    continue;
                }
                let claim = match Claim::acquire(&self.run, job, timeout)? {
                    Acquired::Held(_) => {
                        waiting.push(job);
                        continue;
                    }
                    Acquired::Ours { claim, broke } => {
                        if let Some(stale) = broke {
                            progress.claim_taken_over(job, &stale.describe(), stale.heartbeat_age);
                        }
                        claim
                    }
                };
                // Checked again now that the job is ours: another worker may have finished
                // it between the first check and the claim.
                let outcome = match self.run.quick_log_state(job)? {
                    LogState::Complete => JobOutcome::Skipped,
                    LogState::NotRun => JobOutcome::Ran,
                    LogState::Damaged(reason) => JobOutcome::Redone(reason),
                };
                if outcome != JobOutcome::Skipped {
                    match self.run_job(job, &claim, device, progress) {
                        Ok(()) => trained += 1,
                        Err(Error::ClaimLost { .. }) => {
                            waiting.push(job);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                claim.release()?;
                progress.job_finished(job, &outcome);
                outcomes.push((job, outcome));
            }
            if waiting.is_empty() {
                return Ok(outcomes);
            }
            progress.waiting_for_claims(&waiting);
            std::thread::sleep(Duration::from_secs_f64((timeout / 4.0).clamp(0.1, 10.0)));
            pending = waiting;
        }
    }

    /// Trains and evaluates the models of `job`, which `claim` holds, streaming the log and
    /// publishing it with its completion record.
    fn run_job(&self, job: u32, claim: &Claim, device: Device, progress: &dyn Progress) -> Result<()> {
        let models = &self.jobs[&job];
        self.run.remove_log_temporaries(job)?;
        let in_docs = membership::read_models(&self.run.membership(), models)?;
        progress.job_started(job, models.len());
        let stack: Vec<(u32, &[u32])> = models.iter().zip(&in_docs).map(|(&m, docs)| (m, docs.as_slice())).collect();
        let input = StackInput {
            config: &self.config,
            documents: &self.documents,
            copies: &self.copies,
            holdout: &self.holdout,
            background: &self.background,
            models: &stack,
        };
        let mut log = LogWriter::create(&self.run, job, self.config.seed)?;
        train::train_and_evaluate(&input, device, progress, &mut |part| {
            if !claim.is_ours() {
                return Err(Error::ClaimLost { job });
            }
            Ok(log.write(&part)?)
        })?;
        if !claim.is_ours() {
            return Err(Error::ClaimLost { job });
        }
        let record =
            JobRecord { models: models.len() as u32, host: claim.holder.host.clone(), started: claim.holder.started };
        log.publish(record)?;
        Ok(())
    }
}
