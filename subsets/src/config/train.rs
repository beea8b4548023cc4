//! `[train]`: how every model trains: epochs, the optimizer, checkpoints, precision, where
//! its weights start and its adapters.

use serde::{Deserialize, Serialize};

use crate::family::{Family, Part};
use crate::schema::FINAL_CHECKPOINT;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over a model's training set (each document repeated by its copy count), at
    /// the design's nominal set size: every model of a run takes the same number of steps.
    pub epochs: u32,
    pub batch_size: u32,
    /// Peak learning rate of AdamW, reached after warmup, then cosine decay to 0.
    pub lr: f64,
    pub warmup_fraction: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Gradient norm clip; 0 disables clipping.
    pub grad_clip: f64,
    /// Documents per evaluation batch.
    pub eval_batch_size: u32,
    /// Checkpoints at which every model is evaluated on every document, as fractions of its
    /// training steps, increasing, ending in 1.0 (the end of training, whose rows the scores
    /// rest on). Evaluating changes nothing in the training.
    pub eval_at: Vec<f64>,
    /// Arithmetic of the forward pass; bf16 needs a CUDA device.
    pub precision: Precision,
    /// Where every model's weights start: [`SCRATCH`] (random, from the run seed and the
    /// model id) or the directory of a base model in the Hugging Face GPT-2 layout.
    pub init: String,
    /// What a model trains from a base: every weight, or low-rank adapters over the frozen
    /// base, which a stack then holds once for all its models.
    pub adapter: Adapter,
    /// Rank r of each adapter's two factors (LoRA).
    pub lora_rank: u32,
    /// An adapter's update is scaled by lora_alpha / lora_rank, as in peft.
    pub lora_alpha: f64,
    /// The matrices of every block that get an adapter, named as peft's `target_modules`
    /// names them in the model's family ([`TrainConfig::lora_targets_of`]);
    /// absent: the family's default (GPT-2 `c_attn`; Llama and Qwen2 `q_proj`, `v_proj`;
    /// GPT-NeoX `query_key_value`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_targets: Option<Vec<String>>,
}

/// What a model of a run trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Adapter {
    /// Every weight (a full fine-tune from a base, or training from scratch).
    #[default]
    Full,
    /// Low-rank adapters (LoRA) on `lora_targets`, over a frozen base: the matrix W of a
    /// target becomes W + (lora_alpha / lora_rank)·A·B, with A `[in, r]` and B `[r, out]`.
    Lora,
}

/// `train.init` of models that start from random weights.
pub const SCRATCH: &str = "scratch";

impl TrainConfig {
    /// The base directory the models start from, if any.
    pub fn base(&self) -> Option<&std::path::Path> {
        (self.init != SCRATCH).then(|| std::path::Path::new(&self.init))
    }

    /// The step after which each checkpoint of `eval_at` is evaluated, of `total` steps:
    /// the fraction's share rounded, at least 1 (the last is `total`).
    pub fn checkpoint_steps(&self, total: usize) -> Vec<usize> {
        self.eval_at.iter().map(|&f| ((f * total as f64).round() as usize).clamp(1, total)).collect()
    }

    /// The LoRA targets of a model of `family`: the ones named, or the family's default.
    pub fn lora_targets_of(&self, family: Family) -> Vec<String> {
        match &self.lora_targets {
            Some(targets) => targets.clone(),
            None => family.traits().default_lora_targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// Each LoRA target of a model of `family` with the block matrix it adapts, in the
    /// order named; a name the family lacks is refused, listing the ones it has.
    pub fn lora_target_parts(&self, family: Family) -> std::result::Result<Vec<(String, Part)>, String> {
        let traits = family.traits();
        self.lora_targets_of(family)
            .into_iter()
            .map(|name| match traits.lora_target(&name) {
                Some(part) => Ok((name, part)),
                None => Err(format!(
                    "train.lora_targets: \"{name}\" is not a matrix of a {family} block; it has {}",
                    traits.lora_target_list()
                )),
            })
            .collect()
    }

    /// Why the adapter settings cannot train a model of `family`, if they cannot. The LoRA
    /// settings are checked only when `adapter` is LoRA.
    pub(super) fn lora_problem(&self, family: Family) -> Option<String> {
        if self.adapter == Adapter::Full {
            return None;
        }
        if self.base().is_none() {
            return Some(
                "train.adapter = \"lora\" trains adapters over a frozen base: set train.init to a base model's \
                 directory (plan --init BASE)"
                    .into(),
            );
        }
        if self.lora_rank == 0 {
            return Some("train.lora_rank must be at least 1".into());
        }
        if !(self.lora_alpha > 0.0 && self.lora_alpha.is_finite()) {
            return Some(format!("train.lora_alpha must be positive, got {}", self.lora_alpha));
        }
        let targets = match self.lora_target_parts(family) {
            Ok(targets) if targets.is_empty() => {
                let names = family.traits().lora_target_list();
                return Some(format!("train.lora_targets must name at least one of {names}"));
            }
            Ok(targets) => targets,
            Err(problem) => return Some(problem),
        };
        let mut sorted: Vec<&String> = targets.iter().map(|(name, _)| name).collect();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Some(format!("train.lora_targets names \"{}\" twice", pair[0]));
        }
        None
    }

    /// Why `eval_at` is not a valid list of checkpoints, if it is not.
    pub(super) fn eval_at_problem(&self) -> Option<String> {
        let at = &self.eval_at;
        let listed = format!("{at:?}");
        if at.is_empty() {
            return Some(
                "train.eval_at must list at least one checkpoint, ending in 1.0 (e.g. [0.25, 0.5, 1.0])".into(),
            );
        }
        if let Some(bad) = at.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            return Some(format!("train.eval_at = {listed}: {bad} is not a fraction of training in (0, 1]"));
        }
        if let Some(w) = at.windows(2).find(|w| w[1] <= w[0]) {
            return Some(format!("train.eval_at = {listed} must increase: {} comes after {}", w[1], w[0]));
        }
        if at.last() != Some(&FINAL_CHECKPOINT) {
            return Some(format!(
                "train.eval_at = {listed} must end in 1.0, the end of training, whose evaluation the scores rest on"
            ));
        }
        None
    }
}

/// The arithmetic a model computes in. Master weights and optimizer state are fp32 either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    /// Matrix products, attention and the MLP activation in bf16 (as under torch's
    /// autocast); the residual stream, LayerNorm, softmax and the loss in fp32.
    Bf16,
}

impl Precision {
    /// The name in a configuration file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> Result<Precision, String> {
        [Precision::Fp32, Precision::Bf16]
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| format!("expected fp32 or bf16, got {text:?}"))
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 20,
            batch_size: 16,
            lr: 3e-3,
            warmup_fraction: 0.05,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            grad_clip: 1.0,
            eval_batch_size: 64,
            eval_at: vec![FINAL_CHECKPOINT],
            precision: Precision::Fp32,
            init: SCRATCH.to_string(),
            adapter: Adapter::Full,
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_targets: None,
        }
    }
}
