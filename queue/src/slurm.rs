//! Slurm job arrays that train a run's jobs. Slurm is the scheduler: cfmem only writes
//! `RUN/slurm/array.sbatch` ([`write_array`]), one array task per chunk of jobs, each task
//! running the cfmem binary as `cfmem run RUN --job FIRST-LAST`; [`submit`] calls `sbatch`
//! and records the Slurm job id in `RUN/slurm/submitted`, and [`task_states`] reads the
//! latest submission's tasks back from `sacct`, `scontrol` or `squeue`. A task whose jobs
//! are complete does nothing, so resubmitting the array after failures, cancellations or
//! requeues redoes only what is missing.
//!
//! This module knows Slurm's commands and the script's form, not the command line's flags:
//! a bad setting is named by its key, `slurm.` and its field of [`ArraySettings`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use subsets::atomic;
use subsets::layout::RunDir;

use crate::Queue;

/// What the array asks of Slurm.
#[derive(Debug, Clone, PartialEq)]
pub struct ArraySettings {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    /// Also each task's `--threads`.
    pub cpus_per_task: u32,
    pub mem: Option<String>,
    pub time: Option<String>,
    /// At most this many tasks at once (`%N`).
    pub max_parallel: Option<u32>,
    pub account: Option<String>,
    /// More sbatch options, each written as an `#SBATCH` line.
    pub extra: Vec<String>,
    /// Consecutive jobs per array task.
    pub jobs_per_task: u32,
    /// Each task's `--device`.
    pub device: String,
}

/// Why an array could not be written or submitted, or its tasks not read.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A count of [`ArraySettings`] (`slurm.` and its field's name) that must be at least 1.
    #[error("{setting} must be at least 1")]
    Zero { setting: &'static str },
    #[error("{0}: the run has no jobs")]
    NoJobs(PathBuf),
    #[error("{run}: jobs are not numbered 0 to {last}")]
    Numbering { run: PathBuf, last: usize },
    #[error("running {program} (is Slurm's client on PATH?): {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    #[error("sbatch failed: {0}")]
    Sbatch(String),
    #[error("sbatch printed no job id")]
    NoJobId,
}

/// Writes the array that runs every job of `run` with `binary` (the path of a cfmem) and
/// returns the script's path.
pub fn write_array(run: &RunDir, binary: &Path, settings: &ArraySettings) -> crate::Result<PathBuf> {
    for (setting, value) in [
        ("slurm.jobs_per_task", settings.jobs_per_task),
        ("slurm.cpus_per_task", settings.cpus_per_task),
        ("slurm.max_parallel", settings.max_parallel.unwrap_or(1)),
    ] {
        if value == 0 {
            return Err(SlurmError::Zero { setting }.into());
        }
    }
    let jobs = Queue::open(run.clone())?.job_ids();
    let (Some(&first), Some(&last)) = (jobs.first(), jobs.last()) else {
        return Err(SlurmError::NoJobs(run.root().to_path_buf()).into());
    };
    if first != 0 || last as usize != jobs.len() - 1 {
        return Err(SlurmError::Numbering { run: run.root().to_path_buf(), last: jobs.len() - 1 }.into());
    }
    let script = array_script(run, binary, jobs.len() as u32, settings);
    let dir = run.slurm_dir();
    std::fs::create_dir_all(&dir).map_err(subsets::Error::io(&dir))?;
    atomic::write_bytes(&run.slurm_script(), script.as_bytes())?;
    Ok(run.slurm_script())
}

/// Submits `run`'s array with `sbatch` and records its Slurm job id, which it returns.
pub fn submit(run: &RunDir) -> crate::Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(run.slurm_script())
        .output()
        .map_err(|source| SlurmError::Spawn { program: "sbatch", source })?;
    if !out.status.success() {
        return Err(SlurmError::Sbatch(String::from_utf8_lossy(&out.stderr).trim().to_string()).into());
    }
    // --parsable prints "id" or "id;cluster".
    let id = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() {
        return Err(SlurmError::NoJobId.into());
    }
    let path = run.slurm_submissions();
    let mut ids = std::fs::read_to_string(&path).unwrap_or_default();
    writeln!(ids, "{id}").expect("writing to a string");
    atomic::write_bytes(&path, ids.as_bytes())?;
    Ok(id)
}

fn array_script(run: &RunDir, binary: &Path, jobs: u32, settings: &ArraySettings) -> String {
    let tasks = jobs.div_ceil(settings.jobs_per_task);
    let name = run.root().file_name().map_or("run".into(), |n| n.to_string_lossy().into_owned());
    let throttle = settings.max_parallel.map_or(String::new(), |n| format!("%{n}"));
    let mut s = String::from("#!/bin/bash\n");
    let mut option = |line: String| writeln!(s, "#SBATCH {line}").expect("writing to a string");
    option(format!("--job-name=cfmem-{name}"));
    option(format!("--array=0-{}{throttle}", tasks - 1));
    option(format!("--output={}/task-%A_%a.out", run.slurm_dir().display()));
    option("--ntasks=1".into());
    option(format!("--cpus-per-task={}", settings.cpus_per_task));
    if let Some(gpus) = settings.gpus_per_task {
        option(format!("--gpus-per-task={gpus}"));
    }
    for (flag, value) in [
        ("partition", &settings.partition),
        ("mem", &settings.mem),
        ("time", &settings.time),
        ("account", &settings.account),
    ] {
        if let Some(value) = value {
            option(format!("--{flag}={value}"));
        }
    }
    settings.extra.iter().for_each(|extra| option(extra.clone()));
    let per_task = settings.jobs_per_task;
    write!(
        s,
        "\n# Written by `cfmem slurm`: array task i trains jobs i*{per_task} to i*{per_task}+{last_offset} of {jobs}.\n\
         # Resubmit this file to finish what failed or was cancelled: complete jobs are skipped.\n\
         set -euo pipefail\n\
         first=$((SLURM_ARRAY_TASK_ID * {per_task}))\n\
         last=$((first + {last_offset}))\n\
         if [ \"$last\" -gt {max_job} ]; then last={max_job}; fi\n\
         exec {binary} run {run} --job \"$first-$last\" --threads {threads} --device {device}\n",
        last_offset = per_task - 1,
        max_job = jobs - 1,
        binary = shell_quote(&binary.display().to_string()),
        run = shell_quote(&run.root().display().to_string()),
        threads = settings.cpus_per_task,
        device = settings.device,
    )
    .expect("writing to a string");
    s
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The tasks of a submitted array, by Slurm state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskStates {
    pub job_id: String,
    /// Task count per Slurm state, from `source`.
    pub states: BTreeMap<String, usize>,
    /// `sacct`, `scontrol`, `squeue`, or why none answered.
    pub source: String,
}

/// The task states of `run`'s latest recorded submission, if any: from `sacct` (needs
/// accounting), else `scontrol` (finished tasks for a few minutes), else `squeue` (pending
/// and running tasks only).
pub fn task_states(run: &RunDir) -> crate::Result<Option<TaskStates>> {
    let Ok(text) = std::fs::read_to_string(run.slurm_submissions()) else { return Ok(None) };
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
                let states = count_states(program, &String::from_utf8_lossy(&out.stdout));
                let source = if program == "squeue" { "squeue: pending and running tasks only" } else { program };
                return Ok(Some(TaskStates { job_id: job_id.clone(), states, source: source.to_string() }));
            }
            Ok(out) => notes.push(format!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => notes.push(format!("{program} is not on PATH")),
            Err(source) => return Err(SlurmError::Spawn { program, source }.into()),
        }
    }
    Ok(Some(TaskStates { job_id, states: BTreeMap::new(), source: notes.join("; ") }))
}

/// Tasks per state in the output of `program`: `ID|STATE` lines (sacct -P, squeue), or
/// `scontrol -o show job`'s one line a task with its `JobState=`.
fn count_states(program: &str, output: &str) -> BTreeMap<String, usize> {
    let mut states = BTreeMap::new();
    for line in output.lines() {
        let state = match program {
            "scontrol" => line.split_whitespace().find_map(|field| field.strip_prefix("JobState=")),
            _ => line.split_once('|').map(|(_, state)| state),
        };
        if let Some(state) = state {
            let state = state.split_whitespace().next().unwrap_or(state).to_string();
            *states.entry(state).or_default() += 1;
        }
    }
    states
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_array_runs_chunks_of_jobs_with_the_throttle_and_threads() {
        let settings = ArraySettings {
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            cpus_per_task: 4,
            mem: Some("16G".into()),
            time: None,
            max_parallel: Some(8),
            account: None,
            extra: vec!["--qos=high".into()],
            jobs_per_task: 3,
            device: "auto".into(),
        };
        let script = array_script(&RunDir::new("/runs/it's"), Path::new("/bin/cfmem"), 10, &settings);
        for line in [
            "#SBATCH --array=0-3%8\n",
            "#SBATCH --output=/runs/it's/slurm/task-%A_%a.out\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --gpus-per-task=1\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --mem=16G\n",
            "#SBATCH --qos=high\n",
            "first=$((SLURM_ARRAY_TASK_ID * 3))\n",
            "last=$((first + 2))\n",
            "if [ \"$last\" -gt 9 ]; then last=9; fi\n",
            "exec '/bin/cfmem' run '/runs/it'\\''s' --job \"$first-$last\" --threads 4 --device auto\n",
        ] {
            assert!(script.contains(line), "{line:?} missing from\n{script}");
        }
        assert!(!script.contains("--time") && !script.contains("--account"));
    }

    #[test]
    fn task_states_are_counted_from_each_commands_output() {
        let sacct = "41_0|COMPLETED\n41_1|COMPLETED\n41_2|RUNNING\n41_3|CANCELLED by 0\n";
        let counted = count_states("sacct", sacct);
        assert_eq!(counted, BTreeMap::from([("CANCELLED".into(), 1), ("COMPLETED".into(), 2), ("RUNNING".into(), 1)]));
        let scontrol = "JobId=42 ArrayJobId=41 ArrayTaskId=0 JobState=PENDING Reason=None\n\
                        JobId=43 ArrayJobId=41 ArrayTaskId=1 JobState=COMPLETED Reason=None\n";
        assert_eq!(
            count_states("scontrol", scontrol),
            BTreeMap::from([("COMPLETED".into(), 1), ("PENDING".into(), 1)])
        );
    }
}
