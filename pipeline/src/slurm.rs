//! `cfmem slurm RUN`: a Slurm job array that trains a run's jobs. Slurm is the scheduler:
//! cfmem only writes `RUN/slurm/array.sbatch`, one array task per chunk of jobs, each task
//! running this same binary as `cfmem run RUN --job FIRST-LAST`; with `--submit` it calls
//! `sbatch` and records the Slurm job id in `RUN/slurm/submitted`. A task whose jobs are
//! complete does nothing, so resubmitting the array after failures, cancellations or
//! requeues redoes only what is missing.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use queue::Queue;
use subsets::atomic;
use subsets::layout::RunDir;

/// What the array asks of Slurm.
pub struct ArraySettings {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
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
    pub device: String,
    pub submit: bool,
}

pub fn slurm(run: &Path, settings: &ArraySettings) -> Result<()> {
    if settings.jobs_per_task == 0 || settings.cpus_per_task == 0 {
        bail!("--jobs-per-task and --cpus-per-task must be at least 1");
    }
    if settings.max_parallel == Some(0) {
        bail!("--max-parallel must be at least 1");
    }
    let run_dir = RunDir::new(std::path::absolute(run).with_context(|| format!("{}", run.display()))?);
    let jobs = Queue::open(run_dir.clone())?.job_ids();
    let (Some(&first), Some(&last)) = (jobs.first(), jobs.last()) else {
        bail!("{}: the run has no jobs", run.display())
    };
    if first != 0 || last as usize != jobs.len() - 1 {
        bail!("{}: jobs are not numbered 0 to {}", run.display(), jobs.len() - 1);
    }
    let binary = std::env::current_exe().context("the path of this cfmem binary")?;
    let script = array_script(&run_dir, &binary, jobs.len() as u32, settings);
    let dir = run_dir.slurm_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    atomic::write_bytes(&run_dir.slurm_script(), script.as_bytes())?;
    eprintln!("wrote {}", run_dir.slurm_script().display());
    if settings.submit {
        let out = Command::new("sbatch")
            .arg("--parsable")
            .arg(run_dir.slurm_script())
            .output()
            .context("running sbatch (is Slurm's client on PATH?)")?;
        if !out.status.success() {
            bail!("sbatch failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        // --parsable prints "id" or "id;cluster".
        let id = stdout.trim().split(';').next().unwrap_or_default().to_string();
        if id.is_empty() {
            bail!("sbatch printed no job id");
        }
        let path = run_dir.slurm_submissions();
        let mut ids = std::fs::read_to_string(&path).unwrap_or_default();
        writeln!(ids, "{id}").expect("writing to a string");
        atomic::write_bytes(&path, ids.as_bytes())?;
        println!("{id}");
        eprintln!("submitted Slurm job {id}; `cfmem status {}` follows it", run.display());
    }
    Ok(())
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
            submit: false,
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
}
