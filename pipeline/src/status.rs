//! `cfmem status RUN`: how far a run is, as text or JSON, from the job queue's typed status
//! ([`queue::status`]: every job complete, claimed by a live worker, held by a stale claim
//! (its worker died or stopped beating; the next worker takes it over), damaged, or not
//! started, with models done, throughput and an ETA); with a recorded Slurm job, the
//! array's task states ([`queue::slurm::task_states`]). It never reads the corpus nor the
//! tokenizer.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use queue::Queue;
use queue::claim::Stale;
use queue::slurm::TaskStates;
use queue::status::JobState;
use subsets::layout::RunDir;

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
    /// Shown in the text only: a stale claim whose process is gone.
    #[serde(skip)]
    holder_gone: bool,
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
    slurm: Option<TaskStates>,
}

pub fn status(run: &Path, json: bool) -> Result<()> {
    let run_dir = RunDir::new(run);
    let found = Queue::open(run_dir.clone())?.status()?;
    let jobs = found
        .jobs
        .iter()
        .map(|job| {
            let claim = job.state.claim();
            let holder = claim.and_then(|c| c.holder.as_ref());
            JobStatus {
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
    let status = RunStatus {
        run: run.display().to_string(),
        counts: found.counts().into_iter().collect(),
        models: found.models,
        models_done: found.models_done,
        models_per_hour: found.models_per_hour,
        eta_s: found.eta_s,
        jobs,
        slurm: queue::slurm::task_states(&run_dir)?,
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
    let counts: Vec<String> = JobState::NAMES.iter().map(|state| format!("{} {state}", status.counts[state])).collect();
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
        if job.holder_gone {
            out += " (its process is gone)";
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
