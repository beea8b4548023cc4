//! End-to-end runs of the real binary with real libtorch training on the CPU.

use std::path::Path;

use subsets::schema::{self, ClusterTable, CopiesTable, LogTable};
use tests::{TINY_CONFIG, cfmem, cfmem_ok, mean, mem_acc_of, plan_args, scores, training_lock};

fn demo(out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["demo", "--out", out.to_str().unwrap(), "--device", "cpu", "--seed", "0"];
    args.extend_from_slice(extra);
    cfmem_ok(&args)
}

#[test]
fn demo_ranks_the_planted_kinds_as_theory_predicts_and_resumes() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("demo");
    let summary = demo(&run, &[]);
    assert!(summary.contains("most memorized"), "{summary}");
    assert!(summary.contains("by source:"), "{summary}");

    let scores = scores(&run);
    let random = mem_acc_of(&scores, "random-id");
    let lowest_random = random.iter().copied().fold(f64::INFINITY, f64::min);
    for other in ["sentence", "repetitive", "near-duplicate", "exact-duplicate"] {
        for m in mem_acc_of(&scores, other) {
            assert!(
                lowest_random > m,
                "every random-id document ({lowest_random:.3} at least) is above every {other} one ({m:.3})"
            );
        }
    }
    let sentence = mean(&mem_acc_of(&scores, "sentence"));
    assert!(mean(&random) > sentence + 0.2, "random-id {:.3} clearly above sentences {sentence:.3}", mean(&random));
    let repetitive = mem_acc_of(&scores, "repetitive");
    assert!(mean(&repetitive) < 0.1, "repetitive documents are near zero: mean {:.3}", mean(&repetitive));
    for m in repetitive.iter().chain(&mem_acc_of(&scores, "near-duplicate")) {
        assert!(*m < 0.15, "each repetitive or near-duplicate document is low: {m:.3}");
    }
    let exact = mean(&mem_acc_of(&scores, "exact-duplicate"));
    assert!(exact < 0.15, "exact duplicates are low: mean {exact:.3}");

    // Everything is complete: a second run does nothing.
    let run_arg = run.to_str().unwrap();
    let again = cfmem(&["run", run_arg, "--device", "cpu"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("0 jobs ran, 0 redone, 4 already complete"), "{stderr}");

    // A corrupted log fails its checksum and is redone, with the same numbers (CPU runs
    // are reproducible).
    let log = run.join("logs/job-00001.parquet");
    let original: LogTable = schema::read(&log).unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&log, bytes).unwrap();
    let again = cfmem(&["run", run_arg, "--device", "cpu"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("0 jobs ran, 1 redone, 3 already complete"), "{stderr}");
    assert_eq!(schema::read::<LogTable>(&log).unwrap(), original);

    // A missing log is run again.
    std::fs::remove_file(&log).unwrap();
    let again = cfmem(&["run", run_arg, "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("1 redone"));
    cfmem_ok(&["analyze", run_arg]);
}

#[test]
fn near_duplicate_cluster_is_memorized_as_a_group() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let documents = dir.path().join("documents");
    let clusters = dir.path().join("clusters");
    demo(&documents, &[]);
    demo(&clusters, &["--unit", "cluster"]);

    let by_document = scores(&documents);
    let members = mem_acc_of(&by_document, "near-duplicate");
    let cluster_of_member = (0..by_document.doc.len())
        .find(|&d| by_document.source[d].as_deref() == Some("near-duplicate"))
        .map(|d| by_document.cluster[d])
        .unwrap();
    assert!(
        members.len() >= 10 && by_document.cluster_size[cluster_of_member as usize] as usize >= members.len() - 1,
        "the planted near-duplicates form one cluster"
    );

    let groups: ClusterTable = schema::read(&clusters.join("analysis/clusters.parquet")).unwrap();
    let grouped = scores(&clusters);
    let member_doc = (0..grouped.doc.len()).find(|&d| grouped.source[d].as_deref() == Some("near-duplicate")).unwrap();
    let row = groups.cluster.iter().position(|&c| c == grouped.cluster[member_doc]).unwrap();
    let group_mem = groups.group_mem_acc[row].expect("every model has the cluster all IN or all OUT");
    assert!(groups.n_in[row] >= 4 && groups.n_out[row] >= 4);
    let member_mean = mean(&members);
    assert!(
        group_mem > member_mean + 0.1,
        "group memorization {group_mem:.3} should be clearly above the members' own {member_mean:.3}"
    );
    assert_eq!(grouped.group_mem_acc[member_doc], Some(group_mem), "document rows carry their cluster's value");
}

#[test]
fn memorization_grows_with_copies() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let lines: String = (0..48)
        .map(|i| {
            format!(
                "{{\"text\":\"The {} farmer walks to the market on day {} and sells {} apples.\"}}\n",
                ["old", "young", "busy", "quiet"][i % 4],
                i,
                i * 3 % 17
            )
        })
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[model]\nd_model = 64\ncontext = 128\n[train]\nepochs = 8\n[jobs]\nstack = 4\n").unwrap();
    let run = dir.path().join("run");
    let config = config.to_str().unwrap();
    cfmem_ok(&plan_args(&corpus, &run, "8", "4", &["--config", config, "--copies", "1,4,16", "--canaries", "12"]));
    cfmem_ok(&["run", run.to_str().unwrap(), "--device", "cpu"]);
    let summary = cfmem_ok(&["analyze", run.to_str().unwrap()]);
    assert!(summary.contains("copy sweep"), "{summary}");
    let copies: CopiesTable = schema::read(&run.join("analysis/copies.parquet")).unwrap();
    assert_eq!(copies.copies, [1, 4, 16]);
    assert_eq!(copies.canaries, [4, 4, 4]);
    let mem: Vec<f64> = copies.mem_acc.iter().map(|m| m.unwrap()).collect();
    assert!(mem[0] < mem[1] && mem[1] < mem[2], "memorization should grow with copies: {mem:?}");
    let log: LogTable = schema::read(&run.join("logs/job-00000.parquet")).unwrap();
    assert!(log.copies.iter().zip(&log.in_train).all(|(&c, &i)| (c > 0) == i));
    assert!(log.copies.contains(&16));
}

#[test]
fn cpu_runs_are_reproducible_from_the_seed_and_score_whole_documents() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    // Up to 300 bytes: documents of one to five windows of 63 bytes (context 64).
    let texts: Vec<String> = (0..12).map(|i| format!("document {i}: {}", "xyz".repeat(8 * i + 1))).collect();
    let lines: String = texts.iter().map(|text| format!("{{\"text\":\"{text}\"}}\n")).collect();
    std::fs::write(&corpus, lines).unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY_CONFIG).unwrap();
    let plan_and_run = |name: &str| {
        let run = dir.path().join(name);
        cfmem_ok(&plan_args(&corpus, &run, "4", "9", &["--config", config.to_str().unwrap()]));
        cfmem_ok(&["run", run.to_str().unwrap(), "--device", "cpu"]);
        (0..2)
            .map(|job| schema::read::<LogTable>(&run.join(format!("logs/job-{job:05}.parquet"))).unwrap())
            .collect::<Vec<_>>()
    };
    let first = plan_and_run("a");
    assert_eq!(first[0].model.len(), 2 * 12);
    for log in &first {
        for (&doc, &tokens) in log.doc.iter().zip(&log.tokens) {
            assert_eq!(tokens as usize, texts[doc as usize].len(), "every byte of document {doc} is evaluated");
        }
    }
    assert_eq!(first, plan_and_run("b"), "same seed, same logs bit for bit");
}
