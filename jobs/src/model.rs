//! A stack of G tiny decoder-only transformers held in one set of tensors: every weight has
//! a leading model dimension, so each kernel does the work of all G models at once.
//!
//! Each model is the same small transformer, GPT-2's: learned token and position
//! embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final
//! LayerNorm and a linear head over the vocabulary, its own matrix or the token embedding
//! (tied). The parameter layout is GPT-2's tensors in order ([`subsets::base`]), so a
//! Hugging Face checkpoint maps onto it tensor by tensor. All weights of the stack live in
//! one `[G, P]` tensor (row g is model g's P parameters), so the optimizer, the per-model
//! gradient norms and the weight decay are a few elementwise kernels over it; the forward
//! pass reads the individual weights as views of it. Or the G models share one `[1, P]`
//! set of weights, a frozen base, and each adds its own low-rank adapters
//! ([`crate::lora`]): the base's products then run once over all models' rows. Models
//! never mix: every operation is batched over the model dimension, and nothing reduces
//! across it.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use subsets::config::{Activation, EmbeddingLayout, LoraTarget, ModelConfig, Precision};

use crate::lora::{Factors, Lora};

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Normal(f64),
    /// Uniform in ±bound.
    Uniform(f64),
    Ones,
    Zeros,
}

/// One parameter tensor of a model: its shape, its initialization and whether AdamW
/// decays it (matrices only: not embeddings, LayerNorm weights or biases).
#[derive(Debug, Clone)]
struct ParamSpec {
    shape: Vec<i64>,
    init: Init,
    decay: bool,
}

impl ParamSpec {
    fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// The architecture of every model of a stack, and the layout of a model's parameters in
/// its row of the stacked tensor.
#[derive(Debug, Clone)]
pub struct Architecture {
    n_layer: i64,
    n_head: i64,
    d_model: i64,
    context: i64,
    /// Rows of the token embedding and columns of the head, BOS and PAD among them.
    layout: EmbeddingLayout,
    activation: Activation,
    tied_head: bool,
    layer_norm_epsilon: f64,
    specs: Vec<ParamSpec>,
}

/// Parameter tensors per block, in layout order.
const BLOCK_PARAMS: usize = 12;

/// Where a target matrix is among its block's parameters.
fn target_index(target: LoraTarget) -> usize {
    match target {
        LoraTarget::Attention => 2,
        LoraTarget::AttentionOut => 4,
        LoraTarget::MlpIn => 8,
        LoraTarget::MlpOut => 10,
    }
}

/// Runs `draw` with libtorch's default generator seeded with `seed`.
pub(crate) fn with_seed<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    // libtorch's default generator is one per process: seeding it and drawing from it are
    // one step under this lock, so that stacks initialized at once (tests run in threads)
    // each get their own seed's values.
    static DEFAULT_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _seeded = DEFAULT_GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    draw()
}

impl Architecture {
    /// The architecture of `config` over the token embedding `layout`.
    pub fn new(config: &ModelConfig, layout: EmbeddingLayout) -> Architecture {
        let d = i64::from(config.d_model);
        let rows = i64::from(layout.rows);
        let context = i64::from(config.context);
        // As tch's nn::linear and nn::embedding start: weights Kaiming-uniform (ReLU gain,
        // ±sqrt(6/fan_in)), biases uniform in ±1/sqrt(fan_in), embeddings standard normal.
        let kaiming = |fan_in: i64| (6.0 / fan_in as f64).sqrt();
        let linear = |fan_in: i64, fan_out: i64| {
            [
                ParamSpec { shape: vec![fan_in, fan_out], init: Init::Uniform(kaiming(fan_in)), decay: true },
                ParamSpec { shape: vec![fan_out], init: Init::Uniform(1.0 / (fan_in as f64).sqrt()), decay: false },
            ]
        };
        let layer_norm = || {
            [
                ParamSpec { shape: vec![d], init: Init::Ones, decay: false },
                ParamSpec { shape: vec![d], init: Init::Zeros, decay: false },
            ]
        };
        let mut specs = vec![
            ParamSpec { shape: vec![rows, d], init: Init::Normal(1.0), decay: false },
            ParamSpec { shape: vec![context, d], init: Init::Normal(1.0), decay: false },
        ];
        for _ in 0..config.n_layer {
            specs.extend(layer_norm());
            specs.extend(linear(d, 3 * d));
            specs.extend(linear(d, d));
            specs.extend(layer_norm());
            specs.extend(linear(d, 4 * d));
            specs.extend(linear(4 * d, d));
        }
        specs.extend(layer_norm());
        if !config.tied_head {
            specs.push(ParamSpec { shape: vec![d, rows], init: Init::Uniform(kaiming(d)), decay: true });
        }
        Architecture {
            n_layer: i64::from(config.n_layer),
            n_head: i64::from(config.n_head),
            d_model: d,
            context,
            layout,
            activation: config.activation,
            tied_head: config.tied_head,
            layer_norm_epsilon: config.layer_norm_epsilon,
            specs,
        }
    }

    /// Positions a model reads: a window and the token before it.
    pub fn context(&self) -> i64 {
        self.context
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

    /// Elements of each parameter tensor, in layout order.
    pub fn parameter_sizes(&self) -> Vec<i64> {
        self.specs.iter().map(ParamSpec::numel).collect()
    }

    /// Parameters of one model.
    pub fn parameters(&self) -> i64 {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Parameters of one model outside the embeddings: the N of the 6·N·tokens rule.
    pub fn non_embedding_parameters(&self) -> i64 {
        self.parameters() - self.specs[0].numel() - self.specs[1].numel()
    }

    /// Training FLOPs of one model per predicted token at sequence length `time`: 6·N for
    /// the weights, and 6·n_layer·time·d_model for attention scores and values (two
    /// matrix products of 2·time·d each per token, forward, times three with backward).
    /// With `adapters`, the frozen weights take 4·N (forward, and the backward's gradient
    /// of their inputs; none of their own) and the adapters 6·Q.
    pub fn training_flops_per_token(&self, time: i64, adapters: Option<&Lora>) -> f64 {
        let weights = match adapters {
            Some(lora) => 4.0 * self.non_embedding_parameters() as f64 + 6.0 * lora.parameters() as f64,
            None => 6.0 * self.non_embedding_parameters() as f64,
        };
        weights + 6.0 * (self.n_layer * time * self.d_model) as f64
    }

    /// The initial weights of one model, `[P]` on the CPU, drawn from `seed` alone.
    pub fn initial_weights(&self, seed: u64) -> Tensor {
        with_seed(seed, || {
            let parts: Vec<Tensor> = self
                .specs
                .iter()
                .map(|spec| {
                    let mut values = Tensor::empty([spec.numel()], (Kind::Float, Device::Cpu));
                    match spec.init {
                        Init::Normal(std) => values.normal_(0.0, std),
                        Init::Uniform(bound) => values.uniform_(-bound, bound),
                        Init::Ones => values.fill_(1.0),
                        Init::Zeros => values.fill_(0.0),
                    }
                })
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// Blocks of the model.
    pub fn n_layer(&self) -> usize {
        self.n_layer as usize
    }

    /// The (in, out) shape of a block's `target` matrix.
    pub fn target_shape(&self, target: LoraTarget) -> (i64, i64) {
        let shape = &self.specs[2 + target_index(target)].shape;
        (shape[0], shape[1])
    }

    /// Where block `layer`'s `target` matrix starts in a model's parameters.
    pub fn target_offset(&self, layer: usize, target: LoraTarget) -> i64 {
        let index = 2 + BLOCK_PARAMS * layer + target_index(target);
        self.specs[..index].iter().map(ParamSpec::numel).sum()
    }

    /// Bytes a stack of `models` needs on its device: each model's trained parameters with
    /// their gradient and AdamW's two moments (16 bytes a parameter: every weight, or with
    /// `adapters` the model's adapters, plus the frozen base's 4 bytes a parameter once for
    /// the whole stack), and the larger of a training step's activations (`batch` rows of
    /// `time` positions, kept for the backward pass) and an evaluation batch's logits and
    /// log-probabilities (`eval_batch` rows). Counted from the fp32 tensors a training step
    /// holds, per position: about 17·d_model per layer (LayerNorms, q/k/v, attention output,
    /// the 4·d_model MLP before and after GELU, the residual), three copies of every head's
    /// attention row (scores, probabilities, their gradient), and four of the logits
    /// (logits, log-probabilities, their gradients). For a 124M GPT-2 at 1023 positions on
    /// the CPU this says 5.3 GB a model; `cfmem bench` measured 5.6 GB more for each model
    /// of a stack.
    pub fn memory_estimate(
        &self,
        models: usize,
        batch: usize,
        eval_batch: usize,
        time: usize,
        adapters: Option<&Lora>,
    ) -> u64 {
        let (d, heads, layers, rows) =
            (self.d_model as u64, self.n_head as u64, self.n_layer as u64, self.outputs() as u64);
        let time = time as u64;
        let per_position = 4 * (layers * (17 * d + 3 * heads * time) + 4 * rows);
        let training = batch as u64 * time * per_position;
        let evaluation = eval_batch as u64 * time * 4 * 2 * rows;
        let parameters = self.parameters() as u64;
        let (shared, trained) = match adapters {
            Some(lora) => (4 * parameters, lora.parameters() as u64),
            None => (0, parameters),
        };
        shared + models as u64 * (16 * trained + training.max(evaluation))
    }

    /// `[1, P]`: 1 where AdamW decays the weight, 0 elsewhere.
    pub fn decay_mask(&self, device: Device) -> Tensor {
        let parts: Vec<Tensor> = self
            .specs
            .iter()
            .map(|spec| Tensor::full([spec.numel()], if spec.decay { 1.0 } else { 0.0 }, (Kind::Float, device)))
            .collect();
        Tensor::cat(&parts, 0).unsqueeze(0)
    }

    /// Next-token logits `[G, batch, time, outputs]` (fp32) of the stacked models for token
    /// ids `[G, batch, time]` (each model reads its own rows). `weights` are `[G, P]`, each
    /// model's own, or `[1, P]`, one set all G models share: its products then run once for
    /// all models' rows together. `adapters`, per block, add each model's own low-rank
    /// update to the target matrices ([`Lora::factors`]).
    #[expect(clippy::assign_op_pattern, reason = "tch's += adds in place, and autograd still needs the old x")]
    pub fn forward(
        &self,
        weights: &Tensor,
        adapters: Option<&[HashMap<LoraTarget, Factors>]>,
        tokens: &Tensor,
        precision: Precision,
    ) -> Tensor {
        let (models, batch, time) = tokens.size3().expect("tokens are [models, batch, time]");
        assert!(time <= self.context, "{time} positions exceed the context of {}", self.context);
        let d = self.d_model;
        let sizes = self.parameter_sizes();
        let sets = weights.size()[0];
        let params: Vec<Tensor> = weights
            .split_with_sizes(&sizes, 1)
            .into_iter()
            .zip(&self.specs)
            .map(|(flat, spec)| flat.view([&[sets], spec.shape.as_slice()].concat().as_slice()))
            .collect();
        let rows = batch * time;

        // Embeddings: with weights per model, model g's token t is row g·rows + t of the
        // stacked token tables (torch's embedding backward sums rows without atomics, unlike
        // a gather's).
        let rows_per_model = self.outputs();
        let embedded = if sets == 1 {
            Tensor::embedding(&params[0].get(0), tokens, -1, false, false)
        } else {
            let offsets =
                (Tensor::arange(models, (Kind::Int64, tokens.device())) * rows_per_model).view([models, 1, 1]);
            let table = params[0].reshape([models * rows_per_model, d]);
            Tensor::embedding(&table, &(tokens + offsets), -1, false, false)
        };
        let positions = params[1].narrow(1, 0, time).unsqueeze(1);
        let mut x = (embedded + positions).view([models, rows, d]);

        let blocks = params[2..2 + BLOCK_PARAMS * self.n_layer as usize].chunks(BLOCK_PARAMS);
        for (layer, block) in blocks.enumerate() {
            let [ln_attn_w, ln_attn_b, qkv_w, qkv_b, out_w, out_b, ln_mlp_w, ln_mlp_b, in_w, in_b, mlp_w, mlp_b] =
                block
            else {
                unreachable!("a block has {BLOCK_PARAMS} parameters")
            };
            let update = |target| adapters.and_then(|blocks| blocks[layer].get(&target));
            let qkv = linear(
                &self.layer_norm(&x, ln_attn_w, ln_attn_b),
                qkv_w,
                qkv_b,
                update(LoraTarget::Attention),
                precision,
            );
            let attended = self.attention(&qkv, models * batch, time, precision).view([models, rows, d]);
            x = x + linear(&attended, out_w, out_b, update(LoraTarget::AttentionOut), precision);
            let approximate = match self.activation {
                Activation::Gelu => "none",
                Activation::GeluTanh => "tanh",
            };
            let normed = self.layer_norm(&x, ln_mlp_w, ln_mlp_b);
            let hidden = linear(&normed, in_w, in_b, update(LoraTarget::MlpIn), precision).gelu(approximate);
            x = x + linear(&hidden, mlp_w, mlp_b, update(LoraTarget::MlpOut), precision);
        }
        let last = 2 + BLOCK_PARAMS * self.n_layer as usize;
        let x = self.layer_norm(&x, &params[last], &params[last + 1]);
        let head = if self.tied_head { params[0].transpose(1, 2) } else { params[last + 2].shallow_clone() };
        matmul(&x, &head, precision).to_kind(Kind::Float).view([models, batch, time, rows_per_model])
    }

    /// LayerNorm over the last dimension with each model's own scale and shift `[G, d]`.
    fn layer_norm(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
        let d = x.size().last().copied().expect("activations have a feature dimension");
        let normed = x.layer_norm([d], None::<Tensor>, None::<Tensor>, self.layer_norm_epsilon, true);
        bias.unsqueeze(1).addcmul(&normed, &weight.unsqueeze(1))
    }

    /// Causal self-attention of `[G, rows, 3·d]` projections, as `[G·batch, time, d]` in the
    /// precision's kind.
    fn attention(&self, qkv: &Tensor, sequences: i64, time: i64, precision: Precision) -> Tensor {
        let (heads, d) = (self.n_head, self.d_model);
        let qkv = match precision {
            Precision::Fp32 => qkv.shallow_clone(),
            Precision::Bf16 => qkv.to_kind(Kind::BFloat16),
        };
        // [3, sequences, heads, time, head_dim]
        let qkv = qkv.view([sequences, time, 3, heads, d / heads]).permute([2, 0, 3, 1, 4]);
        // Causal: position t attends to positions <= t only. Padding sits at the end of a
        // row, so no real position ever attends to it.
        let attended = Tensor::scaled_dot_product_attention(
            &qkv.get(0),
            &qkv.get(1),
            &qkv.get(2),
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        attended.transpose(1, 2).reshape([sequences, time, d])
    }
}

/// The kind products are computed in.
fn product_kind(precision: Precision) -> Kind {
    match precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    }
}

/// `x [G, rows, in] · w` in the precision's kind, `w` `[G, in, out]` (a product per model)
/// or `[1, in, out]` (one product over all G models' rows): bf16 products come out in bf16
/// (as under autocast), and adding them to the fp32 residual stream promotes them.
fn matmul(x: &Tensor, w: &Tensor, precision: Precision) -> Tensor {
    let kind = product_kind(precision);
    let (x, w) = (x.to_kind(kind), w.to_kind(kind));
    if w.size()[0] == 1 {
        let (models, rows, width) = x.size3().expect("activations are [models, rows, features]");
        x.view([models * rows, width]).mm(&w.get(0)).view([models, rows, -1])
    } else {
        x.bmm(&w)
    }
}

/// `x · w + b` per model, plus each model's low-rank update when it has one: `x [G, rows,
/// in]`, `w` `[G, in, out]` or `[1, in, out]` and `b` `[G, out]` or `[1, out]` as in
/// [`matmul`]; one fused product-and-add.
fn linear(x: &Tensor, w: &Tensor, b: &Tensor, update: Option<&Factors>, precision: Precision) -> Tensor {
    let kind = product_kind(precision);
    let (x, w, b) = (x.to_kind(kind), w.to_kind(kind), b.to_kind(kind));
    let out = if w.size()[0] == 1 {
        let (models, rows, width) = x.size3().expect("activations are [models, rows, features]");
        b.addmm(&x.view([models * rows, width]), &w.get(0)).view([models, rows, -1])
    } else {
        b.unsqueeze(1).baddbmm(&x, &w, 1.0, 1.0)
    };
    match update {
        Some(Factors { a, b, scale }) => out.baddbmm(&x.bmm(&a.to_kind(kind)), &b.to_kind(kind), 1.0, *scale),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Architecture {
        Architecture::new(
            &ModelConfig { n_layer: 1, n_head: 2, d_model: 8, context: 6, ..Default::default() },
            EmbeddingLayout::after_vocab(256),
        )
    }

    #[test]
    fn parameter_count_and_decay_mask_follow_the_layout() {
        let arch = tiny();
        let (d, v, c) = (8, 258, 6);
        let block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d);
        assert_eq!(arch.parameters(), v * d + c * d + block + 2 * d + d * v);
        let decayed = f64::try_from(arch.decay_mask(Device::Cpu).sum(Kind::Double)).unwrap() as i64;
        assert_eq!(decayed, d * 3 * d + d * d + d * 4 * d + 4 * d * d + d * v, "matrices only");
    }

    #[test]
    fn the_memory_estimate_counts_a_lora_stacks_base_once() {
        // GPT-2 small: 124M parameters; rank-8 adapters on c_attn, 294,912 a model.
        let model =
            ModelConfig { n_layer: 12, n_head: 12, d_model: 768, context: 1024, tied_head: true, ..Default::default() };
        let arch = Architecture::new(&model, EmbeddingLayout { rows: 50257, bos: 50256, pad: 50256 });
        let train = subsets::config::TrainConfig {
            init: "a base".into(),
            adapter: subsets::config::Adapter::Lora,
            ..Default::default()
        };
        let lora = Lora::of(&arch, &train).unwrap();
        let (p, q) = (arch.parameters() as u64, lora.parameters() as u64);
        assert_eq!((p, q), (124_439_808, 12 * 8 * (768 + 3 * 768)));
        // Without activations (no batch), what stays: the state.
        let state = |models, lora| arch.memory_estimate(models, 0, 0, 0, lora);
        assert_eq!(state(64, Some(&lora)), 4 * p + 64 * 16 * q, "the base once, 64 models' adapters");
        assert_eq!(state(1, None), 16 * p);
        assert!(state(64, Some(&lora)) < state(1, None) / 2, "64 LoRA models hold less than one full fine-tune");
        // Activations stay per model either way.
        let activations = arch.memory_estimate(1, 1, 1, 64, None) - state(1, None);
        assert_eq!(arch.memory_estimate(64, 1, 1, 64, Some(&lora)), state(64, Some(&lora)) + 64 * activations);
    }

    #[test]
    fn models_of_a_stack_do_not_see_each_other() {
        let arch = tiny();
        let a = arch.initial_weights(1);
        let b = arch.initial_weights(2);
        assert_eq!(a, arch.initial_weights(1), "weights come from the seed alone");
        let tokens = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]).view([2, 1, 4]);
        let stacked = arch.forward(&Tensor::stack(&[&a, &b], 0), None, &tokens, Precision::Fp32);
        let alone_a = arch.forward(&a.unsqueeze(0), None, &tokens.narrow(0, 0, 1), Precision::Fp32);
        let alone_b = arch.forward(&b.unsqueeze(0), None, &tokens.narrow(0, 1, 1), Precision::Fp32);
        assert!(stacked.get(0).allclose(&alone_a.get(0), 1e-5, 1e-6, false));
        assert!(stacked.get(1).allclose(&alone_b.get(0), 1e-5, 1e-6, false));
    }
}
