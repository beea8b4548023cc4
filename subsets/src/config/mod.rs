//! The resolved configuration of a run, written to `RUN/run.toml`: everything needed to
//! reproduce the run from that file and the corpus alone.
//!
//! `cfmem plan --config FILE.toml` reads the `[model]`, `[train]` and `[jobs]` tables of a
//! file of the same shape; anything it leaves out keeps its default.
//!
//! Its tables, each in its own file: `[design]` (units, levels, the design's checks) in
//! `design.rs`, `[model]` (families, shapes, tokenizers) in `model.rs`, `[train]` (the
//! optimizer, checkpoints, precision, adapters) in `train.rs`; this file holds the run's
//! whole configuration and the smaller tables.

mod design;
mod model;
mod train;

pub use design::*;
pub use model::*;
pub use train::*;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub seed: u64,
    pub corpus: CorpusConfig,
    pub design: DesignConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub jobs: JobsConfig,
    pub tokens: TokensConfig,
    /// Documents every model trains on besides its subset, if any (`plan --background`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<BackgroundConfig>,
    /// Present when the models start from a base (`train.init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusConfig {
    /// The corpus as given on the command line (informational: `corpus.parquet` holds it).
    pub path: String,
    /// sha256 over the documents' ids and texts, in order.
    pub sha256: String,
    pub documents: u32,
}

/// What the tokenizer made of the text, recorded at plan time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// Token ids a text can hold, `0..vocab`; BOS is `vocab` and PAD `vocab + 1`, unless
    /// the run starts from a base ([`TokensConfig::bos`]).
    pub vocab: u32,
    /// A base model's BOS (its `bos_token_id`), one of its `vocab` embedding rows; PAD is
    /// then BOS too: a padded position is never a target and no real position attends to
    /// it. Absent for a model trained from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos: Option<u32>,
    /// sha256 of `RUN/tokenizer.json`; absent for byte tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_sha256: Option<String>,
    /// Tokens of the corpus's documents (canaries included), after the cap.
    pub corpus: u64,
    /// Documents of the user's corpus cut to `model.max_tokens_per_doc` tokens.
    pub capped: u32,
    /// Tokens of the background documents, after the cap.
    pub background: u64,
}

impl TokensConfig {
    /// Where BOS and PAD sit among a model's embedding rows.
    pub fn layout(&self) -> EmbeddingLayout {
        match self.bos {
            Some(bos) => EmbeddingLayout { rows: self.vocab, bos, pad: bos },
            None => EmbeddingLayout::after_vocab(self.vocab),
        }
    }
}

/// A model's token embedding: its rows, and which of them are BOS, which starts every
/// document, and PAD, which fills a batch row after its window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingLayout {
    pub rows: u32,
    pub bos: u32,
    pub pad: u32,
}

impl EmbeddingLayout {
    /// cfmem's own: a tokenizer's `vocab` ids, then BOS and PAD.
    pub fn after_vocab(vocab: u32) -> EmbeddingLayout {
        EmbeddingLayout { rows: vocab + 2, bos: vocab, pad: vocab + 1 }
    }
}

/// The base every model of a run starts from (`train.init`), as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseConfig {
    /// sha256 of the base's `model.safetensors` when the run was planned: `run` refuses a
    /// base changed since.
    pub weights_sha256: String,
}

/// The background corpus, copied into `RUN/background.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundConfig {
    /// As given on the command line (informational: `background.parquet` holds it).
    pub path: String,
    /// sha256 over the documents' ids and texts, in order, as for the corpus.
    pub sha256: String,
    pub documents: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Models trained together as one stack: a job is one stack, with one log file.
    /// `models_per_job`, its name before stacks, is read as the same setting.
    #[serde(alias = "models_per_job")]
    pub stack: u32,
    /// Seconds after its last heartbeat when a worker's claim on a job is stale and another
    /// worker may take the job over. Workers refresh their heartbeat every quarter of it.
    pub claim_timeout: f64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { stack: 4, claim_timeout: 600.0 }
    }
}

/// The part of a run configuration a `--config FILE.toml` may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hyperparameters {
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub jobs: JobsConfig,
}

impl Hyperparameters {
    /// The settings of the TOML file at `config`, the defaults where none is given.
    pub fn read(config: Option<&std::path::Path>) -> Result<Hyperparameters> {
        let Some(path) = config else { return Ok(Hyperparameters::default()) };
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        toml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))
    }

    /// The keys of `[model]` that the file at `path` sets, whatever their values.
    pub fn model_keys(path: &std::path::Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))?;
        Ok(table.get("model").and_then(toml::Value::as_table).map(|m| m.keys().cloned().collect()).unwrap_or_default())
    }

    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let t = &self.train;
        let checks = [
            (m.n_layer >= 1, "model.n_layer must be at least 1"),
            (m.n_head >= 1, "model.n_head must be at least 1"),
            (
                m.d_model >= 1 && (m.head_dim.is_some() || m.d_model.is_multiple_of(m.n_head.max(1))),
                "model.d_model must be a positive multiple of model.n_head",
            ),
            (m.context >= 2, "model.context must be at least 2"),
            (
                !matches!(m.tokenizer, TokenizerChoice::Bpe { vocab_size } if !BPE_VOCAB_SIZES.contains(&vocab_size)),
                "model.vocab_size must be between 256 and 1048576",
            ),
            (m.max_tokens_per_doc != Some(0), "model.max_tokens_per_doc must be at least 1"),
            (
                m.layer_norm_epsilon > 0.0 && m.layer_norm_epsilon.is_finite(),
                "model.layer_norm_epsilon must be positive",
            ),
            (!t.init.is_empty(), "train.init must be \"scratch\" or the directory of a base model"),
            (t.epochs >= 1, "train.epochs must be at least 1"),
            (t.batch_size >= 1, "train.batch_size must be at least 1"),
            (t.eval_batch_size >= 1, "train.eval_batch_size must be at least 1"),
            (t.lr > 0.0 && t.lr.is_finite(), "train.lr must be positive"),
            ((0.0..1.0).contains(&t.warmup_fraction), "train.warmup_fraction must be in [0, 1)"),
            (t.weight_decay >= 0.0, "train.weight_decay must not be negative"),
            (
                (0.0..1.0).contains(&t.beta1) && (0.0..1.0).contains(&t.beta2),
                "train.beta1 and train.beta2 must be in [0, 1)",
            ),
            (t.grad_clip >= 0.0, "train.grad_clip must not be negative"),
            (self.jobs.stack >= 1, "jobs.stack must be at least 1"),
            (
                self.jobs.claim_timeout > 0.0 && self.jobs.claim_timeout.is_finite(),
                "jobs.claim_timeout must be a positive number of seconds",
            ),
        ];
        if let Some((_, message)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(Error::Invalid(message.to_string()));
        }
        if let Some(problem) = m.shape_problem() {
            return Err(Error::Invalid(problem));
        }
        match t.eval_at_problem().or_else(|| t.lora_problem(m.architecture)) {
            Some(problem) => Err(Error::Invalid(problem)),
            None => Ok(()),
        }
    }
}

impl RunConfig {
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run configuration always serializes")
    }

    pub fn from_file(path: &std::path::Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        toml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))
    }

    pub fn hyperparameters(&self) -> Hyperparameters {
        Hyperparameters { model: self.model.clone(), train: self.train.clone(), jobs: self.jobs.clone() }
    }
}

#[cfg(test)]
mod tests {
    use duplicates::{Settings, Shingling};

    use super::*;
    use crate::family::Family;

    #[test]
    fn the_unit_size_bound_is_the_fraction_given_or_one_percent_or_the_square_root() {
        let with = |fraction: Option<f64>, documents: usize| {
            DesignConfig { max_unit_fraction: fraction, ..DesignConfig::documents(4, 0.5) }.max_unit_size(documents)
        };
        assert_eq!((with(Some(0.01), 150), with(Some(0.1), 125), with(Some(0.01), 300)), (1, 12, 3));
        // ⌊√70⌋ = 8 keeps a passage of 6; 1% of 10⁶ is above ⌊√10⁶⌋ = 1000.
        assert_eq!((with(None, 70), with(None, 3200), with(None, 1_000_000), with(None, 0)), (8, 56, 10_000, 1));
        // The fraction a plan records gives the same bound back.
        assert_eq!(with(Some(8.0 / 70.0), 70), 8);
    }

    #[test]
    fn partial_config_file_keeps_defaults_and_rejects_unknown_keys() {
        let h: Hyperparameters = toml::from_str("[model]\nn_layer = 3\n[train]\nepochs = 7\n").unwrap();
        assert_eq!(h.model.n_layer, 3);
        assert_eq!(h.model.d_model, ModelConfig::default().d_model);
        assert_eq!(h.train.epochs, 7);
        let err = toml::from_str::<Hyperparameters>("[model]\nlayers = 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `layers`"), "{err}");
    }

    #[test]
    fn the_tokenizer_choice_reads_and_writes_itself_and_vocab_size_only_means_something_for_a_bpe() {
        let model = |text: &str| toml::from_str::<Hyperparameters>(text).map(|h| h.model.tokenizer);
        assert_eq!(model("").unwrap(), TokenizerChoice::Bytes);
        assert_eq!(model("[model]\ntokenizer = \"bpe\"\n").unwrap(), TokenizerChoice::Bpe { vocab_size: 4096 });
        assert_eq!(
            model("[model]\ntokenizer = \"bpe\"\nvocab_size = 512\n").unwrap(),
            TokenizerChoice::Bpe { vocab_size: 512 }
        );
        assert_eq!(
            model("[model]\ntokenizer = \"t/tokenizer.json\"\n").unwrap(),
            TokenizerChoice::File("t/tokenizer.json".into())
        );
        let err = model("[model]\ntokenizer = \"\"\n").unwrap_err().to_string();
        assert!(err.contains("model.tokenizer: expected \"bytes\", \"bpe\" or the path of a tokenizer.json"), "{err}");
        let written = |tokenizer| {
            let h = Hyperparameters {
                model: ModelConfig { tokenizer, ..ModelConfig::default() },
                ..Hyperparameters::default()
            };
            toml::to_string(&h).unwrap()
        };
        assert!(!written(TokenizerChoice::Bytes).contains("vocab_size"));
        assert!(written(TokenizerChoice::Bpe { vocab_size: 512 }).contains("tokenizer = \"bpe\"\nvocab_size = 512\n"));
    }

    /// `[model]` of a run.toml written before the tokenizer was a type: `vocab_size` is
    /// there whatever the tokenizer.
    #[test]
    fn model_tables_written_by_earlier_versions_still_read() {
        let earlier =
            "n_layer = 2\nn_head = 4\nd_model = 128\ncontext = 128\ntokenizer = \"bytes\"\nvocab_size = 4096\n";
        let model: ModelConfig = toml::from_str(earlier).unwrap();
        assert_eq!(model, ModelConfig::default());
        let bpe: ModelConfig = toml::from_str(&earlier.replace("\"bytes\"", "\"bpe\"")).unwrap();
        assert_eq!(bpe.tokenizer, TokenizerChoice::Bpe { vocab_size: 4096 });
    }

    #[test]
    fn a_design_is_checked_before_the_corpus_is_read_and_errors_name_the_field() {
        let check = |change: fn(&mut DesignConfig)| {
            let mut design = DesignConfig::documents(4, 0.5);
            change(&mut design);
            design.validate().err().map(|e| e.to_string())
        };
        assert_eq!(check(|_| {}), None);
        assert_eq!(check(|d| d.keep = 1.0).unwrap(), "design.keep: must be strictly between 0 and 1, got 1");
        assert!(check(|d| d.models = 1).unwrap().starts_with("design.models: too few models: with 1 models"));
        assert_eq!(check(|d| d.holdout = 1.5).unwrap(), "design.holdout: must be in [0, 1), got 1.5");
        assert_eq!(check(|d| d.canaries = 3).unwrap(), "design.copies: canaries need copy counts to plant");
        assert_eq!(
            check(|d| d.copies = vec![1, 2]).unwrap(),
            "design.copies: copy counts need canaries: generated ones, or corpus documents named as canaries"
        );
        assert_eq!(
            check(|d| (d.copies, d.canaries) = (vec![0, 2], 3)).unwrap(),
            "design.copies: copy counts must be at least 1"
        );
    }

    #[test]
    fn invalid_hyperparameters_name_the_field() {
        let mut h = Hyperparameters::default();
        h.model.d_model = 30;
        h.model.n_head = 4;
        let err = h.validate().unwrap_err().to_string();
        assert!(err.contains("model.d_model"), "{err}");
        let mut h = Hyperparameters::default();
        h.model.tokenizer = TokenizerChoice::Bpe { vocab_size: 100 };
        assert_eq!(
            h.validate().unwrap_err().to_string(),
            "invalid setting: model.vocab_size must be between 256 and 1048576"
        );
        let mut h = Hyperparameters::default();
        h.model.max_tokens_per_doc = Some(0);
        assert_eq!(
            h.validate().unwrap_err().to_string(),
            "invalid setting: model.max_tokens_per_doc must be at least 1"
        );
    }

    #[test]
    fn bad_adapter_settings_are_refused_naming_the_setting() {
        let lora = |text: &str| -> Result<Hyperparameters> {
            let h: Hyperparameters =
                toml::from_str(&format!("[train]\ninit = \"/bases/b\"\nadapter = \"lora\"\n{text}"))
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            h.validate().map(|()| h)
        };
        let h = lora("").unwrap();
        assert_eq!((h.train.lora_rank, h.train.lora_alpha, h.train.lora_targets.clone()), (8, 16.0, None));
        assert_eq!(h.train.lora_targets_of(Family::Gpt2), ["c_attn"], "the family's default");
        assert_eq!(h.train.lora_targets_of(Family::Llama), ["q_proj", "v_proj"]);
        lora("lora_targets = [\"c_attn\", \"attn.c_proj\", \"c_fc\", \"mlp.c_proj\"]").unwrap();
        let problem = |text: &str| lora(text).unwrap_err().to_string();
        assert_eq!(problem("lora_rank = 0"), "invalid setting: train.lora_rank must be at least 1");
        assert_eq!(problem("lora_alpha = -1.0"), "invalid setting: train.lora_alpha must be positive, got -1");
        assert_eq!(
            problem("lora_targets = []"),
            "invalid setting: train.lora_targets must name at least one of \"c_attn\", \"attn.c_proj\", \"c_fc\", \
             \"mlp.c_proj\""
        );
        assert_eq!(
            problem("lora_targets = [\"c_fc\", \"c_fc\"]"),
            "invalid setting: train.lora_targets names \"c_fc\" twice"
        );
        assert_eq!(
            problem("lora_targets = [\"c_proj\"]"),
            "invalid setting: train.lora_targets: \"c_proj\" is not a matrix of a gpt2 block; it has \"c_attn\", \
             \"attn.c_proj\", \"c_fc\", \"mlp.c_proj\""
        );
        let mut llama = lora("lora_targets = [\"q_proj\"]").unwrap_err().to_string();
        assert!(llama.contains("\"q_proj\" is not a matrix of a gpt2 block"), "{llama}");
        let mut h: Hyperparameters =
            toml::from_str("[model]\narchitecture = \"gpt_neox\"\n[train]\ninit = \"/b\"\nadapter = \"lora\"\nlora_targets = [\"q_proj\"]").unwrap();
        llama = h.validate().unwrap_err().to_string();
        assert_eq!(
            llama,
            "invalid setting: train.lora_targets: \"q_proj\" is not a matrix of a gpt_neox block; it has \
             \"query_key_value\", \"dense\", \"dense_h_to_4h\", \"dense_4h_to_h\""
        );
        h.train.lora_targets = Some(vec!["dense".into(), "dense_4h_to_h".into()]);
        h.validate().unwrap();
        let mut scratch = Hyperparameters::default();
        scratch.train.adapter = Adapter::Lora;
        assert!(scratch.validate().unwrap_err().to_string().contains("set train.init to a base model's directory"));
    }

    #[test]
    fn family_keys_resolve_to_the_familys_defaults_and_other_families_refuse_them() {
        let model = |text: &str| toml::from_str::<Hyperparameters>(&format!("[model]\n{text}")).map(|h| h.model);
        let gpt2 = model("").unwrap();
        assert_eq!(
            (gpt2.architecture, gpt2.activation, gpt2.mlp_width(), gpt2.rotary()),
            (Family::Gpt2, Activation::Gelu, 512, None)
        );
        let llama = model("architecture = \"llama\"\nd_model = 576\nn_head = 9\nn_kv_head = 3").unwrap();
        assert_eq!(
            (llama.activation, llama.mlp_width(), llama.kv_heads(), llama.head_size()),
            (Activation::Silu, 1536, 3, 64)
        );
        assert_eq!(llama.rotary(), Some((64, 10000.0)));
        assert_eq!(llama.biases(), (false, false, false));
        let neox = model("architecture = \"gpt_neox\"\nrope_theta = 500.0").unwrap();
        assert_eq!((neox.mlp_width(), neox.rotary(), neox.parallel_residual()), (512, Some((8, 500.0)), true));
        let qwen2 = model("architecture = \"qwen2\"").unwrap();
        assert_eq!(qwen2.biases(), (true, false, false));
        let refused = |text: &str| model(text).unwrap_err().to_string();
        assert!(
            refused("rope_theta = 1.0").contains(
                "model.rope_theta means nothing for architecture \"gpt2\": it sets something of \"llama\" and \
                 \"qwen2\" and \"gpt_neox\" models only; leave it out"
            ),
            "{}",
            refused("rope_theta = 1.0")
        );
        assert!(
            refused("architecture = \"llama\"\nrotary_pct = 0.5")
                .contains("model.rotary_pct means nothing for architecture \"llama\"")
        );
        assert!(refused("architecture = \"gpt_neox\"\nn_kv_head = 2").contains("model.n_kv_head means nothing"));
        assert!(
            refused("architecture = \"qwen2\"\nattention_bias = false").contains("model.attention_bias means nothing")
        );
        assert!(refused("architecture = \"mistral\"").contains("unknown variant `mistral`"));
        let llama3 = "rope_scaling = { factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, \
                      original_max_position_embeddings = 8192 }";
        assert!(refused(&format!("architecture = \"qwen2\"\n{llama3}")).contains("model.rope_scaling means nothing"));
        let scaled = model(&format!("architecture = \"llama\"\n{llama3}")).unwrap();
        assert_eq!(scaled.rope_scaling.map(|s| s.original_max_position_embeddings), Some(8192));
        // The written table reads back the same, and a GPT-2 one writes no family key.
        let toml_of = |m: &ModelConfig| toml::to_string(m).unwrap();
        assert!(!toml_of(&gpt2).contains("architecture"));
        for m in [gpt2, llama, neox, qwen2] {
            assert_eq!(toml::from_str::<ModelConfig>(&toml_of(&m)).unwrap(), m);
        }
        let problem = |text: &str| {
            let h = Hyperparameters { model: model(text).unwrap(), ..Default::default() };
            h.validate().unwrap_err().to_string()
        };
        assert!(
            problem("architecture = \"llama\"\nn_kv_head = 3").contains("model.n_kv_head must divide model.n_head (4)")
        );
        assert!(problem("architecture = \"gpt_neox\"\nrotary_pct = 0.1").contains("3 rotary features of a head of 32"));
        let inverted = "architecture = \"llama\"\nrope_scaling = { factor = 8.0, low_freq_factor = 4.0, \
                        high_freq_factor = 1.0, original_max_position_embeddings = 8192 }";
        assert!(problem(inverted).contains("model.rope_scaling: high_freq_factor 1 must exceed low_freq_factor 4"));
    }

    #[test]
    fn bad_checkpoints_are_refused_naming_train_eval_at() {
        let problem = |eval_at: &[f64]| {
            let mut h = Hyperparameters::default();
            h.train.eval_at = eval_at.to_vec();
            h.validate().unwrap_err().to_string()
        };
        assert_eq!(
            problem(&[]),
            "invalid setting: train.eval_at must list at least one checkpoint, ending in 1.0 (e.g. [0.25, 0.5, 1.0])"
        );
        assert_eq!(
            problem(&[0.5, 0.25, 1.0]),
            "invalid setting: train.eval_at = [0.5, 0.25, 1.0] must increase: 0.25 comes after 0.5"
        );
        assert_eq!(
            problem(&[0.5, 0.5, 1.0]),
            "invalid setting: train.eval_at = [0.5, 0.5, 1.0] must increase: 0.5 comes after 0.5"
        );
        assert_eq!(
            problem(&[0.0, 1.0]),
            "invalid setting: train.eval_at = [0.0, 1.0]: 0 is not a fraction of training in (0, 1]"
        );
        assert_eq!(
            problem(&[0.5, 1.5]),
            "invalid setting: train.eval_at = [0.5, 1.5]: 1.5 is not a fraction of training in (0, 1]"
        );
        assert!(problem(&[f64::NAN, 1.0]).contains("NaN is not a fraction"));
        assert_eq!(
            problem(&[0.25, 0.5]),
            "invalid setting: train.eval_at = [0.25, 0.5] must end in 1.0, the end of training, whose evaluation \
             the scores rest on"
        );
        let mut h = Hyperparameters::default();
        h.train.eval_at = vec![0.1, 0.125, 0.5, 1.0];
        h.validate().unwrap();
        assert_eq!(h.train.checkpoint_steps(10), [1, 1, 5, 10], "at least one step, the last at the end");
        assert_eq!(h.train.checkpoint_steps(1000), [100, 125, 500, 1000]);
    }

    /// `run.toml` as `cfmem plan` wrote it before `max_candidates` was a setting (planned
    /// with `--shingles chars:7 --threshold 0.7 --min-repeat 30 --unit cluster`).
    const RUN_TOML_BEFORE_MAX_CANDIDATES: &str = r#"seed = 1

[corpus]
path = "corpus.jsonl"
sha256 = "1b8405d28f79e923d159e3a500b328efc0dde69964abb53ed246fbdda6e39714"
documents = 1450

[design]
models = 4
keep = 0.5
holdout = 0.0
unit = "cluster"
threshold = 0.7
shingles = "chars:7"
min_repeat = 30
copies = []
canaries = 0
canary_ids = []
holdout_ids = []

[model]
n_layer = 2
n_head = 4
d_model = 128
context = 128
tokenizer = "bytes"
vocab_size = 4096

[train]
epochs = 20
batch_size = 16
lr = 0.003
warmup_fraction = 0.05
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
eval_batch_size = 64
precision = "fp32"

[jobs]
stack = 4
claim_timeout = 600.0

[tokens]
vocab = 256
corpus = 574492
capped = 0
background = 0
"#;

    #[test]
    fn a_run_planned_before_max_candidates_reads_with_the_default_it_used() {
        let config: RunConfig = toml::from_str(RUN_TOML_BEFORE_MAX_CANDIDATES).unwrap();
        let expected = Settings { threshold: 0.7, shingles: Shingling::Chars(7), min_repeat: 30, max_candidates: 1000 };
        assert_eq!(config.design.duplicates, expected);
        assert_eq!((config.design.models, config.design.unit.clone()), (4, Unit::Cluster));
        // Written again, it says which value it used.
        let written = config.to_toml();
        assert!(
            written.contains("shingles = \"chars:7\"\nmin_repeat = 30\nmax_candidates = 1000\ncopies = []"),
            "{written}"
        );
        assert_eq!(toml::from_str::<RunConfig>(&written).unwrap(), config);
    }

    #[test]
    fn design_keys_are_checked_and_unknown_ones_refused() {
        let with = |from: &str, to: &str| {
            let text = RUN_TOML_BEFORE_MAX_CANDIDATES.replace(from, to);
            toml::from_str::<RunConfig>(&text).map(|c| c.design.duplicates).map_err(|e| e.to_string())
        };
        assert_eq!(with("min_repeat = 30\n", "min_repeat = 30\nmax_candidates = 5\n").unwrap().max_candidates, 5);
        let err = with("min_repeat = 30\n", "min_repeat = 30\nmax_candidate = 5\n").unwrap_err();
        assert!(err.contains("unknown field `max_candidate`"), "{err}");
        let err = with("\"chars:7\"", "\"lines:3\"").unwrap_err();
        assert!(err.contains("expected words:N or chars:N, got \"lines:3\""), "{err}");
        let err = with("min_repeat = 30\n", "").unwrap_err();
        assert!(err.contains("missing field `min_repeat`"), "{err}");
    }
}
