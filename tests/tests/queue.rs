//! Many workers on one run, workers killed with SIGKILL, extending a run, analyzing a
//! partial one, and `status` and `slurm` without the tokenizer: real `cfmem` processes
//! training real (tiny) models on the CPU.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use subsets::schema::{self, LogTable, ProfileTable};
use tests::{TINY_CONFIG, cfmem, cfmem_err, cfmem_ok, cfmem_path, plan_args, scores, training_lock};

/// Tiny models, `stack` per job, evaluated at the checkpoints `eval_at`, and claims that go
/// stale after one second.
fn tiny_config(dir: &Path, stack: u32, epochs: u32, eval_at: &str) -> PathBuf {
    let path = dir.join(format!("tiny-{stack}-{epochs}.toml"));
    let text = format!(
        "[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 64\n[train]\nepochs = {epochs}\nbatch_size = 8\n\
         eval_at = {eval_at}\n[jobs]\nstack = {stack}\nclaim_timeout = 1.0\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.jsonl");
    let lines: String = (0..12).map(|i| format!("{{\"text\":\"document {i}: {}\"}}\n", "xyz".repeat(i + 1))).collect();
    std::fs::write(&path, lines).unwrap();
    path
}

fn plan(dir: &Path, name: &str, models: &str, stack: u32) -> PathBuf {
    plan_trained_for(dir, name, models, stack, 3, "[1.0]")
}

fn plan_trained_for(dir: &Path, name: &str, models: &str, stack: u32, epochs: u32, eval_at: &str) -> PathBuf {
    let run = dir.join(name);
    let config = tiny_config(dir, stack, epochs, eval_at);
    cfmem_ok(&plan_args(&corpus(dir), &run, models, "9", &["--config", config.to_str().unwrap()]));
    run
}

fn run_command(run: &Path) -> Command {
    let mut command = Command::new(cfmem_path());
    command.args(["run", run.to_str().unwrap(), "--device", "cpu", "--threads", "1"]);
    command
}

fn run_to_end(run: &Path, extra: &[&str]) -> String {
    let out = run_command(run).args(extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cfmem run failed:\n{stderr}");
    stderr
}

/// Jobs whose training started, from the "job N: training" lines of `stderr`.
fn training_starts(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("job ")?.split_once(": training ").map(|(job, _)| job.parse().unwrap()))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn four_workers_train_every_job_exactly_once_with_the_scores_of_one() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let shared = plan(dir.path(), "shared", "8", 1);
    let workers: Vec<_> =
        (0..4).map(|_| run_command(&shared).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()).collect();
    let mut starts = Vec::new();
    for worker in workers {
        let out = worker.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        starts.extend(training_starts(&stderr));
    }
    starts.sort();
    assert_eq!(starts, (0..8).collect::<Vec<_>>(), "every job trained exactly once");
    assert!(files_in(&shared.join("claims")).is_empty(), "every claim released");

    let alone = plan(dir.path(), "alone", "8", 1);
    run_to_end(&alone, &[]);
    cfmem_ok(&["analyze", shared.to_str().unwrap()]);
    cfmem_ok(&["analyze", alone.to_str().unwrap()]);
    assert_eq!(scores(&shared), scores(&alone));
}

/// A small deterministic generator for the kill times.
fn xorshift(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn workers_killed_at_random_points_resume_to_the_same_scores() {
    // Odd trials aim at the two phases of a job that random kill times can miss, so a
    // dozen trials cover every phase.
    const TRIALS: usize = 12;
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    // Longer training than the other tests, so that most kills land inside a job, with
    // evaluations in the middle of it.
    const CHECKPOINTS: &str = "[0.25, 0.5, 1.0]";
    let reference = plan_trained_for(dir.path(), "reference", "4", 2, 40, CHECKPOINTS);
    let started = Instant::now();
    run_to_end(&reference, &[]);
    let duration = started.elapsed().as_secs_f64();
    cfmem_ok(&["analyze", reference.to_str().unwrap()]);
    let expected = scores(&reference);
    let profile = |run: &Path| schema::read::<ProfileTable>(&run.join("analysis/profile.parquet")).unwrap();
    let expected_profile = profile(&reference);
    assert_eq!(expected_profile.doc.len(), 3 * 12, "three checkpoints of every document");

    let mut state = 0x5eed_cf3e_u64;
    let mut phases = std::collections::BTreeMap::<&str, usize>::new();
    for trial in 0..TRIALS {
        let run = plan_trained_for(dir.path(), &format!("trial-{trial}"), "4", 2, 40, CHECKPOINTS);
        // Even trials: kill times spread over the whole run, from start-up to the last
        // publication. Odd trials, since a stack's evaluation and publication take
        // milliseconds of the run and its training before the first checkpoint's rows a
        // fraction of it: kill as soon as a job's first rows reach its temporary log, or
        // (every other odd trial) as soon as that log exists.
        let at = duration * (trial as f64 + xorshift(&mut state)) / TRIALS as f64;
        let mut worker = run_command(&run).stderr(Stdio::null()).spawn().unwrap();
        if trial % 2 == 0 {
            std::thread::sleep(Duration::from_secs_f64(at));
        } else {
            let least_bytes = if trial % 4 == 1 { 1 } else { 0 };
            let logs = run.join("logs");
            let deadline = Instant::now() + Duration::from_secs_f64(3.0 * duration + 5.0);
            while Instant::now() < deadline && worker.try_wait().unwrap().is_none() {
                let reached = files_in(&logs)
                    .iter()
                    .filter(|n| n.ends_with(".tmp"))
                    .any(|n| std::fs::metadata(logs.join(n)).is_ok_and(|m| m.len() >= least_bytes));
                if reached {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        worker.kill().unwrap();
        worker.wait().unwrap();

        let logs = files_in(&run.join("logs"));
        let claims = files_in(&run.join("claims"));
        let temporary = logs.iter().find(|n| n.ends_with(".tmp"));
        let written = temporary.map(|name| std::fs::metadata(run.join("logs").join(name)).map_or(0, |m| m.len()));
        let phase = if written == Some(0) {
            "training a job's first model"
        } else if written.is_some() {
            "after a job's first rows (training, evaluating, publishing)"
        } else if logs.iter().filter(|n| n.ends_with(".parquet")).count()
            > logs.iter().filter(|n| n.ends_with(".done")).count()
        {
            "between log and completion record"
        } else if !claims.is_empty() {
            "claimed, log not yet created"
        } else if logs.iter().any(|n| n.ends_with(".done")) {
            "between jobs or after the end"
        } else {
            "starting"
        };
        *phases.entry(phase).or_default() += 1;

        let resumed = run_to_end(&run, &[]);
        if !claims.is_empty() {
            assert!(resumed.contains("took over the stale claim"), "trial {trial}: {resumed}");
        }
        cfmem_ok(&["analyze", run.to_str().unwrap()]);
        assert_eq!(scores(&run), expected, "trial {trial}, killed after {at:.2} s ({phase})");
        assert_eq!(profile(&run), expected_profile, "trial {trial}: every checkpoint's scores");
        assert!(files_in(&run.join("claims")).is_empty(), "trial {trial}: claims left");
        let leftovers: Vec<String> = files_in(&run.join("logs")).into_iter().filter(|n| n.ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "trial {trial}: temporary files left: {leftovers:?}");
    }
    eprintln!("{TRIALS} kill -9 trials over a {duration:.2} s run, killed while: {phases:?}");
    assert!(phases.contains_key("training a job's first model"), "{phases:?}");
    assert!(
        phases.contains_key("after a job's first rows (training, evaluating, publishing)")
            || phases.contains_key("between log and completion record"),
        "some kills land while a log is being published: {phases:?}"
    );
}

#[test]
fn extending_a_run_keeps_its_logs_and_the_balance() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = plan(dir.path(), "run", "8", 2);
    let run_arg = run.to_str().unwrap();
    run_to_end(&run, &[]);
    let before: Vec<Vec<u8>> =
        (0..4).map(|job| std::fs::read(run.join(format!("logs/job-{job:05}.parquet"))).unwrap()).collect();

    let out = cfmem(&["plan", "--extend", run_arg, "--models", "16"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("from 8 to 16 models: new jobs 4 to 7"), "{stderr}");
    let ran = run_to_end(&run, &[]);
    assert!(ran.contains("4 jobs ran, 0 redone, 4 already complete"), "{ran}");
    for (job, bytes) in before.iter().enumerate() {
        assert_eq!(&std::fs::read(run.join(format!("logs/job-{job:05}.parquet"))).unwrap(), bytes, "job {job}");
    }
    let mut in_count = [0; 12];
    for job in 0..8 {
        let log: LogTable = schema::read(&run.join(format!("logs/job-{job:05}.parquet"))).unwrap();
        log.doc.iter().zip(&log.in_train).filter(|(_, i)| **i).for_each(|(&d, _)| in_count[d as usize] += 1);
    }
    assert_eq!(in_count, [8; 12], "every document IN for round(0.5 × 16) models");
    let summary = cfmem_ok(&["analyze", run_arg]);
    assert!(summary.contains("16 models"), "{summary}");
    let scores = scores(&run);
    assert!(scores.n_in.iter().zip(&scores.n_out).all(|(i, o)| (*i, *o) == (8, 8)));

    let err = cfmem_err(&["plan", "--extend", run_arg, "--models", "12"]);
    assert!(err.contains("--models: 12 must be more than the run's 16 models"), "{err}");
}

#[test]
fn analyze_refuses_a_partial_run_unless_asked_and_status_tells_what_is_left() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = plan(dir.path(), "run", "4", 1);
    let run_arg = run.to_str().unwrap();
    let err = cfmem_err(&["run", run_arg, "--job", "9"]);
    assert!(err.contains("there is no job 9: the run has jobs 0 to 3"), "{err}");

    let ran = run_to_end(&run, &["--job", "0,2-3", "--max-jobs", "2"]);
    assert_eq!(training_starts(&ran), [0, 2]);
    let status = cfmem_ok(&["status", run_arg]);
    assert!(status.contains("2 complete") && status.contains("2 not started"), "{status}");
    assert!(status.contains("models: 2 of 4 done"), "{status}");
    let json = cfmem_ok(&["status", run_arg, "--json"]);
    assert!(json.contains("\"models_done\": 2"), "{json}");

    let err = cfmem_err(&["analyze", run_arg]);
    assert!(err.contains("2 of 4 jobs (2 of 4 models) are not complete: 1 (not run), 3 (not run)"), "{err}");
    assert!(err.contains("--partial"), "{err}");
    assert!(!run.join("analysis/scores.parquet").exists(), "no scores written");
    let summary = cfmem_ok(&["analyze", run_arg, "--partial"]);
    assert!(summary.contains("partial analysis") && summary.contains("no longer exactly balanced"), "{summary}");
    let scores = scores(&run);
    assert!(scores.n_in.iter().zip(&scores.n_out).all(|(i, o)| i + o == 2));

    run_to_end(&run, &[]);
    let status = cfmem_ok(&["status", run_arg]);
    assert!(status.contains("models: 4 of 4 done"), "{status}");
    let summary = cfmem_ok(&["analyze", run_arg]);
    assert!(!summary.contains("partial"), "{summary}");
}

#[test]
fn a_worker_killed_with_sigkill_does_not_block_the_next_one_on_its_machine() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    // The default claim_timeout (600 s): only the dead process can make its claim stale.
    let config = dir.path().join("default-timeout.toml");
    let text = "[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 64\n[train]\nepochs = 100\nbatch_size = 8\n\
                [jobs]\nstack = 2\n";
    std::fs::write(&config, text).unwrap();
    let run = dir.path().join("run");
    cfmem_ok(&plan_args(&corpus(dir.path()), &run, "2", "9", &["--config", config.to_str().unwrap()]));
    let run_arg = run.to_str().unwrap();

    let mut worker = run_command(&run).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(worker.stderr.take().unwrap()).lines();
    assert!(lines.any(|line| line.unwrap().starts_with("job 0: training")), "the worker starts job 0");
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(files_in(&run.join("claims")), ["job-00000.claim"], "killed while it held the job");

    let status = cfmem_ok(&["status", run_arg]);
    assert!(status.contains("0 claimed, 1 stale"), "{status}");
    let pid = worker.id();
    assert!(status.contains(&format!(":{pid}, heartbeat ")) && status.contains("(its process is gone)"), "{status}");
    let json = cfmem_ok(&["status", run_arg, "--json"]);
    assert!(json.contains("\"state\": \"stale\"") && json.contains(&format!("\"pid\": {pid}")), "{json}");

    let started = Instant::now();
    let resumed = run_to_end(&run, &[]);
    let seconds = started.elapsed().as_secs_f64();
    assert!(seconds < 60.0, "the next worker took {seconds:.1} s:\n{resumed}");
    assert!(resumed.contains(&format!(":{pid} (its process is gone; heartbeat ")), "{resumed}");
    assert!(resumed.contains("job 0: took over the stale claim of ") && resumed.contains("1 jobs ran"), "{resumed}");
    assert!(files_in(&run.join("claims")).is_empty());
    assert!(cfmem_ok(&["status", run_arg]).contains("1 complete"));
}

#[test]
fn status_and_slurm_never_tokenize_so_a_changed_tokenizer_stops_only_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bpe.toml");
    std::fs::write(&config, TINY_CONFIG.replace("[model]\n", "[model]\ntokenizer = \"bpe\"\nvocab_size = 300\n"))
        .unwrap();
    let run = dir.path().join("run");
    cfmem_ok(&plan_args(&corpus(dir.path()), &run, "4", "9", &["--config", config.to_str().unwrap()]));
    let run_arg = run.to_str().unwrap();
    std::fs::write(run.join("tokenizer.json"), "{\"changed\": true}").unwrap();

    let status = cfmem_ok(&["status", run_arg]);
    assert!(status.contains("2 jobs: 0 complete, 0 claimed, 0 stale, 0 damaged, 2 not started"), "{status}");
    cfmem_ok(&["slurm", run_arg]);
    assert!(std::fs::read_to_string(run.join("slurm/array.sbatch")).unwrap().contains("#SBATCH --array=0-1\n"));
    for flag in ["--jobs-per-task", "--cpus-per-task", "--max-parallel"] {
        let err = cfmem_err(&["slurm", run_arg, flag, "0"]);
        assert!(err.contains(&format!("{flag}: must be at least 1")), "{err}");
    }
    let err = cfmem_err(&["run", run_arg, "--device", "cpu"]);
    assert!(err.contains("tokenizer.json: sha256 ") && err.contains("the file was changed after planning"), "{err}");

    std::fs::remove_file(run.join("tokenizer.json")).unwrap();
    assert!(cfmem_ok(&["status", run_arg]).contains("2 not started"));
}
