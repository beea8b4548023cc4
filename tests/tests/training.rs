//! End-to-end runs of the real binary with real libtorch training on the CPU: a copy sweep,
//! reproducibility from the seed (evaluation checkpoints changing nothing), and damaged logs
//! redone (the demo's runs are in `demo.rs`).

use subsets::schema::{self, CopiesTable, LogTable};
use tests::{TINY_CONFIG, cfmem, cfmem_ok, plan_args, training_lock};

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
fn cpu_runs_are_reproducible_from_the_seed_score_whole_documents_and_redo_damaged_logs() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    // Up to 300 bytes: documents of one to five windows of 63 bytes (context 64).
    let texts: Vec<String> = (0..12).map(|i| format!("document {i}: {}", "xyz".repeat(8 * i + 1))).collect();
    let lines: String = texts.iter().map(|text| format!("{{\"text\":\"{text}\"}}\n")).collect();
    std::fs::write(&corpus, lines).unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY_CONFIG).unwrap();
    // One thread for every run of this test: docs/commands.md promises bit-for-bit equality at
    // the same thread count, and how libtorch splits a sum across threads may depend on it.
    let plan_and_run = |name: &str, extra: &[&str]| {
        let run = dir.path().join(name);
        let mut args = vec!["--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        cfmem_ok(&plan_args(&corpus, &run, "4", "9", &args));
        cfmem_ok(&["run", run.to_str().unwrap(), "--device", "cpu", "--threads", "1"]);
        (0..2)
            .map(|job| schema::read::<LogTable>(&run.join(format!("logs/job-{job:05}.parquet"))).unwrap())
            .collect::<Vec<_>>()
    };
    let first = plan_and_run("a", &[]);
    assert_eq!(first[0].model.len(), 2 * 12);
    for log in &first {
        for (&doc, &tokens) in log.doc.iter().zip(&log.tokens) {
            assert_eq!(tokens as usize, texts[doc as usize].len(), "every byte of document {doc} is evaluated");
        }
    }
    assert_eq!(first, plan_and_run("b", &[]), "same seed, same logs bit for bit");
    // Evaluating in the middle of training changes nothing in it: the end's rows are the
    // same, value for value.
    for (log, with_checkpoints) in first.iter().zip(plan_and_run("c", &["--eval-at", "0.3,0.6,1"])) {
        assert_eq!(with_checkpoints.model.len(), 3 * log.model.len());
        let end = with_checkpoints.model.len() - log.model.len();
        assert!(with_checkpoints.checkpoint[end..].iter().all(|&c| c == 1.0));
        assert_eq!(with_checkpoints.step[end..], log.step[..]);
        assert_eq!(with_checkpoints.nll[end..], log.nll[..]);
        assert_eq!(with_checkpoints.correct[end..], log.correct[..]);
        assert_eq!(with_checkpoints.doc[end..], log.doc[..]);
        assert_eq!(with_checkpoints.model[end..], log.model[..]);
        assert_ne!(with_checkpoints.nll[..end / 3], log.nll[..], "30% of training is not the end");
    }

    // Everything is complete: a second run does nothing.
    let run = dir.path().join("a");
    let run_arg = run.to_str().unwrap();
    let again = cfmem(&["run", run_arg, "--device", "cpu", "--threads", "1"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("0 jobs ran, 0 redone, 2 already complete"), "{stderr}");
    // A corrupted log fails its checksum and is redone, with the same numbers.
    let log = run.join("logs/job-00001.parquet");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&log, bytes).unwrap();
    let again = cfmem(&["run", run_arg, "--device", "cpu", "--threads", "1"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("0 jobs ran, 1 redone, 1 already complete"), "{stderr}");
    assert_eq!(schema::read::<LogTable>(&log).unwrap(), first[1]);
    // A missing log is run again.
    std::fs::remove_file(&log).unwrap();
    let again = cfmem(&["run", run_arg, "--device", "cpu", "--threads", "1"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("1 redone"));
    cfmem_ok(&["analyze", run_arg]);
}
