//! Where each file of a run lives. A run directory holds:
//!
//! ```text
//! RUN/run.toml                 resolved configuration (the run is reproducible from it)
//! RUN/corpus.parquet           documents, tokens counts, holdout flags, units, copies
//! RUN/membership.parquet       (model, doc) for every IN pair
//! RUN/jobs.parquet             (job, model): which models each job trains
//! RUN/logs/job-NNNNN.parquet   one evaluation row per (model, doc) of a job
//! RUN/logs/job-NNNNN.done      checksum of that log, written when the job completed
//! RUN/analysis/*.parquet       scores, clusters, copies, duplicates, influence, reliability
//! RUN/analysis/report.html     the HTML report (`cfmem report`)
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("run.toml")
    }

    pub fn corpus(&self) -> PathBuf {
        self.root.join("corpus.parquet")
    }

    pub fn membership(&self) -> PathBuf {
        self.root.join("membership.parquet")
    }

    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs.parquet")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log(&self, job: u32) -> PathBuf {
        self.logs_dir().join(format!("job-{job:05}.parquet"))
    }

    pub fn log_done(&self, job: u32) -> PathBuf {
        self.logs_dir().join(format!("job-{job:05}.done"))
    }

    pub fn analysis_dir(&self) -> PathBuf {
        self.root.join("analysis")
    }

    pub fn scores(&self) -> PathBuf {
        self.analysis_dir().join("scores.parquet")
    }

    pub fn clusters(&self) -> PathBuf {
        self.analysis_dir().join("clusters.parquet")
    }

    pub fn copies(&self) -> PathBuf {
        self.analysis_dir().join("copies.parquet")
    }

    pub fn duplicates(&self) -> PathBuf {
        self.analysis_dir().join("duplicates.parquet")
    }

    pub fn influence(&self) -> PathBuf {
        self.analysis_dir().join("influence.parquet")
    }

    pub fn reliability(&self) -> PathBuf {
        self.analysis_dir().join("reliability.parquet")
    }

    pub fn report(&self) -> PathBuf {
        self.analysis_dir().join("report.html")
    }
}

/// Whether a job's log can be trusted, from its completion record and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogState {
    /// The log matches the checksum recorded at completion.
    Complete,
    /// Neither a log nor a completion record: the job has not run.
    NotRun,
    /// The log or its record is missing or they disagree; the reason says which.
    Damaged(&'static str),
}

impl RunDir {
    pub fn log_state(&self, job: u32) -> crate::Result<LogState> {
        let log = self.log(job);
        let Some(recorded) = Completion::read(&self.log_done(job))? else {
            return Ok(if log.exists() { LogState::Damaged("log has no completion record") } else { LogState::NotRun });
        };
        if !log.exists() {
            return Ok(LogState::Damaged("completion record without a log"));
        }
        Ok(if Completion::of_file(&log, recorded.rows)? == recorded {
            LogState::Complete
        } else {
            LogState::Damaged("log does not match its recorded checksum")
        })
    }
}

/// The record a job writes beside its log when the log is complete: a later `cfmem run`
/// trusts the log only if its bytes still hash to `sha256`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    pub sha256: String,
    pub rows: u64,
}

impl Completion {
    /// The completion record of the log at `log`, computed from its bytes.
    pub fn of_file(log: &Path, rows: u64) -> crate::Result<Completion> {
        let bytes = std::fs::read(log).map_err(crate::Error::io(log))?;
        Ok(Completion { sha256: crate::corpus::sha256_hex(&bytes), rows })
    }

    pub fn write(&self, path: &Path) -> crate::Result<()> {
        let text = toml::to_string(self).expect("a completion record always serializes");
        crate::atomic::write_bytes(path, text.as_bytes())
    }

    /// The record at `path`, or None when there is none.
    pub fn read(path: &Path) -> crate::Result<Option<Completion>> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map(Some).map_err(|e| crate::Error::file(path, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::Error::io(path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_state_trusts_only_a_log_that_matches_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        std::fs::create_dir_all(run.logs_dir()).unwrap();
        assert_eq!(run.log_state(3).unwrap(), LogState::NotRun);
        std::fs::write(run.log(3), b"rows").unwrap();
        assert_eq!(run.log_state(3).unwrap(), LogState::Damaged("log has no completion record"));
        Completion::of_file(&run.log(3), 1).unwrap().write(&run.log_done(3)).unwrap();
        assert_eq!(run.log_state(3).unwrap(), LogState::Complete);
        std::fs::write(run.log(3), b"rowz").unwrap();
        assert_eq!(run.log_state(3).unwrap(), LogState::Damaged("log does not match its recorded checksum"));
        std::fs::remove_file(run.log(3)).unwrap();
        assert_eq!(run.log_state(3).unwrap(), LogState::Damaged("completion record without a log"));
    }
}
