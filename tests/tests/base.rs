//! Models that start from a base, end to end: a GPT-2 made by `transformers` evaluates in
//! cfmem as in `transformers`; a base cfmem pretrains loads in `transformers` with the same
//! numbers, and its pretraining, killed at random points and run again, ends with the same
//! weights; a run from a base is reproducible, refuses a changed base and a `[model]`
//! setting that contradicts the base; and on a small corpus with a background, fine-tuning
//! from a base pretrained once generalizes better than training from scratch, for fewer
//! training tokens.
//!
//! The reference side runs the scripts of `tests/hf` with `$CFMEM_HF_PYTHON` (the venv
//! `scripts/test.sh` makes); those tests are ignored by a plain `cargo test`, and the script runs them.

use std::path::Path;
use std::process::Command;

use subsets::schema::{self, LogTable};
use tests::hf::{
    assert_same, assert_same_rows, evaluate, hf_python, python_ok, reference, reference_with, script, write_corpus,
};
use tests::{cfmem, cfmem_err, cfmem_ok, logged_evaluation, plan_args, sentences, training_lock};

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_transformers_gpt2_evaluates_in_cfmem_as_in_transformers() {
    let python = hf_python();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus);
    // Tied head with gelu_new (GPT-2's own), and an untied head with the exact GELU.
    for (name, flags) in [("tied", &[][..]), ("untied", &["--untied", "--activation", "gelu", "--seed", "1"][..])] {
        let model = dir.path().join(name);
        let mut args = vec![script("tiny_model.py").to_str().unwrap().to_string(), model.to_str().unwrap().to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        python_ok(&python, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_same(&evaluate(&model, &corpus), &reference(&python, &model, &corpus), name);
    }
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_base_of_another_family_or_that_disagrees_with_itself_is_refused_naming_what() {
    let python = hf_python();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus);
    let model = dir.path().join("model");
    python_ok(&python, &[script("tiny_model.py").to_str().unwrap(), model.to_str().unwrap()]);
    let plan = |name: &str| {
        let run = dir.path().join(name);
        cfmem_err(&plan_args(&corpus, &run, "2", "1", &["--init", model.to_str().unwrap()]))
    };
    let config = model.join("config.json");
    let original = std::fs::read_to_string(&config).unwrap();

    std::fs::write(&config, original.replace("\"gpt2\"", "\"mixtral\"")).unwrap();
    assert!(plan("a").contains("model_type \"mixtral\" is not supported: cfmem computes the families"));
    std::fs::write(&config, original.replace("\"n_embd\": 32", "\"n_embd\": 16")).unwrap();
    let err = plan("b");
    assert!(
        err.contains(
            "model.safetensors: tensor transformer.wte.weight has shape [353, 32], config.json implies [353, 16]"
        ),
        "{err}"
    );
    let smaller = original.replace("\"vocab_size\": 353", "\"vocab_size\": 300").replace(": 352", ": 0");
    std::fs::write(&config, smaller).unwrap();
    let err = plan("c");
    assert!(err.contains("tokenizer.json: the tokenizer's ids go up to 352, but the model embeds 300 tokens"), "{err}");
    std::fs::write(&config, &original).unwrap();
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    assert!(plan("d").contains("model.safetensors"));
    for name in ["a", "b", "c", "d"] {
        assert!(!dir.path().join(name).exists(), "nothing planned for {name}");
    }
}

const TINY: &str = "[model]\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 32\ntied_head = true\nactivation = \"gelu_new\"\n\
[train]\nepochs = EPOCHS\nbatch_size = 8\nlr = 0.01\n";

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_pretrained_base_loads_in_transformers_and_survives_kill_9() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("background.jsonl");
    sentences(&corpus, 300, 1);
    let config = dir.path().join("pretrain.toml");
    std::fs::write(&config, TINY.replace("EPOCHS", "6")).unwrap();
    let pretrain = |out: &Path, extra: &[&str]| {
        let mut args = vec!["pretrain", "--corpus", corpus.to_str().unwrap(), "--config", config.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap(), "--device", "cpu", "--threads", "1"]);
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let whole = dir.path().join("whole");
    let printed = cfmem_ok(&pretrain(&whole, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(printed.contains("held out: 15 documents, loss"), "{printed}");
    let again = cfmem(&pretrain(&whole, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds this base; nothing to do"));

    // Killed at random points (a checkpoint after every ten steps), then run to the end.
    let killed = dir.path().join("killed");
    let mut rng = 0x5eed_u64;
    let mut resumed = 0;
    for _ in 0..4 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
        let delay = std::time::Duration::from_millis(150 + (rng >> 40) % 900);
        let mut child = Command::new(tests::cfmem_path())
            .args(pretrain(&killed, &["--checkpoint-every", "0"]))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        resumed += usize::from(String::from_utf8_lossy(&out.stderr).contains("resumed from the checkpoint"));
    }
    let last = cfmem(&pretrain(&killed, &["--checkpoint-every", "0"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(
        stderr.contains("resumed from the checkpoint at step") || resumed > 0,
        "no kill landed after a checkpoint: {stderr}"
    );
    assert_eq!(
        std::fs::read(killed.join("model.safetensors")).unwrap(),
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        "a pretraining killed and resumed ends with the weights of an uninterrupted one"
    );
    assert!(!killed.join(".pretrain").exists(), "the checkpoint is removed once the base is complete");

    let python = hf_python();
    let audited = dir.path().join("audited.jsonl");
    write_corpus(&audited);
    assert_same(&evaluate(&whole, &audited), &reference(&python, &whole, &audited), "pretrained base");
}

#[test]
fn runs_from_a_base_are_reproducible_refuse_a_changed_base_and_beat_scratch_for_fewer_tokens() {
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let (corpus, background) = (dir.path().join("corpus.jsonl"), dir.path().join("background.jsonl"));
    sentences(&corpus, 16, 2);
    sentences(&background, 160, 3);
    let write_config = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let base = dir.path().join("base");
    // The base trains three times as long on the background as each model from scratch
    // does, and still the pretraining and the fine-tunes together train on fewer tokens.
    let pretrain_config = write_config("pretrain.toml", TINY.replace("EPOCHS", "6"));
    let printed = cfmem_ok(&[
        "pretrain",
        "--corpus",
        background.to_str().unwrap(),
        "--config",
        &pretrain_config,
        "--out",
        base.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let pretraining_tokens: u64 = printed.split("steps, ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();

    let finetune = write_config(
        "finetune.toml",
        "[train]\nepochs = 4\nbatch_size = 8\nlr = 1e-3\nwarmup_fraction = 0.1\n[jobs]\nstack = 2\n".into(),
    );
    let plan_from_base = |name: &str, extra: &[&str]| {
        let run = dir.path().join(name);
        let mut args = vec!["--init", base.to_str().unwrap(), "--config", &finetune];
        args.extend_from_slice(extra);
        cfmem_ok(&plan_args(&corpus, &run, "4", "7", &args));
        // One thread: bit-for-bit equality is promised at a fixed thread count.
        cfmem_ok(&["run", run.to_str().unwrap(), "--device", "cpu", "--threads", "1"]);
        run
    };
    let first = plan_from_base("a", &[]);
    let second = plan_from_base("b", &[]);
    for job in 0..2 {
        let log = |run: &Path| schema::read::<LogTable>(&run.join(format!("logs/job-{job:05}.parquet"))).unwrap();
        assert_eq!(log(&first), log(&second), "same base, same seed: the same logs");
    }
    let toml = std::fs::read_to_string(first.join("run.toml")).unwrap();
    let canonical = std::fs::canonicalize(&base).unwrap();
    assert!(toml.contains(&format!("init = \"{}\"", canonical.display())), "{toml}");
    assert!(toml.contains("[base]\nweights_sha256 = "), "{toml}");

    // A [model] setting that contradicts the base is refused; one that agrees is not.
    let conflicting = write_config("conflict.toml", "[model]\nd_model = 64\n".into());
    let err = cfmem_err(&plan_args(
        &corpus,
        &dir.path().join("c"),
        "4",
        "7",
        &["--init", base.to_str().unwrap(), "--config", &conflicting],
    ));
    assert!(err.contains("[model] d_model = 64 conflicts with the base"), "{err}");
    // The base changed after planning: run refuses, naming the file.
    let weights = base.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, &bytes).unwrap();
    let planned = dir.path().join("d");
    cfmem_ok(&plan_args(&corpus, &planned, "4", "7", &["--config", &finetune, "--init", base.to_str().unwrap()]));
    bytes[last] ^= 1;
    std::fs::write(&weights, &bytes).unwrap();
    let err = cfmem_err(&["run", planned.to_str().unwrap(), "--device", "cpu"]);
    assert!(err.contains("model.safetensors: sha256") && err.contains("the base changed after planning"), "{err}");

    // From scratch with the background in every model.
    let scratch_config =
        write_config("scratch.toml", TINY.replace("EPOCHS", "2").replace("[train]", "[jobs]\nstack = 2\n[train]"));
    let scratch = dir.path().join("scratch");
    cfmem_ok(&plan_args(
        &corpus,
        &scratch,
        "4",
        "7",
        &["--config", &scratch_config, "--background", background.to_str().unwrap()],
    ));
    cfmem_ok(&["run", scratch.to_str().unwrap(), "--device", "cpu"]);
    let acc_out = |run: &Path| {
        cfmem_ok(&["analyze", run.to_str().unwrap()]);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("analysis/summary.json")).unwrap()).unwrap();
        summary["diagnosis"]["overall"]["acc_out"].as_f64().unwrap()
    };
    let tokens = |run: &Path, epochs: u64| {
        let config: subsets::config::RunConfig = subsets::config::RunConfig::from_file(&run.join("run.toml")).unwrap();
        let per_model = config.design.keep * config.tokens.corpus as f64 + config.tokens.background as f64;
        (4.0 * epochs as f64 * per_model) as u64
    };
    let (from_base, from_scratch) = (acc_out(&first), acc_out(&scratch));
    let (base_tokens, scratch_tokens) = (pretraining_tokens + tokens(&first, 4), tokens(&scratch, 2));
    eprintln!("OUT accuracy {from_base:.3} from the base, {from_scratch:.3} from scratch");
    assert!(from_base > from_scratch, "OUT accuracy {from_base:.3} from the base, {from_scratch:.3} from scratch");
    assert!(base_tokens < scratch_tokens, "{base_tokens} training tokens from the base, {scratch_tokens} from scratch");
}

#[test]
fn a_stack_that_cannot_fit_is_refused_before_training_with_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    sentences(&corpus, 8, 4);
    // About 40 billion parameters a model: no machine this runs on holds a stack of them.
    let config = dir.path().join("huge.toml");
    std::fs::write(&config, "[model]\nn_layer = 200\nn_head = 32\nd_model = 4096\n[jobs]\nstack = 2\n").unwrap();
    let run = dir.path().join("run");
    cfmem_ok(&plan_args(&corpus, &run, "2", "1", &["--config", config.to_str().unwrap()]));
    let started = std::time::Instant::now();
    let err = cfmem_err(&["run", run.to_str().unwrap(), "--device", "cpu"]);
    assert!(err.contains("a stack of 2 models of 40") && err.contains("GiB free on cpu"), "{err}");
    assert!(err.contains("not even one model fits"), "{err}");
    assert!(started.elapsed().as_secs() < 10, "refused before allocating anything");
    assert!(!run.join("logs/job-00000.parquet").exists());
}

#[test]
fn bad_pretraining_and_init_requests_are_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    sentences(&corpus, 40, 5);
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY.replace("EPOCHS", "1")).unwrap();
    let (corpus, config) = (corpus.to_str().unwrap(), config.to_str().unwrap());
    let out = dir.path().join("base");
    let out = out.to_str().unwrap();
    let pretrain = |extra: &[&str]| {
        let mut args = vec!["pretrain", "--corpus", corpus, "--config", config, "--out", out, "--device", "cpu"];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let refused = |extra: &[&str]| cfmem_err(&pretrain(extra).iter().map(String::as_str).collect::<Vec<_>>());

    assert!(refused(&["--checkpoint-every", "nan"]).contains("--checkpoint-every must be a number of seconds"));
    assert!(refused(&["--holdout", "1.0"]).contains("--holdout: "));
    let from_base = dir.path().join("from-base.toml");
    std::fs::write(&from_base, "[train]\ninit = \"somewhere\"\n").unwrap();
    let err = cfmem_err(&["pretrain", "--corpus", corpus, "--config", from_base.to_str().unwrap(), "--out", out]);
    assert!(err.contains("[train] init: pretraining starts from scratch"), "{err}");

    std::fs::create_dir_all(out).unwrap();
    std::fs::write(Path::new(out).join("notes.txt"), "mine").unwrap();
    assert!(refused(&[]).contains("already holds files this pretraining did not write"));
    std::fs::remove_file(Path::new(out).join("notes.txt")).unwrap();

    cfmem_ok(&pretrain(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let err = refused(&["--seed", "1"]);
    assert!(
        err.contains("pretraining.toml: this base was pretrained from another corpus or with other settings"),
        "{err}"
    );

    let missing = dir.path().join("no-such-base");
    let err = cfmem_err(&plan_args(
        Path::new(corpus),
        &dir.path().join("run"),
        "2",
        "1",
        &["--init", missing.to_str().unwrap()],
    ));
    assert!(err.contains("train.init") && err.contains("no-such-base"), "{err}");
    assert!(!dir.path().join("run").exists());
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_lora_run_keeps_each_models_adapters_and_exports_it_merged_for_transformers_and_peft() {
    let python = hf_python();
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    python_ok(&python, &[script("tiny_model.py").to_str().unwrap(), base.to_str().unwrap()]);
    let corpus = dir.path().join("corpus.jsonl");
    sentences(&corpus, 12, 4);
    let config = dir.path().join("lora.toml");
    std::fs::write(
        &config,
        "[train]\nadapter = \"lora\"\nlora_rank = 4\nlora_alpha = 8.0\nlora_targets = [\"c_attn\", \"mlp.c_proj\"]\n\
         epochs = 12\nbatch_size = 4\nlr = 0.01\n[jobs]\nstack = 2\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let config_arg = config.to_str().unwrap();
    cfmem_ok(&plan_args(&corpus, &run, "4", "5", &["--init", base.to_str().unwrap(), "--config", config_arg]));
    let toml = std::fs::read_to_string(run.join("run.toml")).unwrap();
    for setting in
        ["adapter = \"lora\"", "lora_rank = 4", "lora_alpha = 8.0", "lora_targets = [\"c_attn\", \"mlp.c_proj\"]"]
    {
        assert!(toml.contains(setting), "run.toml records {setting}:\n{toml}");
    }
    let refused = cfmem_err(&["export", run.to_str().unwrap(), "--model", "1", "--out", "/nonexistent/x"]);
    assert!(refused.contains("model 1 has no adapters yet: its job has not completed"), "{refused}");
    cfmem_ok(&["run", run.to_str().unwrap(), "--device", &tests::test_device()]);

    let model = 1;
    let adapters = run.join(format!("adapters/model-{model:05}"));
    let exported = dir.path().join("exported");
    cfmem_ok(&["export", run.to_str().unwrap(), "--model", "1", "--out", exported.to_str().unwrap()]);
    // The run's own evaluation of model 1 (at the end of training), document by document.
    let ours = logged_evaluation(&run, model);
    let base_nll: f64 = evaluate(&base, &corpus).nll.iter().sum();
    let our_nll: f64 = ours.iter().map(|r| r.1).sum();
    assert!(our_nll < 0.98 * base_nll, "the adapters learned: nll {our_nll} against the base's {base_nll}");
    // The merged model in transformers, and the adapters over the base in peft, unmerged.
    assert_same_rows(&ours, &reference(&python, &exported, &corpus), "the exported merged model in transformers");
    assert_same_rows(&ours, &reference_with(&python, &base, &corpus, Some(&adapters)), "the adapters in peft");

    let out = dir.path().join("none");
    let err = cfmem_err(&["export", run.to_str().unwrap(), "--model", "4", "--out", out.to_str().unwrap()]);
    assert!(err.contains("the run has models 0 to 3; there is no model 4"), "{err}");
    // Models trained whole keep no weights to export; adapters need a base.
    let full = dir.path().join("full");
    cfmem_ok(&plan_args(&corpus, &full, "4", "5", &["--init", base.to_str().unwrap()]));
    let err = cfmem_err(&["export", full.to_str().unwrap(), "--model", "0", "--out", out.to_str().unwrap()]);
    assert!(err.contains("train.adapter is \"full\": cfmem keeps no model's full weights"), "{err}");
    let err = cfmem_err(&plan_args(&corpus, &dir.path().join("scratch"), "4", "5", &["--config", config_arg]));
    assert!(err.contains("train.adapter = \"lora\" trains adapters over a frozen base: set train.init"), "{err}");
    let err = cfmem_err(&[
        "pretrain",
        "--corpus",
        corpus.to_str().unwrap(),
        "--config",
        config_arg,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("pretraining trains every weight of a new model"), "{err}");
    assert!(!out.exists() && !dir.path().join("scratch").exists(), "nothing written");

    // `cfmem bench` trains LoRA stacks over the base: rank 4 on two matrices of each of the
    // 2 blocks (d_model 32), the base held once per stack.
    let bench = cfmem_ok(&[
        "bench",
        "--device",
        "cpu",
        "--init",
        base.to_str().unwrap(),
        "--config",
        config_arg,
        "--stacks",
        "1,2",
        "--steps",
        "2",
        "--document-tokens",
        "16",
        "--json",
    ]);
    let bench: serde_json::Value = serde_json::from_str(&bench).unwrap();
    let q = 2 * (4 * (32 + 96) + 4 * (128 + 32));
    assert_eq!((bench["adapter"].as_str(), bench["adapter_parameters"].as_i64()), (Some("lora"), Some(q)));
    let p = bench["non_embedding_parameters"].as_i64().unwrap() + (bench["vocab"].as_i64().unwrap() + 32) * 32;
    for run in bench["runs"].as_array().unwrap() {
        let g = run["stack"].as_i64().unwrap();
        assert_eq!(run["state_bytes"].as_i64(), Some(4 * p + 3 * 4 * g * q + 4 * q), "stack of {g}: {run}");
    }
}
