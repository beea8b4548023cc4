//! The one description of a model that training, evaluation, LoRA, import and export all
//! read: which tensors a model of `[model]`'s settings has, in which order they sit in its
//! row of parameters, their shapes, names in a Hugging Face checkpoint, initialization and
//! weight decay, and the dimensions the forward pass needs. It is derived from the model's
//! family's entry of the table ([`crate::family`]) and the settings alone, so a further
//! family of the same kind of decoder is a new entry of that table and its tests, not new
//! training code.
//!
//! This module knows no tensor library: the computation itself is `jobs::model`'s.

use std::collections::HashMap;

use crate::config::{Activation, EmbeddingLayout, ModelConfig, RopeScaling};
use crate::family::{Family, Mlp, Norm, Part, Positions, Projections, Traits};

/// How a parameter starts when a model trains from scratch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal(f64),
    /// Uniform in ±bound.
    Uniform(f64),
    Ones,
    Zeros,
}

/// Which tensor of a model: a part, of block `layer` (None for the global ones), its
/// weight or its bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub layer: Option<usize>,
    pub part: Part,
    pub bias: bool,
}

/// One parameter tensor of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Its name in a Hugging Face checkpoint of the family's CausalLM class.
    pub name: String,
    pub slot: Slot,
    /// Its shape as cfmem computes with it: a matrix is `[in, out]`.
    pub shape: Vec<i64>,
    /// Stored as the transpose of `shape` (torch's Linear, and every untied head).
    pub transposed: bool,
    pub init: Init,
    /// AdamW decays it: matrices only (not embeddings, norms or biases).
    pub decay: bool,
}

impl TensorSpec {
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }

    /// Its shape in a checkpoint.
    pub fn stored_shape(&self) -> Vec<usize> {
        let mut shape: Vec<usize> = self.shape.iter().map(|&n| n as usize).collect();
        if self.transposed {
            shape.reverse();
        }
        shape
    }
}

/// Rotary positions: the first `dims` features of every query and key head rotate, at
/// frequencies `theta^(-2i/dims)`, rescaled as Llama 3's when `scaling` says so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotary {
    pub dims: i64,
    pub theta: f64,
    pub scaling: Option<RopeScaling>,
}

/// Everything about a model's architecture that its computation, its parameters and its
/// files depend on, resolved from `[model]` and the embedding's layout.
#[derive(Debug, Clone)]
pub struct Architecture {
    pub family: Family,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_kv_head: i64,
    pub head_dim: i64,
    pub d_model: i64,
    pub d_mlp: i64,
    /// Positions a model reads: a window and the token before it.
    pub context: i64,
    /// Rows of the token embedding and columns of the head, BOS and PAD among them.
    pub layout: EmbeddingLayout,
    pub activation: Activation,
    pub tied_head: bool,
    /// The epsilon of every norm.
    pub norm_epsilon: f64,
    pub rotary: Option<Rotary>,
    pub parallel_residual: bool,
    /// Every parameter tensor, in the order of a model's row of parameters.
    pub tensors: Vec<TensorSpec>,
    index: HashMap<Slot, usize>,
}

impl Architecture {
    /// The architecture of `model` over the token embedding `layout`.
    pub fn new(model: &ModelConfig, layout: EmbeddingLayout) -> Architecture {
        let family = model.architecture;
        let traits = family.traits();
        let (d, heads, kv_heads, head_dim, d_mlp) = (
            i64::from(model.d_model),
            i64::from(model.n_head),
            i64::from(model.kv_heads()),
            i64::from(model.head_size()),
            i64::from(model.mlp_width()),
        );
        let rows = i64::from(layout.rows);
        let context = i64::from(model.context);
        let (qkv_bias, out_bias, mlp_bias) = model.biases();
        let mut specs = Specs { traits, tensors: Vec::new() };
        specs.embedding(Part::TokenEmbedding, traits.token_embedding, rows, d);
        if traits.positions == Positions::Learned {
            specs.embedding(Part::PositionEmbedding, traits.position_embedding, context, d);
        }
        for layer in 0..model.n_layer as usize {
            specs.norm(Some(layer), Part::AttentionNorm, d);
            match traits.projections {
                Projections::Fused | Projections::FusedPerHead => {
                    specs.linear(layer, Part::Qkv, d, 3 * heads * head_dim, qkv_bias)
                }
                Projections::Separate => {
                    specs.linear(layer, Part::Query, d, heads * head_dim, qkv_bias);
                    specs.linear(layer, Part::Key, d, kv_heads * head_dim, qkv_bias);
                    specs.linear(layer, Part::Value, d, kv_heads * head_dim, qkv_bias);
                }
            }
            specs.linear(layer, Part::AttentionOut, heads * head_dim, d, out_bias);
            specs.norm(Some(layer), Part::MlpNorm, d);
            if traits.mlp == Mlp::Gated {
                specs.linear(layer, Part::Gate, d, d_mlp, mlp_bias);
            }
            specs.linear(layer, Part::MlpIn, d, d_mlp, mlp_bias);
            specs.linear(layer, Part::MlpOut, d_mlp, d, mlp_bias);
        }
        specs.norm(None, Part::FinalNorm, d);
        if !model.tied_head {
            specs.tensors.push(TensorSpec {
                name: format!("{}.weight", traits.head),
                slot: Slot { layer: None, part: Part::Head, bias: false },
                shape: vec![d, rows],
                transposed: true,
                init: kaiming(d),
                decay: true,
            });
        }
        let tensors = specs.tensors;
        let index = tensors.iter().enumerate().map(|(i, spec)| (spec.slot, i)).collect();
        Architecture {
            family,
            n_layer: i64::from(model.n_layer),
            n_head: heads,
            n_kv_head: kv_heads,
            head_dim,
            d_model: d,
            d_mlp,
            context,
            layout,
            activation: model.activation,
            tied_head: model.tied_head,
            norm_epsilon: model.layer_norm_epsilon,
            rotary: model.rotary().map(|(dims, theta)| Rotary {
                dims: i64::from(dims),
                theta,
                scaling: model.rope_scaling,
            }),
            parallel_residual: model.parallel_residual(),
            tensors,
            index,
        }
    }

    pub fn traits(&self) -> &'static Traits {
        self.family.traits()
    }

    /// The token that starts every document.
    pub fn bos(&self) -> i64 {
        i64::from(self.layout.bos)
    }

    /// The token that fills a batch row after its window ends.
    pub fn pad(&self) -> i64 {
        i64::from(self.layout.pad)
    }

    /// Logits per position: one per embedding row.
    pub fn outputs(&self) -> i64 {
        i64::from(self.layout.rows)
    }

    /// Where `slot`'s tensor is in [`Architecture::tensors`], if the model has it.
    pub fn find(&self, slot: Slot) -> Option<usize> {
        self.index.get(&slot).copied()
    }

    /// Elements of each parameter tensor, in layout order.
    pub fn parameter_sizes(&self) -> Vec<i64> {
        self.tensors.iter().map(TensorSpec::numel).collect()
    }

    /// Parameters of one model: P.
    pub fn parameters(&self) -> i64 {
        self.tensors.iter().map(TensorSpec::numel).sum()
    }

    /// Parameters of one model outside the embeddings: the N of the 6·N·tokens rule.
    pub fn non_embedding_parameters(&self) -> i64 {
        let embedding =
            |part| self.find(Slot { layer: None, part, bias: false }).map_or(0, |i| self.tensors[i].numel());
        self.parameters() - embedding(Part::TokenEmbedding) - embedding(Part::PositionEmbedding)
    }

    /// Training FLOPs of one model per predicted token at sequence length `time`: 6·N for
    /// the weights, and 6·n_layer·time·(heads·head_dim) for attention scores and values
    /// (two matrix products of 2·time·width each per token, forward, times three with
    /// backward). With `adapter_parameters` Q (LoRA), the frozen weights take 4·N (forward,
    /// and the backward's gradient of their inputs; none of their own) and the adapters 6·Q.
    pub fn training_flops_per_token(&self, time: i64, adapter_parameters: Option<i64>) -> f64 {
        let weights = match adapter_parameters {
            Some(q) => 4.0 * self.non_embedding_parameters() as f64 + 6.0 * q as f64,
            None => 6.0 * self.non_embedding_parameters() as f64,
        };
        weights + 6.0 * (self.n_layer * time * self.n_head * self.head_dim) as f64
    }

    /// The (offset in a model's parameters, in, out) of block `layer`'s matrix `part`.
    pub fn matrix(&self, layer: usize, part: Part) -> (i64, i64, i64) {
        let index = self
            .find(Slot { layer: Some(layer), part, bias: false })
            .unwrap_or_else(|| unreachable!("{} blocks have no {part:?}", self.family));
        let offset = self.tensors[..index].iter().map(TensorSpec::numel).sum();
        let shape = &self.tensors[index].shape;
        (offset, shape[0], shape[1])
    }

    /// Bytes a stack of `models` needs on its device: each model's trained parameters with
    /// their gradient, AdamW's two moments and the decay mask (20 bytes a parameter: every
    /// weight, or with `adapter_parameters` the model's adapters), the base's 4 bytes a
    /// parameter once for the whole stack (the frozen base of LoRA, or the weights a full
    /// stack's rows are copied from), and the larger of a training step's activations (`batch`
    /// rows of `time` positions, kept for the backward pass) and an evaluation batch's
    /// logits and log-probabilities (`eval_batch` rows). Counted from the fp32 tensors a
    /// training step holds, per position and layer: the norms' inputs and outputs, queries,
    /// keys and values, the attention's output and projection and the residual (about
    /// 9·d_model), the MLP's hidden activations (2·d_mlp, 4·d_mlp gated), three copies of
    /// every head's attention row (scores, probabilities, their gradient); and four copies of
    /// the logits (logits, log-probabilities, their gradients). For a 124M GPT-2 at 1023
    /// positions on the CPU this says 5.3 GB a model; `cfmem bench` measured 5.6 GB more for
    /// each model of a stack.
    pub fn memory_estimate(
        &self,
        models: usize,
        batch: usize,
        eval_batch: usize,
        time: usize,
        adapter_parameters: Option<i64>,
    ) -> u64 {
        let (d, heads, layers, rows) =
            (self.d_model as u64, self.n_head as u64, self.n_layer as u64, self.outputs() as u64);
        let mlp = self.d_mlp as u64 * if self.traits().mlp == Mlp::Gated { 4 } else { 2 };
        let time = time as u64;
        let per_position = 4 * (layers * (9 * d + mlp + 3 * heads * time) + 4 * rows);
        let training = batch as u64 * time * per_position;
        let evaluation = eval_batch as u64 * time * 4 * 2 * rows;
        let parameters = self.parameters() as u64;
        let trained = adapter_parameters.map_or(parameters, |q| q as u64);
        4 * parameters + models as u64 * (20 * trained + training.max(evaluation))
    }
}

/// As tch's nn::linear starts a weight: Kaiming-uniform (ReLU gain), ±sqrt(6/fan_in).
fn kaiming(fan_in: i64) -> Init {
    Init::Uniform((6.0 / fan_in as f64).sqrt())
}

/// A model's tensors, listed in layout order as [`Architecture::new`] walks the model.
struct Specs {
    traits: &'static Traits,
    tensors: Vec<TensorSpec>,
}

impl Specs {
    fn push(&mut self, name: String, slot: Slot, shape: Vec<i64>, transposed: bool, init: Init, decay: bool) {
        self.tensors.push(TensorSpec { name, slot, shape, transposed, init, decay });
    }

    /// A global embedding table `[rows, d]`, standard normal as tch's nn::embedding starts.
    fn embedding(&mut self, part: Part, module: &str, rows: i64, d: i64) {
        let slot = Slot { layer: None, part, bias: false };
        self.push(format!("{module}.weight"), slot, vec![rows, d], false, Init::Normal(1.0), false);
    }

    /// A norm's scale and, for LayerNorm, its shift: of block `layer`, or the final one.
    fn norm(&mut self, layer: Option<usize>, part: Part, d: i64) {
        let module = match layer {
            Some(layer) => format!("{}.{layer}.{}", self.traits.blocks, self.traits.block_module(part)),
            None => self.traits.final_norm.to_string(),
        };
        let slot = Slot { layer, part, bias: false };
        self.push(format!("{module}.weight"), slot, vec![d], false, Init::Ones, false);
        if self.traits.norm == Norm::Layer {
            self.push(format!("{module}.bias"), Slot { bias: true, ..slot }, vec![d], false, Init::Zeros, false);
        }
    }

    /// A block's matrix `[fan_in, fan_out]` and, with `bias`, its bias, uniform in
    /// ±1/sqrt(fan_in) as tch's nn::linear starts one.
    fn linear(&mut self, layer: usize, part: Part, fan_in: i64, fan_out: i64, bias: bool) {
        let module = format!("{}.{layer}.{}", self.traits.blocks, self.traits.block_module(part));
        let slot = Slot { layer: Some(layer), part, bias: false };
        let transposed = !self.traits.conv1d;
        self.push(format!("{module}.weight"), slot, vec![fan_in, fan_out], transposed, kaiming(fan_in), true);
        if bias {
            let init = Init::Uniform(1.0 / (fan_in as f64).sqrt());
            self.push(format!("{module}.bias"), Slot { bias: true, ..slot }, vec![fan_out], false, init, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(family: Family) -> ModelConfig {
        ModelConfig { architecture: family, n_layer: 1, n_head: 4, d_model: 8, context: 6, ..Default::default() }
    }

    #[test]
    fn gpt2_keeps_its_parameter_layout() {
        let arch = Architecture::new(&model(Family::Gpt2), EmbeddingLayout::after_vocab(256));
        let names: Vec<&str> = arch.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "transformer.wte.weight",
                "transformer.wpe.weight",
                "transformer.h.0.ln_1.weight",
                "transformer.h.0.ln_1.bias",
                "transformer.h.0.attn.c_attn.weight",
                "transformer.h.0.attn.c_attn.bias",
                "transformer.h.0.attn.c_proj.weight",
                "transformer.h.0.attn.c_proj.bias",
                "transformer.h.0.ln_2.weight",
                "transformer.h.0.ln_2.bias",
                "transformer.h.0.mlp.c_fc.weight",
                "transformer.h.0.mlp.c_fc.bias",
                "transformer.h.0.mlp.c_proj.weight",
                "transformer.h.0.mlp.c_proj.bias",
                "transformer.ln_f.weight",
                "transformer.ln_f.bias",
                "lm_head.weight",
            ]
        );
        let (d, v, c) = (8, 258, 6);
        let block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d);
        assert_eq!(arch.parameters(), v * d + c * d + block + 2 * d + d * v);
        assert_eq!(arch.tensors[4].stored_shape(), [8, 24], "Conv1D: stored as computed");
        assert_eq!(arch.tensors[16].stored_shape(), [258, 8], "the head is stored transposed");
    }

    #[test]
    fn llama_has_grouped_query_attention_a_gated_mlp_and_no_shifts() {
        let config = ModelConfig { n_kv_head: Some(2), d_mlp: Some(20), tied_head: true, ..model(Family::Llama) };
        let arch = Architecture::new(&config, EmbeddingLayout { rows: 100, bos: 1, pad: 1 });
        let shapes: Vec<(&str, Vec<usize>)> =
            arch.tensors.iter().map(|t| (t.name.as_str(), t.stored_shape())).collect();
        assert_eq!(
            shapes,
            [
                ("model.embed_tokens.weight", vec![100, 8]),
                ("model.layers.0.input_layernorm.weight", vec![8]),
                ("model.layers.0.self_attn.q_proj.weight", vec![8, 8]),
                ("model.layers.0.self_attn.k_proj.weight", vec![4, 8]),
                ("model.layers.0.self_attn.v_proj.weight", vec![4, 8]),
                ("model.layers.0.self_attn.o_proj.weight", vec![8, 8]),
                ("model.layers.0.post_attention_layernorm.weight", vec![8]),
                ("model.layers.0.mlp.gate_proj.weight", vec![20, 8]),
                ("model.layers.0.mlp.up_proj.weight", vec![20, 8]),
                ("model.layers.0.mlp.down_proj.weight", vec![8, 20]),
                ("model.norm.weight", vec![8]),
            ]
        );
        assert_eq!(arch.rotary, Some(Rotary { dims: 2, theta: 10000.0, scaling: None }));
        assert_eq!(arch.matrix(0, Part::Key), (100 * 8 + 8 + 64, 8, 4));
        assert_eq!(arch.non_embedding_parameters(), arch.parameters() - 800);
    }

    #[test]
    fn qwen2_biases_q_k_and_v_only_and_gpt_neox_fuses_per_head() {
        let arch = Architecture::new(&model(Family::Qwen2), EmbeddingLayout { rows: 50, bos: 0, pad: 0 });
        let biases: Vec<&str> = arch.tensors.iter().filter(|t| t.slot.bias).map(|t| t.name.as_str()).collect();
        assert_eq!(
            biases,
            [
                "model.layers.0.self_attn.q_proj.bias",
                "model.layers.0.self_attn.k_proj.bias",
                "model.layers.0.self_attn.v_proj.bias"
            ]
        );
        let neox = Architecture::new(&model(Family::GptNeox), EmbeddingLayout { rows: 50, bos: 0, pad: 0 });
        assert_eq!(neox.tensors[3].name, "gpt_neox.layers.0.attention.query_key_value.weight");
        assert_eq!(neox.tensors[3].stored_shape(), [24, 8]);
        assert_eq!(neox.tensors.last().unwrap().name, "embed_out.weight");
        assert!(neox.parallel_residual);
        assert_eq!(neox.rotary, None, "a quarter of 2 features rotates none: no rotary at all");
    }
}
