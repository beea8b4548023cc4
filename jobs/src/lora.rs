//! Low-rank adapters (LoRA) over a frozen base: the layout of a model's adapters in its row
//! of the stack's `[G, Q]` adapter tensor, how they start, how they merge into full weights,
//! and how they are stored in peft's directory layout.
//!
//! For each block and each target matrix W `[in, out]` (as the model computes with it:
//! [`subsets::architecture`]), a model owns A `[in, r]` and B `[r, out]`; it computes with
//! W + (alpha / r)·A·B. As in peft, A starts uniform in ±1/√in (Kaiming-uniform with
//! a = √5) and B at zero, so a model starts as its base. Targets are named as peft names
//! them in the model's family. Which blocks' products run where, and the base's place in
//! memory, are the model's and the stack's ([`crate::model`], [`crate::train`]).

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use subsets::architecture::Architecture;
use subsets::atomic;
use subsets::config::{Adapter, TrainConfig};
use subsets::family::{Part, Traits};

use crate::model::Factors;
use crate::stored::{StoredTensor, serialize};
use crate::{Error, Result};

/// The adapters every model of a stack trains: rank, scale, targets and their shapes.
#[derive(Debug, Clone)]
pub struct Lora {
    rank: i64,
    alpha: f64,
    /// Each target's peft name and the block matrix it adapts, in the blocks' order.
    targets: Vec<(String, Part)>,
    /// Per target in `targets` order: the target matrix's (in, out).
    shapes: Vec<(i64, i64)>,
    n_layer: usize,
    /// The family's entry: its module names, and whether it stores matrices `[in, out]`
    /// (peft's `fan_in_fan_out`).
    traits: &'static Traits,
}

impl Lora {
    /// The adapters `train` asks for over `architecture`, or None when models train every
    /// weight. A target the family does not have is refused, listing the ones it has.
    pub fn of(architecture: &Architecture, train: &TrainConfig) -> Result<Option<Lora>> {
        if train.adapter == Adapter::Full {
            return Ok(None);
        }
        let mut targets = train.lora_target_parts(architecture.family).map_err(subsets::Error::Invalid)?;
        targets.sort_by_key(|&(_, part)| part);
        let shapes = targets
            .iter()
            .map(|&(_, part)| {
                let (_, fan_in, fan_out) = architecture.matrix(0, part);
                (fan_in, fan_out)
            })
            .collect();
        Ok(Some(Lora {
            rank: i64::from(train.lora_rank),
            alpha: train.lora_alpha,
            targets,
            shapes,
            n_layer: architecture.n_layer as usize,
            traits: architecture.traits(),
        }))
    }

    /// alpha / r, the factor of A·B.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Adapter parameters of one model: Q.
    pub fn parameters(&self) -> i64 {
        self.n_layer as i64 * self.shapes.iter().map(|&(i, o)| self.rank * (i + o)).sum::<i64>()
    }

    /// Elements of each adapter tensor in layout order: per block, per target, A then B.
    fn sizes(&self) -> Vec<i64> {
        (0..self.n_layer).flat_map(|_| self.shapes.iter().flat_map(|&(i, o)| [i * self.rank, self.rank * o])).collect()
    }

    /// The initial adapters `[Q]` of one model, on the CPU, drawn from `seed` alone: A
    /// uniform in ±1/√in, B zero.
    pub fn initial_adapters(&self, seed: u64) -> Tensor {
        crate::model::with_seed(seed, || {
            let parts: Vec<Tensor> = (0..self.n_layer)
                .flat_map(|_| self.shapes.iter())
                .flat_map(|&(i, o)| {
                    let bound = 1.0 / (i as f64).sqrt();
                    let a = Tensor::empty([i * self.rank], (Kind::Float, Device::Cpu)).uniform_(-bound, bound);
                    [a, Tensor::zeros([self.rank * o], (Kind::Float, Device::Cpu))]
                })
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// Every block's factors, per target in `targets` order, as views of `adapters`
    /// `[G, Q]`.
    pub fn factors(&self, adapters: &Tensor) -> Vec<HashMap<Part, Factors>> {
        let models = adapters.size()[0];
        let mut parts = adapters.split_with_sizes(self.sizes(), 1).into_iter();
        (0..self.n_layer)
            .map(|_| {
                self.targets
                    .iter()
                    .zip(&self.shapes)
                    .map(|(&(_, part), &(i, o))| {
                        let a = parts.next().expect("sizes cover every factor").view([models, i, self.rank]);
                        let b = parts.next().expect("sizes cover every factor").view([models, self.rank, o]);
                        (part, Factors { a, b, scale: self.scale() })
                    })
                    .collect()
            })
            .collect()
    }

    /// The full weights `[P]` (on the CPU) of the model whose adapters are `adapters` `[Q]`
    /// over `base` `[P]`: every target matrix W becomes W + scale·A·B.
    pub fn merge(&self, architecture: &Architecture, base: &Tensor, adapters: &Tensor) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let merged = base.to_device(Device::Cpu).to_kind(Kind::Float).copy();
        let factors = self.factors(&adapters.to_device(Device::Cpu).to_kind(Kind::Float).unsqueeze(0));
        for (layer, block) in factors.iter().enumerate() {
            for (&part, f) in block {
                let update = f.a.get(0).mm(&f.b.get(0)) * f.scale;
                let (offset, _, _) = architecture.matrix(layer, part);
                let mut weight = merged.narrow(0, offset, update.numel() as i64).view_as(&update);
                let _ = weight.g_add_(&update);
            }
        }
        merged
    }

    /// Writes a model's `adapters` `[Q]` into `dir` as peft saves a LoRA of the family's
    /// CausalLM model (`adapter_config.json`, `adapter_model.safetensors`), so that
    /// `PeftModel.from_pretrained(base, dir)` loads them over `base_dir`.
    pub fn write_peft(&self, dir: &Path, base_dir: &Path, adapters: &Tensor) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(subsets::Error::io(dir))?;
        let factors = self.factors(&adapters.to_device(Device::Cpu).unsqueeze(0));
        let mut tensors = Vec::new();
        for (layer, block) in factors.iter().enumerate() {
            for &(_, part) in &self.targets {
                let f = &block[&part];
                // peft's lora_A is a Linear(in, r), its weight [r, in]; lora_B's is [out, r].
                for (factor, tensor) in [("lora_A", &f.a), ("lora_B", &f.b)] {
                    let stored = tensor.get(0).transpose(0, 1).contiguous();
                    tensors.push(StoredTensor::new(self.peft_key(layer, part, factor), &stored)?);
                }
            }
        }
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        atomic::write_bytes(&dir.join("adapter_model.safetensors"), &serialize(&tensors, metadata)?)?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_dir.display().to_string(),
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": self.traits.conv1d,
            "target_modules": self.targets.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
        });
        let json = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::Serialize { what: "adapter_config.json".into(), message: e.to_string() })?;
        atomic::write_bytes(&dir.join("adapter_config.json"), json.as_bytes())?;
        Ok(())
    }

    /// The name under which peft stores block `layer`'s `factor` ("lora_A" or "lora_B") of
    /// the matrix `part`.
    fn peft_key(&self, layer: usize, part: Part, factor: &str) -> String {
        let (blocks, module) = (self.traits.blocks, self.traits.block_module(part));
        format!("base_model.model.{blocks}.{layer}.{module}.{factor}.weight")
    }

    /// The adapters `[Q]` that [`Lora::write_peft`] wrote into `dir`.
    pub fn read_peft(&self, dir: &Path) -> Result<Tensor> {
        let path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&path).map_err(subsets::Error::io(&path))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::Plan { path: path.clone(), message: format!("{e:?}") })?;
        let mut parts = Vec::new();
        for layer in 0..self.n_layer {
            for (&(_, part), &(i, o)) in self.targets.iter().zip(&self.shapes) {
                for (factor, shape) in [("lora_A", [self.rank, i]), ("lora_B", [o, self.rank])] {
                    let key = self.peft_key(layer, part, factor);
                    let view = file.tensor(&key).map_err(|e| Error::Plan {
                        path: path.clone(),
                        message: format!("{key}: {e:?} (written for other adapter settings than run.toml's?)"),
                    })?;
                    let found: Vec<i64> = view.shape().iter().map(|&n| n as i64).collect();
                    if view.dtype() != safetensors::Dtype::F32 || found != shape {
                        return Err(Error::Plan {
                            path: path.clone(),
                            message: format!("{key}: {:?} {found:?}, expected F32 {shape:?}", view.dtype()),
                        });
                    }
                    let tensor = Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?;
                    parts.push(tensor.transpose(0, 1).contiguous().view([-1]));
                }
            }
        }
        Ok(Tensor::cat(&parts, 0))
    }
}
