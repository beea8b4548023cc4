//! `cfmem attack` end to end: a LoRA run's model, exported and attacked from outside with
//! the run's other models as shadows, gets the very scores the run's leave-one-model-out
//! evaluation gives it; the run's base, evaluated once by `cfmem run`, is the reference
//! attack's model; and a model the run's models cannot stand for (another family, another
//! tokenizer) is refused, naming what differs.
//!
//! The base is a random GPT-2 made by `transformers` (`tests/hf/tiny_model.py`, run with
//! `$CFMEM_HF_PYTHON`); without it the test is ignored, and `scripts/test.sh` runs it.

use std::path::Path;

use analysis::attacks::{self, ATTACKS, Shadows};
use analysis::membership::zlib_bytes;
use analysis::per_model::{self, RunLogs};
use subsets::config::RunConfig;
use subsets::layout::RunDir;
use subsets::schema::{self, AttackTable, CorpusTable, EvaluationTable, Table, TargetAttackTable};
use tests::hf::{hf_python, python_ok, script};
use tests::{cfmem_err, cfmem_ok, plan_args, sentences, training_lock};

/// Every attack's leave-one-model-out scores of run model `model` on each document, as
/// `cfmem analyze` computes them: `[attack][doc]`.
fn leave_one_out_scores(run: &Path, model: u32) -> Vec<Vec<f32>> {
    let dir = RunDir::new(run);
    let config = RunConfig::from_file(&dir.config()).unwrap();
    let corpus: CorpusTable = schema::read(&dir.corpus()).unwrap();
    let logs = RunLogs::open(&dir).unwrap();
    let room = logs.scored_values(&config.design, corpus.len(), (0..corpus.len() as u32).collect(), true);
    let values = per_model::read(&logs.logs, room.with_token_statistics()).unwrap();
    let zlib: Vec<u32> = corpus.text.iter().map(|t| zlib_bytes(t)).collect();
    let reference = attacks::reference_statistic(&dir, &corpus).unwrap().expect("cfmem run wrote the reference");
    let shadows = Shadows::new(&values, &corpus, &zlib, Some(&reference));
    shadows.leave_one_out(&[values.row(model).unwrap()])
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn an_exported_model_attacked_from_outside_gets_its_leave_one_out_scores_and_an_incompatible_one_is_refused() {
    let python = hf_python();
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    python_ok(&python, &[script("tiny_model.py").to_str().unwrap(), base.to_str().unwrap()]);
    let corpus = dir.path().join("corpus.jsonl");
    sentences(&corpus, 16, 7);
    let config = dir.path().join("lora.toml");
    std::fs::write(
        &config,
        "[train]\nadapter = \"lora\"\nlora_rank = 4\nlora_alpha = 8.0\nepochs = 10\nbatch_size = 4\nlr = 0.01\n\
         [jobs]\nstack = 4\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let run_arg = run.to_str().unwrap();
    cfmem_ok(&plan_args(
        &corpus,
        &run,
        "8",
        "3",
        &["--init", base.to_str().unwrap(), "--config", config.to_str().unwrap()],
    ));
    let exported = dir.path().join("exported");
    let export = ["export", run_arg, "--model", "2", "--out", exported.to_str().unwrap()];
    // Before the jobs ran: the shadows are missing.
    let out = dir.path().join("attack.parquet");
    let attack = |target: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["attack", run_arg, "--target", target.to_str().unwrap(), "--out", out.to_str().unwrap()]
                .map(String::from)
                .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(["--device", "cpu"].map(String::from));
        args
    };
    let err = cfmem_err(&as_strs(&attack(&base, &[])));
    assert!(err.contains("the shadows are the run's models: finish them with `cfmem run"), "{err}");
    assert!(!out.exists());

    let ran = tests::cfmem(&["run", run_arg, "--device", "cpu"]);
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    assert!(String::from_utf8_lossy(&ran.stderr).contains("the membership attacks' reference"));
    let reference: EvaluationTable = schema::read(&run.join("reference.parquet")).unwrap();
    let documents: CorpusTable = schema::read(&run.join("corpus.parquet")).unwrap();
    assert_eq!(
        (reference.doc_id.clone(), reference.tokens.clone()),
        (documents.doc_id.clone(), documents.tokens.clone())
    );
    cfmem_ok(&["analyze", run_arg]);
    let table: AttackTable = schema::read(&run.join("analysis/attacks.parquet")).unwrap();
    let row = table.attack.iter().position(|a| a == "reference").unwrap();
    assert!(table.auc[row].is_some() && table.targets[row] == 8, "the reference attack is available: {table:?}");

    cfmem_ok(&export);
    // Model 2's members, as the run's membership says.
    let log_rows = tests::logged_evaluation(&run, 2);
    let members: Vec<String> = {
        let logs = RunLogs::open(&RunDir::new(&run)).unwrap();
        let cfg = RunConfig::from_file(&run.join("run.toml")).unwrap();
        let room = logs.scored_values(&cfg.design, documents.len(), (0..documents.len() as u32).collect(), true);
        let values = per_model::read(&logs.logs, room).unwrap();
        let row = values.row(2).unwrap();
        (0..documents.len()).filter(|&d| values.member_row(row)[d]).map(|d| documents.doc_id[d].clone()).collect()
    };
    let ids = dir.path().join("members.txt");
    std::fs::write(&ids, members.join("\n")).unwrap();
    let printed = cfmem_ok(&as_strs(&attack(&exported, &["--leave-out", "2", "--members", ids.to_str().unwrap()])));
    assert!(printed.contains("16 documents attacked with 7 run models as shadows"), "{printed}");
    assert!(printed.contains(&format!(
        "attacks on this target ({} members, {} non-members",
        members.len(),
        16 - members.len()
    )));
    assert!(printed.contains("lira_online   AUC"), "{printed}");
    let scores: TargetAttackTable = schema::read(&out).unwrap();
    let loo = leave_one_out_scores(&run, 2);
    let column = |a: usize| match ATTACKS[a] {
        "lira_online" => &scores.lira_online,
        "lira_offline" => &scores.lira_offline,
        "loss" => &scores.loss,
        "zlib" => &scores.zlib,
        "min_k" => &scores.min_k,
        "min_k_pp" => &scores.min_k_pp,
        _ => &scores.reference,
    };
    for d in 0..16 {
        // The exported model's own evaluation, merged weights in fp32, against the run's.
        let (tokens, nll, _) = log_rows[d];
        assert_eq!(scores.tokens[d], tokens);
        assert!((scores.nll[d] - nll).abs() < 1e-4 * nll, "doc {d}: nll {} exported, {nll} in the run", scores.nll[d]);
        assert_eq!(scores.member[d], Some(members.contains(&documents.doc_id[d])));
        for a in 0..ATTACKS.len() {
            let (ours, run_s) = (column(a)[d].unwrap(), f64::from(loo[a][d]));
            assert!((ours - run_s).abs() < 1e-3 * run_s.abs().max(1.0), "{} doc {d}: {ours} vs {run_s}", ATTACKS[a]);
        }
        let s = -scores.nll[d] / f64::from(tokens);
        let base_s = -reference.nll[d] / f64::from(reference.tokens[d]);
        assert!((scores.reference[d].unwrap() - (s - base_s)).abs() < 1e-6, "reference: s − s_base (in f32)");
    }

    // A model of another family, and one whose tokenizer gives the run's tokens other ids.
    let llama = dir.path().join("llama");
    python_ok(&python, &[script("tiny_model.py").to_str().unwrap(), llama.to_str().unwrap(), "--family", "llama"]);
    let err = cfmem_err(&as_strs(&attack(&llama, &[])));
    assert!(err.contains("config.json: model_type llama, but the run's models are gpt2"), "{err}");
    let swapped = dir.path().join("swapped");
    std::fs::create_dir(&swapped).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(exported.join(file), swapped.join(file)).unwrap();
    }
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exported.join("tokenizer.json")).unwrap()).unwrap();
    let first = first_token(&exported, &documents.text[0]);
    let vocab = tokenizer["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (first, if first == 0 { 1 } else { 0 });
    for id in vocab.values_mut() {
        if id.as_u64() == Some(a) {
            *id = b.into();
        } else if id.as_u64() == Some(b) {
            *id = a.into();
        }
    }
    std::fs::write(swapped.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let err = cfmem_err(&as_strs(&attack(&swapped, &[])));
    assert!(
        err.contains("tokenizer.json: it cuts document")
            && err.contains(&format!("token 0 is {b} there, {a} in the run"))
            && err.contains("the run's models cannot stand as its shadows"),
        "{err}"
    );
    let missing = dir.path().join("nobody.txt");
    std::fs::write(&missing, "doc-nope\n").unwrap();
    let err = cfmem_err(&as_strs(&attack(&exported, &["--members", missing.to_str().unwrap()])));
    assert!(err.contains("nobody.txt: line 1: no document has id \"doc-nope\""), "{err}");
    let err = cfmem_err(&as_strs(&attack(&exported, &["--leave-out", "9"])));
    assert!(err.contains("--leave-out 9: not one of the run's 8 scored models"), "{err}");
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The first token id the tokenizer of the model in `dir` gives `text`.
fn first_token(dir: &Path, text: &str) -> u64 {
    let tokenizer = subsets::tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    u64::from(tokenizer.encode(text, None).unwrap().ids[0])
}
