//! The Hugging Face side of the end-to-end tests: the scripts of `tests/hf` run with
//! `$CFMEM_HF_PYTHON` (the venv `scripts/test.sh` makes) — tiny models of every family made
//! by `transformers`, and `transformers`'s own evaluation of a model — and the comparison of
//! cfmem's numbers with them.

use std::path::{Path, PathBuf};
use std::process::Command;

use subsets::schema::{self, EvaluationTable};

use crate::{cfmem_ok, missing};

/// The python of the Hugging Face venv; the test fails without it.
pub fn hf_python() -> PathBuf {
    match std::env::var_os("CFMEM_HF_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => missing("CFMEM_HF_PYTHON (the transformers venv that scripts/test.sh sets up)"),
    }
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hf").join(name)
}

pub fn python_ok(python: &Path, args: &[&str]) {
    let out = Command::new(python).args(args).output().expect("python runs");
    assert!(out.status.success(), "python {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// `transformers`'s per-document evaluation of `model` on `corpus`: (tokens, nll, correct).
pub fn reference(python: &Path, model: &Path, corpus: &Path) -> Vec<(u32, f64, u32)> {
    reference_with(python, model, corpus, None)
}

/// [`reference()`], with peft's LoRA `adapter` (a directory) loaded over `model` if given.
pub fn reference_with(python: &Path, model: &Path, corpus: &Path, adapter: Option<&Path>) -> Vec<(u32, f64, u32)> {
    let out = match adapter {
        Some(dir) => model.with_extension(format!("{}.reference.jsonl", dir.file_name().unwrap().to_str().unwrap())),
        None => model.with_extension("reference.jsonl"),
    };
    let mut args = vec![script("reference_nll.py"), model.to_path_buf(), corpus.to_path_buf(), out.clone()];
    if let Some(dir) = adapter {
        args.extend([PathBuf::from("--adapter"), dir.to_path_buf()]);
    }
    python_ok(python, &args.iter().map(|a| a.to_str().unwrap()).collect::<Vec<_>>());
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                row["tokens"].as_u64().unwrap() as u32,
                row["nll"].as_f64().unwrap(),
                row["correct"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// cfmem's per-document evaluation of `model` on `corpus`, on [`crate::test_device`].
pub fn evaluate(model: &Path, corpus: &Path) -> EvaluationTable {
    let out = model.with_extension("cfmem.parquet");
    cfmem_ok(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        &crate::test_device(),
    ]);
    schema::read(&out).unwrap()
}

/// Asserts cfmem's evaluation equals the reference: nll within 1e-4 relative, the same
/// token counts, and the same correct counts on at least 99.9% of documents.
pub fn assert_same(cfmem: &EvaluationTable, reference: &[(u32, f64, u32)], what: &str) {
    let ours: Vec<(u32, f64, u32)> =
        (0..cfmem.doc.len()).map(|i| (cfmem.tokens[i], cfmem.nll[i], cfmem.correct[i])).collect();
    assert_same_rows(&ours, reference, what);
}

/// [`assert_same`] of (tokens, nll, correct) per document.
pub fn assert_same_rows(cfmem: &[(u32, f64, u32)], reference: &[(u32, f64, u32)], what: &str) {
    assert_eq!(cfmem.len(), reference.len(), "{what}");
    let mut correct_differs = 0;
    for (i, (&(tokens, nll, correct), &(our_tokens, our_nll, our_correct))) in reference.iter().zip(cfmem).enumerate() {
        assert_eq!(our_tokens, tokens, "{what}: document {i}'s tokens");
        let relative = (our_nll - nll).abs() / nll.abs().max(1e-12);
        assert!(relative < 1e-4, "{what}: document {i}: nll {our_nll} in cfmem, {nll} in transformers");
        correct_differs += usize::from(our_correct != correct);
    }
    assert!(correct_differs * 1000 <= reference.len(), "{what}: correct counts differ on {correct_differs} documents");
}

/// Documents shorter and longer than a 32-position context, with non-ASCII text and the
/// literal text of GPT-2's end-of-text token.
pub fn write_corpus(path: &Path) {
    let texts = [
        "Short.".to_string(),
        "A medium document about cats and dogs, thirty-odd bytes or more.".to_string(),
        "A much longer document that spans several windows. ".repeat(12),
        "Ünïcødé text with € signs, 🙂 and <|endoftext|> inside it, then more words.".to_string(),
        "x".to_string(),
    ];
    let lines: String = texts.iter().map(|t| serde_json::json!({ "text": t }).to_string() + "\n").collect();
    std::fs::write(path, lines).unwrap();
}
