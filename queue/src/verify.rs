//! Every log of a run checked in full (sha256 of every byte and the footer's row count
//! against the completion record), once per command: `analyze` refuses a run whose jobs are
//! not all complete from this check, and the analysis reads the logs it found complete
//! without hashing them again.

use std::path::PathBuf;

use subsets::layout::RunDir;

use crate::log::{self, LogState};
use crate::{Queue, Result};

/// A job and the state of its log, checked in full.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJob {
    pub job: u32,
    pub models: Vec<u32>,
    pub state: LogState,
}

/// The jobs of a run with their logs checked in full, in job order.
#[derive(Debug, Clone)]
pub struct Verified {
    run: RunDir,
    jobs: Vec<VerifiedJob>,
}

impl Queue {
    pub fn verify(&self) -> Result<Verified> {
        let jobs = self
            .jobs
            .iter()
            .map(|(&job, models)| Ok(VerifiedJob { job, models: models.clone(), state: log::state(&self.run, job)? }))
            .collect::<Result<_>>()?;
        Ok(Verified { run: self.run.clone(), jobs })
    }
}

impl Verified {
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    pub fn jobs(&self) -> &[VerifiedJob] {
        &self.jobs
    }

    fn complete(&self) -> impl Iterator<Item = &VerifiedJob> {
        self.jobs.iter().filter(|j| j.state == LogState::Complete)
    }

    /// The logs of the complete jobs, in job order.
    pub fn complete_logs(&self) -> Vec<PathBuf> {
        self.complete().map(|j| self.run.log(j.job)).collect()
    }

    /// The models of the complete jobs, sorted.
    pub fn complete_models(&self) -> Vec<u32> {
        let mut models: Vec<u32> = self.complete().flat_map(|j| j.models.iter().copied()).collect();
        models.sort_unstable();
        models.dedup();
        models
    }

    /// What is not complete, e.g. `2 of 4 jobs (2 of 4 models) are not complete: 1 (not
    /// run), 3 (log has no completion record)`; None when every job is complete.
    pub fn incomplete(&self) -> Option<String> {
        let incomplete: Vec<&VerifiedJob> = self.jobs.iter().filter(|j| j.state != LogState::Complete).collect();
        if incomplete.is_empty() {
            return None;
        }
        let models: usize = self.jobs.iter().map(|j| j.models.len()).sum();
        let missing_models: usize = incomplete.iter().map(|j| j.models.len()).sum();
        let listed: Vec<String> = incomplete
            .iter()
            .map(|j| match j.state {
                LogState::Damaged(reason) => format!("{} ({reason})", j.job),
                LogState::NotRun | LogState::Complete => format!("{} (not run)", j.job),
            })
            .collect();
        Some(format!(
            "{} of {} jobs ({missing_models} of {models} models) are not complete: {}",
            incomplete.len(),
            self.jobs.len(),
            listed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{JobRecord, LogWriter};
    use crate::test_run;

    #[test]
    fn the_complete_jobs_and_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 4, 8, 3, 60.0);
        let run = queue.run_dir();
        let verified = queue.verify().unwrap();
        assert_eq!(
            verified.incomplete().unwrap(),
            "3 of 3 jobs (8 of 8 models) are not complete: 0 (not run), 1 (not run), 2 (not run)"
        );
        assert!(verified.complete_logs().is_empty());

        for job in [0, 2] {
            let mut log = LogWriter::create(run, job, 3).unwrap();
            log.write(&subsets::schema::LogTable::default()).unwrap();
            log.publish(JobRecord { models: 3, host: "h".into(), started: 0.0 }).unwrap();
        }
        std::fs::write(run.log(1), b"no record").unwrap();
        let verified = queue.verify().unwrap();
        assert_eq!(
            verified.incomplete().unwrap(),
            "1 of 3 jobs (3 of 8 models) are not complete: 1 (log has no completion record)"
        );
        assert_eq!(verified.complete_logs(), [run.log(0), run.log(2)]);
        assert_eq!(verified.complete_models(), [0, 1, 2, 6, 7]);

        // A log whose footer disagrees with its record is caught here, not only by its hash.
        let record = log::Completion::read(&run.log_done(2)).unwrap().unwrap();
        log::Completion { rows: 5, ..record }.write(run, 2).unwrap();
        let verified = queue.verify().unwrap();
        assert_eq!(verified.jobs()[2].state, LogState::Damaged("log's row count differs from its completion record"));
    }
}
