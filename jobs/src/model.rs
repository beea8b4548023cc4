//! A tiny decoder-only transformer over byte tokens: learned token and position
//! embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final
//! LayerNorm and a linear head over the vocabulary.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use subsets::config::ModelConfig;
use subsets::corpus::VOCAB;

#[derive(Debug)]
struct Block {
    ln_attn: nn::LayerNorm,
    qkv: nn::Linear,
    attn_out: nn::Linear,
    ln_mlp: nn::LayerNorm,
    mlp_in: nn::Linear,
    mlp_out: nn::Linear,
    n_head: i64,
}

impl Block {
    fn new(p: nn::Path, config: &ModelConfig) -> Block {
        let d = i64::from(config.d_model);
        Block {
            ln_attn: nn::layer_norm(&p / "ln_attn", vec![d], Default::default()),
            qkv: nn::linear(&p / "qkv", d, 3 * d, Default::default()),
            attn_out: nn::linear(&p / "attn_out", d, d, Default::default()),
            ln_mlp: nn::layer_norm(&p / "ln_mlp", vec![d], Default::default()),
            mlp_in: nn::linear(&p / "mlp_in", d, 4 * d, Default::default()),
            mlp_out: nn::linear(&p / "mlp_out", 4 * d, d, Default::default()),
            n_head: i64::from(config.n_head),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (batch, time, d) = x.size3().expect("activations are [batch, time, d_model]");
        let heads = |t: &Tensor| t.view([batch, time, self.n_head, d / self.n_head]).transpose(1, 2);
        let qkv = self.qkv.forward(&x.apply(&self.ln_attn)).split(d, 2);
        // Causal: position t attends to positions <= t only. Padding sits at the end of a
        // row, so no real position ever attends to it.
        let attended = Tensor::scaled_dot_product_attention(
            &heads(&qkv[0]),
            &heads(&qkv[1]),
            &heads(&qkv[2]),
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        )
        .transpose(1, 2)
        .contiguous()
        .view([batch, time, d]);
        let x = x + self.attn_out.forward(&attended);
        let mlp = self.mlp_out.forward(&self.mlp_in.forward(&x.apply(&self.ln_mlp)).gelu("none"));
        x + mlp
    }
}

#[derive(Debug)]
pub struct Transformer {
    token: nn::Embedding,
    position: nn::Embedding,
    blocks: Vec<Block>,
    ln_final: nn::LayerNorm,
    head: nn::Linear,
}

impl Transformer {
    pub fn new(p: &nn::Path, config: &ModelConfig) -> Transformer {
        let d = i64::from(config.d_model);
        Transformer {
            token: nn::embedding(p / "token", VOCAB, d, Default::default()),
            position: nn::embedding(p / "position", i64::from(config.context), d, Default::default()),
            blocks: (0..config.n_layer).map(|i| Block::new(p / format!("block{i}"), config)).collect(),
            ln_final: nn::layer_norm(p / "ln_final", vec![d], Default::default()),
            head: nn::linear(p / "head", d, VOCAB, nn::LinearConfig { bias: false, ..Default::default() }),
        }
    }

    /// Next-token logits `[batch, time, VOCAB]` for token ids `[batch, time]`.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let time = tokens.size()[1];
        let positions = Tensor::arange(time, (Kind::Int64, tokens.device()));
        let mut x = tokens.apply(&self.token) + positions.apply(&self.position);
        for block in &self.blocks {
            x = block.forward(&x);
        }
        x.apply(&self.ln_final).apply(&self.head)
    }
}
