//! One training step of a stack, checked against `transformers` and a plain PyTorch AdamW
//! step in every family: tiny random models made by `tests/hf/tiny_model.py`, stepped by
//! `tests/hf/reference_step.py` with `$CFMEM_HF_PYTHON` (the venv `scripts/test.sh` makes).
//! Ignored by a plain `cargo test` for lack of that python; `scripts/test.sh` runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use tch::{Device, Kind, Tensor};

use subsets::architecture::{Architecture, Slot};
use subsets::config::{Precision, TrainConfig};
use subsets::family::{Part, Projections};

use crate::base::LoadedBase;
use crate::train::Stack;

fn hf_python() -> PathBuf {
    let python = std::env::var_os("CFMEM_HF_PYTHON");
    PathBuf::from(python.expect("CFMEM_HF_PYTHON, the transformers venv that scripts/test.sh sets up"))
}

fn python_ok(python: &Path, script: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hf").join(script);
    let out = Command::new(python).arg(&script).args(args).output().expect("python runs");
    assert!(out.status.success(), "{script:?} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A batch's inputs and targets, as lists of rows.
type Batch = (Vec<Vec<i64>>, Vec<Vec<i64>>);

/// A batch of `rows` rows of `time` positions, the last row padded after `time / 2`
/// positions as cfmem pads a short window: (inputs, targets) as lists of rows.
fn batch(seed: u64, rows: usize, time: usize, vocab: u32, pad: i64) -> Batch {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        i64::from((state >> 33) as u32 % vocab)
    };
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for row in 0..rows {
        let tokens: Vec<i64> = (0..=time).map(|_| next()).collect();
        let length = if row + 1 == rows { time / 2 } else { time };
        let mut input: Vec<i64> = tokens[..length].to_vec();
        let mut target: Vec<i64> = tokens[1..=length].to_vec();
        input.resize(time, pad);
        target.resize(time, -100);
        inputs.push(input);
        targets.push(target);
    }
    (inputs, targets)
}

/// (start, length) in a model's parameters of every key bias.
fn key_biases(architecture: &Architecture) -> Vec<(i64, i64)> {
    let offsets: Vec<i64> = architecture
        .tensors
        .iter()
        .scan(0, |offset, spec| {
            let start = *offset;
            *offset += spec.numel();
            Some(start)
        })
        .collect();
    let (heads, head_dim) = (architecture.n_head, architecture.head_dim);
    let mut ranges = Vec::new();
    for layer in 0..architecture.n_layer as usize {
        let bias = |part| architecture.find(Slot { layer: Some(layer), part, bias: true }).map(|i| offsets[i]);
        match architecture.traits().projections {
            Projections::Fused => {
                ranges.extend(bias(Part::Qkv).map(|start| (start + heads * head_dim, heads * head_dim)))
            }
            Projections::FusedPerHead => {
                if let Some(start) = bias(Part::Qkv) {
                    ranges.extend((0..heads).map(|h| (start + (3 * h + 1) * head_dim, head_dim)));
                }
            }
            Projections::Separate => {
                ranges.extend(bias(Part::Key).map(|start| (start, architecture.n_kv_head * head_dim)))
            }
        }
    }
    ranges
}

#[test]
#[ignore = "needs the Hugging Face venv ($CFMEM_HF_PYTHON): scripts/test.sh sets it up and runs this"]
fn a_training_step_of_a_stack_is_pytorchs_adamw_step_on_the_transformers_model() {
    let python = hf_python();
    let dir = tempfile::tempdir().unwrap();
    let train = TrainConfig { lr: 1e-3, weight_decay: 0.1, grad_clip: 1.0, ..Default::default() };
    let families: [(&str, &[&str]); 4] =
        [("gpt2", &["--untied"]), ("llama", &[]), ("qwen2", &[]), ("gpt_neox", &["--sequential"])];
    for (family, flags) in families {
        let base_dir = dir.path().join(family);
        let mut args = vec![base_dir.to_str().unwrap(), "--family", family];
        args.extend_from_slice(flags);
        python_ok(&python, "tiny_model.py", &args);
        let base = LoadedBase::load(&base_dir).unwrap();
        let architecture = Architecture::new(&base.base.model, base.base.layout);
        let (rows, time) = (3, 12);
        let batches: Vec<_> =
            (0..2).map(|g| batch(g + 1, rows, time, base.base.layout.rows, architecture.pad())).collect();

        // cfmem: a stack of two copies of the base, each model its own batch.
        let two = [base.weights.shallow_clone(), base.weights.shallow_clone()];
        let mut stack = Stack::from_rows(architecture, &two, Precision::Fp32, Device::Cpu).unwrap();
        let table = |pick: fn(&Batch) -> &Vec<Vec<i64>>| {
            let flat: Vec<i64> = batches.iter().flat_map(|b| pick(b).iter().flatten().copied()).collect();
            Tensor::from_slice(&flat).view([2, rows as i64, time as i64])
        };
        let losses = stack.step(&table(|b| &b.0), &table(|b| &b.1), train.lr, &train);
        let losses = Vec::<f32>::try_from(losses).unwrap();

        let mut args = vec![base_dir.to_str().unwrap().to_string()];
        for (g, (inputs, targets)) in batches.iter().enumerate() {
            let batch_json = dir.path().join(format!("{family}-{g}.json"));
            std::fs::write(&batch_json, serde_json::json!({ "inputs": inputs, "targets": targets }).to_string())
                .unwrap();
            args.push(batch_json.to_str().unwrap().to_string());
        }
        let stepped_dir = dir.path().join(format!("{family}-stepped"));
        args.push(stepped_dir.to_str().unwrap().to_string());
        for (flag, value) in [
            ("--lr", train.lr),
            ("--weight-decay", train.weight_decay),
            ("--beta1", train.beta1),
            ("--beta2", train.beta2),
            ("--clip", train.grad_clip),
        ] {
            args.extend([flag.to_string(), value.to_string()]);
        }
        python_ok(&python, "reference_step.py", &args.iter().map(String::as_str).collect::<Vec<_>>());
        for (g, &loss_of_ours) in losses.iter().enumerate() {
            let stepped = stepped_dir.join(g.to_string());
            let loss: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(stepped.join("loss.json")).unwrap()).unwrap();
            let reference_loss = loss["loss"].as_f64().unwrap();
            let ours = f64::from(loss_of_ours);
            assert!(
                (ours - reference_loss).abs() <= 1e-5 * reference_loss,
                "{family} model {g}: loss {ours} in cfmem, {reference_loss} in PyTorch"
            );
            let reference = LoadedBase::load(&stepped).unwrap().weights;
            let (weights, _, _, _) = stack.state();
            let ours = weights.get(g as i64).detach();
            // Key biases have no gradient but rounding noise (softmax ignores a constant added
            // to every key's score), and AdamW's first step turns any nonzero noise into a
            // step of about lr either way: they are set aside. Every other weight agrees to
            // fp32 rounding, far below a step.
            let compared = Tensor::ones([ours.numel() as i64], (Kind::Bool, Device::Cpu));
            for (start, length) in key_biases(stack.architecture()) {
                let _ = compared.narrow(0, start, length).fill_(0);
            }
            let differs = f64::try_from((&ours - &reference).abs().masked_select(&compared).max()).unwrap();
            assert!(differs < 1e-6, "{family} model {g}: weights differ by up to {differs} after one step");
            let changed = ours.ne_tensor(&base.weights).to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
            assert!(changed > ours.numel() as i64 / 2, "{family} model {g}: most weights moved ({changed})");
        }
    }
}
