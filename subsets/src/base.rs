//! A base model: a directory in the Hugging Face GPT-2 layout, `config.json` (GPT2Config's
//! fields), `model.safetensors` and `tokenizer.json`, which every model of a run can start
//! from (`[train] init`) and which `cfmem pretrain` writes. This module reads and checks
//! such a directory without libtorch: the architecture it describes, as cfmem's `[model]`
//! settings; the names and shapes of its tensors, in the order of cfmem's parameter
//! layout; the sha256 of its weights. Loading and writing the tensors is `jobs::base`'s.
//!
//! The mapping, both ways:
//!
//! - Architecture: `n_layer`, `n_head`, `n_embd` (cfmem's `d_model`), `n_positions`
//!   (`context`), `activation_function` (`gelu_new` or `gelu_pytorch_tanh`, the tanh
//!   approximation, or the exact `gelu`), `layer_norm_epsilon`, `tie_word_embeddings`
//!   (`tied_head`). The MLP is 4·n_embd wide (`n_inner` absent or equal to that).
//! - Tensors: GPT-2's Conv1D layout, `[in, out]`, is cfmem's, so matrices are copied as
//!   they are; an untied head is `lm_head.weight` `[vocab, n_embd]`, the transpose of
//!   cfmem's head. Names may carry the `transformer.` prefix of `GPT2LMHeadModel` or not
//!   (`GPT2Model`); the attention-mask buffers of old checkpoints are ignored.
//! - Tokens: `vocab_size` is the number of embedding rows, and BOS is `bos_token_id`
//!   (GPT-2's `<|endoftext|>`); PAD is BOS, since a padded position is never a target and
//!   no real position attends to it. A tokenizer's ids must stay below `vocab_size`.
//! - cfmem's own models, written by `cfmem pretrain`: `vocab_size` is the tokenizer's
//!   vocabulary plus two rows, `bos_token_id` (and `eos_token_id`) the first of them,
//!   `pad_token_id` the second, and byte tokens are written as a `tokenizer.json` of 256
//!   byte-level tokens whose id is the byte's value ([`crate::tokenizer::Tokenizer::file_json`]).
//!   Neither BOS nor PAD is a token of `tokenizer.json`: a document is its text's tokens
//!   alone, and `transformers` users prepend `bos_token_id` themselves.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Activation, EmbeddingLayout, ModelConfig, TokenizerChoice};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result, corpus};

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

    pub fn weights(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }

    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
}

/// The fields of a Hugging Face `GPT2Config` that decide what the model computes; the
/// others are kept as they were read. Defaults are GPT2Config's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub model_type: String,
    pub vocab_size: u32,
    pub n_positions: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    #[serde(default)]
    pub n_inner: Option<u32>,
    #[serde(default = "gelu_new")]
    pub activation_function: String,
    #[serde(default = "layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub add_cross_attention: bool,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

fn gelu_new() -> String {
    "gelu_new".into()
}

fn layer_norm_epsilon() -> f64 {
    1e-5
}

fn yes() -> bool {
    true
}

impl Gpt2Config {
    pub fn read(path: &Path) -> Result<Gpt2Config> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not JSON: {e}")))?;
        match value.get("model_type").and_then(|t| t.as_str()) {
            Some("gpt2") => {}
            Some(other) => {
                return Err(Error::file(
                    path,
                    format!("model_type \"{other}\" is not GPT-2: cfmem starts from GPT2LMHeadModel checkpoints only"),
                ));
            }
            None => return Err(Error::file(path, "no model_type: not a Hugging Face model configuration")),
        }
        serde_json::from_value(value).map_err(|e| Error::file(path, format!("not a GPT2Config: {e}")))
    }

    /// The configuration `cfmem pretrain` writes for a model of `model` over `layout`.
    pub fn of(model: &ModelConfig, layout: EmbeddingLayout) -> Gpt2Config {
        let other = serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            // cfmem trains without dropout; so does a user who fine-tunes it elsewhere,
            // unless they set these.
            "attn_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "initializer_range": 0.02,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let serde_json::Value::Object(other) = other else { unreachable!("a JSON object literal") };
        Gpt2Config {
            model_type: "gpt2".into(),
            vocab_size: layout.rows,
            n_positions: model.context,
            n_embd: model.d_model,
            n_layer: model.n_layer,
            n_head: model.n_head,
            n_inner: None,
            activation_function: match model.activation {
                Activation::Gelu => "gelu".into(),
                Activation::GeluTanh => "gelu_new".into(),
            },
            layer_norm_epsilon: model.layer_norm_epsilon,
            bos_token_id: Some(layout.bos),
            eos_token_id: Some(layout.bos),
            pad_token_id: (layout.pad != layout.bos).then_some(layout.pad),
            tie_word_embeddings: model.tied_head,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            add_cross_attention: false,
            other,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a GPT-2 configuration always serializes") + "\n"
    }

    /// The architecture as cfmem's `[model]` settings (the tokenizer: `tokenizer`) and
    /// where BOS and PAD sit. `path` names the file in errors.
    pub fn model(&self, path: &Path, tokenizer: &Path) -> Result<(ModelConfig, EmbeddingLayout)> {
        let refuse = |message: String| Err(Error::file(path, message));
        let activation = match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => {
                return refuse(format!(
                    "activation_function \"{other}\" is not supported: cfmem computes gelu_new, gelu_pytorch_tanh and gelu"
                ));
            }
        };
        if let Some(inner) = self.n_inner
            && inner != 4 * self.n_embd
        {
            return refuse(format!("n_inner {inner}: cfmem's MLP is 4 × n_embd = {} wide", 4 * self.n_embd));
        }
        if self.scale_attn_by_inverse_layer_idx || !self.scale_attn_weights || self.add_cross_attention {
            return refuse(
                "scale_attn_by_inverse_layer_idx, scale_attn_weights = false and add_cross_attention are not supported"
                    .into(),
            );
        }
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return refuse(format!(
                "n_embd {} must be a positive multiple of n_head {}, and n_layer {} at least 1",
                self.n_embd, self.n_head, self.n_layer
            ));
        }
        if self.n_positions < 2 {
            return refuse(format!("n_positions {} must be at least 2", self.n_positions));
        }
        let Some(bos) = self.bos_token_id.or(self.eos_token_id) else {
            return refuse(
                "neither bos_token_id nor eos_token_id: cfmem needs the token that starts a document".into(),
            );
        };
        if bos >= self.vocab_size {
            return refuse(format!("bos_token_id {bos} is not below vocab_size {}", self.vocab_size));
        }
        let model = ModelConfig {
            n_layer: self.n_layer,
            n_head: self.n_head,
            d_model: self.n_embd,
            context: self.n_positions,
            tokenizer: TokenizerChoice::File(tokenizer.to_string_lossy().into_owned()),
            max_tokens_per_doc: None,
            activation,
            tied_head: self.tie_word_embeddings,
            layer_norm_epsilon: self.layer_norm_epsilon,
        };
        Ok((model, EmbeddingLayout { rows: self.vocab_size, bos, pad: bos }))
    }
}

/// One tensor of a base, in the order of cfmem's parameter layout.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Its name in `model.safetensors`, without the `transformer.` prefix.
    pub name: String,
    /// Its shape there.
    pub shape: Vec<usize>,
    /// Stored as the transpose of cfmem's parameter (an untied `lm_head.weight`).
    pub transposed: bool,
}

/// Tensors of a GPT-2 base of `model` with `rows` embedding rows, in the order of cfmem's
/// parameter layout: embeddings, then per block its LayerNorm, attention, LayerNorm and
/// MLP, then the final LayerNorm and, untied, the head.
pub fn tensor_specs(model: &ModelConfig, rows: u32) -> Vec<TensorSpec> {
    let d = model.d_model as usize;
    let spec = |name: String, shape: &[usize]| TensorSpec { name, shape: shape.to_vec(), transposed: false };
    let mut specs =
        vec![spec("wte.weight".into(), &[rows as usize, d]), spec("wpe.weight".into(), &[model.context as usize, d])];
    for layer in 0..model.n_layer {
        let name = |part: &str| format!("h.{layer}.{part}");
        specs.extend([
            spec(name("ln_1.weight"), &[d]),
            spec(name("ln_1.bias"), &[d]),
            spec(name("attn.c_attn.weight"), &[d, 3 * d]),
            spec(name("attn.c_attn.bias"), &[3 * d]),
            spec(name("attn.c_proj.weight"), &[d, d]),
            spec(name("attn.c_proj.bias"), &[d]),
            spec(name("ln_2.weight"), &[d]),
            spec(name("ln_2.bias"), &[d]),
            spec(name("mlp.c_fc.weight"), &[d, 4 * d]),
            spec(name("mlp.c_fc.bias"), &[4 * d]),
            spec(name("mlp.c_proj.weight"), &[4 * d, d]),
            spec(name("mlp.c_proj.bias"), &[d]),
        ]);
    }
    specs.extend([spec("ln_f.weight".into(), &[d]), spec("ln_f.bias".into(), &[d])]);
    if !model.tied_head {
        specs.push(TensorSpec { name: "lm_head.weight".into(), shape: vec![rows as usize, d], transposed: true });
    }
    specs
}

/// The name under which `spec` is stored in `tensors`: with `transformer.` (as
/// `GPT2LMHeadModel` saves it, the head excepted) or without.
pub fn stored_name<'a>(spec: &TensorSpec, mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let prefixed = format!("transformer.{}", spec.name);
    names.find(|&name| name == spec.name || name == prefixed)
}

/// Checks the header of `weights` (the bytes of `path`) against `specs`: every tensor
/// present, with its shape and a floating-point type.
pub fn check_tensors(path: &Path, weights: &[u8], specs: &[TensorSpec]) -> Result<()> {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(weights)
        .map_err(|e| Error::file(path, format!("not a safetensors file: {e:?}")))?;
    let tensors = metadata.tensors();
    for spec in specs {
        let Some(name) = stored_name(spec, tensors.keys().map(String::as_str)) else {
            return Err(Error::file(
                path,
                format!("no tensor {} (or transformer.{0}), which config.json implies", spec.name),
            ));
        };
        let info = &tensors[name];
        if info.shape != spec.shape {
            return Err(Error::file(
                path,
                format!("tensor {name} has shape {:?}, config.json implies {:?}", info.shape, spec.shape),
            ));
        }
        use safetensors::Dtype;
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::file(path, format!("tensor {name} is {:?}: cfmem reads F32, F16 and BF16", info.dtype)));
        }
    }
    Ok(())
}

/// A base directory, read and checked.
pub struct Base {
    pub dir: BaseDir,
    /// The architecture, and the base's `tokenizer.json` as the tokenizer.
    pub model: ModelConfig,
    pub layout: EmbeddingLayout,
    pub tokenizer: Tokenizer,
    /// sha256 of `model.safetensors`.
    pub weights_sha256: String,
}

impl Base {
    /// Reads `dir` and checks that its three files agree: the tensors' names and shapes
    /// with `config.json`, the tokenizer's ids with the embedding.
    pub fn read(dir: &Path) -> Result<Base> {
        Base::read_with_weights(dir).map(|(base, _)| base)
    }

    /// [`Base::read`], and the bytes of `model.safetensors` it read, for a caller that loads
    /// them without reading and hashing the file again.
    pub fn read_with_weights(dir: &Path) -> Result<(Base, Vec<u8>)> {
        let dir = BaseDir::new(dir);
        if !dir.root().is_dir() {
            return Err(Error::file(
                dir.root(),
                "no such directory: a base is a directory holding config.json, model.safetensors and tokenizer.json",
            ));
        }
        let config_path = dir.config();
        let config = Gpt2Config::read(&config_path)?;
        let (model, layout) = config.model(&config_path, &dir.tokenizer())?;
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
        let weights_path = dir.weights();
        let weights = std::fs::read(&weights_path).map_err(Error::io(&weights_path))?;
        check_tensors(&weights_path, &weights, &tensor_specs(&model, layout.rows))?;
        let base = Base { weights_sha256: corpus::sha256_hex(&weights), dir, model, layout, tokenizer };
        Ok((base, weights))
    }
}

impl Base {
    /// `requested` with this base's architecture and tokenizer. A key of `[model]` that the
    /// user's configuration file (`source`) sets, `set`, is refused, naming it, when its
    /// value is not the base's; `max_tokens_per_doc` stays the user's.
    pub fn model_for(&self, requested: &ModelConfig, set: &[String], source: &Path) -> Result<ModelConfig> {
        let table = |model: &ModelConfig| match toml::Table::try_from(model) {
            Ok(table) => table,
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
        Gpt2Config::read(&path)?.model(&path, Path::new("tok.json"))
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
            parse(&gpt2_json(", \"activation_function\": \"gelu\", \"tie_word_embeddings\": false")).unwrap();
        assert_eq!((model.activation, model.tied_head), (Activation::Gelu, false));
    }

    #[test]
    fn what_cfmem_cannot_compute_is_refused_naming_the_field() {
        let err = |json: &str| parse(json).expect_err("refused").to_string();
        assert!(err("{\"model_type\": \"llama\"}").contains("model_type \"llama\" is not GPT-2"));
        assert!(err(&gpt2_json(", \"activation_function\": \"relu\"")).contains("activation_function \"relu\""));
        assert!(err(&gpt2_json(", \"n_inner\": 7")).contains("n_inner 7"));
        let no_bos = gpt2_json("").replace(", \"bos_token_id\": 299, \"eos_token_id\": 299", "");
        assert!(err(&no_bos).contains("bos_token_id"));
    }

    #[test]
    fn the_configuration_cfmem_writes_reads_back_as_the_same_model() {
        let model = ModelConfig { n_layer: 3, n_head: 2, d_model: 16, context: 32, ..Default::default() };
        let layout = EmbeddingLayout::after_vocab(256);
        let written = Gpt2Config::of(&model, layout);
        let json = written.to_json();
        let (read, read_layout) = parse(&json).unwrap();
        assert_eq!(read, ModelConfig { tokenizer: read.tokenizer.clone(), ..model });
        assert_eq!(read_layout, EmbeddingLayout { rows: 258, bos: 256, pad: 256 });
        assert!(json.contains("\"pad_token_id\": 257") && json.contains("GPT2LMHeadModel"), "{json}");
    }

    #[test]
    fn tensors_follow_the_parameter_layout_and_the_head_only_when_untied() {
        let model = ModelConfig { n_layer: 2, d_model: 8, context: 4, ..Default::default() };
        let specs = tensor_specs(&model, 10);
        assert_eq!(specs.len(), 2 + 2 * 12 + 2 + 1);
        assert_eq!(specs[4].name, "h.0.attn.c_attn.weight");
        assert_eq!(specs[4].shape, [8, 24]);
        assert_eq!(specs.last().unwrap().shape, [10, 8]);
        assert!(specs.last().unwrap().transposed);
        let tied = tensor_specs(&ModelConfig { tied_head: true, ..model }, 10);
        assert_eq!(tied.last().unwrap().name, "ln_f.bias");
    }

    #[test]
    fn a_tensor_missing_or_of_another_shape_is_named() {
        let model = ModelConfig { n_layer: 1, d_model: 2, context: 2, tied_head: true, ..Default::default() };
        let specs = tensor_specs(&model, 3);
        let write = |skip: Option<&str>, wrong: Option<&str>| {
            let data: Vec<(String, Vec<usize>, Vec<u8>)> = specs
                .iter()
                .filter(|s| Some(s.name.as_str()) != skip)
                .map(|s| {
                    let mut shape = s.shape.clone();
                    if Some(s.name.as_str()) == wrong {
                        shape[0] += 1;
                    }
                    let bytes = vec![0u8; 4 * shape.iter().product::<usize>()];
                    (format!("transformer.{}", s.name), shape, bytes)
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
            safetensors::tensor::serialize(views, &None).unwrap()
        };
        let path = Path::new("model.safetensors");
        check_tensors(path, &write(None, None), &specs).unwrap();
        let missing = check_tensors(path, &write(Some("h.0.mlp.c_fc.bias"), None), &specs).unwrap_err();
        assert!(missing.to_string().contains("no tensor h.0.mlp.c_fc.bias"), "{missing}");
        let shaped = check_tensors(path, &write(None, Some("wpe.weight")), &specs).unwrap_err();
        assert!(
            shaped.to_string().contains("tensor transformer.wpe.weight has shape [3, 2], config.json implies [2, 2]"),
            "{shaped}"
        );
    }
}
