//! `cfmem dups` on generated corpora: exactly the planted duplicate structure, web-shaped
//! boilerplate against brute force, the refusals, and that it starts without CUDA's
//! libraries.

use std::collections::BTreeSet;
use std::path::Path;

use duplicates::synthetic::{self, Spec};
use duplicates::{DupParams, brute_force_pairs};
use subsets::schema::{self, DuplicateTable};
use tests::{cfmem_err, cfmem_ok};

/// Writes `texts` as JSONL with ids doc-0, doc-1, …
fn write_corpus(path: &Path, texts: &[String]) {
    let lines: String = texts.iter().enumerate().map(|(i, text)| format!("{}\n", serde_like_json(i, text))).collect();
    std::fs::write(path, lines).unwrap();
}

#[test]
fn finds_exactly_the_planted_structure() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = synthetic::generate(&Spec::with_docs(1500, 21));
    let path = dir.path().join("corpus.jsonl");
    write_corpus(&path, &corpus.texts);
    let out = dir.path().join("dups.parquet");
    let printed = cfmem_ok(&["dups", "--corpus", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(printed.contains("1500 documents"), "{printed}");
    let table: DuplicateTable = schema::read(&out).unwrap();
    assert_eq!(table.doc_id[7], "doc-7");

    let planted: BTreeSet<Vec<u32>> = corpus.near_groups.iter().chain(&corpus.exact_groups).cloned().collect();
    let mut found: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for doc in 0..table.doc.len() {
        found.entry(table.cluster[doc]).or_default().push(doc as u32);
    }
    let found: BTreeSet<Vec<u32>> = found.into_values().filter(|members| members.len() > 1).collect();
    assert_eq!(found, planted, "clusters of two or more are exactly the planted groups");
    for group in &corpus.exact_groups {
        for &doc in group {
            assert_eq!(table.exact_dup_count[doc as usize] as usize, group.len() - 1);
        }
    }
    let grouped: BTreeSet<u32> = planted.iter().flatten().copied().collect();
    for doc in (0..table.doc.len() as u32).filter(|d| !grouped.contains(d)) {
        assert_eq!(table.near_dup_count[doc as usize], 0, "unique document {doc}");
        assert_eq!(table.cluster_size[doc as usize], 1);
    }
}

/// The footer case: 5,000 copies of one newsletter footer and 5,000 ordinary
/// documents, whose 12.5 million near-duplicate pairs are one group of exact copies.
#[test]
fn boilerplate_footer_matches_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec { near_groups: 0, exact_groups: 0, boilerplate_copies: 5000, ..Spec::with_docs(10_000, 22) };
    let corpus = synthetic::generate(&spec);
    let path = dir.path().join("corpus.jsonl");
    write_corpus(&path, &corpus.texts);
    let out = dir.path().join("dups.parquet");
    let printed = cfmem_ok(&["dups", "--corpus", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(printed.contains("12497500 near-duplicate pairs"), "{printed}");
    let table: DuplicateTable = schema::read(&out).unwrap();

    let texts = corpus.texts();
    let mut counts = vec![0u32; texts.len()];
    for (i, j, _) in brute_force_pairs(&texts, &DupParams::default()) {
        counts[i as usize] += 1;
        counts[j as usize] += 1;
    }
    assert_eq!(table.near_dup_count, counts);
    let footer: BTreeSet<u32> = corpus.exact_groups[0].iter().copied().collect();
    for doc in 0..texts.len() {
        let in_footer = footer.contains(&(doc as u32));
        let (copies, size, fraction) = if in_footer { (4999, 5000, 1.0) } else { (0, 1, 0.0) };
        assert_eq!(table.exact_dup_count[doc], copies);
        assert_eq!(table.cluster_size[doc], size);
        assert_eq!(table.repeat_fraction[doc], fraction, "document {doc}");
        assert!(!table.near_dup_capped[doc]);
    }
}

#[test]
fn a_corpus_larger_than_the_memory_allowed_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.jsonl");
    write_corpus(&path, &synthetic::generate(&Spec::with_docs(200, 23)).texts);
    let out = dir.path().join("d.parquet");
    let args = ["dups", "--corpus", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--max-memory"];
    let err = cfmem_err(&[&args[..], &["0.0001"]].concat());
    assert!(err.contains("need about") && err.contains("--max-memory"), "{err}");
    assert!(!out.exists());
    let err = cfmem_err(&[&args[..], &["0"]].concat());
    assert!(err.contains("--max-memory"), "{err}");
    cfmem_ok(&[&args[..], &["1"]].concat());
    assert!(out.exists());
}

/// The dynamic loader's record of the libraries `cfmem args…` loaded (glibc's LD_DEBUG),
/// and whether it succeeded.
fn libraries_loaded_by(args: &[&str]) -> (String, bool) {
    let out = std::process::Command::new(tests::cfmem_path()).args(args).env("LD_DEBUG", "files").output().unwrap();
    (String::from_utf8_lossy(&out.stderr).into_owned(), out.status.success())
}

/// CUDA's libraries cost a process about 350 MB before any work; a command that never
/// trains must not load them, and one that asks for CUDA must.
#[test]
fn only_a_cuda_device_loads_libtorch_cuda() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.jsonl");
    write_corpus(&path, &synthetic::generate(&Spec::with_docs(50, 29)).texts);
    let out = dir.path().join("d.parquet");
    let (loaded, ok) =
        libraries_loaded_by(&["dups", "--corpus", path.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok && loaded.contains("libtorch_cpu.so"), "{loaded}");
    assert!(!loaded.contains("libtorch_cuda.so"), "cfmem dups loaded CUDA");
    let (loaded, _) = libraries_loaded_by(&["bench", "--device", "cuda", "--stacks", "1", "--steps", "1"]);
    assert!(loaded.contains("libtorch_cuda.so"), "{loaded}");
}

/// One JSONL line with an explicit id (exact duplicates need ids to be distinct documents).
fn serde_like_json(i: usize, text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            '\t' => vec!['\\', 't'],
            c => vec![c],
        })
        .collect();
    format!("{{\"id\":\"doc-{i}\",\"text\":\"{escaped}\"}}")
}

#[test]
fn bad_settings_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.jsonl");
    std::fs::write(&path, "{\"text\":\"a b c\"}\n").unwrap();
    let out = dir.path().join("d.parquet");
    let run = dir.path().join("run");
    let refused = |flag: &str, value: &str| {
        let dups = ["dups", "--corpus", path.to_str().unwrap(), "--out", out.to_str().unwrap(), flag, value];
        let plan = tests::plan_args(&path, &run, "4", "1", &[flag, value]);
        let (dups, plan) = (cfmem_err(&dups), cfmem_err(&plan));
        // The first line is the error; clap's usage lines that may follow name the command.
        let (dups, plan) = (dups.lines().next().unwrap().to_string(), plan.lines().next().unwrap());
        assert_eq!(dups, plan, "cfmem dups and cfmem plan read the flags alike");
        dups
    };
    assert!(refused("--threshold", "1.5").contains("--threshold: must be in (0, 1], got 1.5"));
    assert!(refused("--threshold", "0.01").contains("--threshold: 128 MinHash values catch pairs at J = 0.01"));
    assert!(refused("--max-candidates", "0").contains("--max-candidates: must be at least 1"));
    assert!(refused("--min-repeat", "0").contains("--min-repeat: must be at least 1"));
    let err = refused("--shingles", "lines:3");
    assert!(err.contains("'--shingles <SHINGLES>': expected words:N or chars:N, got \"lines:3\""), "{err}");
    assert!(refused("--shingles", "words:0").contains("the shingle length must be at least 1"));
    assert!(!out.exists() && !run.exists());
}
