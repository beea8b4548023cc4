//! The regime on real text: the Python standard library's docstrings (from Debian's python3,
//! extracted by `tests/real_text/docstrings.py`; nothing is downloaded), 160 documents
//! audited with and without a background of other docstrings. Both runs take the same
//! number of training steps; only what they train on differs.

use std::path::Path;
use std::process::Command;

use tests::{cfmem_ok, plan_args, scores, training_lock};

/// The real-text runs' model: small enough for CI, big enough to learn English bytes.
const CONFIG: &str = "[model]\nn_layer = 2\nn_head = 4\nd_model = 64\ncontext = 128\n\
[train]\nepochs = EPOCHS\nbatch_size = 16\nlr = 0.01\n[jobs]\nstack = 4\n";
/// Epochs without and with the background: about 450 steps each.
const EPOCHS_ALONE: &str = "25";
const EPOCHS_WITH_BACKGROUND: &str = "2";

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Plans, runs and analyzes 4 models of `corpus` (and `background`) into `run`; returns
/// the printed summary and `summary.json`.
fn audit(dir: &Path, name: &str, epochs: &str, background: Option<&Path>) -> (String, serde_json::Value) {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, CONFIG.replace("EPOCHS", epochs)).unwrap();
    let run = dir.join(name);
    let corpus = dir.join("corpus.jsonl");
    let mut extra = vec!["--config", config.to_str().unwrap()];
    if let Some(path) = background {
        extra.extend(["--background", path.to_str().unwrap()]);
    }
    cfmem_ok(&plan_args(&corpus, &run, "4", "1", &extra));
    cfmem_ok(&["run", run.to_str().unwrap(), "--device", "cpu"]);
    let printed = cfmem_ok(&["analyze", run.to_str().unwrap()]);
    let summary = std::fs::read_to_string(run.join("analysis/summary.json")).unwrap();
    (printed, serde_json::from_str(&summary).unwrap())
}

#[test]
fn a_background_corpus_turns_a_memorizing_regime_into_one_that_generalizes() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("real_text/docstrings.py");
    let extracted = Command::new("python3").arg(&script).arg(dir.path()).output().expect("python3 runs");
    assert!(extracted.status.success(), "{}", String::from_utf8_lossy(&extracted.stderr));
    let background = dir.path().join("background.jsonl");
    let background_documents = std::fs::read_to_string(&background).unwrap().lines().count();
    assert!(background_documents > 500, "{background_documents} background docstrings");

    let (alone, alone_summary) = audit(dir.path(), "alone", EPOCHS_ALONE, None);
    let (mixed, mixed_summary) = audit(dir.path(), "mixed", EPOCHS_WITH_BACKGROUND, Some(&background));
    eprintln!("without a background:\n{alone}\nwith a background:\n{mixed}");

    assert!(alone.contains("warning: the models do not generalize"), "{alone}");
    assert_eq!(alone_summary["diagnosis"]["memorizing"], true);
    assert!(!mixed.contains("warning:"), "{mixed}");
    assert_eq!(mixed_summary["diagnosis"]["memorizing"], false);
    let without = median(scores(&dir.path().join("alone")).mem_acc.into_iter().flatten().collect());
    let with = median(scores(&dir.path().join("mixed")).mem_acc.into_iter().flatten().collect());
    assert!(with < 0.1 && with < without / 3.0, "median mem_acc {with:.3} with a background, {without:.3} without");

    // The background is in run.toml and in every model's training, never in the scores.
    let toml = std::fs::read_to_string(dir.path().join("mixed/run.toml")).unwrap();
    assert!(toml.contains(&format!("[background]\npath = \"{}\"", background.display())), "{toml}");
    assert!(toml.contains(&format!("documents = {background_documents}")), "{toml}");
    let scored = scores(&dir.path().join("mixed"));
    assert_eq!(scored.doc.len(), 160);
    let audited = ["concurrent", "email", "http", "json", "logging", "unittest"];
    assert!(scored.source.iter().all(|s| audited.contains(&s.as_deref().unwrap())), "{:?}", scored.source);
    assert!(scored.n_in.iter().zip(&scored.n_out).all(|(i, o)| i + o == 4));
}
