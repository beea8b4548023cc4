//! `cfmem slurm` against a real one-node Slurm (started from the shared scripts, which
//! install its Debian packages when missing): the array trains the run, a task cancelled
//! mid-training is finished by resubmitting, and the scores equal a local run's. Needs root
//! (as on CI): ignored by a plain `cargo test`, run by `scripts/test.sh` as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{cfmem_ok, plan_args, scores, training_lock};

/// The folder of the shared Slurm scripts: `$CFMEM_SLURM_SCRIPTS`, or `shared/slurm` beside
/// the repository.
fn slurm_scripts() -> PathBuf {
    if let Some(dir) = std::env::var_os("CFMEM_SLURM_SCRIPTS") {
        return PathBuf::from(dir);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    [repo.join("../shared/slurm"), PathBuf::from("/work/shared/slurm")]
        .into_iter()
        .find(|dir| dir.join("start-local-slurm.sh").exists())
        .expect("the local Slurm scripts: set CFMEM_SLURM_SCRIPTS to the folder of start-local-slurm.sh")
}

/// A running local cluster, stopped when dropped.
struct Cluster {
    scripts: PathBuf,
    env: Vec<(String, String)>,
}

impl Cluster {
    fn start() -> Cluster {
        let scripts = slurm_scripts();
        let out = Command::new("bash").arg(scripts.join("start-local-slurm.sh")).output().unwrap();
        assert!(out.status.success(), "start-local-slurm.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let env = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .map(|(key, value)| (key.to_string(), value.trim_matches(|c| c == '\'' || c == '"').to_string()))
            .collect();
        Cluster { scripts, env }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn output(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Waits until Slurm job `id` has no task pending or running.
    fn wait_for(&self, id: &str) {
        let start = Instant::now();
        while !self.output("squeue", &["-h", "-j", id]).trim().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(300), "Slurm job {id} still queued after 300 s");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command("bash").arg(self.scripts.join("stop-local-slurm.sh")).output();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[test]
#[ignore = "needs root to start a local Slurm: scripts/test.sh runs this as root, as on CI"]
fn a_slurm_array_on_a_local_slurm_trains_the_run_and_a_resubmission_finishes_a_cancelled_task() {
    if !is_root() {
        tests::missing("the local Slurm cluster needs root");
    }
    let _one_at_a_time = training_lock();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let lines: String = (0..12).map(|i| format!("{{\"text\":\"document {i}: {}\"}}\n", "xyz".repeat(i + 1))).collect();
    std::fs::write(&corpus, lines).unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(
        &config,
        "[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 64\n[train]\nepochs = 150\nbatch_size = 8\n\
         [jobs]\nstack = 1\nclaim_timeout = 2.0\n",
    )
    .unwrap();
    let plan = |name: &str| {
        let run = dir.path().join(name);
        cfmem_ok(&plan_args(&corpus, &run, "4", "9", &["--config", config.to_str().unwrap()]));
        run
    };
    let local = plan("local");
    cfmem_ok(&["run", local.to_str().unwrap(), "--device", "cpu", "--threads", "1"]);
    cfmem_ok(&["analyze", local.to_str().unwrap()]);

    let cluster = Cluster::start();
    let run = plan("slurm");
    let run_arg = run.to_str().unwrap();
    let cfmem = tests::cfmem_path();
    let submit = |extra: &[&str]| {
        let id = cluster.output(cfmem.to_str().unwrap(), &[&["slurm", run_arg, "--submit"], extra].concat());
        id.trim().to_string()
    };
    let first = submit(&["--max-parallel", "2"]);
    assert!(std::fs::read_to_string(run.join("slurm/array.sbatch")).unwrap().contains("#SBATCH --array=0-3%2\n"));

    // Cancel the task of the first job seen in training.
    let claims = run.join("claims");
    let wait_start = Instant::now();
    let cancelled = loop {
        let claimed = std::fs::read_dir(&claims).ok().and_then(|entries| {
            entries
                .filter_map(|e| {
                    e.ok()?.file_name().to_str()?.strip_prefix("job-")?.strip_suffix(".claim")?.parse::<u32>().ok()
                })
                .next()
        });
        if let Some(job) = claimed {
            break job;
        }
        assert!(wait_start.elapsed() < Duration::from_secs(120), "no task started training");
        std::thread::sleep(Duration::from_millis(100));
    };
    cluster.output("scancel", &[&format!("{first}_{cancelled}")]);
    cluster.wait_for(&first);
    let status = cluster.output(cfmem.to_str().unwrap(), &["status", run_arg]);
    assert!(!status.contains("4 complete"), "the cancelled task's job is not complete: {status}");
    assert!(status.contains(&format!("slurm job {first}")), "{status}");

    let second = submit(&[]);
    cluster.wait_for(&second);
    let status = cluster.output(cfmem.to_str().unwrap(), &["status", run_arg]);
    assert!(status.contains("4 complete") && status.contains("models: 4 of 4 done"), "{status}");
    let submitted = std::fs::read_to_string(run.join("slurm/submitted")).unwrap();
    assert_eq!(submitted, format!("{first}\n{second}\n"));
    let outputs: String = std::fs::read_dir(run.join("slurm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "out"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let trained = outputs.matches(": training ").count();
    assert_eq!(trained, 5, "four jobs, the cancelled one twice:\n{outputs}");

    cfmem_ok(&["analyze", run_arg]);
    assert_eq!(scores(&run), scores(&local), "the array's scores are the local run's");
    eprintln!("Slurm test: {:.1} s", started.elapsed().as_secs_f64());
}
