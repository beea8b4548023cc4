//! `cfmem status RUN`: how far a run is. Every job is complete, claimed by a live worker,
//! held by a stale claim (its worker died; the next worker takes it over), damaged, or not
//! started; models done, throughput and an ETA come from the completion records; with a
//! recorded Slurm job, the array's task states come from `sacct` or `squeue` when they are on
//! PATH.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use jobs::RunJobs;
use subsets::layout::{Completion, LogState, RunDir, unix_now};

/// Job states, in the order they are reported.
const STATES: [&str; 5] = ["complete", "claimed", "stale", "damaged", "not started"];

#[derive(Serialize)]
struct JobStatus {
    job: u32,
    models: u32,
    /// complete, claimed, stale, damaged or not started.
    state: &'static str,
    /// Why a damaged log is not trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_age_s: Option<f64>,
}

#[derive(Serialize)]
struct SlurmStatus {
    job_id: String,
    /// Task count per Slurm state, from `source`.
    states: BTreeMap<String, usize>,
    /// `sacct`, `squeue`, or why neither answered.
    source: String,
}

#[derive(Serialize)]
struct RunStatus {
    run: String,
    counts: BTreeMap<&'static str, usize>,
    models: u32,
    models_done: u32,
    /// Complete models per hour since the first complete job started.
    models_per_hour: Option<f64>,
    eta_s: Option<f64>,
    jobs: Vec<JobStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slurm: Option<SlurmStatus>,
}

pub fn status(run: &Path, json: bool) -> Result<()> {
    let run_dir = RunDir::new(run);
    let planned = RunJobs::open(run_dir.clone())?;
    let timeout = planned.config().jobs.claim_timeout;
    let mut jobs = Vec::new();
    let (mut first_start, mut last_finish) = (f64::INFINITY, 0f64);
    for (&job, models) in planned.jobs() {
        let log = run_dir.quick_log_state(job)?;
        let claim = jobs::claim::inspect(&run_dir, job, timeout)?;
        let (state, reason) = match (log, &claim) {
            (LogState::Complete, _) => ("complete", None),
            (_, Some(claim)) if !claim.stale => ("claimed", None),
            (_, Some(_)) => ("stale", None),
            (LogState::Damaged(reason), None) => ("damaged", Some(reason)),
            (LogState::NotRun, None) => ("not started", None),
        };
        if log == LogState::Complete
            && let Some(record) = Completion::read(&run_dir.log_done(job))?
        {
            first_start = first_start.min(record.started);
            last_finish = last_finish.max(record.finished);
        }
        let holder = claim.as_ref().filter(|_| state != "complete").and_then(|c| c.holder.clone());
        jobs.push(JobStatus {
            job,
            models: models.len() as u32,
            state,
            reason,
            host: holder.as_ref().map(|h| h.host.clone()),
            pid: holder.as_ref().map(|h| h.pid),
            heartbeat_age_s: claim.filter(|_| state != "complete").map(|c| c.heartbeat_age),
        });
    }
    let mut counts = BTreeMap::new();
    for state in STATES {
        counts.insert(state, jobs.iter().filter(|j| j.state == state).count());
    }
    let models: u32 = jobs.iter().map(|j| j.models).sum();
    let models_done: u32 = jobs.iter().filter(|j| j.state == "complete").map(|j| j.models).sum();
    let end = if models_done == models { last_finish } else { unix_now() };
    let hours = (end - first_start) / 3600.0;
    let models_per_hour = (models_done > 0 && hours > 0.0).then(|| f64::from(models_done) / hours);
    let eta_s = models_per_hour.map(|rate| f64::from(models - models_done) / rate * 3600.0);
    let status = RunStatus {
        run: run.display().to_string(),
        counts,
        models,
        models_done,
        models_per_hour,
        eta_s,
        jobs,
        slurm: slurm_status(&run_dir)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn render(status: &RunStatus) -> String {
    let mut out = format!("{}: {} jobs: ", status.run, status.jobs.len());
    let counts: Vec<String> = STATES.iter().map(|state| format!("{} {state}", status.counts[state])).collect();
    out += &counts.join(", ");
    out += &format!("\nmodels: {} of {} done", status.models_done, status.models);
    if let (Some(rate), Some(eta)) = (status.models_per_hour, status.eta_s) {
        out += &format!(", {rate:.1} models/hour, ETA {}", duration(eta));
    }
    out += "\n";
    for job in status.jobs.iter().filter(|j| j.state != "complete" && j.state != "not started") {
        out += &format!("  job {}: {}", job.job, job.state);
        if let (Some(host), Some(pid)) = (&job.host, job.pid) {
            out += &format!(" by {host}:{pid}");
        }
        if let Some(age) = job.heartbeat_age_s {
            out += &format!(", heartbeat {} ago", duration(age));
        }
        if let Some(reason) = job.reason {
            out += &format!(" ({reason})");
        }
        out += "\n";
    }
    if let Some(slurm) = &status.slurm {
        let mut states: Vec<String> = slurm.states.iter().map(|(state, n)| format!("{n} {state}")).collect();
        if states.is_empty() {
            states.push("no tasks listed".into());
        }
        out += &format!("slurm job {}: {} ({})\n", slurm.job_id, states.join(", "), slurm.source);
    }
    out
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The task states of the latest recorded Slurm submission, if any: from `sacct` (needs
/// accounting), else `scontrol` (finished tasks for a few minutes), else `squeue`.
fn slurm_status(run: &RunDir) -> Result<Option<SlurmStatus>> {
    let path = run.slurm_submissions();
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let Some(job_id) = text.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()) else {
        return Ok(None);
    };
    let sacct = ["-n", "-X", "-P", "-j", &job_id, "-o", "JobID,State"];
    let scontrol = ["-o", "show", "job", &job_id];
    let squeue = ["-h", "-r", "-j", &job_id, "-o", "%i|%T"];
    let mut notes = Vec::new();
    for (program, args) in [("sacct", &sacct[..]), ("scontrol", &scontrol[..]), ("squeue", &squeue[..])] {
        match Command::new(program).args(args).output() {
            Ok(out) if out.status.success() => {
                let mut states = BTreeMap::new();
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let state = match program {
                        "scontrol" => line.split_whitespace().find_map(|field| field.strip_prefix("JobState=")),
                        _ => line.split_once('|').map(|(_, state)| state),
                    };
                    if let Some(state) = state {
                        let state = state.split_whitespace().next().unwrap_or(state).to_string();
                        *states.entry(state).or_default() += 1;
                    }
                }
                let source = if program == "squeue" {
                    "squeue: pending and running tasks only".to_string()
                } else {
                    program.to_string()
                };
                return Ok(Some(SlurmStatus { job_id: job_id.clone(), states, source }));
            }
            Ok(out) => notes.push(format!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => notes.push(format!("{program} is not on PATH")),
            Err(e) => return Err(e).with_context(|| format!("running {program}")),
        }
    }
    Ok(Some(SlurmStatus { job_id: job_id.clone(), states: BTreeMap::new(), source: notes.join("; ") }))
}
