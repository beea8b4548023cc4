//! The model families besides GPT-2, end to end, against `transformers` and `peft`: tiny
//! random Llama (grouped-query attention, tied head, a SentencePiece-style tokenizer whose
//! post-processor adds BOS; one saved in shards with their index, one with Llama 3's rope
//! scaling, one with a given head_dim, an untied head and biases), Qwen2 (q/k/v biases, untied head) and GPT-NeoX (a quarter of
//! each head rotating, parallel and sequential residual) models evaluate in cfmem as in
//! `transformers`, on documents shorter and longer than the context; LoRA runs over them
//! keep adapters that `peft` loads and export merged models that `transformers` loads, each
//! with the numbers the run logged; a base of each family that cfmem pretrains loads in
//! `transformers` with the same numbers; and what cfmem cannot compute is refused, named.
//!
//! The reference side runs the scripts of `tests/hf` with `$CFMEM_HF_PYTHON`; without it
//! these tests are ignored by a plain `cargo test`, and `scripts/test.sh` runs them.

use std::path::{Path, PathBuf};

use tests::hf::{assert_same, assert_same_rows, evaluate, hf_python, python_ok, reference, reference_with, script};
use tests::{cfmem_err, cfmem_ok, logged_evaluation, plan_args, sentences, training_lock};

/// A tiny random model of `family` made by `transformers` in `dir/name`, with `flags`.
fn tiny_model(python: &Path, dir: &Path, name: &str, family: &str, flags: &[&str]) -> PathBuf {
    let model = dir.join(name);
    let mut args = vec![script("tiny_model.py").to_str().unwrap().to_string(), model.to_str().unwrap().to_string()];
    args.extend(["--family".to_string(), family.to_string()]);
    args.extend(flags.iter().map(|f| f.to_string()));
    python_ok(python, &args.iter().map(String::as_str).collect::<Vec<_>>());
    model
}

/// Documents shorter and longer than a 32-position context, with characters the Llama
/// tokenizer has no piece for (they become byte tokens) and the literal text of special
/// tokens.
fn write_corpus(path: &Path) {
    let texts = [
        "Short.".to_string(),
        "A medium document about cats and dogs, thirty-odd bytes or more.".to_string(),
        "A much longer document that spans several windows of the context. ".repeat(10),
        "Ünïcødé text with € signs, 🙂 and <s> or <|endoftext|> inside it, then more words.".to_string(),
        "x".to_string(),
    ];
    let lines: String = texts.iter().map(|t| serde_json::json!({ "text": t }).to_string() + "\n").collect();
    std::fs::write(path, lines).unwrap();
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_transformers_model_of_every_family_evaluates_in_cfmem_as_in_transformers() {
    let python = hf_python();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus);
    let models: [(&str, &str, &[&str]); 7] = [
        ("llama", "llama", &["--kv-heads", "2"]),
        ("llama-sharded", "llama", &["--kv-heads", "2", "--shard-size", "20KB", "--seed", "2"]),
        ("llama3-rope", "llama", &["--llama3-rope", "8", "--seed", "3"]),
        // Heads wider than hidden / heads, an untied head, biases on attention and MLP.
        ("llama-head-dim", "llama", &["--head-dim", "16", "--untied", "--attention-bias", "--mlp-bias", "--seed", "4"]),
        ("qwen2", "qwen2", &[]),
        ("neox-parallel", "gpt_neox", &["--rotary-pct", "0.25"]),
        ("neox-sequential", "gpt_neox", &["--rotary-pct", "0.25", "--sequential", "--seed", "1"]),
    ];
    for (name, family, flags) in models {
        let model = tiny_model(&python, dir.path(), name, family, flags);
        assert_same(&evaluate(&model, &corpus), &reference(&python, &model, &corpus), name);
    }
    // The Llama tokenizer's post-processor adds <s> by itself; a document is its text's
    // tokens alone, and cfmem puts BOS (bos_token_id 1) before it once.
    let reference = std::fs::read_to_string(dir.path().join("llama.reference.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(reference.lines().next().unwrap()).unwrap();
    assert_ne!(first["ids"][0], 1, "no BOS among a document's own tokens: {first}");
}

/// A LoRA configuration on `targets`, rank 4, stacks of 2.
fn lora_config(dir: &Path, name: &str, targets: &[&str]) -> PathBuf {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[train]\nadapter = \"lora\"\nlora_rank = 4\nlora_alpha = 8.0\nlora_targets = [{}]\nepochs = 10\n\
             batch_size = 4\nlr = 0.01\n[jobs]\nstack = 2\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    path
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn lora_runs_of_every_family_keep_adapters_for_peft_and_export_merged_models_for_transformers() {
    let python = hf_python();
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    sentences(&corpus, 12, 4);
    let runs: [(&str, &[&str], &[&str]); 3] = [
        ("llama", &["--kv-heads", "2"], &["q_proj", "v_proj", "down_proj"]),
        ("qwen2", &[], &["k_proj", "o_proj", "gate_proj"]),
        ("gpt_neox", &[], &["query_key_value", "dense", "dense_4h_to_h"]),
    ];
    for (family, flags, targets) in runs {
        let base = tiny_model(&python, dir.path(), family, family, flags);
        let config = lora_config(dir.path(), family, targets);
        let run = dir.path().join(format!("{family}-run"));
        let (base_arg, config_arg) = (base.to_str().unwrap(), config.to_str().unwrap());
        // Checkpoints work as for GPT-2: every model evaluated halfway and at the end.
        cfmem_ok(&plan_args(
            &corpus,
            &run,
            "4",
            "5",
            &["--init", base_arg, "--config", config_arg, "--eval-at", "0.5,1"],
        ));
        let toml = std::fs::read_to_string(run.join("run.toml")).unwrap();
        assert!(toml.contains(&format!("architecture = \"{family}\"")), "{toml}");
        cfmem_ok(&["run", run.to_str().unwrap(), "--device", &tests::test_device()]);

        let model = 1;
        let ours = logged_evaluation(&run, model);
        let base_nll: f64 = evaluate(&base, &corpus).nll.iter().sum();
        let our_nll: f64 = ours.iter().map(|r| r.1).sum();
        assert!(
            our_nll < 0.98 * base_nll,
            "{family}: the adapters learned: nll {our_nll} against the base's {base_nll}"
        );
        let exported = dir.path().join(format!("{family}-exported"));
        cfmem_ok(&["export", run.to_str().unwrap(), "--model", "1", "--out", exported.to_str().unwrap()]);
        let config_json = std::fs::read_to_string(exported.join("config.json")).unwrap();
        assert!(config_json.contains(&format!("\"model_type\": \"{family}\"")), "{config_json}");
        assert_same_rows(
            &ours,
            &reference(&python, &exported, &corpus),
            &format!("{family}: exported in transformers"),
        );
        let adapters = run.join(format!("adapters/model-{model:05}"));
        let peft = reference_with(&python, &base, &corpus, Some(&adapters));
        assert_same_rows(&ours, &peft, &format!("{family}: adapters in peft"));
    }

    // A target the family does not have is refused, listing the ones it has; nothing is
    // planned.
    let base = dir.path().join("llama");
    let config = lora_config(dir.path(), "gpt2-targets", &["c_attn"]);
    let refused = dir.path().join("refused");
    let err = cfmem_err(&plan_args(
        &corpus,
        &refused,
        "4",
        "5",
        &["--init", base.to_str().unwrap(), "--config", config.to_str().unwrap()],
    ));
    assert!(
        err.contains(
            "train.lora_targets: \"c_attn\" is not a matrix of a llama block; it has \"q_proj\", \"k_proj\", \
             \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\""
        ),
        "{err}"
    );
    assert!(!refused.exists());

    // `cfmem bench` over the Llama base with configs/lora-llama.toml's targets: rank 8 on
    // every matrix of each of the 2 blocks (hidden 32, 4 heads of 8, 2 key/value heads, MLP 80).
    let lora_llama = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lora-llama.toml");
    let bench = cfmem_ok(&[
        "bench",
        "--device",
        "cpu",
        "--init",
        base.to_str().unwrap(),
        "--config",
        lora_llama.to_str().unwrap(),
        "--stacks",
        "2",
        "--steps",
        "2",
        "--document-tokens",
        "16",
        "--json",
    ]);
    let bench: serde_json::Value = serde_json::from_str(&bench).unwrap();
    let r = 8;
    let per_block = r * ((32 + 32) + (32 + 16) + (32 + 16) + (32 + 32) + 2 * (32 + 80) + (80 + 32));
    assert_eq!(bench["adapter_parameters"].as_i64(), Some(2 * per_block), "{bench}");
    assert!(bench["runs"][0]["tokens_per_second"].as_f64().unwrap() > 0.0, "{bench}");
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_base_of_every_family_that_cfmem_pretrains_loads_in_transformers_with_the_same_numbers() {
    let python = hf_python();
    let _one_at_a_time = training_lock();
    let dir = tempfile::tempdir().unwrap();
    let background = dir.path().join("background.jsonl");
    sentences(&background, 200, 1);
    let audited = dir.path().join("audited.jsonl");
    write_corpus(&audited);
    // `cfmem pretrain` of the background with `config` into `out`, through `cfmem_ok` or `cfmem_err`.
    let pretrain = |expect: fn(&[&str]) -> String, config: &Path, out: &Path| {
        let (corpus, config, out) = (background.to_str().unwrap(), config.to_str().unwrap(), out.to_str().unwrap());
        expect(&["pretrain", "--corpus", corpus, "--config", config, "--out", out, "--device", "cpu"])
    };
    let families = [
        (
            "llama",
            "n_kv_head = 1\nd_mlp = 48\nrope_theta = 500.0\nrope_scaling = { factor = 8.0, low_freq_factor = 1.0, \
             high_freq_factor = 4.0, original_max_position_embeddings = 16 }\n",
        ),
        ("qwen2", "n_kv_head = 2\n"),
        ("gpt_neox", "rotary_pct = 0.5\nparallel_residual = false\n"),
    ];
    for (family, keys) in families {
        let config = dir.path().join(format!("{family}.toml"));
        std::fs::write(
            &config,
            format!(
                "[model]\narchitecture = \"{family}\"\nn_layer = 1\nn_head = 2\nd_model = 32\ncontext = 32\n{keys}\
                 [train]\nepochs = 4\nbatch_size = 8\nlr = 0.01\n"
            ),
        )
        .unwrap();
        let base = dir.path().join(family);
        let printed = pretrain(cfmem_ok, &config, &base);
        let accuracy: f64 =
            printed.split("accuracy ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        assert!(accuracy > 0.2, "{family}: the base learned the sentences: held-out accuracy {accuracy}");
        let config_json = std::fs::read_to_string(base.join("config.json")).unwrap();
        assert!(config_json.contains(&format!("\"model_type\": \"{family}\"")), "{config_json}");
        let evaluated = evaluate(&base, &audited);
        assert!(evaluated.correct.iter().sum::<u32>() > 0, "{family}: some tokens predicted right");
        assert_same(&evaluated, &reference(&python, &base, &audited), &format!("pretrained {family} base"));
    }
    // A key that means nothing for the family is refused, naming it; nothing is written.
    let config = dir.path().join("wrong.toml");
    std::fs::write(&config, "[model]\narchitecture = \"llama\"\nrotary_pct = 0.5\n").unwrap();
    let out = dir.path().join("wrong");
    let err = pretrain(cfmem_err, &config, &out);
    assert!(err.contains("model.rotary_pct means nothing for architecture \"llama\""), "{err}");
    assert!(!out.exists());
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_base_cfmem_cannot_compute_is_refused_naming_the_key_and_the_file() {
    let python = hf_python();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus);
    let llama = tiny_model(&python, dir.path(), "llama", "llama", &[]);
    let qwen2 = tiny_model(&python, dir.path(), "qwen2", "qwen2", &[]);
    let plan = |name: &str, base: &Path| {
        let run = dir.path().join(name);
        let err = cfmem_err(&plan_args(&corpus, &run, "2", "1", &["--init", base.to_str().unwrap()]));
        assert!(!run.exists(), "nothing planned for {name}");
        err
    };
    let edit = |base: &Path, from: &str, to: &str| {
        let path = base.join("config.json");
        let original = std::fs::read_to_string(&path).unwrap();
        assert!(original.contains(from), "{from} in {original}");
        std::fs::write(&path, original.replace(from, to)).unwrap();
        original
    };
    let restore = |base: &Path, original: String| std::fs::write(base.join("config.json"), original).unwrap();

    let original = edit(&llama, "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\", \"factor\": 4.0");
    let err = plan("a", &llama);
    assert!(err.contains("config.json: rope_parameters.rope_type \"yarn\" is not supported"), "{err}");
    restore(&llama, original);
    let original = edit(&llama, "\"model_type\": \"llama\"", "\"model_type\": \"mixtral\"");
    let err = plan("b", &llama);
    assert!(err.contains("model_type \"mixtral\" is not supported"), "{err}");
    restore(&llama, original);
    let original = edit(&llama, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4");
    let err = plan("c", &llama);
    assert!(
        err.contains("model.safetensors: tensor model.layers.0.self_attn.k_proj.weight has shape [16, 32], config.json implies [32, 32]"),
        "{err}"
    );
    restore(&llama, original);
    edit(&qwen2, "\"sliding_window\": null", "\"sliding_window\": 16");
    edit(&qwen2, "\"use_sliding_window\": false", "\"use_sliding_window\": true");
    let err = plan("d", &qwen2);
    assert!(err.contains("use_sliding_window: a sliding attention window is not supported"), "{err}");
    // Intact, the Llama base plans.
    cfmem_ok(&plan_args(&corpus, &dir.path().join("e"), "2", "1", &["--init", llama.to_str().unwrap()]));
}
