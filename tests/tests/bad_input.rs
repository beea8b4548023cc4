//! Every bad input gets a clear message naming where the problem is, a non-zero exit, and
//! no run directory.

use std::path::{Path, PathBuf};

use tests::{TINY_CONFIG, cfmem_err, cfmem_ok, plan_args};

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case { dir: tempfile::tempdir().unwrap() }
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// `cfmem plan` on `corpus` with `extra` flags must fail with a message containing
    /// `expected` and leave no run directory behind.
    fn plan_fails(&self, corpus: &Path, extra: &[&str], expected: &str) {
        let out = self.run_dir();
        let mut args = vec!["plan", "--corpus", corpus.to_str().unwrap(), "--out", out.to_str().unwrap()];
        for default in [["--models", "4"], ["--keep", "0.5"], ["--seed", "1"]] {
            if !extra.contains(&default[0]) {
                args.extend_from_slice(&default);
            }
        }
        args.extend_from_slice(extra);
        let stderr = cfmem_err(&args);
        assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
        assert!(!out.exists(), "a failed plan left {}", out.display());
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".cfmem"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

const GOOD: &[u8] = b"{\"text\":\"one\"}\n{\"text\":\"two\"}\n{\"text\":\"three\"}\n";

#[test]
fn corpus_errors_name_file_and_line() {
    let case = Case::new();
    let bad_utf8 = case.file("utf8.jsonl", b"{\"text\":\"ok\"}\n{\"text\":\"\xff\xfe\"}\n");
    case.plan_fails(&bad_utf8, &[], "utf8.jsonl: line 2: invalid UTF-8 at byte 9");
    let malformed = case.file("json.jsonl", b"{\"text\":\"ok\"}\n{\"text\": oops}\n");
    case.plan_fails(&malformed, &[], "json.jsonl: line 2: malformed JSON");
    let missing = case.file("missing.jsonl", b"{\"text\":\"ok\"}\n{\"body\":\"no text\"}\n");
    case.plan_fails(&missing, &[], "missing.jsonl: line 2: missing field `text`");
    let empty_doc = case.file("emptydoc.jsonl", b"{\"text\":\"ok\"}\n{\"text\":\"\"}\n");
    case.plan_fails(&empty_doc, &[], "emptydoc.jsonl: line 2: field `text` is empty");
    let dup = case.file("dup.jsonl", b"{\"text\":\"a\",\"id\":\"x\"}\n{\"text\":\"b\",\"id\":\"x\"}\n");
    case.plan_fails(&dup, &[], "dup.jsonl: line 2: duplicate document id \"x\" (first seen at line 1)");
    let same_text = case.file("sametext.jsonl", b"{\"text\":\"a\"}\n{\"text\":\"a\"}\n");
    case.plan_fails(&same_text, &[], "sametext.jsonl: line 2: duplicate document id");
    let empty = case.file("empty.jsonl", b"\n");
    case.plan_fails(&empty, &[], "empty.jsonl: the corpus has no documents");
    case.plan_fails(&case.dir.path().join("absent.jsonl"), &[], "absent.jsonl: No such file or directory");
}

#[test]
fn design_errors_say_what_to_change() {
    let case = Case::new();
    let corpus = case.file("good.jsonl", GOOD);
    case.plan_fails(&corpus, &["--keep", "1.0"], "--keep: must be strictly between 0 and 1, got 1");
    case.plan_fails(&corpus, &["--keep", "0"], "--keep: must be strictly between 0 and 1, got 0");
    case.plan_fails(&corpus, &["--models", "1"], "--models: too few models: with 1 models and keep 0.5");
    case.plan_fails(&corpus, &["--holdout", "1.5"], "--holdout: must be in [0, 1), got 1.5");
    let config = case.file("bad.toml", b"[model]\nlayers = 2\n");
    case.plan_fails(&corpus, &["--config", config.to_str().unwrap()], "bad.toml: TOML parse error at line 2, column 1");
    let config = case.file("heads.toml", b"[model]\nd_model = 30\nn_head = 4\n");
    case.plan_fails(
        &corpus,
        &["--config", config.to_str().unwrap()],
        "model.d_model must be a positive multiple of model.n_head",
    );
    case.plan_fails(&corpus, &["--copies", "1,2"], "--copies: copy counts need canaries");
    for (eval_at, message) in [
        ("[]", "train.eval_at must list at least one checkpoint, ending in 1.0"),
        ("[0.5, 0.25, 1.0]", "train.eval_at = [0.5, 0.25, 1.0] must increase: 0.25 comes after 0.5"),
        ("[0.0, 1.0]", "train.eval_at = [0.0, 1.0]: 0 is not a fraction of training in (0, 1]"),
        ("[0.5, 1.5]", "train.eval_at = [0.5, 1.5]: 1.5 is not a fraction of training in (0, 1]"),
        ("[0.25, 0.5]", "train.eval_at = [0.25, 0.5] must end in 1.0"),
    ] {
        let config = case.file("eval_at.toml", format!("[train]\neval_at = {eval_at}\n").as_bytes());
        case.plan_fails(&corpus, &["--config", config.to_str().unwrap()], message);
    }
    // The flags say the same, and the demo names its flag.
    case.plan_fails(&corpus, &["--eval-at", "0.5,0.25,1"], "train.eval_at = [0.5, 0.25, 1.0] must increase");
    let demo = case.run_dir();
    let stderr = cfmem_err(&["demo", "--out", demo.to_str().unwrap(), "--device", "cpu", "--eval-at", "0.5"]);
    assert!(
        stderr.contains("--eval-at: invalid setting: train.eval_at = [0.5] must end in 1.0"),
        "expected the flag and the problem in:\n{stderr}"
    );
    assert!(!demo.exists(), "a refused demo left {}", demo.display());
}

#[test]
fn level_errors_name_the_level_and_plan_nothing() {
    let case = Case::new();
    let corpus = case.file(
        "fields.jsonl",
        b"{\"text\":\"one\",\"site\":\"a.org\",\"year\":1999}\n{\"text\":\"two\",\"site\":\"b.org\"}\n{\"text\":\"three\"}\n",
    );
    case.plan_fails(&corpus, &["--unit", "field:url"], "fields.jsonl: no document has a field `url`");
    case.plan_fails(
        &corpus,
        &["--levels", "document,field:year"],
        "fields.jsonl: line 1: field `year` is not a string (found 1999); a group field must be one",
    );
    case.plan_fails(
        &corpus,
        &["--levels", "document,paragraph"],
        "invalid value 'paragraph' for '--levels <LEVELS>': unknown level \"paragraph\": expected document, cluster, passage, topic:K (K topics found from the text) or field:NAME",
    );
    case.plan_fails(&corpus, &["--levels", "cluster,document,cluster"], "--levels: level cluster is given twice");
    case.plan_fails(
        &corpus,
        &["--levels", "passage"],
        "--levels: a spectrum needs two levels or more (for one, use --unit passage)",
    );
    case.plan_fails(
        &corpus,
        &["--levels", "document,cluster,passage", "--models", "4"],
        "--models: too few models for the spectrum: the block of level cluster gets 1 of the 4 models, and with keep 0.5 \
         a block needs 2 or more; plan 6 models or more for 3 levels",
    );
    case.plan_fails(&corpus, &["--max-unit-fraction", "0"], "--max-unit-fraction: must be in (0, 1], got 0");
    let dir = case.dir.path().join("texts");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "a text").unwrap();
    case.plan_fails(&dir, &["--unit", "field:site"], "a directory of .txt files has no field `site`");
}

#[test]
fn replanning_is_a_no_op_and_a_different_plan_is_refused() {
    let case = Case::new();
    let corpus = case.file("good.jsonl", GOOD);
    let config = case.file("tiny.toml", TINY_CONFIG.as_bytes());
    let out = case.run_dir();
    let config = config.to_str().unwrap();
    let args = plan_args(&corpus, &out, "4", "3", &["--config", config]);
    cfmem_ok(&args);
    let before = std::fs::read(out.join("membership.bin")).unwrap();
    cfmem_ok(&args);
    assert_eq!(std::fs::read(out.join("membership.bin")).unwrap(), before);
    let stderr = cfmem_err(&plan_args(&corpus, &out, "6", "3", &["--config", config]));
    assert!(stderr.contains("already holds a plan with a different configuration (design.models: 4 -> 6)"), "{stderr}");
    assert_eq!(std::fs::read(out.join("membership.bin")).unwrap(), before);
}

#[test]
fn parquet_corpus_errors_name_the_row() {
    use subsets::schema::{self, JobTable};
    let case = Case::new();
    // A Parquet file without a `text` column.
    let path = case.dir.path().join("corpus.parquet");
    schema::write(&path, &JobTable { job: vec![1], model: vec![2] }, None).unwrap();
    case.plan_fails(&path, &[], "corpus.parquet: no column `text`");
}

#[test]
fn run_and_analyze_refuse_a_directory_that_is_no_run() {
    let case = Case::new();
    let dir = case.dir.path().to_str().unwrap();
    assert!(cfmem_err(&["run", dir, "--device", "cpu"]).contains("no run.toml here"));
    assert!(cfmem_err(&["analyze", dir]).contains("is not a planned run"));
    assert!(cfmem_err(&["run", dir, "--device", "tpu"]).contains("unknown device \"tpu\""));
}

#[test]
fn bf16_on_the_cpu_is_refused_before_training() {
    let case = Case::new();
    let corpus = case.file("corpus.jsonl", b"{\"text\":\"one\"}\n{\"text\":\"two\"}\n{\"text\":\"three\"}\n");
    let config =
        case.file("bf16.toml", b"[model]\nd_model = 32\ncontext = 16\n[train]\nepochs = 1\nprecision = \"bf16\"\n");
    let out = case.run_dir();
    cfmem_ok(&plan_args(&corpus, &out, "4", "1", &["--config", config.to_str().unwrap()]));
    let stderr = cfmem_err(&["run", out.to_str().unwrap(), "--device", "cpu"]);
    assert!(stderr.contains("train.precision: \"bf16\" needs a CUDA device"), "{stderr}");
    assert!(!out.join("logs/job-00000.parquet").exists(), "nothing written");
}

#[test]
fn counts_below_their_least_are_refused_by_the_flag_before_anything_runs() {
    let case = Case::new();
    let out = case.dir.path().join("demo");
    let stderr = cfmem_err(&["demo", "--models", "1", "--out", out.to_str().unwrap()]);
    assert!(stderr.contains("invalid value '1' for '--models <MODELS>': 1 is not in 2.."), "{stderr}");
    assert!(!out.exists(), "no demo run planned");
    let stderr = cfmem_err(&["bench", "--stacks", "1,0", "--device", "cpu"]);
    assert!(stderr.contains("invalid value '0' for '--stacks <STACKS>': 0 is not in 1.."), "{stderr}");
    assert!(!stderr.contains("measuring"), "nothing measured: {stderr}");
}
