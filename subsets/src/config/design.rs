//! `[design]`: what is IN or OUT together (units and the spectrum's levels), and the
//! design's settings and checks.

use duplicates::Settings;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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
