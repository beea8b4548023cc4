//! How far a run is: every job's state, and models done, throughput and an ETA from the
//! completion records; and [`StatusReport`], what `cfmem status` shows of it, as text or
//! JSON, with the Slurm array's task states when the run was submitted. Logs are checked as
//! `run` checks them on start (size and mtime against the record, hashed only when they
//! differ).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::claim::{self, ClaimInfo, Stale};
use crate::log::{self, Completion, LogState, unix_now};
use crate::slurm::TaskStates;
use crate::{Queue, Result};

/// Where a job is.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Its log matches its completion record.
    Complete,
    /// A live worker holds it.
    Claimed(ClaimInfo),
    /// Its claim is stale (no heartbeat, or its process is gone): the next worker takes it
    /// over.
    Stale(ClaimInfo),
    /// Its log or record is damaged, for the reason given; the next worker redoes it.
    Damaged(&'static str),
    NotStarted,
}

impl JobState {
    /// The names of the states, in the order they are reported.
    pub const NAMES: [&'static str; 5] = ["complete", "claimed", "stale", "damaged", "not started"];

    pub fn name(&self) -> &'static str {
        match self {
            JobState::Complete => "complete",
            JobState::Claimed(_) => "claimed",
            JobState::Stale(_) => "stale",
            JobState::Damaged(_) => "damaged",
            JobState::NotStarted => "not started",
        }
    }

    /// The claim on a job that is not complete.
    pub fn claim(&self) -> Option<&ClaimInfo> {
        match self {
            JobState::Claimed(claim) | JobState::Stale(claim) => Some(claim),
            JobState::Complete | JobState::Damaged(_) | JobState::NotStarted => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub job: u32,
    pub models: u32,
    pub state: JobState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunStatus {
    pub jobs: Vec<JobStatus>,
    pub models: u32,
    pub models_done: u32,
    /// Complete models per hour since the first complete job started.
    pub models_per_hour: Option<f64>,
    pub eta_s: Option<f64>,
}

impl RunStatus {
    /// How many jobs are in each state, in the order of [`JobState::NAMES`].
    pub fn counts(&self) -> [(&'static str, usize); 5] {
        JobState::NAMES.map(|name| (name, self.jobs.iter().filter(|j| j.state.name() == name).count()))
    }
}

impl Queue {
    pub fn status(&self) -> Result<RunStatus> {
        let timeout = self.claim_timeout();
        let mut jobs = Vec::new();
        let (mut first_start, mut last_finish) = (f64::INFINITY, 0f64);
        for (&job, models) in &self.jobs {
            let log = log::quick_state(&self.run, job)?;
            let claim = claim::inspect(&self.run, job, timeout)?;
            let state = match (log, claim) {
                (LogState::Complete, _) => JobState::Complete,
                (_, Some(claim)) if claim.stale.is_none() => JobState::Claimed(claim),
                (_, Some(claim)) => JobState::Stale(claim),
                (LogState::Damaged(reason), None) => JobState::Damaged(reason),
                (LogState::NotRun, None) => JobState::NotStarted,
            };
            if state == JobState::Complete
                && let Some(record) = Completion::read(&self.run.log_done(job))?
            {
                first_start = first_start.min(record.started);
                last_finish = last_finish.max(record.finished);
            }
            jobs.push(JobStatus { job, models: models.len() as u32, state });
        }
        let models: u32 = jobs.iter().map(|j| j.models).sum();
        let models_done: u32 = jobs.iter().filter(|j| j.state == JobState::Complete).map(|j| j.models).sum();
        let end = if models_done == models { last_finish } else { unix_now() };
        let hours = (end - first_start) / 3600.0;
        let models_per_hour = (models_done > 0 && hours > 0.0).then(|| f64::from(models_done) / hours);
        let eta_s = models_per_hour.map(|rate| f64::from(models - models_done) / rate * 3600.0);
        Ok(RunStatus { jobs, models, models_done, models_per_hour, eta_s })
    }
}

/// One job's line of [`StatusReport`].
#[derive(Debug, Serialize)]
pub struct JobReport {
    pub job: u32,
    pub models: u32,
    /// complete, claimed, stale, damaged or not started.
    pub state: &'static str,
    /// Why a damaged log is not trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_s: Option<f64>,
    /// Shown in the text only: a stale claim whose process is gone.
    #[serde(skip)]
    pub holder_gone: bool,
}

/// What `cfmem status` shows: [`RunStatus`] with every job's claim spelled out, and the
/// Slurm array's task states. Serialized as `status --json`; displayed as its text.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub run: String,
    pub counts: BTreeMap<&'static str, usize>,
    pub models: u32,
    pub models_done: u32,
    /// Complete models per hour since the first complete job started.
    pub models_per_hour: Option<f64>,
    pub eta_s: Option<f64>,
    pub jobs: Vec<JobReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<TaskStates>,
}

impl StatusReport {
    /// The report on the run named `run`, from its `status` and its Slurm `slurm` states.
    pub fn new(run: String, status: &RunStatus, slurm: Option<TaskStates>) -> StatusReport {
        let jobs = status
            .jobs
            .iter()
            .map(|job| {
                let claim = job.state.claim();
                let holder = claim.and_then(|c| c.holder.as_ref());
                JobReport {
                    job: job.job,
                    models: job.models,
                    state: job.state.name(),
                    reason: match job.state {
                        JobState::Damaged(reason) => Some(reason),
                        JobState::Complete | JobState::Claimed(_) | JobState::Stale(_) | JobState::NotStarted => None,
                    },
                    host: holder.map(|h| h.host.clone()),
                    pid: holder.map(|h| h.pid),
                    heartbeat_age_s: claim.map(|c| c.heartbeat_age),
                    holder_gone: claim.is_some_and(|c| c.stale == Some(Stale::HolderGone)),
                }
            })
            .collect();
        StatusReport {
            run,
            counts: status.counts().into_iter().collect(),
            models: status.models,
            models_done: status.models_done,
            models_per_hour: status.models_per_hour,
            eta_s: status.eta_s,
            jobs,
            slurm,
        }
    }
}

impl fmt::Display for StatusReport {
    /// The counts per state, models done with the rate and ETA, a line per job that is
    /// neither complete nor unstarted, and the Slurm array's states.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> =
            JobState::NAMES.iter().map(|state| format!("{} {state}", self.counts[state])).collect();
        writeln!(f, "{}: {} jobs: {}", self.run, self.jobs.len(), counts.join(", "))?;
        write!(f, "models: {} of {} done", self.models_done, self.models)?;
        if let (Some(rate), Some(eta)) = (self.models_per_hour, self.eta_s) {
            write!(f, ", {rate:.1} models/hour, ETA {}", duration(eta))?;
        }
        writeln!(f)?;
        for job in self.jobs.iter().filter(|j| j.state != "complete" && j.state != "not started") {
            write!(f, "  job {}: {}", job.job, job.state)?;
            if let (Some(host), Some(pid)) = (&job.host, job.pid) {
                write!(f, " by {host}:{pid}")?;
            }
            if let Some(age) = job.heartbeat_age_s {
                write!(f, ", heartbeat {} ago", duration(age))?;
            }
            if job.holder_gone {
                write!(f, " (its process is gone)")?;
            }
            if let Some(reason) = job.reason {
                write!(f, " ({reason})")?;
            }
            writeln!(f)?;
        }
        if let Some(slurm) = &self.slurm {
            let mut states: Vec<String> = slurm.states.iter().map(|(state, n)| format!("{n} {state}")).collect();
            if states.is_empty() {
                states.push("no tasks listed".into());
            }
            writeln!(f, "slurm job {}: {} ({})", slurm.job_id, states.join(", "), slurm.source)?;
        }
        Ok(())
    }
}

/// A duration as people read one: seconds, minutes and seconds, or hours and minutes.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::{Holder, Stale, dead_pid, write_claim};
    use crate::log::{JobRecord, LogWriter};
    use crate::test_run;

    #[test]
    fn each_job_has_one_state() {
        let dir = tempfile::tempdir().unwrap();
        let queue = test_run(dir.path(), 4, 12, 2, 600.0);
        let run = queue.run_dir();
        for job in [0, 3] {
            let mut log = LogWriter::create(run, job, 3).unwrap();
            log.write(&subsets::schema::LogTable::default()).unwrap();
            log.publish(JobRecord { models: 2, host: "h".into(), started: 100.0 }).unwrap();
        }
        // Job 3 is complete, its worker still releasing its claim.
        write_claim(&run.claim(3), &Holder::current());
        write_claim(&run.claim(1), &Holder::current());
        let dead = Holder { pid: dead_pid(), ..Holder::current() };
        write_claim(&run.claim(2), &dead);
        std::fs::write(run.log(4), b"a log without its record").unwrap();

        let status = queue.status().unwrap();
        let names: Vec<&str> = status.jobs.iter().map(|j| j.state.name()).collect();
        assert_eq!(names, ["complete", "claimed", "stale", "complete", "damaged", "not started"]);
        assert_eq!(
            status.jobs[1].state.claim().and_then(|c| c.holder.as_ref()).map(|h| h.pid),
            Some(std::process::id())
        );
        assert!(matches!(&status.jobs[2].state, JobState::Stale(c) if c.stale == Some(Stale::HolderGone)));
        assert_eq!(status.jobs[4].state, JobState::Damaged("log has no completion record"));
        assert_eq!(
            status.counts(),
            [("complete", 2), ("claimed", 1), ("stale", 1), ("damaged", 1), ("not started", 1)]
        );
        assert_eq!((status.models, status.models_done), (12, 4));
        assert!(status.models_per_hour.is_some_and(|rate| rate > 0.0));
        let eta = status.eta_s.unwrap();
        let expected = 8.0 / status.models_per_hour.unwrap() * 3600.0;
        assert!((eta - expected).abs() < 1e-6 * expected, "{eta} {expected}");
    }
}
