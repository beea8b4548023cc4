//! The two memorization scores every analysis computes, and which of them ranks.
//!
//! - `mem_loss` (the founding definition): the mean per-token loss (nats) of the models
//!   that did not train on a document minus that of the models that did. Positive: training
//!   on the document lowered its loss. It is continuous, so its per-model noise is small and
//!   a stable ranking needs fewer models.
//! - `mem_acc`: the mean per-token accuracy of the models that trained on the document
//!   minus that of the models that did not; a thresholded count (is the argmax right?).
//!
//! Both are in every table; [`Measure`] says which one orders the lists, leads the
//! reliability verdict and is compared across checkpoints, and [`Measure::columns`] picks
//! its columns of `scores.parquet`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use subsets::schema::ScoreTable;

/// A memorization score: what `--rank-by` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// `mem_loss`, in nats per token: the default, the founding definition.
    #[default]
    Loss,
    /// `mem_acc`, in per-token accuracy.
    Accuracy,
}

impl Measure {
    /// Both measures, loss first.
    pub const BOTH: [Measure; 2] = [Measure::Loss, Measure::Accuracy];

    /// The score's column name: `mem_loss` or `mem_acc`.
    pub fn score(self) -> &'static str {
        match self {
            Measure::Loss => "mem_loss",
            Measure::Accuracy => "mem_acc",
        }
    }

    /// The measure whose column is `score`, None for another name.
    pub fn of_score(score: &str) -> Option<Measure> {
        Measure::BOTH.into_iter().find(|m| m.score() == score)
    }

    /// The option's value: `loss` or `accuracy`.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Loss => "loss",
            Measure::Accuracy => "accuracy",
        }
    }

    /// The other measure.
    pub fn other(self) -> Measure {
        match self {
            Measure::Loss => Measure::Accuracy,
            Measure::Accuracy => Measure::Loss,
        }
    }

    /// This measure, then the other: the order in which views show both.
    pub fn leading(self) -> [Measure; 2] {
        [self, self.other()]
    }

    /// The unit a value of the score is in.
    pub fn unit(self) -> &'static str {
        match self {
            Measure::Loss => "nats per token",
            Measure::Accuracy => "per-token accuracy",
        }
    }
}

/// One score's columns of `scores.parquet`: estimate, standard error and bootstrap interval
/// (null in a file analyzed before mem_loss had one).
#[derive(Debug, Clone, Copy)]
pub struct ScoreColumns<'a> {
    pub value: &'a [Option<f64>],
    pub se: &'a [Option<f64>],
    pub lo: &'a [Option<f64>],
    pub hi: &'a [Option<f64>],
}

impl Measure {
    /// This score's columns of `scores`.
    pub fn columns(self, scores: &ScoreTable) -> ScoreColumns<'_> {
        match self {
            Measure::Loss => ScoreColumns {
                value: &scores.mem_loss,
                se: &scores.mem_loss_se,
                lo: &scores.mem_loss_lo,
                hi: &scores.mem_loss_hi,
            },
            Measure::Accuracy => ScoreColumns {
                value: &scores.mem_acc,
                se: &scores.mem_acc_se,
                lo: &scores.mem_acc_lo,
                hi: &scores.mem_acc_hi,
            },
        }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.score())
    }
}

impl FromStr for Measure {
    type Err = String;

    fn from_str(value: &str) -> Result<Measure, String> {
        match value {
            "loss" => Ok(Measure::Loss),
            "accuracy" => Ok(Measure::Accuracy),
            other => {
                Err(format!("unknown measure \"{other}\": the measures are loss (mem_loss) and accuracy (mem_acc)"))
            }
        }
    }
}

/// One value per measure.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ByMeasure<T> {
    pub mem_loss: T,
    pub mem_acc: T,
}

impl<T> ByMeasure<T> {
    /// The values `value(m)` of both measures.
    pub fn from_fn(mut value: impl FnMut(Measure) -> T) -> ByMeasure<T> {
        ByMeasure { mem_loss: value(Measure::Loss), mem_acc: value(Measure::Accuracy) }
    }

    pub fn of(&self, measure: Measure) -> &T {
        match measure {
            Measure::Loss => &self.mem_loss,
            Measure::Accuracy => &self.mem_acc,
        }
    }

    pub fn of_mut(&mut self, measure: Measure) -> &mut T {
        match measure {
            Measure::Loss => &mut self.mem_loss,
            Measure::Accuracy => &mut self.mem_acc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        assert_eq!("loss".parse::<Measure>(), Ok(Measure::Loss));
        assert_eq!("accuracy".parse::<Measure>(), Ok(Measure::Accuracy));
        let err = "acc".parse::<Measure>().unwrap_err();
        assert!(err.contains("unknown measure \"acc\"") && err.contains("loss (mem_loss)"), "{err}");
        assert_eq!(Measure::default(), Measure::Loss, "loss ranks unless asked otherwise");
        assert_eq!(Measure::Accuracy.leading(), [Measure::Accuracy, Measure::Loss]);
        assert_eq!(Measure::of_score("mem_acc"), Some(Measure::Accuracy));
        assert_eq!(serde_json::to_string(&Measure::Loss).unwrap(), "\"loss\"");
        let both = ByMeasure::from_fn(|m| m.score().len());
        assert_eq!(serde_json::to_value(both).unwrap(), serde_json::json!({"mem_loss": 8, "mem_acc": 7}));
    }
}
