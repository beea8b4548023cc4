//! End-to-end checks of what `analyze` and `influence` say: duplicates as the models see
//! them, one definition of clusters per run, group scores that agree between tables,
//! influence finding planted near-duplicate twins, intervals and reliability.

use std::path::Path;

use subsets::schema::{self, ClusterTable, DuplicateTable, InfluenceTable, ReliabilityTable};
use tests::{TINY_CONFIG, cfmem, cfmem_err, cfmem_ok, plan_args, scores, training_lock};

fn write_corpus(dir: &Path, texts: &[String]) -> std::path::PathBuf {
    let path = dir.join("corpus.jsonl");
    let lines: String =
        texts.iter().enumerate().map(|(i, t)| format!("{{\"id\":\"d{i}\",\"text\":\"{t}\"}}\n")).collect();
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn a_runs_duplicates_are_scored_on_the_text_the_models_see_and_its_settings_are_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    // Capped at 63 tokens, the models see the first 63 bytes.
    let head = "x".repeat(63);
    let texts: Vec<String> = vec![
        format!("{head} and one ending"),
        format!("{head} but quite another ending entirely"),
        "something unrelated".into(),
        "and something else".into(),
    ];
    let corpus = write_corpus(dir.path(), &texts);
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY_CONFIG.replace("[model]\n", "[model]\nmax_tokens_per_doc = 63\n")).unwrap();
    let run = dir.path().join("run");
    let planned = cfmem(&plan_args(&corpus, &run, "4", "1", &["--config", config.to_str().unwrap()]));
    let said = String::from_utf8_lossy(&planned.stderr);
    assert!(said.contains("2 documents cut to 63 tokens"), "{said}");
    let planned: DuplicateTable = schema::read(&run.join("analysis/duplicates.parquet")).unwrap();
    assert_eq!(planned.exact_dup_count, [1, 1, 0, 0], "identical in what the models see");
    assert_eq!(planned.cluster[0], planned.cluster[1]);

    let out = dir.path().join("dups.parquet");
    cfmem_ok(&["dups", "--corpus", corpus.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let full: DuplicateTable = schema::read(&out).unwrap();
    assert_eq!(full.exact_dup_count, [0, 0, 0, 0], "`cfmem dups` scores full texts");

    let toml = std::fs::read_to_string(run.join("run.toml")).unwrap();
    assert!(toml.contains("shingles = \"words:5\"\nmin_repeat = 50\nmax_candidates = 1000\n"), "{toml}");
    let again = |flag: &str, value: &str| {
        let mut args = plan_args(&corpus, &run, "4", "1", &["--config", config.to_str().unwrap()]);
        args.extend([flag, value]);
        cfmem(&args)
    };
    let err = String::from_utf8_lossy(&again("--shingles", "chars:7").stderr).into_owned();
    assert!(err.contains("different configuration (design.shingles: \"words:5\" -> \"chars:7\")"), "{err}");
    // --max-candidates changes near_dup_count and near_dup_capped: it is part of the run too.
    let err = String::from_utf8_lossy(&again("--max-candidates", "5").stderr).into_owned();
    assert!(err.contains("different configuration (design.max_candidates: 1000 -> 5)"), "{err}");
    let same = again("--max-candidates", "1000");
    assert!(same.status.success() && String::from_utf8_lossy(&same.stderr).contains("nothing to do"));
}

#[test]
fn influence_settings_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let err = cfmem_err(&["influence", run.to_str().unwrap(), "--targets", "some"]);
    assert!(err.contains("--targets: expected holdout, all or ids FILE, got \"some\""), "{err}");
    let err = cfmem_err(&["influence", run.to_str().unwrap()]);
    assert!(err.contains("is not a planned run"), "{err}");
}

#[test]
fn demo_twins_are_their_targets_top_influence_and_the_tables_agree() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("demo");
    // 32 models: with fewer, a source whose membership happens to overlap a twin's
    // inherits much of the twin's influence.
    let printed = cfmem_ok(&["demo", "--out", run.to_str().unwrap(), "--device", "cpu", "--models", "32"]);
    assert!(printed.contains("reliability: halves of 16 models agree at Spearman"), "{printed}");
    assert!(printed.contains("strongest pairs"), "{printed}");

    let influence: InfluenceTable = schema::read(&run.join("analysis/influence.parquet")).unwrap();
    let of_target =
        |id: &str| -> Vec<usize> { (0..influence.target.len()).filter(|&i| influence.target_id[i] == id).collect() };
    let mut weakest_twin = f64::INFINITY;
    for i in 0..3 {
        let rows = of_target(&format!("twin-target-{i:03}"));
        assert_eq!(rows.len(), 10, "top 10 by default");
        let (first, second) = (rows[0], rows[1]);
        assert_eq!(influence.source_id[first], format!("twin-{i:03}"), "the twin is the top influence");
        let (top, next) = (influence.infl_acc[first], influence.infl_acc[second].abs());
        assert!(top > next + 0.2, "twin {i}: {top:.3} clearly above the next {next:.3}");
        weakest_twin = weakest_twin.min(top);
    }
    for i in 0..3 {
        let rows = of_target(&format!("unseen-{i:03}"));
        let top = influence.infl_acc[rows[0]].abs();
        assert!(top < weakest_twin / 2.0, "an ordinary target's top influence {top:.3} is small");
    }

    let scores = scores(&run);
    let clusters: ClusterTable = schema::read(&run.join("analysis/clusters.parquet")).unwrap();
    for doc in (0..scores.doc.len()).filter(|&d| scores.cluster_size[d] > 1) {
        let row = clusters.cluster.iter().position(|&c| c == scores.cluster[doc]).unwrap();
        assert_eq!(scores.group_mem_acc[doc], clusters.group_mem_acc[row], "{}", scores.doc_id[doc]);
    }
    let twin = scores.doc_id.iter().position(|id| id == "twin-000").unwrap();
    assert_eq!(scores.cluster_size[twin], 2, "a twin and its target are one near-duplicate cluster");

    let mut inside = 0;
    for doc in 0..scores.doc.len() {
        match (scores.mem_acc_lo[doc], scores.mem_acc[doc], scores.mem_acc_hi[doc]) {
            (Some(lo), Some(mem), Some(hi)) => {
                assert!(lo <= hi, "{lo} {hi}");
                inside += usize::from(lo <= mem && mem <= hi);
            }
            (None, None, None) => assert!(scores.holdout[doc]),
            other => panic!("interval and score disagree: {other:?}"),
        }
    }
    assert!(inside * 10 >= scores.mem_acc.iter().flatten().count() * 9, "intervals hold their estimates");

    let reliability: ReliabilityTable = schema::read(&run.join("analysis/reliability.parquet")).unwrap();
    assert_eq!(reliability.measure[0], "split-half");
    assert_eq!(reliability.models, [16, 4, 8, 16, 32]);
    assert!(reliability.predicted[0].unwrap() > 0.5, "{reliability:?}");
}
