//! Throughput, peak memory and recall of the duplicate engine on generated corpora shaped
//! like web text, with recall of near-duplicate pairs measured against brute force in the
//! same run.
//!
//! `cargo bench -p duplicates --bench dups -- SHAPE [DOCS] [--runs N] [--sample N] [--passages] [--jsonl PATH]`
//!
//! Shapes (DOCS ordinary documents of ~550 bytes, 10% of them in planted near-duplicate
//! groups and 3% in exact-duplicate groups, as `Spec::with_docs`):
//! - `a`: DOCS documents (default 1,000,000).
//! - `b`: `a` plus one boilerplate text copied 100,000 times and one templated family of
//!   10,000 documents.
//! - `footer`: DOCS / 2 copies of one footer and DOCS / 2 documents without planted
//!   groups (default DOCS 10,000).
//!
//! `--passages` also finds passage groups (`DupParams::passages`) in every run and reports
//! how many there are and the largest.
//!
//! Each run scores the generated texts in memory ([`find_duplicates`]); reading a JSONL
//! corpus and writing the Parquet table are the `cfmem dups` command's, which `--jsonl PATH`
//! times by hand: it only writes the corpus there. Peak memory is the process's VmHWM,
//! reset (through /proc/self/clear_refs) after the corpus is generated, so it covers the
//! generated texts and the runs.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use duplicates::synthetic::{Spec, generate};

use common::{peak_memory, reset_peak_memory};
use duplicates::{DupParams, Duplicates, brute_force_near_duplicates_of, find_duplicates};
use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let shape = args.first().map(String::as_str).unwrap_or("a");
    let docs: Option<usize> = args.get(1).and_then(|a| a.parse().ok());
    let runs: usize = flag("--runs").map_or(3, |r| r.parse().expect("--runs N"));
    let sample: usize = flag("--sample").map_or(300, |s| s.parse().expect("--sample N"));

    let spec = shape_spec(shape, docs);
    let corpus = generate(&spec);
    let bytes: usize = corpus.texts.iter().map(String::len).sum();
    println!(
        "shape {shape}: {} documents, {:.1} MB of text ({} planted near groups, {} exact groups, \
         boilerplate x{}, templated family of {})",
        spec.docs,
        bytes as f64 / 1e6,
        spec.near_groups,
        spec.exact_groups,
        spec.boilerplate_copies,
        spec.template_family
    );
    if let Some(path) = flag("--jsonl") {
        write_jsonl(&corpus.texts, Path::new(&path));
        println!("wrote {path}");
        return;
    }
    let texts = corpus.texts();
    let params = DupParams { passages: args.iter().any(|a| a == "--passages"), ..DupParams::default() };
    println!("params: {params:?}, {} rayon threads", rayon::current_num_threads());

    reset_peak_memory();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        // The previous run's results go first, so that runs do not add up in the peak.
        drop(last.take());
        let start = Instant::now();
        let found = find_duplicates(&texts, &params);
        let total = start.elapsed();
        println!("  run: {:.2} s", total.as_secs_f64());
        times.push(total);
        last = Some(found);
    }
    let peak = peak_memory();
    times.sort();
    let median: Duration = times[runs / 2];
    let found = last.expect("at least one run");
    println!(
        "scores: median of {runs} {:.2} s, {:.0} docs/s, {:.1} MB/s",
        median.as_secs_f64(),
        spec.docs as f64 / median.as_secs_f64(),
        bytes as f64 / 1e6 / median.as_secs_f64()
    );
    let budget = 12 * bytes as u64 + (1 << 30);
    println!(
        "peak memory (VmHWM): {:.0} MB = {:.2} bytes per corpus byte; target 12 x text + 1 GiB = {:.0} MB: {}",
        peak as f64 / 1e6,
        peak as f64 / bytes as f64,
        budget as f64 / 1e6,
        if peak <= budget { "met" } else { "MISSED" }
    );
    let capped = found.near_dup_capped.iter().filter(|&&c| c).count();
    println!(
        "{} near-duplicate document pairs ({} between representatives), {capped} documents capped",
        found.pair_count(),
        found.rep_pairs.len()
    );
    if let Some(passages) = &found.passages {
        let groups = passages.group.iter().max().map_or(0, |&g| g + 1);
        let largest = passages.group_size.iter().max().copied().unwrap_or(0);
        let joined = passages.group_size.iter().filter(|&&size| size > 1).count();
        println!(
            "{groups} passage groups, the largest of {largest} documents; {joined} documents in groups of 2 or more"
        );
    }
    recall(&texts, &found, &params, sample);
}

fn shape_spec(shape: &str, docs: Option<usize>) -> Spec {
    match shape {
        "a" => Spec::with_docs(docs.unwrap_or(1_000_000), 2024),
        "b" => {
            let base = Spec::with_docs(docs.unwrap_or(1_000_000), 2024);
            Spec { docs: base.docs + 110_000, boilerplate_copies: 100_000, template_family: 10_000, ..base }
        }
        "footer" => {
            let docs = docs.unwrap_or(10_000);
            Spec { near_groups: 0, exact_groups: 0, boilerplate_copies: docs / 2, ..Spec::with_docs(docs, 2024) }
        }
        _ => panic!("unknown shape {shape:?}: a, b or footer"),
    }
}

/// Writes `texts` as JSONL with ids doc-0, doc-1, …
fn write_jsonl(texts: &[String], path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create the corpus file"));
    for (i, text) in texts.iter().enumerate() {
        // Generated texts hold letters, spaces, tabs and newlines only.
        let escaped = text.replace('\n', "\\n").replace('\t', "\\t");
        writeln!(out, "{{\"id\":\"doc-{i}\",\"text\":\"{escaped}\"}}").expect("write the corpus file");
    }
    out.flush().expect("write the corpus file");
}

/// Recall of near-duplicate pairs on a uniform sample of documents: for each, every
/// document brute force finds at J >= t against what `found` reports, split by whether
/// the sampled document is capped.
fn recall(texts: &[&str], found: &Duplicates, params: &DupParams, sample: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let sampled: Vec<u32> =
        index::sample(&mut rng, texts.len(), sample.min(texts.len())).iter().map(|i| i as u32).collect();
    let start = Instant::now();
    let expected = brute_force_near_duplicates_of(texts, params, &sampled);
    let brute = start.elapsed();

    // Found neighbours of the sampled documents, expanded from representatives.
    let reps: HashSet<u32> = sampled.iter().map(|&d| found.representative[d as usize]).collect();
    let mut partners: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(a, b, _) in &found.rep_pairs {
        if reps.contains(&a) {
            partners.entry(a).or_default().push(b);
        }
        if reps.contains(&b) {
            partners.entry(b).or_default().push(a);
        }
    }
    let wanted: HashSet<u32> = reps.iter().chain(partners.values().flatten()).copied().collect();
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for (doc, &rep) in found.representative.iter().enumerate() {
        if wanted.contains(&rep) {
            members.entry(rep).or_default().push(doc as u32);
        }
    }
    let (mut caught, mut total, mut caught_capped, mut total_capped, mut false_pairs) = (0, 0, 0, 0, 0);
    for (&doc, truth) in sampled.iter().zip(&expected) {
        let rep = found.representative[doc as usize];
        let reported: HashSet<u32> = std::iter::once(rep)
            .chain(partners.get(&rep).into_iter().flatten().copied())
            .flat_map(|r| members[&r].iter().copied())
            .filter(|&d| d != doc)
            .collect();
        let hits = truth.iter().filter(|(j, _)| reported.contains(j)).count();
        false_pairs += reported.len() - hits;
        if found.near_dup_capped[doc as usize] {
            (caught_capped, total_capped) = (caught_capped + hits, total_capped + truth.len());
        } else {
            (caught, total) = (caught + hits, total + truth.len());
        }
    }
    println!(
        "recall against brute force on {} sampled documents ({:.1} s): {caught}/{total} = {:.4} of the pairs of \
         uncapped documents; {caught_capped}/{total_capped} of the pairs of capped documents (lower bounds by \
         design); {false_pairs} reported pairs brute force lacks",
        sampled.len(),
        brute.as_secs_f64(),
        caught as f64 / total.max(1) as f64
    );
}
