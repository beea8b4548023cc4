//! The resolved configuration of a run, written to `RUN/run.toml`: everything needed to
//! reproduce the run from that file and the corpus alone.
//!
//! `cfmem plan --config FILE.toml` reads the `[model]`, `[train]` and `[jobs]` tables of a
//! file of the same shape; anything it leaves out keeps its default.

use duplicates::Settings;
use serde::{Deserialize, Serialize};

use crate::family::{Family, Part};
use crate::schema::FINAL_CHECKPOINT;
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

/// What is IN or OUT of a model's training set together: a level of the memorization
/// spectrum, from the finest to the coarsest (the order of the variants, which `Ord`
/// follows). Written in `run.toml` and on the command line as `document`, `cluster`,
/// `passage`, `topic:K` or `field:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Unit {
    /// Each document is IN or OUT on its own.
    Document,
    /// All members of a near-duplicate cluster are IN or OUT together.
    Cluster,
    /// Documents sharing a substring of at least `min_repeat` bytes, joined transitively.
    Passage,
    /// Documents about the same thing: K topics found from their content (`[design.topics]`
    /// records how).
    Topic(u32),
    /// Documents with the same value of a string field of the corpus (a site, an author);
    /// a document without a value is its own unit.
    Field(String),
}

impl Unit {
    /// The next finer level, which a unit too large to sample falls back to (None for
    /// a document).
    pub fn finer(&self) -> Option<Unit> {
        match self {
            Unit::Document => None,
            Unit::Cluster => Some(Unit::Document),
            Unit::Passage => Some(Unit::Cluster),
            Unit::Topic(_) | Unit::Field(_) => Some(Unit::Passage),
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unit::Document => f.write_str("document"),
            Unit::Cluster => f.write_str("cluster"),
            Unit::Passage => f.write_str("passage"),
            Unit::Topic(k) => write!(f, "topic:{k}"),
            Unit::Field(name) => write!(f, "field:{name}"),
        }
    }
}

impl std::str::FromStr for Unit {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Unit, String> {
        match text {
            "document" => Ok(Unit::Document),
            "cluster" => Ok(Unit::Cluster),
            "passage" => Ok(Unit::Passage),
            _ => match (text.strip_prefix("field:"), text.strip_prefix("topic:")) {
                (Some(name), _) if !name.is_empty() => Ok(Unit::Field(name.to_string())),
                (_, Some(k)) => match k.parse::<u32>() {
                    Ok(0) => Err(format!("{text}: K must be at least 1 topic")),
                    Ok(k) => Ok(Unit::Topic(k)),
                    Err(_) => Err(format!("{text}: K must be a number of topics, e.g. topic:20")),
                },
                _ => Err(format!(
                    "unknown level {text:?}: expected document, cluster, passage, topic:K (K topics found from the \
                     text) or field:NAME (a string field of the corpus)"
                )),
            },
        }
    }
}

impl TryFrom<String> for Unit {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Unit, String> {
        text.parse()
    }
}

impl From<Unit> for String {
    fn from(unit: Unit) -> String {
        unit.to_string()
    }
}

/// The largest unit sampled as one, unless the user gives a fraction: 1% of the corpus's
/// documents or ⌊√n⌋ of them, whichever is larger. On a large corpus the 1% rules: at keep
/// 0.5 a unit of 1% moves each model's training set by about 2% of its size, which barely
/// changes how well a model predicts text in general (loss falls as a small power of the
/// data, a change near 0.2%), so what its OUT models lose on the unit is memorization; a
/// unit of 10% would weaken its OUT models on everything, generalization counted as
/// memorization. On a small corpus 1% is less than a document, and every passage or
/// cluster would fall back: √n keeps a corpus's natural groups (a passage shared by 6 of 70
/// documents: the bound is 8) while a share that shrinks as 1/√n still refuses what most
/// of a corpus shares (a footer on 90% of 70 documents).
pub fn default_max_unit_size(documents: usize) -> u32 {
    let percent = documents / 100;
    (percent.max(documents.isqrt()).max(1)) as u32
}

/// Runs planned before the size limit existed sampled every unit whole.
fn no_unit_limit() -> Option<f64> {
    Some(1.0)
}

/// One level of a spectrum run and the models that sample the corpus at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub level: Unit,
    /// Ranges `[start, end)` of model ids: one when planned, one more per `plan --extend`.
    pub models: Vec<[u32; 2]>,
}

impl Block {
    /// The block's model ids, ascending.
    pub fn model_ids(&self) -> Vec<u32> {
        self.models.iter().flat_map(|&[start, end]| start..end).collect()
    }

    pub fn size(&self) -> u32 {
        self.models.iter().map(|&[start, end]| end - start).sum()
    }
}

/// The unit and the spectrum's blocks of a run asked for `unit` or, when given, `levels`
/// (`--unit`, `--levels`): the levels sorted finest first, the finest the unit, `models`
/// shared out by [`blocks`] (the design's validation checks the rest).
pub fn unit_and_blocks(unit: &Unit, levels: &[Unit], models: u32) -> (Unit, Vec<Block>) {
    let mut levels = levels.to_vec();
    levels.sort();
    match levels.first() {
        Some(finest) => (finest.clone(), blocks(&levels, models)),
        None => (unit.clone(), Vec::new()),
    }
}

/// Splits `models` into one block per level, as evenly as possible (the first blocks get
/// one more), numbered in order.
pub fn blocks(levels: &[Unit], models: u32) -> Vec<Block> {
    let count = levels.len() as u32;
    let mut start = 0;
    levels
        .iter()
        .enumerate()
        .map(|(i, level)| {
            let size = models / count + u32::from((i as u32) < models % count);
            let block = Block { level: level.clone(), models: vec![[start, start + size]] };
            start += size;
            block
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesignConfig {
    pub models: u32,
    /// Fraction of models each unit is IN for: exactly round(keep × models) of them.
    pub keep: f64,
    /// Fraction of documents no model trains on.
    pub holdout: f64,
    /// The sampling unit of a single-level run; in a spectrum run, its finest level.
    pub unit: Unit,
    /// A unit of more than this fraction of the documents is not sampled as one: its
    /// documents fall back to the next finer level ([`Unit::finer`]). None, before
    /// planning: the default bound ([`default_max_unit_size`]), which the plan records as
    /// the fraction it is of the corpus.
    #[serde(default = "no_unit_limit")]
    pub max_unit_fraction: Option<f64>,
    /// Duplicate settings, one definition of clusters per run: `threshold`, `shingles`,
    /// `min_repeat` and `max_candidates`, keys of `[design]` itself. The duplicate scores
    /// are computed with them once, at plan time, on the bytes the models see.
    #[serde(flatten)]
    pub duplicates: Settings,
    /// Copy counts planted for canaries; empty when there is no copy sweep.
    pub copies: Vec<u16>,
    /// Generated random-identifier canaries appended to the corpus.
    pub canaries: u32,
    /// Ids of corpus documents used as canaries.
    pub canary_ids: Vec<String>,
    /// Ids of documents no model trains on, besides the `holdout` fraction.
    pub holdout_ids: Vec<String>,
    /// How the topics of `topic:K` levels were found, recorded by the plan of a run with
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<TopicConfig>,
    /// The levels of a spectrum run (`plan --levels`), finest first, each with its block of
    /// models; empty in a single-level run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spectrum: Vec<Block>,
}

/// How a plan found the topics of its `topic:K` levels (`[design.topics]`): the method, and
/// its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// `tfidf-svd`: TF-IDF over word unigrams and bigrams (sublinear tf, L2-normalized),
    /// reduced by truncated SVD, then spherical k-means seeded from the run seed.
    pub method: String,
    #[serde(flatten)]
    pub settings: duplicates::topics::TopicSettings,
}

impl DesignConfig {
    /// A design of `models` models in which every document is its own unit, IN for
    /// round(keep × models) of them: nothing held out, no copy sweep, and the default
    /// near-duplicate settings.
    pub fn documents(models: u32, keep: f64) -> DesignConfig {
        DesignConfig {
            models,
            keep,
            holdout: 0.0,
            unit: Unit::Document,
            max_unit_fraction: None,
            topics: None,
            spectrum: vec![],
            duplicates: Settings::default(),
            copies: vec![],
            canaries: 0,
            canary_ids: vec![],
            holdout_ids: vec![],
        }
    }

    /// The most documents a unit sampled as one may hold in a corpus of `documents`.
    /// With a fraction: that fraction of the documents, at least one; the fraction a plan
    /// records for a size (size / documents) gives the size back despite rounding.
    pub fn max_unit_size(&self, documents: usize) -> u32 {
        match self.max_unit_fraction {
            Some(fraction) => ((fraction * documents as f64 + 1e-9).floor() as u32).max(1),
            None => default_max_unit_size(documents),
        }
    }

    /// Checks what can be checked before the corpus is read: enough models for `keep`, the
    /// holdout fraction, and a copy sweep's settings, which go together.
    pub fn validate(&self) -> Result<()> {
        crate::design::in_count(self.models, self.keep)?;
        crate::design::check_holdout_fraction(self.holdout)?;
        if let Some(fraction) = self.max_unit_fraction.filter(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err(Error::setting("design.max_unit_fraction", format!("must be in (0, 1], got {fraction}")));
        }
        self.validate_spectrum()?;
        let canaries = self.canaries > 0 || !self.canary_ids.is_empty();
        match (self.copies.is_empty(), canaries) {
            (true, true) => Err(Error::setting("design.copies", "canaries need copy counts to plant")),
            (false, false) => Err(Error::setting(
                "design.copies",
                "copy counts need canaries: generated ones, or corpus documents named as canaries",
            )),
            _ if self.copies.contains(&0) => Err(Error::setting("design.copies", "copy counts must be at least 1")),
            _ => Ok(()),
        }
    }

    /// The run's levels, finest first: the spectrum's, or the one unit.
    pub fn levels(&self) -> Vec<Unit> {
        if self.spectrum.is_empty() {
            vec![self.unit.clone()]
        } else {
            self.spectrum.iter().map(|b| b.level.clone()).collect()
        }
    }

    /// The names of the corpus fields that the `field:NAME` levels group by (`source` is
    /// read with the documents).
    pub fn group_fields(&self) -> Vec<String> {
        self.levels()
            .into_iter()
            .filter_map(|level| match level {
                Unit::Field(name) if name != "source" => Some(name),
                _ => None,
            })
            .collect()
    }

    /// A spectrum has two levels or more, each once, finest first, and blocks that share
    /// the models out, each large enough for `keep`.
    fn validate_spectrum(&self) -> Result<()> {
        let Some(first) = self.spectrum.first() else { return Ok(()) };
        let levels = self.levels();
        if levels.len() < 2 {
            return Err(Error::setting(
                "design.levels",
                format!("a spectrum needs two levels or more (for one, use --unit {})", levels[0]),
            ));
        }
        if let Some(pair) = levels.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::setting("design.levels", format!("level {} is given twice", pair[0])));
        }
        if levels.windows(2).any(|pair| pair[0] > pair[1]) {
            return Err(Error::setting("design.levels", "levels must go from the finest to the coarsest"));
        }
        if first.level != self.unit {
            return Err(Error::setting("design.unit", format!("must be the spectrum's finest level, {}", first.level)));
        }
        let mut ids: Vec<u32> = self.spectrum.iter().flat_map(Block::model_ids).collect();
        ids.sort_unstable();
        if ids != (0..self.models).collect::<Vec<_>>() {
            return Err(Error::setting(
                "design.spectrum",
                format!("the blocks do not share out models 0 to {}", self.models - 1),
            ));
        }
        if let Some(block) = self.spectrum.iter().find(|b| crate::design::in_count(b.size(), self.keep).is_err()) {
            let needed = (2..).find(|&m| crate::design::in_count(m, self.keep).is_ok()).expect("keep is in (0, 1)");
            return Err(Error::setting(
                "design.models",
                format!(
                    "too few models for the spectrum: the block of level {} gets {} of the {} models, and with keep {} \
                     a block needs {needed} or more; plan {} models or more for {} levels",
                    block.level,
                    block.size(),
                    self.models,
                    self.keep,
                    needed * levels.len() as u32,
                    levels.len()
                ),
            ));
        }
        Ok(())
    }
}

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
    fn shape_problem(&self) -> Option<String> {
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
    fn lora_problem(&self, family: Family) -> Option<String> {
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
    fn eval_at_problem(&self) -> Option<String> {
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
    pub fn from_file(path: &std::path::Path) -> Result<Hyperparameters> {
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
    use duplicates::Shingling;

    use super::*;

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
