//! The model families cfmem computes, as a table: each family's normalization, positions,
//! attention projections, MLP, the names of its modules in a Hugging Face checkpoint and
//! the matrices LoRA may adapt ([`Family::traits`]). The description of a model's tensors
//! is derived from an entry ([`crate::architecture`]); the forward pass reads the same
//! traits (`jobs::model`).

use serde::{Deserialize, Serialize};

/// A model family, named as `[model] architecture` and as Hugging Face's `model_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// GPT-2: learned positions, LayerNorm, fused q/k/v, a GELU MLP.
    #[default]
    Gpt2,
    /// Llama (SmolLM2, TinyLlama, Llama 3.2 without rope scaling): RMSNorm, rotary
    /// positions, separate q/k/v with grouped-query attention, a SwiGLU MLP.
    Llama,
    /// Qwen2: the Llama block with biases on q, k and v.
    Qwen2,
    /// GPT-NeoX (Pythia): LayerNorm, partial rotary positions, q/k/v fused per head, a GELU
    /// MLP, parallel or sequential residual.
    GptNeox,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Gpt2, Family::Llama, Family::Qwen2, Family::GptNeox];

    /// The name in `[model] architecture` and Hugging Face's `model_type`.
    pub fn name(self) -> &'static str {
        self.traits().model_type
    }

    /// The family whose `model_type` is `name`.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|family| family.name() == name)
    }

    /// The family's entry of the table.
    pub fn traits(self) -> &'static Traits {
        match self {
            Family::Gpt2 => &GPT2,
            Family::Llama => &LLAMA,
            Family::Qwen2 => &QWEN2,
            Family::GptNeox => &GPT_NEOX,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a block normalizes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// LayerNorm with a scale and a shift.
    Layer,
    /// RMSNorm (Llama's): a scale, no shift, no centering.
    Rms,
}

/// How a model knows where a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// A learned embedding per position, added to the token's.
    Learned,
    /// Rotary embeddings applied to queries and keys (the first `rotary_pct` of each head).
    Rotary,
}

/// How a block computes queries, keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projections {
    /// One `[d, 3·d]` matrix whose outputs are all queries, then all keys, then all values
    /// (GPT-2's `c_attn`).
    Fused,
    /// One `[d, 3·d]` matrix whose outputs are, head by head, that head's query, key and
    /// value (GPT-NeoX's `query_key_value`).
    FusedPerHead,
    /// Three matrices, the keys and values with `n_kv_head` heads (grouped-query attention).
    Separate,
}

/// A block's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// out(act(in(x))).
    Plain,
    /// out(act(gate(x)) · in(x)), SwiGLU with SiLU.
    Gated,
}

/// A tensor's place in a model: what the forward pass does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    TokenEmbedding,
    PositionEmbedding,
    AttentionNorm,
    Qkv,
    Query,
    Key,
    Value,
    AttentionOut,
    MlpNorm,
    Gate,
    /// The MLP's first matrix (GPT-2's `c_fc`, Llama's `up_proj`, GPT-NeoX's `dense_h_to_4h`).
    MlpIn,
    /// The MLP's last matrix (`mlp.c_proj`, `down_proj`, `dense_4h_to_h`).
    MlpOut,
    FinalNorm,
    Head,
}

/// A family's entry of the table.
#[derive(Debug)]
pub struct Traits {
    /// Hugging Face's `model_type`, and cfmem's name of the family.
    pub model_type: &'static str,
    /// The `transformers` class a directory of this family loads as.
    pub class: &'static str,
    pub norm: Norm,
    pub positions: Positions,
    pub projections: Projections,
    pub mlp: Mlp,
    /// Matrices are stored `[in, out]` (GPT-2's Conv1D), as cfmem computes them; otherwise
    /// `[out, in]` (torch's Linear), the transpose.
    pub conv1d: bool,
    /// Names of the global tensors' modules.
    pub token_embedding: &'static str,
    pub position_embedding: &'static str,
    pub final_norm: &'static str,
    pub head: &'static str,
    /// The blocks' module path: block N is `{blocks}.N`.
    pub blocks: &'static str,
    /// The module of each part of a block, inside the block.
    pub block_modules: &'static [(Part, &'static str)],
    /// The block matrices LoRA may adapt, as peft's `target_modules` names them.
    pub lora_targets: &'static [(&'static str, Part)],
    /// The targets when `train.lora_targets` names none (peft's defaults for the family).
    pub default_lora_targets: &'static [&'static str],
}

const GPT2: Traits = Traits {
    model_type: "gpt2",
    class: "GPT2LMHeadModel",
    norm: Norm::Layer,
    positions: Positions::Learned,
    projections: Projections::Fused,
    mlp: Mlp::Plain,
    conv1d: true,
    token_embedding: "transformer.wte",
    position_embedding: "transformer.wpe",
    final_norm: "transformer.ln_f",
    head: "lm_head",
    blocks: "transformer.h",
    block_modules: &[
        (Part::AttentionNorm, "ln_1"),
        (Part::Qkv, "attn.c_attn"),
        (Part::AttentionOut, "attn.c_proj"),
        (Part::MlpNorm, "ln_2"),
        (Part::MlpIn, "mlp.c_fc"),
        (Part::MlpOut, "mlp.c_proj"),
    ],
    // GPT-2 names two matrices c_proj: the block's path tells them apart.
    lora_targets: &[
        ("c_attn", Part::Qkv),
        ("attn.c_proj", Part::AttentionOut),
        ("c_fc", Part::MlpIn),
        ("mlp.c_proj", Part::MlpOut),
    ],
    default_lora_targets: &["c_attn"],
};

const LLAMA_MODULES: &[(Part, &str)] = &[
    (Part::AttentionNorm, "input_layernorm"),
    (Part::Query, "self_attn.q_proj"),
    (Part::Key, "self_attn.k_proj"),
    (Part::Value, "self_attn.v_proj"),
    (Part::AttentionOut, "self_attn.o_proj"),
    (Part::MlpNorm, "post_attention_layernorm"),
    (Part::Gate, "mlp.gate_proj"),
    (Part::MlpIn, "mlp.up_proj"),
    (Part::MlpOut, "mlp.down_proj"),
];

const LLAMA_TARGETS: &[(&str, Part)] = &[
    ("q_proj", Part::Query),
    ("k_proj", Part::Key),
    ("v_proj", Part::Value),
    ("o_proj", Part::AttentionOut),
    ("gate_proj", Part::Gate),
    ("up_proj", Part::MlpIn),
    ("down_proj", Part::MlpOut),
];

const LLAMA: Traits = Traits {
    model_type: "llama",
    class: "LlamaForCausalLM",
    norm: Norm::Rms,
    positions: Positions::Rotary,
    projections: Projections::Separate,
    mlp: Mlp::Gated,
    conv1d: false,
    token_embedding: "model.embed_tokens",
    position_embedding: "",
    final_norm: "model.norm",
    head: "lm_head",
    blocks: "model.layers",
    block_modules: LLAMA_MODULES,
    lora_targets: LLAMA_TARGETS,
    default_lora_targets: &["q_proj", "v_proj"],
};

const QWEN2: Traits = Traits { model_type: "qwen2", class: "Qwen2ForCausalLM", ..LLAMA };

const GPT_NEOX: Traits = Traits {
    model_type: "gpt_neox",
    class: "GPTNeoXForCausalLM",
    norm: Norm::Layer,
    positions: Positions::Rotary,
    projections: Projections::FusedPerHead,
    mlp: Mlp::Plain,
    conv1d: false,
    token_embedding: "gpt_neox.embed_in",
    position_embedding: "",
    final_norm: "gpt_neox.final_layer_norm",
    head: "embed_out",
    blocks: "gpt_neox.layers",
    block_modules: &[
        (Part::AttentionNorm, "input_layernorm"),
        (Part::Qkv, "attention.query_key_value"),
        (Part::AttentionOut, "attention.dense"),
        (Part::MlpNorm, "post_attention_layernorm"),
        (Part::MlpIn, "mlp.dense_h_to_4h"),
        (Part::MlpOut, "mlp.dense_4h_to_h"),
    ],
    lora_targets: &[
        ("query_key_value", Part::Qkv),
        ("dense", Part::AttentionOut),
        ("dense_h_to_4h", Part::MlpIn),
        ("dense_4h_to_h", Part::MlpOut),
    ],
    default_lora_targets: &["query_key_value"],
};

impl Traits {
    /// The block matrix LoRA target `name` adapts, if the family has it.
    pub fn lora_target(&self, name: &str) -> Option<Part> {
        self.lora_targets.iter().find(|(target, _)| *target == name).map(|&(_, part)| part)
    }

    /// The family's LoRA target names, quoted and listed, for messages.
    pub fn lora_target_list(&self) -> String {
        self.lora_targets.iter().map(|(name, _)| format!("\"{name}\"")).collect::<Vec<_>>().join(", ")
    }

    /// The module of `part` inside a block.
    pub fn block_module(&self, part: Part) -> &'static str {
        self.block_modules
            .iter()
            .find(|(p, _)| *p == part)
            .map(|&(_, module)| module)
            .unwrap_or_else(|| unreachable!("{} blocks have no {part:?}", self.model_type))
    }
}
