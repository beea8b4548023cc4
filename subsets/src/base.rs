//! A base model: a directory in the Hugging Face layout of one of cfmem's families
//! ([`crate::family::Family`]) — `config.json`, `model.safetensors` (or shards named
//! by `model.safetensors.index.json`) and `tokenizer.json` — which every model of a run can
//! start from (`[train] init`) and which `cfmem pretrain` and `cfmem export` write. This
//! module reads and checks such a directory without libtorch: the architecture it
//! describes, as cfmem's `[model]` settings; its tensors against the architecture's
//! description ([`crate::architecture::Architecture::tensors`]); the sha256 of its weights.
//! Loading and writing the tensors is `jobs::base`'s.
//!
//! The mapping, both ways:
//!
//! - `model_type` is `[model] architecture`: `gpt2`, `llama`, `qwen2` or `gpt_neox`. Any
//!   other (a mixture of experts among them) is refused, naming it.
//! - GPT-2: `n_layer`, `n_head`, `n_embd` (`d_model`), `n_positions` (`context`), `n_inner`
//!   (`d_mlp`), `activation_function` (`gelu_new` or `gelu_pytorch_tanh`, the tanh
//!   approximation, `gelu` or `silu`), `layer_norm_epsilon`, `tie_word_embeddings`.
//! - Llama and Qwen2: `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads`
//!   (`n_kv_head`), `head_dim`, `hidden_size`, `intermediate_size` (`d_mlp`),
//!   `max_position_embeddings` (`context`), `rms_norm_eps` (`layer_norm_epsilon`),
//!   `hidden_act`, the rotary base (`rope_parameters.rope_theta`, or `rope_theta` in files
//!   of transformers 4), Llama's `attention_bias` and `mlp_bias`. Rope scaling of any type
//!   but `default` (Llama 3's `llama3`, `linear`, `yarn`, …) is refused, naming it, and so
//!   is a Qwen2 sliding window in use.
//! - GPT-NeoX: as Llama, with `layer_norm_eps`, `rope_parameters.partial_rotary_factor`
//!   (or `rotary_pct`; `rotary_pct`), `rotary_emb_base` in old files, `use_parallel_residual`
//!   and `attention_bias`.
//! - Tensors: names and shapes are the description's. GPT-2's Conv1D matrices are stored
//!   `[in, out]`, as cfmem computes; torch's Linear stores `[out, in]`, the transpose, and
//!   so does every untied head. Names may carry the CausalLM prefix (`transformer.`,
//!   `model.`, `gpt_neox.`) or not (the bare model); buffers of old checkpoints are ignored.
//! - Tokens: `vocab_size` is the number of embedding rows, and BOS is `bos_token_id` (or
//!   `eos_token_id` without one); PAD is BOS, since a padded position is never a target and
//!   no real position attends to it. A tokenizer's ids must stay below `vocab_size`.
//! - cfmem's own models, written by `cfmem pretrain`: `vocab_size` is the tokenizer's
//!   vocabulary plus two rows, `bos_token_id` (and `eos_token_id`) the first of them,
//!   `pad_token_id` the second, and byte tokens are written as a `tokenizer.json` of 256
//!   byte-level tokens whose id is the byte's value ([`crate::tokenizer::Tokenizer::file_json`]).
//!   Neither BOS nor PAD is a token of `tokenizer.json`: a document is its text's tokens
//!   alone, and `transformers` users prepend `bos_token_id` themselves.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::architecture::{Architecture, TensorSpec};
use crate::config::{
    Activation, DEFAULT_ROPE_THETA, DEFAULT_ROTARY_PCT, EmbeddingLayout, Hyperparameters, ModelConfig, RopeScaling,
    TokenizerChoice,
};
use crate::corpus::{Document, sha256_hex};
use crate::family::Family;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The files of a base directory.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseDir {
    root: PathBuf,
}

impl BaseDir {
    pub fn new(root: impl Into<PathBuf>) -> BaseDir {
        BaseDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// The weights in one file, as cfmem writes them.
    pub fn weights(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }

    /// The index of sharded weights, as `save_pretrained` writes large models.
    pub fn weights_index(&self) -> PathBuf {
        self.root.join("model.safetensors.index.json")
    }

    /// `pretraining.toml`, where `cfmem pretrain` made the base ([`PretrainingRecord`]).
    pub fn pretraining_record(&self) -> PathBuf {
        self.root.join("pretraining.toml")
    }

    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
}

/// The bytes of a base's weight files: `model.safetensors`, or the shards its index names.
pub struct WeightFiles {
    /// The file that names the weights, for messages: `model.safetensors` or the index.
    pub path: PathBuf,
    /// Each file with its bytes, shards in the order the index first names them.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Of `model.safetensors`'s bytes, or of the index's and then every shard's.
    pub sha256: String,
}

impl WeightFiles {
    /// Reads the weights of the base directory `dir`.
    pub fn read(dir: &BaseDir) -> Result<WeightFiles> {
        let single = dir.weights();
        let index = dir.weights_index();
        let read = |path: &Path| std::fs::read(path).map_err(Error::io(path));
        if single.exists() || !index.exists() {
            let bytes = read(&single)?;
            let sha256 = crate::corpus::sha256_hex(&bytes);
            return Ok(WeightFiles { path: single.clone(), files: vec![(single, bytes)], sha256 });
        }
        let text = read(&index)?;
        let parsed: Value = serde_json::from_slice(&text).map_err(|e| Error::file(&index, format!("not JSON: {e}")))?;
        let Some(map) = parsed.get("weight_map").and_then(Value::as_object) else {
            return Err(Error::file(&index, "no weight_map: not a safetensors index"));
        };
        let mut shards: Vec<&str> = Vec::new();
        for (name, file) in map {
            let Some(file) = file.as_str() else {
                return Err(Error::file(&index, format!("weight_map[\"{name}\"] is not a file name")));
            };
            if !shards.contains(&file) {
                shards.push(file);
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(&text);
        let mut files = Vec::with_capacity(shards.len());
        for shard in shards {
            if shard.contains('/') || shard.contains('\\') {
                return Err(Error::file(&index, format!("shard \"{shard}\" is not a file of the directory")));
            }
            let path = dir.root().join(shard);
            let bytes = read(&path)?;
            hasher.update(&bytes);
            files.push((path, bytes));
        }
        Ok(WeightFiles { path: index, files, sha256: hex::encode(hasher.finalize()) })
    }

    /// Every file parsed, each with its path.
    pub fn parse(&self) -> Result<Vec<(&Path, SafeTensors<'_>)>> {
        self.files
            .iter()
            .map(|(path, bytes)| {
                let file = SafeTensors::deserialize(bytes)
                    .map_err(|e| Error::file(path, format!("not a safetensors file: {e:?}")))?;
                Ok((path.as_path(), file))
            })
            .collect()
    }
}

/// The file and the name under which `spec` is stored among `files`: its full name, or
/// without the CausalLM class's prefix (`transformer.`, `model.`, `gpt_neox.`), as the
/// bare model saves it.
pub fn find_tensor<'a, 'b>(
    spec: &TensorSpec,
    files: &'a [(&'b Path, SafeTensors<'a>)],
) -> Option<(&'a (&'b Path, SafeTensors<'a>), String)> {
    let bare = spec.name.split_once('.').map(|(_, rest)| rest);
    files.iter().find_map(|entry| {
        let name = [Some(spec.name.as_str()), bare].into_iter().flatten().find(|name| entry.1.tensor(name).is_ok())?;
        Some((entry, name.to_string()))
    })
}

/// Checks `weights` against the tensors `architecture` describes: every tensor present,
/// with its shape and a floating-point type.
pub fn check_tensors(weights: &WeightFiles, architecture: &Architecture) -> Result<()> {
    let files = weights.parse()?;
    for spec in &architecture.tensors {
        let Some(((path, file), name)) = find_tensor(spec, &files) else {
            return Err(Error::file(&weights.path, format!("no tensor {}, which config.json implies", spec.name)));
        };
        let info = file.tensor(&name).map_err(|e| Error::file(path, format!("{name}: {e:?}")))?;
        let expected = spec.stored_shape();
        if info.shape() != expected.as_slice() {
            return Err(Error::file(
                path,
                format!("tensor {name} has shape {:?}, config.json implies {expected:?}", info.shape()),
            ));
        }
        use safetensors::Dtype;
        if !matches!(info.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::file(
                path,
                format!("tensor {name} is {:?}: cfmem reads F32, F16 and BF16", info.dtype()),
            ));
        }
    }
    Ok(())
}

/// A `config.json`'s object, read key by key; each error names the file and the key.
struct Keys<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Keys<'_> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn refuse<T>(&self, message: String) -> Result<T> {
        Err(Error::file(self.path, message))
    }

    fn optional_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => self.refuse(format!("{key} is {v}, not a count")),
            },
        }
    }

    fn u32(&self, key: &str) -> Result<u32> {
        self.optional_u32(key)?.map_or_else(|| self.refuse(format!("no {key}")), Ok)
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => v.as_f64().map_or_else(|| self.refuse(format!("{key} is {v}, not a number")), Ok),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => v.as_bool().map_or_else(|| self.refuse(format!("{key} is {v}, not true or false")), Ok),
        }
    }

    fn str_or<'v>(&'v self, key: &str, default: &'v str) -> Result<&'v str> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => v.as_str().map_or_else(|| self.refuse(format!("{key} is {v}, not a string")), Ok),
        }
    }

    /// The activation named by `key`.
    fn activation(&self, key: &str, default: &str) -> Result<Activation> {
        match self.str_or(key, default)? {
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => self.refuse(format!(
                "{key} \"{other}\" is not supported: cfmem computes gelu, gelu_new (gelu_pytorch_tanh) and silu"
            )),
        }
    }

    /// (rope_theta, the rotating fraction if given, Llama 3's scaling if given) from
    /// `rope_parameters` (transformers 5) or the keys transformers 4 wrote; a scaling other
    /// than the default and `llama3` is refused.
    fn rope(&self, legacy_theta: &str) -> Result<(f64, Option<f64>, Option<RopeScaling>)> {
        let key = if self.value("rope_parameters").is_some() { "rope_parameters" } else { "rope_scaling" };
        let (theta, fraction, scaling) = match self.value(key).and_then(Value::as_object) {
            Some(parameters) => {
                let keys = Keys { path: self.path, map: parameters };
                let kind = keys.str_or("rope_type", keys.str_or("type", "default")?)?;
                let scaling = match kind {
                    "default" => None,
                    "llama3" => {
                        let number = |name: &str| {
                            keys.value(name).and_then(Value::as_f64).map_or_else(
                                || self.refuse(format!("{key}.{name}: Llama 3's rope scaling needs it")),
                                Ok,
                            )
                        };
                        Some(RopeScaling {
                            factor: number("factor")?,
                            low_freq_factor: number("low_freq_factor")?,
                            high_freq_factor: number("high_freq_factor")?,
                            original_max_position_embeddings: number("original_max_position_embeddings")? as u32,
                        })
                    }
                    other => {
                        return self.refuse(format!(
                            "{key}.rope_type \"{other}\" is not supported: cfmem computes unscaled rotary positions \
                             (rope_type \"default\") and Llama 3's scaling (\"llama3\")"
                        ));
                    }
                };
                let fraction = keys.value("partial_rotary_factor").and_then(Value::as_f64);
                (keys.value("rope_theta").and_then(Value::as_f64), fraction, scaling)
            }
            None => (None, None, None),
        };
        let theta = match theta {
            Some(theta) => theta,
            None => self.f64_or("rope_theta", self.f64_or(legacy_theta, DEFAULT_ROPE_THETA)?)?,
        };
        let fraction = match fraction {
            Some(f) => Some(f),
            None => match self.value("partial_rotary_factor").or_else(|| self.value("rotary_pct")) {
                Some(v) => {
                    Some(v.as_f64().map_or_else(|| self.refuse(format!("rotary_pct is {v}, not a number")), Ok)?)
                }
                None => None,
            },
        };
        if let Some(problem) = scaling.as_ref().and_then(RopeScaling::problem) {
            return self.refuse(format!("{key}: {problem}"));
        }
        Ok((theta, fraction, scaling))
    }
}

/// `value` unless it is the default.
fn unless_default<T: PartialEq>(value: T, default: T) -> Option<T> {
    (value != default).then_some(value)
}

/// The architecture a Hugging Face `config.json` (at `path`) describes, as cfmem's
/// `[model]` settings (the tokenizer: `tokenizer`), and where BOS and PAD sit. A key
/// whose value cfmem cannot compute is refused, naming it.
pub fn read_config(path: &Path, tokenizer: &Path) -> Result<(ModelConfig, EmbeddingLayout)> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not JSON: {e}")))?;
    let Some(map) = value.as_object() else { return Err(Error::file(path, "not a JSON object")) };
    let keys = Keys { path, map };
    let Some(model_type) = keys.value("model_type").and_then(Value::as_str) else {
        return Err(Error::file(path, "no model_type: not a Hugging Face model configuration"));
    };
    let names = Family::ALL.map(|f| format!("\"{f}\"")).join(", ");
    let Some(family) = Family::from_name(model_type) else {
        return Err(Error::file(
            path,
            format!("model_type \"{model_type}\" is not supported: cfmem computes the families {names}"),
        ));
    };
    for key in ["num_local_experts", "num_experts", "n_routed_experts"] {
        if keys.value(key).is_some_and(|v| v.as_u64() != Some(0)) {
            return keys.refuse(format!("{key}: a mixture of experts is not supported"));
        }
    }
    let tokenizer = TokenizerChoice::File(tokenizer.to_string_lossy().into_owned());
    let mut model = ModelConfig { architecture: family, tokenizer, ..ModelConfig::default() };
    match family {
        Family::Gpt2 => {
            model.n_layer = keys.u32("n_layer")?;
            model.n_head = keys.u32("n_head")?;
            model.d_model = keys.u32("n_embd")?;
            model.context = keys.u32("n_positions")?;
            model.d_mlp = keys.optional_u32("n_inner")?.and_then(|inner| unless_default(inner, 4 * model.d_model));
            model.activation = keys.activation("activation_function", "gelu_new")?;
            model.layer_norm_epsilon = keys.f64_or("layer_norm_epsilon", 1e-5)?;
            model.tied_head = keys.bool_or("tie_word_embeddings", true)?;
            if keys.bool_or("scale_attn_by_inverse_layer_idx", false)?
                || !keys.bool_or("scale_attn_weights", true)?
                || keys.bool_or("add_cross_attention", false)?
            {
                return keys.refuse(
                    "scale_attn_by_inverse_layer_idx, scale_attn_weights = false and add_cross_attention are not \
                     supported"
                        .into(),
                );
            }
        }
        Family::Llama | Family::Qwen2 | Family::GptNeox => {
            model.n_layer = keys.u32("num_hidden_layers")?;
            model.n_head = keys.u32("num_attention_heads")?;
            model.d_model = keys.u32("hidden_size")?;
            model.context = keys.u32("max_position_embeddings")?;
            model.tied_head = keys.bool_or("tie_word_embeddings", false)?;
            let d_mlp = keys.u32("intermediate_size")?;
            let neox = family == Family::GptNeox;
            let (theta, fraction, scaling) = keys.rope(if neox { "rotary_emb_base" } else { "rope_theta" })?;
            model.rope_theta = unless_default(theta, DEFAULT_ROPE_THETA);
            if scaling.is_some() && family != Family::Llama {
                return keys.refuse(format!("rope_type \"llama3\" is Llama 3's rope scaling, not {family}'s"));
            }
            model.rope_scaling = scaling;
            if neox {
                model.layer_norm_epsilon = keys.f64_or("layer_norm_eps", 1e-5)?;
                model.activation = keys.activation("hidden_act", "gelu")?;
                model.rotary_pct = unless_default(fraction.unwrap_or(DEFAULT_ROTARY_PCT), DEFAULT_ROTARY_PCT);
                model.parallel_residual = unless_default(keys.bool_or("use_parallel_residual", true)?, true);
                model.attention_bias = unless_default(keys.bool_or("attention_bias", true)?, true);
            } else {
                model.layer_norm_epsilon = keys.f64_or("rms_norm_eps", 1e-6)?;
                model.activation = keys.activation("hidden_act", "silu")?;
                if fraction.is_some_and(|f| f != 1.0) {
                    return keys.refuse(format!("partial_rotary_factor {fraction:?}: {family} rotates whole heads"));
                }
                let heads = model.n_head;
                model.n_kv_head = unless_default(keys.optional_u32("num_key_value_heads")?.unwrap_or(heads), heads);
                let even = model.d_model / heads.max(1);
                model.head_dim = keys.optional_u32("head_dim")?.and_then(|h| unless_default(h, even));
            }
            if family == Family::Llama {
                model.attention_bias = unless_default(keys.bool_or("attention_bias", false)?, false);
                model.mlp_bias = unless_default(keys.bool_or("mlp_bias", false)?, false);
            }
            if family == Family::Qwen2 {
                let sliding_layers = keys
                    .value("layer_types")
                    .and_then(Value::as_array)
                    .is_some_and(|types| types.iter().any(|t| t.as_str() != Some("full_attention")));
                // A window as wide as the context changes nothing: only a narrower one is in use.
                let narrower = keys.optional_u32("sliding_window")?.is_some_and(|window| window < model.context);
                if (keys.bool_or("use_sliding_window", false)? || sliding_layers) && narrower {
                    return keys.refuse(
                        "use_sliding_window: a sliding attention window is not supported; cfmem attends to the \
                         whole context"
                            .into(),
                    );
                }
            }
            model.d_mlp = unless_default(d_mlp, model.mlp_width());
        }
    }
    if model.n_layer == 0 || model.n_head == 0 || model.d_model == 0 {
        return keys.refuse(format!(
            "{} layers, {} heads and width {}: each must be at least 1",
            model.n_layer, model.n_head, model.d_model
        ));
    }
    if model.head_dim.is_none() && !model.d_model.is_multiple_of(model.n_head) {
        return keys.refuse(format!("hidden size {} is not a multiple of {} heads", model.d_model, model.n_head));
    }
    if !model.n_head.is_multiple_of(model.kv_heads().max(1)) || model.kv_heads() == 0 {
        return keys.refuse(format!(
            "num_key_value_heads {} must divide num_attention_heads {}",
            model.kv_heads(),
            model.n_head
        ));
    }
    if model.rotary().is_some_and(|(dims, _)| dims % 2 == 1) {
        return keys.refuse("an odd number of rotary features per head is not supported".into());
    }
    if model.context < 2 {
        return keys.refuse(format!("a context of {} positions: at least 2", model.context));
    }
    let vocab_size = keys.u32("vocab_size")?;
    let Some(bos) = keys.optional_u32("bos_token_id")?.or(keys.optional_u32("eos_token_id")?) else {
        return keys
            .refuse("neither bos_token_id nor eos_token_id: cfmem needs the token that starts a document".into());
    };
    if bos >= vocab_size {
        return keys.refuse(format!("bos_token_id {bos} is not below vocab_size {vocab_size}"));
    }
    Ok((model, EmbeddingLayout { rows: vocab_size, bos, pad: bos }))
}

/// The `config.json` cfmem writes for a model of `model` over `layout`: what
/// `transformers` loads as the family's CausalLM class.
pub fn config_json(model: &ModelConfig, layout: EmbeddingLayout) -> String {
    let traits = model.architecture.traits();
    let activation = match model.activation {
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_new",
        Activation::Silu => "silu",
    };
    let mut config = json!({
        "architectures": [traits.class],
        "model_type": traits.model_type,
        "vocab_size": layout.rows,
        "bos_token_id": layout.bos,
        "eos_token_id": layout.bos,
        "tie_word_embeddings": model.tied_head,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    let family = match model.architecture {
        // cfmem trains without dropout; so does a user who fine-tunes it elsewhere, unless
        // they set these.
        Family::Gpt2 => json!({
            "n_layer": model.n_layer,
            "n_head": model.n_head,
            "n_embd": model.d_model,
            "n_positions": model.context,
            "n_inner": model.d_mlp,
            "activation_function": activation,
            "layer_norm_epsilon": model.layer_norm_epsilon,
            "attn_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "scale_attn_weights": true,
            "scale_attn_by_inverse_layer_idx": false,
            "add_cross_attention": false,
        }),
        Family::Llama | Family::Qwen2 => {
            let (qkv_bias, _, mlp_bias) = model.biases();
            let theta = model.rope_theta.unwrap_or(DEFAULT_ROPE_THETA);
            let rope = match model.rope_scaling {
                None => json!({"rope_type": "default", "rope_theta": theta}),
                Some(scaling) => json!({
                    "rope_type": "llama3",
                    "rope_theta": theta,
                    "factor": scaling.factor,
                    "low_freq_factor": scaling.low_freq_factor,
                    "high_freq_factor": scaling.high_freq_factor,
                    "original_max_position_embeddings": scaling.original_max_position_embeddings,
                }),
            };
            let mut llama = json!({
                "num_hidden_layers": model.n_layer,
                "num_attention_heads": model.n_head,
                "num_key_value_heads": model.kv_heads(),
                "head_dim": model.head_size(),
                "hidden_size": model.d_model,
                "intermediate_size": model.mlp_width(),
                "max_position_embeddings": model.context,
                "rms_norm_eps": model.layer_norm_epsilon,
                "hidden_act": activation,
                "rope_parameters": rope,
                "attention_dropout": 0.0,
            });
            if model.architecture == Family::Llama {
                llama["attention_bias"] = json!(qkv_bias);
                llama["mlp_bias"] = json!(mlp_bias);
            } else {
                llama["use_sliding_window"] = json!(false);
            }
            llama
        }
        Family::GptNeox => json!({
            "num_hidden_layers": model.n_layer,
            "num_attention_heads": model.n_head,
            "hidden_size": model.d_model,
            "intermediate_size": model.mlp_width(),
            "max_position_embeddings": model.context,
            "layer_norm_eps": model.layer_norm_epsilon,
            "hidden_act": activation,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": model.rope_theta.unwrap_or(DEFAULT_ROPE_THETA),
                "partial_rotary_factor": model.rotary_pct.unwrap_or(DEFAULT_ROTARY_PCT),
            },
            "use_parallel_residual": model.parallel_residual(),
            "attention_bias": model.biases().0,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
        }),
    };
    let (Value::Object(config_map), Value::Object(family_map)) = (&mut config, family) else {
        unreachable!("JSON object literals")
    };
    config_map.extend(family_map.into_iter().filter(|(_, v)| !v.is_null()));
    if layout.pad != layout.bos {
        config_map.insert("pad_token_id".into(), json!(layout.pad));
    }
    serde_json::to_string_pretty(&config).expect("a model configuration always serializes") + "\n"
}

/// `BASE/pretraining.toml`, which `cfmem pretrain` writes last: how a base was pretrained,
/// and how well it predicts the held-out documents. Bases from elsewhere have none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainingRecord {
    /// sha256 over the corpus, the tokenizer and the settings.
    pub fingerprint: String,
    pub corpus: String,
    pub documents: u32,
    pub held_out_documents: u32,
    pub seed: u64,
    /// Filled when training ends.
    #[serde(default)]
    pub steps: u64,
    /// Tokens predicted in training: epochs × the training documents' tokens, as trained.
    #[serde(default)]
    pub tokens_trained: u64,
    /// Mean nll per held-out token, nats; absent without held-out documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_accuracy: Option<f64>,
}

impl PretrainingRecord {
    /// The record of the base in `dir`; None when it has none (a base cfmem did not
    /// pretrain, or one still training).
    pub fn read(dir: &BaseDir) -> Result<Option<PretrainingRecord>> {
        let path = dir.pretraining_record();
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        toml::from_str(&text).map(Some).map_err(|e| Error::file(&path, e.to_string()))
    }

    /// The record of a pretraining about to start on `documents` (read from `corpus`),
    /// `held_out` of them held out by `holdout` and `seed`, tokenized by `tokenizer_json`,
    /// with `hyperparameters`. Everything that changes the training changes its
    /// fingerprint, so that a checkpoint or a finished base is only ever taken for this very
    /// command.
    pub fn new(
        corpus: &Path,
        documents: &[Document],
        held_out: &[bool],
        tokenizer_json: &str,
        hyperparameters: &Hyperparameters,
        (seed, holdout): (u64, f64),
    ) -> PretrainingRecord {
        let settings = toml::to_string(hyperparameters).expect("settings are plain TOML tables");
        let fingerprint = sha256_hex(
            format!(
                "{}\n{}\n{settings}\nseed {seed}\nholdout {holdout}\n",
                crate::corpus::checksum(documents),
                sha256_hex(tokenizer_json.as_bytes()),
            )
            .as_bytes(),
        );
        PretrainingRecord {
            fingerprint,
            corpus: corpus.display().to_string(),
            documents: documents.len() as u32,
            held_out_documents: held_out.iter().filter(|&&h| h).count() as u32,
            seed,
            steps: 0,
            tokens_trained: 0,
            held_out_loss: None,
            held_out_accuracy: None,
        }
    }
}

/// A base directory, read and checked.
pub struct Base {
    pub dir: BaseDir,
    /// The architecture, and the base's `tokenizer.json` as the tokenizer.
    pub model: ModelConfig,
    pub layout: EmbeddingLayout,
    pub tokenizer: Tokenizer,
    /// sha256 of the weights ([`WeightFiles::sha256`]).
    pub weights_sha256: String,
}

impl Base {
    /// The base `hyperparameters.train.init` names, if any, read and checked: its directory
    /// becomes absolute in `train.init` (workers may start elsewhere) and its architecture
    /// and tokenizer become `hyperparameters.model`. A `[model]` key of the `config` file
    /// that disagrees with the base is refused. `cfmem plan` and `cfmem bench` both resolve
    /// their base here. The weight files read to check it come with it, for a caller that
    /// loads them.
    pub fn resolve(
        hyperparameters: &mut Hyperparameters,
        config: Option<&Path>,
    ) -> Result<Option<(Base, WeightFiles)>> {
        let Some(dir) = hyperparameters.train.base() else { return Ok(None) };
        let dir = std::fs::canonicalize(dir).map_err(|e| Error::file(dir, format!("train.init: {e}")))?;
        let (base, files) = Base::read_with_weights(&dir)?;
        let keys = match config {
            Some(path) => Hyperparameters::model_keys(path)?,
            None => Vec::new(),
        };
        hyperparameters.model =
            base.model_for(&hyperparameters.model, &keys, config.unwrap_or(Path::new("--config")))?;
        hyperparameters.train.init = dir.display().to_string();
        Ok(Some((base, files)))
    }

    /// Reads `dir` and checks that its files agree: the tensors' names and shapes with
    /// `config.json`, the tokenizer's ids with the embedding.
    pub fn read(dir: &Path) -> Result<Base> {
        Base::read_with_weights(dir).map(|(base, _)| base)
    }

    /// [`Base::read`], and the weight files it read, for a caller that loads them without
    /// reading and hashing the files again.
    pub fn read_with_weights(dir: &Path) -> Result<(Base, WeightFiles)> {
        let dir = BaseDir::new(dir);
        if !dir.root().is_dir() {
            return Err(Error::file(
                dir.root(),
                "no such directory: a base is a directory holding config.json, model.safetensors and tokenizer.json",
            ));
        }
        let (model, layout) = read_config(&dir.config(), &dir.tokenizer())?;
        let tokenizer = Tokenizer::from_file(&dir.tokenizer())?;
        if tokenizer.vocab() > layout.rows {
            return Err(Error::file(
                dir.tokenizer(),
                format!(
                    "the tokenizer's ids go up to {}, but the model embeds {} tokens (config.json vocab_size)",
                    tokenizer.vocab() - 1,
                    layout.rows
                ),
            ));
        }
        let weights = WeightFiles::read(&dir)?;
        check_tensors(&weights, &Architecture::new(&model, layout))?;
        let base = Base { weights_sha256: weights.sha256.clone(), dir, model, layout, tokenizer };
        Ok((base, weights))
    }
}

impl Base {
    /// `requested` with this base's architecture and tokenizer. A key of `[model]` that the
    /// user's configuration file (`source`) sets, `set`, is refused, naming it, when its
    /// value is not the base's; `max_tokens_per_doc` stays the user's.
    pub fn model_for(&self, requested: &ModelConfig, set: &[String], source: &Path) -> Result<ModelConfig> {
        let table = |model: &ModelConfig| match toml::Table::try_from(model) {
            // A GPT-2 table leaves its family out; a file may name it all the same.
            Ok(mut table) => {
                table.insert("architecture".into(), model.architecture.name().into());
                table
            }
            Err(e) => unreachable!("a model configuration is a table: {e}"),
        };
        let (theirs, ours) = (table(requested), table(&self.model));
        for key in set.iter().filter(|&key| key != "max_tokens_per_doc") {
            if theirs.get(key) != ours.get(key) {
                let base_value = ours.get(key).map_or("nothing".to_string(), ToString::to_string);
                let value = theirs.get(key).map_or(String::new(), ToString::to_string);
                return Err(Error::file(
                    source,
                    format!(
                        "[model] {key} = {value} conflicts with the base in {}, which has {base_value}: a base decides \
                         the architecture and the tokenizer; leave {key} out",
                        self.dir.root().display()
                    ),
                ));
            }
        }
        Ok(ModelConfig { max_tokens_per_doc: requested.max_tokens_per_doc, ..self.model.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt2_json(extra: &str) -> String {
        format!(
            "{{\"model_type\": \"gpt2\", \"vocab_size\": 300, \"n_positions\": 16, \"n_embd\": 8, \"n_layer\": 1, \
             \"n_head\": 2, \"bos_token_id\": 299, \"eos_token_id\": 299{extra}}}"
        )
    }

    fn parse(json: &str) -> Result<(ModelConfig, EmbeddingLayout)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        read_config(&path, Path::new("tok.json"))
    }

    #[test]
    fn a_gpt2_configuration_becomes_model_settings_with_gpt2_defaults() {
        let (model, layout) = parse(&gpt2_json("")).unwrap();
        assert_eq!((model.n_layer, model.n_head, model.d_model, model.context), (1, 2, 8, 16));
        assert_eq!(model.activation, Activation::GeluTanh, "GPT2Config's default is gelu_new");
        assert!(model.tied_head);
        assert_eq!(model.layer_norm_epsilon, 1e-5);
        assert_eq!(layout, EmbeddingLayout { rows: 300, bos: 299, pad: 299 });
        let (model, _) =
            parse(&gpt2_json(", \"activation_function\": \"gelu\", \"tie_word_embeddings\": false, \"n_inner\": 7"))
                .unwrap();
        assert_eq!((model.activation, model.tied_head, model.d_mlp), (Activation::Gelu, false, Some(7)));
    }

    #[test]
    fn llama_qwen2_and_gpt_neox_configurations_of_transformers_4_and_5_are_read() {
        // As transformers 5 writes SmolLM2-135M's shape.
        let smol = r#"{"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": true,
            "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "bos_token_id": 1, "eos_token_id": 2,
            "attention_bias": false, "mlp_bias": false, "pretraining_tp": 1}"#;
        let (model, layout) = parse(smol).unwrap();
        assert_eq!(model.architecture, Family::Llama);
        assert_eq!(
            (model.n_layer, model.n_head, model.kv_heads(), model.head_size(), model.mlp_width()),
            (30, 9, 3, 64, 1536)
        );
        assert_eq!((model.n_kv_head, model.head_dim, model.d_mlp), (Some(3), None, None), "defaults stay unset");
        assert_eq!(
            (model.rope_theta, model.context, model.tied_head, model.layer_norm_epsilon),
            (Some(100000.0), 2048, true, 1e-5)
        );
        assert_eq!(layout, EmbeddingLayout { rows: 49152, bos: 1, pad: 1 });
        // transformers 4 kept rope_theta at the top.
        let old = smol.replace(
            r#""rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}"#,
            r#""rope_theta": 100000.0, "rope_scaling": null"#,
        );
        assert_eq!(parse(&old).unwrap().0, model);
        let pythia = r#"{"model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 768, "intermediate_size": 3072,
            "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 2048, "rotary_pct": 0.25,
            "rotary_emb_base": 10000, "use_parallel_residual": true, "layer_norm_eps": 1e-05, "hidden_act": "gelu",
            "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0}"#;
        let (neox, _) = parse(pythia).unwrap();
        assert_eq!(
            (neox.architecture, neox.rotary(), neox.parallel_residual(), neox.biases()),
            (Family::GptNeox, Some((16, 10000.0)), true, (true, true, true))
        );
        let qwen = r#"{"model_type": "qwen2", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 80,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
            "use_sliding_window": false, "sliding_window": 4096, "layer_types": ["full_attention", "full_attention"],
            "bos_token_id": 99}"#;
        let (qwen2, _) = parse(qwen).unwrap();
        assert_eq!((qwen2.architecture, qwen2.d_mlp, qwen2.activation), (Family::Qwen2, Some(80), Activation::Silu));
    }

    #[test]
    fn what_cfmem_cannot_compute_is_refused_naming_the_key() {
        let err = |json: &str| parse(json).expect_err("refused").to_string();
        assert!(err("{\"model_type\": \"mixtral\"}").contains(
            "model_type \"mixtral\" is not supported: cfmem computes the families \"gpt2\", \"llama\", \"qwen2\", \"gpt_neox\""
        ));
        assert!(err(&gpt2_json(", \"activation_function\": \"relu\"")).contains("activation_function \"relu\""));
        let no_bos = gpt2_json("").replace(", \"bos_token_id\": 299, \"eos_token_id\": 299", "");
        assert!(err(&no_bos).contains("bos_token_id"));
        let llama = |extra: &str| {
            format!(
                "{{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8, \
                 \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"max_position_embeddings\": 8, \"bos_token_id\": 1{extra}}}"
            )
        };
        parse(&llama("")).unwrap();
        let scaled =
            err(&llama(", \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 500000.0, \"factor\": 32.0}"));
        assert!(scaled.contains("rope_parameters.rope_type \"yarn\" is not supported"), "{scaled}");
        let llama3 = ", \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 32.0, \
                      \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}";
        let (model, _) = parse(&llama(llama3)).unwrap();
        let expected = RopeScaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        assert_eq!((model.rope_scaling, model.rope_theta), (Some(expected), Some(500000.0)), "Llama 3.2's scaling");
        let incomplete = err(&llama(&llama3.replace(", \"low_freq_factor\": 1.0", "")));
        assert!(
            incomplete.contains("rope_parameters.low_freq_factor: Llama 3's rope scaling needs it"),
            "{incomplete}"
        );
        let on_neox = llama(llama3).replace("\"llama\"", "\"gpt_neox\"");
        assert!(err(&on_neox).contains("rope_type \"llama3\" is Llama 3's rope scaling, not gpt_neox's"));
        assert!(
            err(&llama(", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}"))
                .contains("rope_scaling.rope_type \"linear\"")
        );
        assert!(err(&llama(", \"num_local_experts\": 8")).contains("num_local_experts: a mixture of experts"));
        assert!(
            err(&llama(", \"num_key_value_heads\": 3"))
                .contains("num_key_value_heads 3 must divide num_attention_heads 2")
        );
        let sliding = llama(", \"use_sliding_window\": true, \"sliding_window\": 4").replace("\"llama\"", "\"qwen2\"");
        assert!(err(&sliding).contains("use_sliding_window: a sliding attention window is not supported"));
        parse(&sliding.replace("\"sliding_window\": 4", "\"sliding_window\": 8"))
            .expect("a window as wide as the context");
        assert!(err(&llama(", \"hidden_size\": \"eight\"")).contains("hidden_size is \"eight\", not a count"));
    }

    #[test]
    fn the_configuration_cfmem_writes_reads_back_as_the_same_model() {
        let layout = EmbeddingLayout::after_vocab(256);
        let gpt2 = ModelConfig { n_layer: 3, n_head: 2, d_model: 16, context: 32, ..Default::default() };
        let llama = ModelConfig {
            architecture: Family::Llama,
            rope_scaling: Some(RopeScaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 16,
            }),
            n_kv_head: Some(1),
            d_mlp: Some(40),
            rope_theta: Some(500.0),
            mlp_bias: Some(true),
            activation: Activation::Silu,
            tied_head: true,
            ..gpt2.clone()
        };
        let neox = ModelConfig {
            architecture: Family::GptNeox,
            rotary_pct: Some(0.5),
            parallel_residual: Some(false),
            ..gpt2.clone()
        };
        let qwen2 = ModelConfig {
            architecture: Family::Qwen2,
            head_dim: Some(4),
            activation: Activation::Silu,
            ..gpt2.clone()
        };
        for model in [gpt2, llama, neox, qwen2] {
            let json = config_json(&model, layout);
            let (read, read_layout) = parse(&json).unwrap();
            assert_eq!(read, ModelConfig { tokenizer: read.tokenizer.clone(), ..model.clone() }, "{json}");
            assert_eq!(read_layout, EmbeddingLayout { rows: 258, bos: 256, pad: 256 });
            assert!(
                json.contains("\"pad_token_id\": 257") && json.contains(model.architecture.traits().class),
                "{json}"
            );
        }
    }

    #[test]
    fn a_tensor_missing_or_of_another_shape_is_named() {
        let model =
            ModelConfig { n_layer: 1, n_head: 1, d_model: 2, context: 2, tied_head: true, ..Default::default() };
        let architecture = Architecture::new(&model, EmbeddingLayout { rows: 3, bos: 0, pad: 0 });
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        let write = |skip: Option<&str>, wrong: Option<&str>| {
            let data: Vec<(String, Vec<usize>, Vec<u8>)> = architecture
                .tensors
                .iter()
                .filter(|s| Some(s.name.as_str()) != skip)
                .map(|s| {
                    let mut shape = s.stored_shape();
                    if Some(s.name.as_str()) == wrong {
                        shape[0] += 1;
                    }
                    let bytes = vec![0u8; 4 * shape.iter().product::<usize>()];
                    (s.name.clone(), shape, bytes)
                })
                .collect();
            let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
                .iter()
                .map(|(name, shape, bytes)| {
                    (
                        name.clone(),
                        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap(),
                    )
                })
                .collect();
            std::fs::write(base.weights(), safetensors::tensor::serialize(views, &None).unwrap()).unwrap();
            WeightFiles::read(&base).unwrap()
        };
        check_tensors(&write(None, None), &architecture).unwrap();
        let missing = check_tensors(&write(Some("transformer.h.0.mlp.c_fc.bias"), None), &architecture).unwrap_err();
        assert!(missing.to_string().contains("no tensor transformer.h.0.mlp.c_fc.bias"), "{missing}");
        let shaped = check_tensors(&write(None, Some("transformer.wpe.weight")), &architecture).unwrap_err();
        assert!(
            shaped.to_string().contains("tensor transformer.wpe.weight has shape [3, 2], config.json implies [2, 2]"),
            "{shaped}"
        );
    }

    #[test]
    fn sharded_weights_are_read_through_their_index_and_hashed_together() {
        let dir = tempfile::tempdir().unwrap();
        let base = BaseDir::new(dir.path());
        let one = |name: &str| {
            let bytes = vec![0u8; 8];
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &bytes).unwrap();
            safetensors::tensor::serialize(vec![(name.to_string(), view)], &None).unwrap()
        };
        std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), one("a")).unwrap();
        std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), one("b")).unwrap();
        let index = r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
        std::fs::write(base.weights_index(), index).unwrap();
        let weights = WeightFiles::read(&base).unwrap();
        assert_eq!(weights.files.len(), 2);
        assert_eq!(weights.path, base.weights_index());
        let first = weights.sha256.clone();
        std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), one("c")).unwrap();
        assert_ne!(WeightFiles::read(&base).unwrap().sha256, first, "a changed shard changes the hash");
        std::fs::write(base.weights_index(), r#"{"weight_map": {"a": "../elsewhere.safetensors"}}"#).unwrap();
        let outside = WeightFiles::read(&base).err().unwrap().to_string();
        assert!(outside.contains("shard \"../elsewhere.safetensors\" is not a file of the directory"), "{outside}");
    }

    #[test]
    fn a_configuration_that_names_the_bases_family_agrees_and_another_family_conflicts() {
        let base = |family| Base {
            dir: BaseDir::new("/bases/b"),
            model: ModelConfig { architecture: family, ..ModelConfig::default() },
            layout: EmbeddingLayout::after_vocab(256),
            tokenizer: Tokenizer::Bytes,
            weights_sha256: String::new(),
        };
        let set = ["architecture".to_string()];
        let named = |family| ModelConfig { architecture: family, ..ModelConfig::default() };
        let source = Path::new("c.toml");
        for family in Family::ALL {
            base(family).model_for(&named(family), &set, source).unwrap();
        }
        let err = base(Family::Gpt2).model_for(&named(Family::Llama), &set, source).unwrap_err().to_string();
        assert!(
            err.contains("[model] architecture = \"llama\" conflicts with the base in /bases/b, which has \"gpt2\""),
            "{err}"
        );
    }
}
