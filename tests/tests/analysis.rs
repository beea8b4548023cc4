//! End-to-end checks of what `analyze` and `influence` say: duplicates as the models see
//! them, one definition of clusters per run, group scores that agree between tables,
//! influence finding planted near-duplicate twins, intervals and reliability.

use std::path::Path;

use subsets::schema::{self, DuplicateTable};
use tests::{TINY_CONFIG, cfmem, cfmem_err, cfmem_ok, plan_args};

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
