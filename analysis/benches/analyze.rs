//! Time and peak memory of `analyze` (scores, bootstrap, reliability, membership attacks),
//! of `analyze` without the attacks (the baseline their cost is a ratio of), and of
//! `influence` on a synthetic run written by the benchmark itself, and the GEMM's
//! throughput.
//!
//! ```text
//! cargo bench -p analysis --bench analyze [-- MODELS DOCS TARGETS RUNS]
//! ```
//!
//! Defaults: 1,000 models × 100,000 documents (10⁸ log rows) and 10,000 target documents
//! for influence, 3 runs each (medians reported). The run is written into a scratch
//! directory under `target/` (about 1.5 GB at the defaults), removed at the end. Each
//! measured stage runs in a child process of its own, so that its peak resident memory
//! (VmHWM) is its own; the two analyses alternate, run by run. With `CFMEM_BENCH_KEEP=1` the
//! run is kept, and `analyze-stage RUN attacks|no-attacks` and `influence-stage RUN IDS` run
//! one stage on it, e.g. under `/usr/bin/time -v`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use analysis::gemm;
use analysis::influence::{self, InfluenceSettings, Targets};
use analysis::per_model::RunLogs;
use analysis::scores;
use analysis::settings::AnalyzeSettings;
use analysis::synthetic_run::{self, Row, Spec};
use subsets::config::Unit;
use subsets::layout::RunDir;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    match args.first().map(String::as_str) {
        Some("analyze-stage") => analyze_stage(Path::new(&args[1]), args.get(2).is_none_or(|a| a != "no-attacks")),
        Some("influence-stage") => influence_stage(Path::new(&args[1]), Path::new(&args[2])),
        _ => {
            let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
            let (models, docs, targets, runs) = (number(0, 1000), number(1, 100_000), number(2, 10_000), number(3, 3));
            drive(models, docs, targets, runs);
        }
    }
}

fn drive(models: usize, docs: usize, targets: usize, runs: usize) {
    println!("{} rayon threads", rayon::current_num_threads());
    gemm_throughput(models);
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let scratch = tempfile::Builder::new().prefix("bench-run-").tempdir_in(&target).expect("scratch directory");
    let dir = scratch.path().join("run");
    let run = RunDir::new(&dir);
    let start = Instant::now();
    let spec = Spec {
        documents: synthetic_run::documents(docs, 1),
        models: models as u32,
        stack: 4,
        seed: 1,
        unit: Unit::Document,
        holdout_ids: vec![],
    };
    synthetic_run::write(&run, &spec, synthetic_row).expect("synthetic run");
    println!("wrote {} log rows in {:.1?}", models * docs, start.elapsed());
    let ids = dir.join("targets.txt");
    let listed: String = (0..targets).map(|i| format!("doc-{}\n", i * (docs / targets.max(1)).max(1))).collect();
    std::fs::write(&ids, listed).expect("targets file");

    let exe = std::env::current_exe().expect("bench binary");
    let stage = |args: &[&Path]| -> Vec<String> { (0..runs).flat_map(|_| stage_once(&exe, args)).collect() };
    let (mut with_attacks, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        with_attacks.extend(stage_once(&exe, &[Path::new("analyze-stage"), &dir, Path::new("attacks")]));
        without.extend(stage_once(&exe, &[Path::new("analyze-stage"), &dir, Path::new("no-attacks")]));
    }
    let what = format!("{models} models × {docs} documents, bootstrap 200 + reliability");
    summarize(&format!("analyze, {what}, membership attacks"), &with_attacks);
    summarize(&format!("analyze --no-attacks, {what}"), &without);
    println!(
        "  analyze with the attacks takes {:.2} times the time without (medians)",
        median_seconds(&with_attacks) / median_seconds(&without)
    );
    let influence_runs = stage(&[Path::new("influence-stage"), &dir, &ids]);
    let flops = 2.0 * targets as f64 * models as f64 * docs as f64;
    summarize(&format!("influence, {models} models × {docs} training documents × {targets} targets"), &influence_runs);
    let median = median_seconds(&influence_runs);
    println!("  GEMM work {:.2e} flop: {:.1} GFLOP/s over the whole command", flops, flops / median / 1e9);
    if std::env::var_os("CFMEM_BENCH_KEEP").is_some() {
        println!("kept the run in {} (targets in {})", dir.display(), ids.display());
        let _ = scratch.keep();
    }
}

/// Accuracy 0.3 + a document's memorization (0 to 0.5) when IN, plus noise of about 0.05.
fn synthetic_row(model: u32, doc: usize, in_train: &[bool]) -> Row {
    let noise = mix((u64::from(model) << 32) | doc as u64) % 11;
    let memorized = (doc % 51) as u32;
    let correct = 25 + noise as u32 + if in_train[doc] { memorized } else { 0 };
    Row { tokens: 100, correct, nll: f64::from(100 - correct) * 0.02 }
}

/// splitmix64: a cheap, well-mixed hash for synthetic noise.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One stage in a child process of its own: its output.
fn stage_once(exe: &Path, args: &[&Path]) -> Option<String> {
    let out = Command::new(exe).args(args).output().expect("stage runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).expect("utf-8"))
}

fn analyze_stage(dir: &Path, attacks: bool) {
    let run = RunDir::new(dir);
    let start = Instant::now();
    let logs = RunLogs::open(&run).expect("complete logs");
    let settings = AnalyzeSettings { attacks, ..AnalyzeSettings::default() };
    let analysis = scores::analyze(&run, &logs, settings).expect("analyze");
    analysis.write(&run).expect("write");
    let elapsed = start.elapsed();
    println!("seconds {:.3}", elapsed.as_secs_f64());
    println!("peak {}", peak_memory());
    let summary = analysis.summary.to_string();
    println!("line {}", summary.lines().find(|l| l.starts_with("reliability")).unwrap_or(""));
}

fn influence_stage(dir: &Path, ids: &Path) {
    let run = RunDir::new(dir);
    let settings = InfluenceSettings { targets: Targets::Ids(ids.to_path_buf()), top: 10, min_abs: 0.0 };
    let start = Instant::now();
    let logs = RunLogs::open(&run).expect("complete logs");
    let found = influence::influence(&run, &logs, &settings).expect("influence");
    found.write(&run).expect("write");
    println!("seconds {:.3}", start.elapsed().as_secs_f64());
    println!("peak {}", peak_memory());
    println!("line {}", found.summary.to_string().lines().next().unwrap_or(""));
}

fn median_seconds(runs: &[String]) -> f64 {
    let mut seconds: Vec<f64> = runs
        .iter()
        .map(|out| out.lines().find_map(|l| l.strip_prefix("seconds ")).expect("seconds").parse().expect("number"))
        .collect();
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn summarize(what: &str, runs: &[String]) {
    let field = |out: &String, key: &str| out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("?").to_string();
    let all: Vec<String> = runs.iter().map(|out| field(out, "seconds ")).collect();
    println!("{what}:");
    println!("  median {:.1} s over {} runs ({} s)", median_seconds(runs), runs.len(), all.join(", "));
    println!("  peak RSS (VmHWM) {}", field(&runs[0], "peak "));
    println!("  {}", field(&runs[0], "line "));
}

/// Single-thread sgemm GFLOP/s on influence's block shape (128 targets × models × 1024
/// sources), and on all threads with one product per thread.
fn gemm_throughput(models: usize) {
    let (m, n) = (128, 1024);
    let a = vec![0.5f32; m * models];
    let b = vec![1.0f32; models * n];
    let flops = 2.0 * (m * models * n) as f64;
    let mut c = vec![0.0f32; m * n];
    let one = best_of(10, || gemm::matmul(&a, &b, &mut c, m, models, n));
    let threads = rayon::current_num_threads();
    let all = best_of(5, || {
        rayon::broadcast(|_| {
            let mut c = vec![0.0f32; m * n];
            for _ in 0..4 {
                gemm::matmul(&a, &b, &mut c, m, models, n);
            }
        });
    });
    println!(
        "sgemm {m} × {models} × {n}: {:.1} GFLOP/s on one thread, {:.1} GFLOP/s on {threads} threads",
        flops / one.as_secs_f64() / 1e9,
        4.0 * threads as f64 * flops / all.as_secs_f64() / 1e9
    );
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(|l| l["VmHWM:".len()..].trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}
