//! What a user chooses ([`Settings`], written to a run's `run.toml`) and everything the
//! engine runs with ([`DupParams`]: the settings and the engine's own knobs), each default
//! written once, here.
//!
//! This module knows the names of the settings (they are the keys of `run.toml`), not where
//! they are stored nor the command-line flags that set them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::minhash::Banding;

/// What a shingle is. Reads and writes itself as `words:N` or `chars:N`, on the command line
/// and in `run.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shingling {
    /// n consecutive words.
    Words(usize),
    /// n consecutive characters (Unicode scalar values).
    Chars(usize),
}

impl Shingling {
    /// Words or characters per shingle.
    pub fn length(self) -> usize {
        match self {
            Shingling::Words(n) | Shingling::Chars(n) => n,
        }
    }
}

impl fmt::Display for Shingling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shingling::Words(n) => write!(f, "words:{n}"),
            Shingling::Chars(n) => write!(f, "chars:{n}"),
        }
    }
}

/// Why a text is not a [`Shingling`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShinglingError {
    #[error("expected words:N or chars:N, got {0:?}")]
    Form(String),
    #[error("{0:?} is not a number")]
    Number(String),
    #[error("the shingle length must be at least 1")]
    Zero,
}

impl FromStr for Shingling {
    type Err = ShinglingError;

    fn from_str(text: &str) -> Result<Shingling, ShinglingError> {
        let (kind, n) = text.split_once(':').ok_or_else(|| ShinglingError::Form(text.into()))?;
        let n: usize = n.parse().map_err(|_| ShinglingError::Number(n.into()))?;
        if n == 0 {
            return Err(ShinglingError::Zero);
        }
        match kind {
            "words" => Ok(Shingling::Words(n)),
            "chars" => Ok(Shingling::Chars(n)),
            _ => Err(ShinglingError::Form(text.into())),
        }
    }
}

impl Serialize for Shingling {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shingling {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Shingling, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The duplicate settings a user chooses: one definition of near-duplicates and repeats per
/// run, stored in `run.toml`'s `[design]` under these names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Jaccard similarity t at or above which two documents are near-duplicates.
    pub threshold: f64,
    /// What the Jaccard similarity is computed on.
    pub shingles: Shingling,
    /// Shortest substring, in bytes, shared with another document that counts toward
    /// `repeat_fraction`.
    pub min_repeat: u32,
    /// Most distinct candidates one representative examines (see the crate documentation).
    /// Runs planned before it was a setting used the default, and read as such.
    #[serde(default = "default_max_candidates")]
    pub max_candidates: u32,
}

impl Default for Settings {
    /// Word 5-grams at J >= 0.8 (the NearDup setup of Lee et al.; see the crate
    /// documentation), repeats of 50 bytes, 1,000 candidates.
    fn default() -> Self {
        Settings { threshold: 0.8, shingles: Shingling::Words(5), min_repeat: 50, max_candidates: 1000 }
    }
}

fn default_max_candidates() -> u32 {
    Settings::default().max_candidates
}

impl Settings {
    /// The engine's parameters for these settings (its own knobs at their defaults),
    /// checked: the one translation from settings to [`DupParams`].
    ///
    /// ```
    /// use duplicates::{Param, Settings, Shingling};
    ///
    /// let settings = Settings { shingles: "chars:7".parse().unwrap(), ..Settings::default() };
    /// assert_eq!(settings.shingles, Shingling::Chars(7));
    /// assert!(settings.params().is_ok());
    ///
    /// let bad = Settings { threshold: 1.5, ..Settings::default() };
    /// assert_eq!(bad.params().unwrap_err().param, Param::Threshold);
    /// assert!("words:0".parse::<Shingling>().is_err());
    /// ```
    pub fn params(&self) -> Result<DupParams, InvalidParams> {
        let params = DupParams { settings: self.clone(), ..DupParams::default() };
        params.validate()?;
        Ok(params)
    }
}

/// Parameters of [`crate::find_duplicates`]: the user's [`Settings`] and the engine's own
/// knobs, which change the cost or the randomness of the search, never what it looks for.
#[derive(Debug, Clone, PartialEq)]
pub struct DupParams {
    pub settings: Settings,
    /// MinHash signature length available to LSH banding.
    pub num_perm: usize,
    /// Required probability that LSH proposes a pair with Jaccard exactly t.
    pub min_recall: f64,
    /// Seed of the MinHash hash functions.
    pub seed: u64,
    /// Most bytes of text in one suffix array; None splits the corpus evenly over the
    /// threads. Changes memory and time, not the scores.
    pub shard_bytes: Option<usize>,
    /// Also join documents sharing a repeat into passage groups
    /// ([`crate::Duplicates::passages`]), in the same pass as the repeat fractions.
    pub passages: bool,
}

impl Default for DupParams {
    fn default() -> Self {
        DupParams {
            settings: Settings::default(),
            num_perm: 128,
            min_recall: 0.99,
            seed: 0,
            shard_bytes: None,
            passages: false,
        }
    }
}

/// A parameter of [`DupParams`]: one of the [`Settings`] or one of the engine's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Threshold,
    Shingles,
    MinRepeat,
    MaxCandidates,
    NumPerm,
    MinRecall,
    ShardBytes,
}

impl Param {
    /// The field's name (for a setting, its key in `run.toml`).
    pub fn name(self) -> &'static str {
        match self {
            Param::Threshold => "threshold",
            Param::Shingles => "shingles",
            Param::MinRepeat => "min_repeat",
            Param::MaxCandidates => "max_candidates",
            Param::NumPerm => "num_perm",
            Param::MinRecall => "min_recall",
            Param::ShardBytes => "shard_bytes",
        }
    }
}

/// A parameter out of range, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {reason}", param.name())]
pub struct InvalidParams {
    pub param: Param,
    pub reason: String,
}

impl DupParams {
    /// The banding with the most rows per band, within `num_perm` values, that catches a
    /// pair at J = t with probability at least `min_recall`.
    pub fn banding(&self) -> Banding {
        Banding::choose(self.settings.threshold, self.num_perm, self.min_recall)
    }

    /// Checks the parameters; the error names the offending one.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        let invalid = |param, reason: &str| Err(InvalidParams { param, reason: reason.into() });
        let Settings { threshold, shingles, min_repeat, max_candidates } = self.settings;
        if shingles.length() == 0 {
            return invalid(Param::Shingles, &ShinglingError::Zero.to_string());
        }
        if !(threshold > 0.0 && threshold <= 1.0) {
            return invalid(Param::Threshold, &format!("must be in (0, 1], got {threshold}"));
        }
        if min_repeat == 0 {
            return invalid(Param::MinRepeat, "must be at least 1");
        }
        if max_candidates == 0 {
            return invalid(Param::MaxCandidates, "must be at least 1");
        }
        if self.num_perm == 0 {
            return invalid(Param::NumPerm, "must be at least 1");
        }
        if !(self.min_recall > 0.0 && self.min_recall <= 1.0) {
            return invalid(Param::MinRecall, &format!("must be in (0, 1], got {}", self.min_recall));
        }
        if self.shard_bytes == Some(0) {
            return invalid(Param::ShardBytes, "must be at least 1");
        }
        // Named after the threshold: with the engine's default knobs, a higher threshold is
        // the only remedy a user has.
        let caught = self.banding().catch_probability(threshold);
        if caught < self.min_recall {
            return invalid(
                Param::Threshold,
                &format!(
                    "{} MinHash values catch pairs at J = {threshold} with probability at most {caught:.4}, \
                     less than min_recall = {}; raise the threshold (or num_perm, or lower min_recall)",
                    self.num_perm, self.min_recall
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shingles_read_and_write_themselves_and_bad_ones_are_named() {
        for shingling in [Shingling::Words(5), Shingling::Chars(12)] {
            assert_eq!(shingling.to_string().parse(), Ok(shingling));
        }
        assert_eq!(Settings::default().shingles.to_string(), "words:5");
        let error = |text: &str| text.parse::<Shingling>().unwrap_err().to_string();
        assert_eq!(error("lines:3"), "expected words:N or chars:N, got \"lines:3\"");
        assert_eq!(error("words"), "expected words:N or chars:N, got \"words\"");
        assert_eq!(error("words:five"), "\"five\" is not a number");
        assert_eq!(error("words:0"), "the shingle length must be at least 1");
    }

    #[test]
    fn validate_names_the_bad_parameter() {
        assert_eq!(DupParams::default().validate(), Ok(()));
        let bad = |params: DupParams, param: Param| {
            assert_eq!(params.validate().expect_err(param.name()).param, param);
        };
        let with = |settings: Settings| DupParams { settings, ..DupParams::default() };
        let default = Settings::default;
        bad(with(Settings { threshold: 0.0, ..default() }), Param::Threshold);
        bad(with(Settings { threshold: 1.5, ..default() }), Param::Threshold);
        bad(with(Settings { threshold: f64::NAN, ..default() }), Param::Threshold);
        bad(with(Settings { shingles: Shingling::Chars(0), ..default() }), Param::Shingles);
        bad(with(Settings { min_repeat: 0, ..default() }), Param::MinRepeat);
        bad(with(Settings { max_candidates: 0, ..default() }), Param::MaxCandidates);
        bad(DupParams { num_perm: 0, ..DupParams::default() }, Param::NumPerm);
        bad(DupParams { min_recall: 0.0, ..DupParams::default() }, Param::MinRecall);
        bad(DupParams { shard_bytes: Some(0), ..DupParams::default() }, Param::ShardBytes);
        // 4 MinHash values cannot catch pairs at J = 0.2 with probability 0.99.
        bad(DupParams { num_perm: 4, ..with(Settings { threshold: 0.2, ..default() }) }, Param::Threshold);
    }

    #[test]
    fn settings_give_the_default_parameters_or_say_which_setting_is_wrong() {
        assert_eq!(Settings::default().params(), Ok(DupParams::default()));
        let low = Settings { threshold: 0.01, ..Settings::default() };
        assert_eq!(
            low.params().unwrap_err().to_string(),
            "threshold: 128 MinHash values catch pairs at J = 0.01 with probability at most 0.7237, less than \
             min_recall = 0.99; raise the threshold (or num_perm, or lower min_recall)"
        );
        let zero = Settings { max_candidates: 0, ..Settings::default() };
        assert_eq!(zero.params().unwrap_err().to_string(), "max_candidates: must be at least 1");
    }
}
