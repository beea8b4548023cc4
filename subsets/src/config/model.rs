//! `[model]`: the family, the shape and the tokenizer of every model of a run.

use serde::{Deserialize, Serialize};

use crate::family::Family;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ModelToml", into = "ModelToml")]
pub struct ModelConfig {
    /// The model family ([`crate::family`]); the keys below marked with a family mean
    /// something for it alone, and are refused, named, for another.
    pub architecture: Family,
    pub n_layer: u32,
    pub n_head: u32,
    pub d_model: u32,
    /// Positions per sequence: a window of `context − 1` tokens and the token before it.
    pub context: u32,
    /// Key and value heads (grouped-query attention; llama, qwen2); absent: `n_head`.
    pub n_kv_head: Option<u32>,
    /// Features of each attention head (llama, qwen2); absent: `d_model / n_head`.
    pub head_dim: Option<u32>,
    /// Width of the MLP's hidden layer; absent: the family's usual ([`ModelConfig::mlp_width`]).
    pub d_mlp: Option<u32>,
    /// Base of the rotary frequencies (llama, qwen2, gpt_neox); absent: 10000.
    pub rope_theta: Option<f64>,
    /// Llama 3's rope scaling (llama; `rope_type = "llama3"` in a `config.json`): long
    /// wavelengths stretched by `factor`; absent: none.
    pub rope_scaling: Option<RopeScaling>,
    /// Fraction of each head's features that rotate (gpt_neox); absent: 0.25.
    pub rotary_pct: Option<f64>,
    /// Attention and MLP read the same input and add to the residual together
    /// (gpt_neox's `use_parallel_residual`); absent: true.
    pub parallel_residual: Option<bool>,
    /// Biases on the attention's projections (llama: q, k, v and o; gpt_neox: its fused
    /// q/k/v and dense); absent: llama none, gpt_neox yes. Qwen2 always biases q, k and v.
    pub attention_bias: Option<bool>,
    /// Biases on the MLP's matrices (llama); absent: none.
    pub mlp_bias: Option<bool>,
    /// How text becomes tokens. Scores are per token of this tokenizer.
    pub tokenizer: TokenizerChoice,
    /// Tokens of a document beyond this are dropped, to bound the cost of long documents;
    /// absent: whole documents.
    pub max_tokens_per_doc: Option<u32>,
    /// The MLP's nonlinearity; in TOML, absent: gelu, or silu for llama and qwen2.
    pub activation: Activation,
    /// The head is the token embedding, transposed (as in GPT-2), instead of a matrix of
    /// its own.
    pub tied_head: bool,
    /// The epsilon of every LayerNorm (or RMSNorm).
    pub layer_norm_epsilon: f64,
}

/// The MLP's nonlinearity, named as in a Hugging Face `config.json` (GPT-2's
/// `activation_function`, the others' `hidden_act`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// The exact GELU, x·Φ(x).
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU that GPT-2 was trained with.
    #[serde(rename = "gelu_new")]
    GeluTanh,
    /// x·σ(x), Llama's.
    #[serde(rename = "silu")]
    Silu,
}

/// How a run's text becomes tokens. In TOML (`[model]`): `tokenizer = "bytes"`,
/// `tokenizer = "bpe"` with `vocab_size = N`, or `tokenizer = "PATH"` of a `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerChoice {
    /// Each byte of the UTF-8 text is a token: vocabulary 256.
    Bytes,
    /// A byte-level BPE of at most `vocab_size` tokens (the 256 bytes included), trained on
    /// the corpus and background at plan time.
    Bpe { vocab_size: u32 },
    /// A Hugging Face `tokenizer.json`, read at plan time and copied into the run.
    File(String),
}

/// Vocabularies a BPE may be trained to: the 256 bytes at least.
pub const BPE_VOCAB_SIZES: std::ops::RangeInclusive<u32> = 256..=1 << 20;
/// The vocabulary of a BPE whose size is not given.
pub const DEFAULT_BPE_VOCAB: u32 = 4096;

/// `[model] tokenizer` for byte tokens and for a BPE trained at plan time; anything else is
/// a path.
const BYTES: &str = "bytes";
const BPE: &str = "bpe";

impl std::fmt::Display for TokenizerChoice {
    /// As written in TOML: `bytes`, `bpe` or the path.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerChoice::Bytes => f.write_str(BYTES),
            TokenizerChoice::Bpe { .. } => f.write_str(BPE),
            TokenizerChoice::File(path) => f.write_str(path),
        }
    }
}

/// `[model]` as written in TOML, where the tokenizer is a string and `vocab_size` a key of its
/// own. Files written before [`TokenizerChoice`] existed hold a `vocab_size` whatever the
/// tokenizer; it is read, and kept only for a BPE. Files written before families existed
/// hold no `architecture`: GPT-2.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ModelToml {
    #[serde(skip_serializing_if = "is_gpt2")]
    architecture: Family,
    n_layer: u32,
    n_head: u32,
    d_model: u32,
    context: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    n_kv_head: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head_dim: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    d_mlp: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rope_theta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rope_scaling: Option<RopeScaling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotary_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_residual: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attention_bias: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mlp_bias: Option<bool>,
    tokenizer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    vocab_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens_per_doc: Option<u32>,
    activation: Option<Activation>,
    tied_head: bool,
    layer_norm_epsilon: f64,
}

fn is_gpt2(family: &Family) -> bool {
    *family == Family::Gpt2
}

impl Default for ModelToml {
    /// ModelConfig's defaults, the activation left to the family.
    fn default() -> Self {
        let mut toml = ModelToml::from(ModelConfig::default());
        toml.activation = None;
        toml
    }
}

impl From<ModelConfig> for ModelToml {
    fn from(m: ModelConfig) -> ModelToml {
        let vocab_size = match m.tokenizer {
            TokenizerChoice::Bpe { vocab_size } => Some(vocab_size),
            TokenizerChoice::Bytes | TokenizerChoice::File(_) => None,
        };
        ModelToml {
            architecture: m.architecture,
            n_layer: m.n_layer,
            n_head: m.n_head,
            d_model: m.d_model,
            context: m.context,
            n_kv_head: m.n_kv_head,
            head_dim: m.head_dim,
            d_mlp: m.d_mlp,
            rope_theta: m.rope_theta,
            rope_scaling: m.rope_scaling,
            rotary_pct: m.rotary_pct,
            parallel_residual: m.parallel_residual,
            attention_bias: m.attention_bias,
            mlp_bias: m.mlp_bias,
            tokenizer: m.tokenizer.to_string(),
            vocab_size,
            max_tokens_per_doc: m.max_tokens_per_doc,
            activation: Some(m.activation),
            tied_head: m.tied_head,
            layer_norm_epsilon: m.layer_norm_epsilon,
        }
    }
}

impl TryFrom<ModelToml> for ModelConfig {
    type Error = String;

    fn try_from(m: ModelToml) -> std::result::Result<ModelConfig, String> {
        let tokenizer = match m.tokenizer.as_str() {
            BYTES => TokenizerChoice::Bytes,
            BPE => TokenizerChoice::Bpe { vocab_size: m.vocab_size.unwrap_or(DEFAULT_BPE_VOCAB) },
            "" => return Err("model.tokenizer: expected \"bytes\", \"bpe\" or the path of a tokenizer.json".into()),
            path => TokenizerChoice::File(path.to_string()),
        };
        let family = m.architecture;
        let set = [
            ("n_kv_head", m.n_kv_head.is_some()),
            ("head_dim", m.head_dim.is_some()),
            ("rope_theta", m.rope_theta.is_some()),
            ("rope_scaling", m.rope_scaling.is_some()),
            ("rotary_pct", m.rotary_pct.is_some()),
            ("parallel_residual", m.parallel_residual.is_some()),
            ("attention_bias", m.attention_bias.is_some()),
            ("mlp_bias", m.mlp_bias.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|&&(key, set)| set && !ModelConfig::family_key(family, key)) {
            return Err(format!(
                "model.{key} means nothing for architecture \"{family}\": it sets {}; leave it out",
                ModelConfig::keys_of(key)
            ));
        }
        Ok(ModelConfig {
            architecture: family,
            n_layer: m.n_layer,
            n_head: m.n_head,
            d_model: m.d_model,
            context: m.context,
            n_kv_head: m.n_kv_head,
            head_dim: m.head_dim,
            d_mlp: m.d_mlp,
            rope_theta: m.rope_theta,
            rope_scaling: m.rope_scaling,
            rotary_pct: m.rotary_pct,
            parallel_residual: m.parallel_residual,
            attention_bias: m.attention_bias,
            mlp_bias: m.mlp_bias,
            tokenizer,
            max_tokens_per_doc: m.max_tokens_per_doc,
            activation: m.activation.unwrap_or(match family {
                Family::Llama | Family::Qwen2 => Activation::Silu,
                Family::Gpt2 | Family::GptNeox => Activation::Gelu,
            }),
            tied_head: m.tied_head,
            layer_norm_epsilon: m.layer_norm_epsilon,
        })
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            architecture: Family::Gpt2,
            n_layer: 2,
            n_head: 4,
            d_model: 128,
            context: 128,
            n_kv_head: None,
            head_dim: None,
            d_mlp: None,
            rope_theta: None,
            rope_scaling: None,
            rotary_pct: None,
            parallel_residual: None,
            attention_bias: None,
            mlp_bias: None,
            tokenizer: TokenizerChoice::Bytes,
            max_tokens_per_doc: None,
            activation: Activation::Gelu,
            tied_head: false,
            layer_norm_epsilon: 1e-5,
        }
    }
}

/// Llama 3's rope scaling (transformers' `rope_type = "llama3"`): of each rotary frequency,
/// with wavelength λ, those of λ below `original_max_position_embeddings / high_freq_factor`
/// stay, those of λ above `original_max_position_embeddings / low_freq_factor` are divided
/// by `factor`, and those between are interpolated smoothly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: u32,
}

impl RopeScaling {
    /// What makes the scaling meaningless, if anything.
    pub fn problem(&self) -> Option<String> {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !(positive(self.factor) && positive(self.low_freq_factor) && positive(self.high_freq_factor)) {
            return Some("factor, low_freq_factor and high_freq_factor must be positive".into());
        }
        if self.high_freq_factor <= self.low_freq_factor {
            return Some(format!(
                "high_freq_factor {} must exceed low_freq_factor {}",
                self.high_freq_factor, self.low_freq_factor
            ));
        }
        (self.original_max_position_embeddings == 0)
            .then(|| "original_max_position_embeddings must be at least 1".into())
    }
}

/// The base of rotary frequencies when `rope_theta` is absent.
pub const DEFAULT_ROPE_THETA: f64 = 10000.0;
/// The rotating fraction of a GPT-NeoX head when `rotary_pct` is absent (GPTNeoXConfig's).
pub const DEFAULT_ROTARY_PCT: f64 = 0.25;

impl ModelConfig {
    /// Whether the family-specific key `key` means something for `family`.
    fn family_key(family: Family, key: &str) -> bool {
        match key {
            "n_kv_head" | "head_dim" => matches!(family, Family::Llama | Family::Qwen2),
            "rope_theta" => family != Family::Gpt2,
            "rope_scaling" => family == Family::Llama,
            "rotary_pct" | "parallel_residual" => family == Family::GptNeox,
            "attention_bias" => matches!(family, Family::Llama | Family::GptNeox),
            "mlp_bias" => family == Family::Llama,
            _ => true,
        }
    }

    /// The families a family-specific key is for, for messages.
    fn keys_of(key: &str) -> String {
        let families: Vec<String> = Family::ALL
            .into_iter()
            .filter(|&family| ModelConfig::family_key(family, key))
            .map(|family| format!("\"{family}\""))
            .collect();
        format!("something of {} models only", families.join(" and "))
    }

    /// Key and value heads.
    pub fn kv_heads(&self) -> u32 {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// Features of each attention head.
    pub fn head_size(&self) -> u32 {
        self.head_dim.unwrap_or(self.d_model / self.n_head.max(1))
    }

    /// Width of the MLP's hidden layer: `d_mlp`, or the family's usual one, 4·d_model for
    /// gpt2 and gpt_neox, and for llama and qwen2 (whose gated MLP has three matrices)
    /// 8/3·d_model rounded up to a multiple of 64, as SmolLM2-135M's 1536 for 576.
    pub fn mlp_width(&self) -> u32 {
        self.d_mlp.unwrap_or(match self.architecture {
            Family::Gpt2 | Family::GptNeox => 4 * self.d_model,
            Family::Llama | Family::Qwen2 => (8 * self.d_model / 3).div_ceil(64) * 64,
        })
    }

    /// Which projections carry biases: (q/k/v, the attention's output, the MLP's).
    pub fn biases(&self) -> (bool, bool, bool) {
        match self.architecture {
            Family::Gpt2 => (true, true, true),
            Family::Llama => {
                let attention = self.attention_bias.unwrap_or(false);
                (attention, attention, self.mlp_bias.unwrap_or(false))
            }
            Family::Qwen2 => (true, false, false),
            Family::GptNeox => {
                let attention = self.attention_bias.unwrap_or(true);
                (attention, attention, true)
            }
        }
    }

    /// Rotary positions as (features of a head that rotate, rope_theta); None for learned
    /// positions or when no feature rotates.
    pub fn rotary(&self) -> Option<(u32, f64)> {
        let fraction = match self.architecture {
            Family::Gpt2 => return None,
            Family::Llama | Family::Qwen2 => 1.0,
            Family::GptNeox => self.rotary_pct.unwrap_or(DEFAULT_ROTARY_PCT),
        };
        // As transformers: int(head_dim · fraction).
        let dims = (f64::from(self.head_size()) * fraction) as u32;
        (dims > 0).then_some((dims, self.rope_theta.unwrap_or(DEFAULT_ROPE_THETA)))
    }

    /// What is wrong with the family-specific settings, if anything.
    pub(super) fn shape_problem(&self) -> Option<String> {
        let heads = self.n_head.max(1);
        if self.n_kv_head.is_some_and(|kv| kv == 0 || !heads.is_multiple_of(kv)) {
            return Some(format!("model.n_kv_head must divide model.n_head ({heads})"));
        }
        if self.head_dim == Some(0) || self.d_mlp == Some(0) {
            return Some("model.head_dim and model.d_mlp must be at least 1".into());
        }
        if self.rope_theta.is_some_and(|theta| !(theta > 0.0 && theta.is_finite())) {
            return Some("model.rope_theta must be positive".into());
        }
        if let Some(problem) = self.rope_scaling.as_ref().and_then(RopeScaling::problem) {
            return Some(format!("model.rope_scaling: {problem}"));
        }
        if self.rotary_pct.is_some_and(|pct| !(pct > 0.0 && pct <= 1.0)) {
            return Some("model.rotary_pct must be in (0, 1]".into());
        }
        match self.rotary() {
            Some((dims, _)) if dims % 2 == 1 => Some(format!(
                "{dims} rotary features of a head of {}: rotary positions turn pairs of features, so the head's \
                 rotating features must be even (model.head_dim, model.rotary_pct)",
                self.head_size()
            )),
            _ => None,
        }
    }

    /// Whether attention and MLP add to the residual together.
    pub fn parallel_residual(&self) -> bool {
        self.architecture == Family::GptNeox && self.parallel_residual.unwrap_or(true)
    }

    /// Tokens of one window, the unit of training and evaluation: the context less the
    /// position of the token before the window.
    pub fn window(&self) -> usize {
        self.context as usize - 1
    }
}
