//! The computation of a stack of G decoder-only transformers held in one set of tensors:
//! every weight has a leading model dimension, so each kernel does the work of all G
//! models at once.
//!
//! What a model is — its family, dimensions and the tensors of its row of parameters — is
//! [`subsets::architecture::Architecture`]'s, the one description that import, export and
//! LoRA read too; this module computes it ([`Compute`]): initial weights, the decay mask,
//! and the forward pass of every family from the family's traits (norm, positions, the
//! attention's projections, the MLP, the residual). All weights of the stack live in one
//! `[G, P]` tensor (row g is model g's P parameters), so the optimizer, the per-model
//! gradient norms and the weight decay are a few elementwise kernels over it; the forward
//! pass reads the individual weights as views of it. Or the G models share one `[1, P]`
//! set of weights, a frozen base, and each adds its own low-rank adapters ([`Factors`],
//! laid out by [`crate::lora`]): the base's products then run once over all models' rows.
//! Models never mix: every operation is batched over the model dimension, and nothing
//! reduces across it.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use subsets::architecture::{Architecture, Init, Rotary, Slot};
use subsets::config::{Activation, Precision, RopeScaling};
use subsets::family::{Mlp, Norm, Part, Positions, Projections};

/// One adapted matrix's factors for every model of a stack: A `[G, in, r]`, B `[G, r, out]`,
/// and the scale of their product, which adds to the matrix's output.
pub struct Factors {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
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

/// The tensors of an [`Architecture`]: what a model computes.
pub trait Compute {
    /// The initial weights of one model, `[P]` on the CPU, drawn from `seed` alone.
    fn initial_weights(&self, seed: u64) -> Tensor;

    /// `[1, P]`: 1 where AdamW decays the weight, 0 elsewhere.
    fn decay_mask(&self, device: Device) -> Tensor;

    /// What `output` asks of the stacked models for token ids `[G, batch, time]` (each
    /// model reads its own rows): next-token logits `[G, batch, time, outputs]`, or the
    /// final-layer hidden states `[G, batch, time, d_model]` the logits are computed from
    /// (after the final norm), fp32. `weights` are `[G, P]`, each model's own, or `[1, P]`,
    /// one set all G models share: its products then run once for all models' rows
    /// together. `adapters`, per block, add each model's own low-rank update to the adapted
    /// matrices.
    fn forward(
        &self,
        weights: &Tensor,
        adapters: Option<&[HashMap<Part, Factors>]>,
        tokens: &Tensor,
        precision: Precision,
        output: Output,
    ) -> Tensor;
}

/// What [`Compute::forward`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Logits,
    /// The final-layer hidden states, for document embeddings.
    Hidden,
}

impl Compute for Architecture {
    fn initial_weights(&self, seed: u64) -> Tensor {
        with_seed(seed, || {
            let parts: Vec<Tensor> = self
                .tensors
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

    fn decay_mask(&self, device: Device) -> Tensor {
        let parts: Vec<Tensor> = self
            .tensors
            .iter()
            .map(|spec| Tensor::full([spec.numel()], if spec.decay { 1.0 } else { 0.0 }, (Kind::Float, device)))
            .collect();
        Tensor::cat(&parts, 0).unsqueeze(0)
    }

    #[expect(clippy::assign_op_pattern, reason = "tch's += adds in place, and autograd still needs the old x")]
    fn forward(
        &self,
        weights: &Tensor,
        adapters: Option<&[HashMap<Part, Factors>]>,
        tokens: &Tensor,
        precision: Precision,
        output: Output,
    ) -> Tensor {
        let (models, batch, time) = tokens.size3().expect("tokens are [models, batch, time]");
        assert!(time <= self.context, "{time} positions exceed the context of {}", self.context);
        let traits = self.traits();
        let d = self.d_model;
        let sets = weights.size()[0];
        let params: Vec<Tensor> = weights
            .split_with_sizes(self.parameter_sizes(), 1)
            .into_iter()
            .zip(&self.tensors)
            .map(|(flat, spec)| flat.view([&[sets], spec.shape.as_slice()].concat().as_slice()))
            .collect();
        let weight = |layer: Option<usize>, part: Part| -> &Tensor {
            let index = self.find(Slot { layer, part, bias: false });
            &params[index.unwrap_or_else(|| unreachable!("the model has no {part:?}"))]
        };
        let bias = |layer: Option<usize>, part: Part| self.find(Slot { layer, part, bias: true }).map(|i| &params[i]);
        let norm = |x: &Tensor, layer: Option<usize>, part: Part| match traits.norm {
            Norm::Layer => {
                layer_norm(x, weight(layer, part), bias(layer, part).expect("LayerNorm shifts"), self.norm_epsilon)
            }
            Norm::Rms => rms_norm(x, weight(layer, part), self.norm_epsilon),
        };
        let rows = batch * time;

        // Embeddings: with weights per model, model g's token t is row g·rows + t of the
        // stacked token tables (torch's embedding backward sums rows without atomics, unlike
        // a gather's).
        let rows_per_model = self.outputs();
        let table = weight(None, Part::TokenEmbedding);
        let embedded = if sets == 1 {
            Tensor::embedding(&table.get(0), tokens, -1, false, false)
        } else {
            let offsets =
                (Tensor::arange(models, (Kind::Int64, tokens.device())) * rows_per_model).view([models, 1, 1]);
            Tensor::embedding(&table.reshape([models * rows_per_model, d]), &(tokens + offsets), -1, false, false)
        };
        let mut x = match traits.positions {
            Positions::Learned => embedded + weight(None, Part::PositionEmbedding).narrow(1, 0, time).unsqueeze(1),
            Positions::Rotary => embedded,
        }
        .view([models, rows, d]);
        let rotary = self.rotary.map(|rotary| RotaryTable::new(rotary, time, tokens.device()));

        for layer in 0..self.n_layer as usize {
            let at = Some(layer);
            let project = |input: &Tensor, part: Part| {
                let update = adapters.and_then(|blocks| blocks[layer].get(&part));
                linear(input, weight(at, part), bias(at, part), update, precision)
            };
            let attention = {
                let h = norm(&x, at, Part::AttentionNorm);
                let attended = attention(self, &h, &project, models * batch, time, rotary.as_ref());
                project(&attended.view([models, rows, -1]), Part::AttentionOut)
            };
            let mlp = |input: &Tensor| {
                let h = norm(input, at, Part::MlpNorm);
                let hidden = match traits.mlp {
                    Mlp::Plain => activate(&project(&h, Part::MlpIn), self.activation),
                    Mlp::Gated => activate(&project(&h, Part::Gate), self.activation) * project(&h, Part::MlpIn),
                };
                project(&hidden, Part::MlpOut)
            };
            if self.parallel_residual {
                x = x.shallow_clone() + attention + mlp(&x);
            } else {
                x = x + attention;
                x = x.shallow_clone() + mlp(&x);
            }
        }
        let x = norm(&x, None, Part::FinalNorm);
        if output == Output::Hidden {
            return x.to_kind(Kind::Float).view([models, batch, time, d]);
        }
        let head = match self.find(Slot { layer: None, part: Part::Head, bias: false }) {
            Some(index) => params[index].shallow_clone(),
            None => table.transpose(1, 2),
        };
        matmul(&x, &head, precision).to_kind(Kind::Float).view([models, batch, time, rows_per_model])
    }
}

/// The cosines and sines `[time, dims]` of rotary positions 0..time, computed in fp32 as
/// transformers computes them: frequencies θ^(−2i/dims), rescaled as Llama 3's when the
/// rotary positions say so, each used for two features.
struct RotaryTable {
    dims: i64,
    cos: Tensor,
    sin: Tensor,
}

impl RotaryTable {
    fn new(rotary: Rotary, time: i64, device: Device) -> RotaryTable {
        let dims = rotary.dims;
        let exponents = Tensor::arange_start_step(0, dims, 2, (Kind::Int64, device)).to_kind(Kind::Float) / dims as f64;
        let inverse = Tensor::pow_scalar(rotary.theta, &exponents).reciprocal();
        let inverse = match rotary.scaling {
            Some(scaling) => llama3_frequencies(&inverse, scaling),
            None => inverse,
        };
        let positions = Tensor::arange(time, (Kind::Float, device));
        let angles = positions.unsqueeze(1) * inverse.unsqueeze(0);
        let angles = Tensor::cat(&[&angles, &angles], 1);
        RotaryTable { dims, cos: angles.cos(), sin: angles.sin() }
    }

    /// `x` `[sequences, heads, time, head_dim]` with its first `dims` features of every head
    /// rotated: x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁) of its halves.
    fn apply(&self, x: &Tensor) -> Tensor {
        let head_dim = x.size()[3];
        let (cos, sin) = (self.cos.to_kind(x.kind()), self.sin.to_kind(x.kind()));
        let rotating = x.narrow(3, 0, self.dims);
        let half = self.dims / 2;
        let rotated_half = Tensor::cat(&[&-rotating.narrow(3, half, half), &rotating.narrow(3, 0, half)], 3);
        let rotated = rotating * cos + rotated_half * sin;
        if self.dims == head_dim {
            rotated
        } else {
            Tensor::cat(&[rotated, x.narrow(3, self.dims, head_dim - self.dims)], 3)
        }
    }
}

/// Llama 3's rescaled rotary frequencies, as transformers' `_compute_llama3_parameters`: a
/// frequency of wavelength λ = 2π/f stays when λ < L/high_freq_factor, is divided by
/// `factor` when λ > L/low_freq_factor (L the original context), and between the two is
/// interpolated, (1 − s)·f/factor + s·f with s = (L/λ − low) / (high − low).
fn llama3_frequencies(inverse: &Tensor, scaling: RopeScaling) -> Tensor {
    let context = f64::from(scaling.original_max_position_embeddings);
    let (low, high) = (scaling.low_freq_factor, scaling.high_freq_factor);
    let (long, short) = (context / low, context / high);
    let wavelength = inverse.full_like(2.0 * std::f64::consts::PI) / inverse;
    let scaled = (inverse / scaling.factor).where_self(&wavelength.gt(long), inverse);
    let smooth = (wavelength.full_like(context) / &wavelength - low) / (high - low);
    let smoothed: Tensor = (-&smooth + 1.0) * &scaled / scaling.factor + &smooth * &scaled;
    let medium = wavelength.lt(short).logical_not().logical_and(&wavelength.gt(long).logical_not());
    smoothed.where_self(&medium, &scaled)
}

/// Causal self-attention of the normed input `h` `[G, rows, d]` through `project` (a
/// block's projection of a part), as `[G·batch, time, heads·head_dim]`.
fn attention(
    architecture: &Architecture,
    h: &Tensor,
    project: &dyn Fn(&Tensor, Part) -> Tensor,
    sequences: i64,
    time: i64,
    rotary: Option<&RotaryTable>,
) -> Tensor {
    let (heads, kv_heads, head_dim) = (architecture.n_head, architecture.n_kv_head, architecture.head_dim);
    // Each [sequences, heads, time, head_dim].
    let (q, k, v) = match architecture.traits().projections {
        Projections::Fused => {
            let qkv = project(h, Part::Qkv).view([sequences, time, 3, heads, head_dim]).permute([2, 0, 3, 1, 4]);
            (qkv.get(0), qkv.get(1), qkv.get(2))
        }
        Projections::FusedPerHead => {
            let qkv = project(h, Part::Qkv).view([sequences, time, heads, 3, head_dim]).permute([3, 0, 2, 1, 4]);
            (qkv.get(0), qkv.get(1), qkv.get(2))
        }
        Projections::Separate => {
            let split = |part, count| project(h, part).view([sequences, time, count, head_dim]).transpose(1, 2);
            (split(Part::Query, heads), split(Part::Key, kv_heads), split(Part::Value, kv_heads))
        }
    };
    let (q, k) = match rotary {
        Some(table) => (table.apply(&q), table.apply(&k)),
        None => (q, k),
    };
    // Grouped-query attention: key/value head j serves query heads j·groups to
    // (j+1)·groups − 1, as transformers' repeat_kv.
    let groups = heads / kv_heads;
    let (k, v) = if groups > 1 {
        (k.repeat_interleave_self_int(groups, 1, None), v.repeat_interleave_self_int(groups, 1, None))
    } else {
        (k, v)
    };
    // Causal: position t attends to positions <= t only. Padding sits at the end of a
    // row, so no real position ever attends to it.
    let attended = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, false);
    attended.transpose(1, 2).reshape([sequences, time, heads * head_dim])
}

/// LayerNorm over the last dimension with each model's own scale and shift `[G, d]`.
fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, epsilon: f64) -> Tensor {
    let d = x.size().last().copied().expect("activations have a feature dimension");
    let normed = x.layer_norm([d], None::<Tensor>, None::<Tensor>, epsilon, true);
    bias.unsqueeze(1).addcmul(&normed, &weight.unsqueeze(1))
}

/// RMSNorm over the last dimension with each model's own scale `[G, d]`, as Llama's:
/// x / sqrt(mean(x²) + ε) · scale, in fp32.
fn rms_norm(x: &Tensor, weight: &Tensor, epsilon: f64) -> Tensor {
    let x = x.to_kind(Kind::Float);
    let mean_square = x.square().mean_dim(-1, true, Kind::Float);
    (x * (mean_square + epsilon).rsqrt()) * weight.unsqueeze(1)
}

/// The MLP's nonlinearity.
fn activate(x: &Tensor, activation: Activation) -> Tensor {
    match activation {
        Activation::Gelu => x.gelu("none"),
        Activation::GeluTanh => x.gelu("tanh"),
        Activation::Silu => x.silu(),
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

/// `x · w (+ b)` per model, plus each model's low-rank update when it has one: `x [G, rows,
/// in]`, `w` `[G, in, out]` or `[1, in, out]` and `b` `[G, out]` or `[1, out]` as in
/// [`matmul`]; with a bias, one fused product-and-add.
fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, update: Option<&Factors>, precision: Precision) -> Tensor {
    let kind = product_kind(precision);
    let x = x.to_kind(kind);
    let out = match b {
        Some(b) => {
            let (w, b) = (w.to_kind(kind), b.to_kind(kind));
            if w.size()[0] == 1 {
                let (models, rows, width) = x.size3().expect("activations are [models, rows, features]");
                b.addmm(&x.view([models * rows, width]), &w.get(0)).view([models, rows, -1])
            } else {
                b.unsqueeze(1).baddbmm(&x, &w, 1.0, 1.0)
            }
        }
        None => matmul(&x, w, precision),
    };
    match update {
        Some(Factors { a, b, scale }) => out.baddbmm(&x.bmm(&a.to_kind(kind)), &b.to_kind(kind), 1.0, *scale),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use subsets::config::{EmbeddingLayout, ModelConfig};
    use subsets::family::Family;

    use super::*;

    fn tiny(family: Family) -> Architecture {
        let model = ModelConfig {
            architecture: family,
            n_layer: 1,
            n_head: 2,
            d_model: 8,
            context: 6,
            n_kv_head: (family == Family::Llama).then_some(1),
            rotary_pct: (family == Family::GptNeox).then_some(0.5),
            ..Default::default()
        };
        Architecture::new(&model, EmbeddingLayout::after_vocab(256))
    }

    #[test]
    fn the_decay_mask_covers_matrices_only() {
        let arch = tiny(Family::Gpt2);
        let d = 8;
        let decayed = f64::try_from(arch.decay_mask(Device::Cpu).sum(Kind::Double)).unwrap() as i64;
        assert_eq!(decayed, d * 3 * d + d * d + d * 4 * d + 4 * d * d + d * 258, "matrices only");
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
        let lora = crate::lora::Lora::of(&arch, &train).unwrap().unwrap();
        let (p, q) = (arch.parameters() as u64, lora.parameters() as u64);
        assert_eq!((p, q), (124_439_808, 12 * 8 * (768 + 3 * 768)));
        // Without activations (no batch), what stays: the state.
        let state = |models, q: Option<i64>| arch.memory_estimate(models, 0, 0, 0, q);
        let adapters = Some(lora.parameters());
        assert_eq!(state(64, adapters), 4 * p + 64 * 20 * q, "the base once, 64 models' adapters");
        assert_eq!(state(1, None), 4 * p + 20 * p);
        assert!(state(64, adapters) < state(1, None) / 2, "64 LoRA models hold less than one full fine-tune");
        // Activations stay per model either way.
        let activations = arch.memory_estimate(1, 1, 1, 64, None) - state(1, None);
        assert_eq!(arch.memory_estimate(64, 1, 1, 64, adapters), state(64, adapters) + 64 * activations);
    }

    #[test]
    fn models_of_a_stack_do_not_see_each_other_in_any_family() {
        for family in Family::ALL {
            let arch = tiny(family);
            let a = arch.initial_weights(1);
            let b = arch.initial_weights(2);
            assert_eq!(a, arch.initial_weights(1), "weights come from the seed alone");
            let tokens = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]).view([2, 1, 4]);
            let stacked = arch.forward(&Tensor::stack(&[&a, &b], 0), None, &tokens, Precision::Fp32, Output::Logits);
            let alone_a = arch.forward(&a.unsqueeze(0), None, &tokens.narrow(0, 0, 1), Precision::Fp32, Output::Logits);
            let alone_b = arch.forward(&b.unsqueeze(0), None, &tokens.narrow(0, 1, 1), Precision::Fp32, Output::Logits);
            assert!(stacked.get(0).allclose(&alone_a.get(0), 1e-5, 1e-6, false), "{family}");
            assert!(stacked.get(1).allclose(&alone_b.get(0), 1e-5, 1e-6, false), "{family}");
        }
    }

    #[test]
    fn rotary_positions_turn_pairs_of_features_by_their_angle() {
        // One head of 4 features, all rotating, θ = 100: position 1 turns feature pairs
        // (0, 2) by 1 radian and (1, 3) by 100^(-1/2) = 0.1.
        let table = RotaryTable::new(Rotary { dims: 4, theta: 100.0, scaling: None }, 2, Device::Cpu);
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]).view([1, 1, 2, 4]);
        let turned = Vec::<f32>::try_from(table.apply(&x).view([-1])).unwrap();
        assert_eq!(&turned[..4], &[1.0, 2.0, 3.0, 4.0], "position 0 does not turn");
        let (c1, s1, c2, s2) = (1f32.cos(), 1f32.sin(), 0.1f32.cos(), 0.1f32.sin());
        let expected = [1.0 * c1 - 3.0 * s1, 2.0 * c2 - 4.0 * s2, 3.0 * c1 + 1.0 * s1, 4.0 * c2 + 2.0 * s2];
        for (got, want) in turned[4..].iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{turned:?} vs {expected:?}");
        }
    }
}
