//! Throughput, memory and recall of `analysis::dups::find_duplicates` on a synthetic corpus
//! with planted near-duplicates, against all-pairs comparison measured in the same run.
//!
//! `cargo bench -p analysis --bench dups [-- DOCS]` (default 20,000 documents).

use std::time::{Duration, Instant};

use analysis::dups::synthetic::{Spec, generate};
use analysis::dups::{DupParams, brute_force_pairs, find_duplicates, near_duplicates, repeat_fractions};

const RUNS: usize = 5;

fn main() {
    let docs = std::env::args().skip(1).find_map(|arg| arg.parse::<usize>().ok()).unwrap_or(20_000);
    let corpus = generate(&Spec::with_docs(docs, 2024));
    let texts = corpus.texts();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let params = DupParams::default();
    let banding = params.banding();
    let threads = rayon::current_num_threads();
    println!(
        "corpus: {docs} documents, {:.1} MB ({} bytes/doc), {} planted near-duplicate groups, {} exact groups",
        bytes as f64 / 1e6,
        bytes / docs.max(1),
        corpus.near_groups.len(),
        corpus.exact_groups.len()
    );
    println!(
        "params: {:?}, t = {}, {} bands x {} rows (catch probability at t: {:.4}), {} rayon threads",
        params.shingling,
        params.threshold,
        banding.bands,
        banding.rows,
        banding.catch_probability(params.threshold),
        threads
    );

    // VmHWM only grows, so the cheaper stage runs first to have its own peak.
    let near = median_time(|| {
        near_duplicates(&texts, &params);
    });
    report("near_duplicates (normalize, shingle, MinHash, LSH, verify, cluster)", near, docs, threads);
    println!("  peak memory so far (VmHWM): {}", peak_memory());
    let substr = median_time(|| {
        repeat_fractions(&texts, params.min_repeat_bytes);
    });
    report("repeat_fractions (suffix array and LCP on 1 thread, then passes)", substr, docs, threads);
    let mut result = None;
    let full = median_time(|| result = Some(find_duplicates(&texts, &params)));
    report("find_duplicates (all scores, the two above side by side)", full, docs, threads);
    println!("  peak memory (VmHWM): {} for {:.1} MB of text", peak_memory(), bytes as f64 / 1e6);
    let found = result.map(|r| r.pairs).unwrap_or_default();

    let start = Instant::now();
    let expected = brute_force_pairs(&texts, &params);
    let brute = start.elapsed();
    let caught =
        expected.iter().filter(|&&(i, j, _)| found.binary_search_by_key(&(i, j), |&(a, b, _)| (a, b)).is_ok()).count();
    println!(
        "brute force (all pairs, {threads} threads): {:.2} s, {} pairs with J >= {}",
        brute.as_secs_f64(),
        expected.len(),
        params.threshold
    );
    println!(
        "recall: {caught}/{} = {:.4}; false pairs reported: {}",
        expected.len(),
        caught as f64 / expected.len().max(1) as f64,
        found.len() - caught
    );
    println!(
        "brute force time / find_duplicates time: {:.1}x (/ near_duplicates time: {:.0}x)",
        brute.as_secs_f64() / full.as_secs_f64(),
        brute.as_secs_f64() / near.as_secs_f64()
    );
}

fn median_time(mut run: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn report(what: &str, time: Duration, docs: usize, cores: usize) {
    let per_second = docs as f64 / time.as_secs_f64();
    println!(
        "{what}: median of {RUNS} {:.3} s, {:.0} docs/s, {:.0} docs/s per core",
        time.as_secs_f64(),
        per_second,
        per_second / cores as f64
    );
}

fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l[6..].trim().to_string()))
        .unwrap_or_else(|| "unavailable".into())
}
