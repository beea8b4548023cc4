//! Pinned outputs: `run.toml`, `analysis/summary.json` and the printed summary of a small fixed
//! run, compared byte for byte with the files in `tests/golden/`. The run is planned by the
//! real `cfmem plan` (sources, near-duplicates, a shared passage, a held-out document, four
//! levels) and analyzed by the real `cfmem analyze` on one thread; its logs are synthetic
//! ([`synthetic_run::write_logs`]), because a trained model's last digits depend on the CPU's
//! matrix kernels (CI's CPU sums in another order than a laptop's), and a pinned file must
//! change only when cfmem's own output does.
//!
//! After a change that alters these outputs on purpose, rewrite them and review the diff:
//!
//! ```text
//! CFMEM_UPDATE_GOLDEN=1 cargo test --release -p tests --test golden
//! git diff tests/golden
//! ```

use std::path::Path;
use std::process::Command;

use analysis::synthetic_run::{self, Row};
use subsets::layout::RunDir;
use tests::{TINY_CONFIG, cfmem_path};

/// Where the test's temporary folder stood, in the pinned files.
const DIR: &str = "<dir>";
/// What stands for a duration at the run's measured rate, in the pinned files.
const TIME: &str = "<duration at the run's rate>";

/// The corpus: three sources memorized to different degrees, a near-duplicate family, a
/// passage shared by four documents, and one held-out document.
fn corpus() -> String {
    let passage = "For the sake of the argument, let every model see this sentence exactly as written here.";
    let mut lines = Vec::new();
    let mut push = |id: String, source: &str, text: String| {
        lines.push(serde_json::json!({ "id": id, "source": source, "text": text }).to_string());
    };
    for i in 0..8 {
        push(
            format!("key-{i}"),
            "ids",
            format!("key {i}: {:08x}-{:04x}-{:06x}", 0x9e37_79b9u32.wrapping_mul(i + 1), i * 977, i * 65_521),
        );
    }
    for i in 0..8 {
        let body = format!("fn f{i}(x: u32) -> u32 {{ x * {} + {} }}", i + 2, i * 3);
        let text = if i < 4 { format!("{body}\n// {passage}") } else { body };
        push(format!("code-{i}"), "code", text);
    }
    let family = "The cat sat on the mat and watched the birds in the garden until the sun went down";
    for i in 0..8 {
        let text = if i < 3 {
            format!("{family}, said note {i}.")
        } else {
            format!("Note {i}: the weather on day {} was mild, with {} millimetres of rain.", i * 3, i + 1)
        };
        push(format!("prose-{i}"), "prose", text);
    }
    push("held-out".into(), "prose", "A document no model trains on: the influence target.".into());
    lines.join("\n") + "\n"
}

/// A log row: tokens, then accuracy and loss that improve with training by how memorable the
/// document's source is, with a fixed pseudo-random wobble per (model, document).
fn row(model: u32, doc: usize, in_train: &[bool]) -> Row {
    let tokens = 24 + (doc % 5) as u32;
    let memorable = match doc {
        0..8 => 0.8,
        8..16 => 0.3,
        _ => 0.05,
    };
    let boost = if in_train[doc] { memorable } else { 0.0 };
    let wobble = ((u64::from(model) * 7_919 + doc as u64 * 104_729) % 97) as f64 / 97.0;
    let accuracy = (0.3 + 0.5 * boost + 0.1 * wobble).min(1.0);
    Row {
        tokens,
        correct: (accuracy * f64::from(tokens)).round() as u32,
        nll: f64::from(tokens) * (3.0 - 2.0 * boost + 0.3 * wobble),
    }
}

fn cfmem_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(cfmem_path())
        .args(args)
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("cfmem runs");
    assert!(out.status.success(), "cfmem {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Compares `found` with the pinned file `name`, or rewrites it under `CFMEM_UPDATE_GOLDEN`.
fn pinned(name: &str, found: &str) -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
    if std::env::var_os("CFMEM_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, found).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected == found {
        return None;
    }
    let line = expected
        .lines()
        .zip(found.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.lines().count().min(found.lines().count()));
    Some(format!(
        "{name} differs from tests/golden/{name} at line {}:\n  pinned: {:?}\n  now:    {:?}",
        line + 1,
        expected.lines().nth(line).unwrap_or("(end of file)"),
        found.lines().nth(line).unwrap_or("(end of file)"),
    ))
}

#[test]
fn run_toml_summary_json_and_the_printed_summary_of_a_fixed_run_are_as_pinned() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corpus.jsonl"), corpus()).unwrap();
    std::fs::write(dir.path().join("tiny.toml"), TINY_CONFIG).unwrap();
    #[rustfmt::skip]
    let plan = [
        "plan", "--corpus", "corpus.jsonl", "--out", "run", "--models", "16", "--keep", "0.5", "--seed", "11",
        "--config", "tiny.toml", "--levels", "document,cluster,passage,field:source", "--max-unit-fraction", "0.4",
        "--holdout-ids", "held-out",
    ];
    cfmem_in(dir.path(), &plan);
    let run = dir.path().join("run");
    synthetic_run::write_logs(&RunDir::new(&run), |_, model, doc, in_train| row(model, doc, in_train)).unwrap();
    let printed = cfmem_in(dir.path(), &["analyze", "run"]);

    let place = dir.path().to_str().unwrap();
    // The path of the temporary folder, and the time a growth would take at the run's rate
    // (measured from the clock when the logs were written), vary from run to run.
    let normalized = |text: String| {
        let text = text.replace(place, DIR);
        match (text.find("models more, about "), text.find(" models per hour")) {
            (Some(start), Some(end)) if start < end => {
                format!("{}models more, about {TIME}{}", &text[..start], &text[end + " models per hour".len()..])
            }
            _ => text,
        }
    };
    let outputs = [
        ("run.toml", normalized(std::fs::read_to_string(run.join("run.toml")).unwrap())),
        ("summary.json", normalized(std::fs::read_to_string(run.join("analysis/summary.json")).unwrap())),
        ("summary.txt", normalized(printed)),
    ];
    let differences: Vec<String> = outputs.iter().filter_map(|(name, found)| pinned(name, found)).collect();
    assert!(
        differences.is_empty(),
        "{}\nIf the change is meant, rewrite them: CFMEM_UPDATE_GOLDEN=1 cargo test --release -p tests --test golden",
        differences.join("\n")
    );
}
