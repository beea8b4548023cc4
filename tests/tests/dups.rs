//! `cfmem dups` on a generated corpus finds exactly the planted duplicate structure.

use std::collections::BTreeSet;

use analysis::dups::synthetic::{self, Spec};
use subsets::schema::{self, DuplicateTable};
use tests::{cfmem_err, cfmem_ok};

#[test]
fn finds_exactly_the_planted_structure() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = synthetic::generate(&Spec::with_docs(1500, 21));
    let lines: String =
        corpus.texts.iter().enumerate().map(|(i, text)| format!("{}\n", serde_like_json(i, text))).collect();
    let path = dir.path().join("corpus.jsonl");
    std::fs::write(&path, lines).unwrap();
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
fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.jsonl");
    std::fs::write(&path, "{\"text\":\"a b c\"}\n").unwrap();
    let out = dir.path().join("d.parquet");
    let err =
        cfmem_err(&["dups", "--corpus", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threshold", "1.5"]);
    assert!(err.contains("threshold"), "{err}");
    let err = cfmem_err(&[
        "dups",
        "--corpus",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shingles",
        "lines:3",
    ]);
    assert!(err.contains("expected words:N or chars:N"), "{err}");
    assert!(!out.exists());
}
