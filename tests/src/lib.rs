//! Helpers for the end-to-end tests in `tests/`: locating and running the real `cfmem`
//! binary and reading what it wrote.

pub mod hf;
pub mod page;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use subsets::schema::{self, ScoreTable};

/// The release (or debug) `cfmem` built beside these tests, or `$CFMEM_BIN`.
pub fn cfmem_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CFMEM_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/cfmem
    let path = exe.parent().and_then(Path::parent).expect("target/<profile>").join("cfmem");
    assert!(path.exists(), "{} is missing: build it first (cargo build --release -p pipeline)", path.display());
    path
}

/// The device of the end-to-end tests that compare cfmem with `transformers`:
/// `$CFMEM_TEST_DEVICE` (`scripts/gpu-check.sh` sets `cuda`), else the CPU.
pub fn test_device() -> String {
    std::env::var("CFMEM_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// Runs `cfmem args…` and returns its output.
pub fn cfmem(args: &[&str]) -> Output {
    Command::new(cfmem_path()).args(args).output().expect("cfmem runs")
}

/// Runs `cfmem args…`, asserting success, and returns stdout.
pub fn cfmem_ok(args: &[&str]) -> String {
    let out = cfmem(args);
    assert!(out.status.success(), "cfmem {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `cfmem args…`, asserting failure, and returns stderr.
pub fn cfmem_err(args: &[&str]) -> String {
    let out = cfmem(args);
    assert!(!out.status.success(), "cfmem {args:?} should have failed");
    String::from_utf8(out.stderr).expect("utf-8 output")
}

/// The arguments of `cfmem plan` of `corpus` into `run` with `models` models, `--keep 0.5`,
/// `seed`, then `extra`.
pub fn plan_args<'a>(
    corpus: &'a Path,
    run: &'a Path,
    models: &'a str,
    seed: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let path = |p: &'a Path| p.to_str().expect("test paths are UTF-8");
    let mut args =
        vec!["plan", "--corpus", path(corpus), "--out", path(run), "--models", models, "--keep", "0.5", "--seed", seed];
    args.extend_from_slice(extra);
    args
}

pub fn scores(run: &Path) -> ScoreTable {
    schema::read(&run.join("analysis/scores.parquet")).expect("scores.parquet")
}

/// mem_acc of every scored document whose source is `source`.
pub fn mem_acc_of(scores: &ScoreTable, source: &str) -> Vec<f64> {
    (0..scores.doc.len())
        .filter(|&d| scores.source[d].as_deref() == Some(source))
        .filter_map(|d| scores.mem_acc[d])
        .collect()
}

pub fn mean(values: &[f64]) -> f64 {
    assert!(!values.is_empty());
    values.iter().sum::<f64>() / values.len() as f64
}

/// A tiny model configuration for fast real training in tests.
pub const TINY_CONFIG: &str = "[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 64\n\
[train]\nepochs = 3\nbatch_size = 8\n[jobs]\nstack = 2\n";

/// Held by each test that trains: two training processes on one machine's cores slow each
/// other down tenfold, so tests of one binary train one at a time.
pub fn training_lock() -> MutexGuard<'static, ()> {
    static TRAINING: Mutex<()> = Mutex::new(());
    TRAINING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fails the test for lack of `what`. A test that needs more than cargo (the Hugging Face
/// venv, chromium, root for a local Slurm) is `#[ignore]`d with the reason, so that a plain
/// `cargo test` lists it as ignored rather than passed; `scripts/test.sh` runs it
/// (`--include-ignored`) wherever it can provide what it needs, so there it must not pass
/// without it.
pub fn missing(what: &str) -> ! {
    panic!("{what}: this test is ignored by default for that reason; scripts/test.sh runs it where it can provide it")
}

/// A corpus of `documents` sentences over a small vocabulary, from `seed`.
pub fn sentences(path: &Path, documents: usize, seed: u64) {
    let words = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "to", "big", "small", "house", "and", "saw"];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let lines: String = (0..documents)
        .map(|_| {
            let text: Vec<&str> = (0..24).map(|_| words[next(words.len())]).collect();
            serde_json::json!({ "text": text.join(" ") + "." }).to_string() + "\n"
        })
        .collect();
    std::fs::write(path, lines).unwrap();
}

/// Model `model`'s evaluation at the end of training in the logs of the completed run
/// `run`: (tokens, nll, correct) per document, in corpus order.
pub fn logged_evaluation(run: &Path, model: u32) -> Vec<(u32, f64, u32)> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(run.join("logs")).expect("the run's logs") {
        let path = entry.expect("a log").path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let log: schema::LogTable = schema::read(&path).expect("a log file");
        rows.extend(
            (0..log.model.len())
                .filter(|&i| log.model[i] == model && log.checkpoint[i] == schema::FINAL_CHECKPOINT)
                .map(|i| (log.doc[i], (log.tokens[i], log.nll[i], log.correct[i]))),
        );
    }
    rows.sort_by_key(|&(doc, _)| doc);
    rows.into_iter().map(|(_, row)| row).collect()
}
