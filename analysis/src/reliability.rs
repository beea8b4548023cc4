//! Are there enough models? Two measures of how stable the ranking of documents by each
//! score (mem_loss and mem_acc, [`Measure`]) is, written to `analysis/reliability.parquet`:
//!
//! - split-half: the models are split into two random halves (seeded by the run), each
//!   half ranks the documents, and the Spearman correlation of the two rankings is
//!   stepped up to all models with the Spearman-Brown formula 2r / (1 + r);
//! - convergence: the Spearman correlation between the ranking from the first m models
//!   (by id) and from all M, for m = 4, 8, 16, … and M.
//!
//! When the ranking is not stable, the same formula, inverted, says how many models would
//! make it so ([`models_for_stable`]), and the verdict gives the command that grows the run
//! to them and its expected time. Both scores use the same halves and subsets. A verdict
//! is written in `summary.json` as its [`ScoreReliability`] (fields in alphabetical order,
//! as [`crate::summary_file`] keeps them).
//!
//! Both are weight rows of [`crate::bootstrap`]: their values come from the same products
//! as the bootstrap's.

use std::fmt;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use subsets::schema::{ReliabilityTable, Table};
use subsets::seeds;

use crate::bootstrap::Weights;
use crate::measure::{ByMeasure, Measure};
use crate::stats::spearman;

/// Spearman-Brown reliability from which the ranking is called stable.
pub const STABLE: f64 = 0.9;

/// The models whose Spearman-Brown reliability would reach [`STABLE`], from the Spearman
/// `halves` between the rankings of two halves of `half` models each.
///
/// Reliability of the mean over k models, each of reliability ρ, is kρ / (1 + (k − 1)ρ),
/// so its odds R / (1 − R) grow in proportion to k: the halves' odds are those of `half`
/// models, and `STABLE`'s odds are reached at half · (STABLE / (1 − STABLE)) / (r / (1 − r))
/// models. None when the halves do not agree (r ≤ 0): then no number of models follows.
pub fn models_for_stable(halves: f64, half: u32) -> Option<u32> {
    if !(halves > 0.0 && halves.is_finite()) || half == 0 {
        return None;
    }
    let odds = |r: f64| r / (1.0 - r);
    if halves >= 1.0 {
        return Some(half);
    }
    // A hair below the exact quotient, so that a value of exactly k is not rounded to k + 1.
    let models = f64::from(half) * odds(STABLE) / odds(halves);
    Some((models - 1e-9).ceil().max(2.0) as u32)
}

/// Which weight rows hold the halves and the first-m subsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Models in the first half (the second has the rest).
    pub half: usize,
    /// m of each convergence row, the last one all models.
    pub sizes: Vec<usize>,
}

impl Layout {
    /// Rows per document that [`Layout::push_rows`] adds: two halves, then one per size.
    pub fn rows(&self) -> usize {
        2 + self.sizes.len()
    }

    /// Appends the rows to `weights`, the halves drawn from the run's `seed`.
    pub fn push_rows(weights: &mut Weights, seed: u64) -> Layout {
        let all: Vec<usize> = (0..weights.models).collect();
        Layout::push_rows_of(weights, &all, &mut seeds::rng(seed, "split-half", 0))
    }

    /// Appends the rows over the models `among` only (rows of the weights, in model order),
    /// the halves drawn from `rng`: the measures of one block of a spectrum run.
    pub fn push_rows_of(weights: &mut Weights, among: &[usize], rng: &mut impl rand::Rng) -> Layout {
        let models = among.len();
        let mut shuffled = among.to_vec();
        shuffled.shuffle(rng);
        let half = models / 2;
        weights.push_subset(shuffled[..half].iter().copied());
        weights.push_subset(shuffled[half..].iter().copied());
        let mut sizes: Vec<usize> = (2..).map(|p| 1 << p).take_while(|&m| m < models).collect();
        sizes.push(models);
        sizes.iter().for_each(|&m| weights.push_subset(among[..m].iter().copied()));
        Layout { half, sizes }
    }
}

/// The measures of both scores (mem_loss's rows, then mem_acc's), from each document's
/// values of the layout's rows (`per_doc[d]`, in [`Layout::push_rows`] order).
pub fn measure(layout: &Layout, per_doc: &[ByMeasure<Vec<f32>>]) -> ReliabilityTable {
    let mut table = ReliabilityTable::default();
    for m in Measure::BOTH {
        let column = |r: usize| -> Vec<f64> { per_doc.iter().map(|values| f64::from(values.of(m)[r])).collect() };
        let all = column(layout.rows() - 1);
        let halves = spearman(&column(0), &column(1));
        table.score.push(m.score().into());
        table.measure.push("split-half".into());
        table.models.push(layout.half as u32);
        table.spearman.push(halves);
        table.predicted.push(halves.and_then(|r| (r > -1.0).then(|| 2.0 * r / (1.0 + r))));
        table.models_for_stable.push(halves.and_then(|r| models_for_stable(r, layout.half as u32)));
        for (i, &size) in layout.sizes.iter().enumerate() {
            table.score.push(m.score().into());
            table.measure.push("convergence".into());
            table.models.push(size as u32);
            table.spearman.push(spearman(&column(2 + i), &all));
            table.predicted.push(None);
            table.models_for_stable.push(None);
        }
    }
    table
}

/// The verdict on one score's ranking: is it stable, and if not, how to grow the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReliability {
    /// The command that grows the run to `extend_to` models; null when stable.
    pub command: Option<String>,
    /// The first `models` models' ranking against all models', the last all models.
    pub convergence: Vec<ConvergencePoint>,
    /// Models of the run to plan for a stable ranking; null when stable, or when no number
    /// follows from the halves.
    pub extend_to: Option<u64>,
    /// Models in each half.
    pub half: u32,
    /// Spearman between the rankings of the two halves.
    pub halves: Option<f64>,
    /// Hours to train up to `extend_to` at the measured throughput; null when stable or
    /// unmeasured.
    pub hours: Option<f64>,
    /// Models the verdict rests on.
    pub models: usize,
    /// Models for a Spearman-Brown prediction of a stable ranking.
    pub models_for_stable: Option<u32>,
    /// The Spearman-Brown estimate for all models.
    pub predicted: Option<f64>,
    /// The score's column name: `mem_loss` or `mem_acc`.
    pub score: String,
    pub stable: bool,
}

/// Spearman between the ranking of the first `models` models and that of all models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConvergencePoint {
    pub models: u32,
    pub spearman: Option<f64>,
}

/// The summary's one line: do the models rank the documents stably? If not, how many would,
/// and how to get them.
#[derive(Debug, Clone)]
pub struct Verdict {
    measure: Measure,
    models: usize,
    half: u32,
    halves: Option<f64>,
    predicted: Option<f64>,
    /// m and Spearman of the largest convergence row below all models.
    largest_subset: Option<(u32, Option<f64>)>,
    /// [`models_for_stable`] from the halves.
    models_for_stable: Option<u32>,
    /// m and Spearman of every convergence row, the last one all models.
    convergence: Vec<(u32, Option<f64>)>,
    growth: Growth,
}

/// What growing the run means for a verdict on some of its models.
#[derive(Debug, Clone, PartialEq)]
pub struct Growth {
    /// The run directory, as the command should name it.
    pub run: String,
    /// Models of the whole run.
    pub run_models: usize,
    /// Models of the run per model the verdict rests on (more than 1 for one level of a
    /// spectrum run, whose blocks all grow together).
    pub scale: f64,
    /// The run's measured throughput, if known.
    pub models_per_hour: Option<f64>,
}

impl Verdict {
    /// The verdict on the ranking by `measure` of the `models` whose measures `table`
    /// holds, the run grown as `growth` says (None: the command names `RUN` and no time is
    /// given). None when the table has no rows of the measure's score (a table written
    /// before mem_loss had them).
    pub fn new(table: &ReliabilityTable, measure: Measure, models: usize, growth: Option<Growth>) -> Option<Verdict> {
        let rows: Vec<usize> = (0..table.len()).filter(|&i| table.score[i] == measure.score()).collect();
        let split = *rows.iter().find(|&&i| table.measure[i] == "split-half")?;
        let convergence: Vec<(u32, Option<f64>)> = rows
            .iter()
            .filter(|&&i| table.measure[i] == "convergence")
            .map(|&i| (table.models[i], table.spearman[i]))
            .collect();
        let largest_subset = convergence.iter().rfind(|(m, _)| (*m as usize) < models).copied();
        let growth =
            growth.unwrap_or(Growth { run: "RUN".into(), run_models: models, scale: 1.0, models_per_hour: None });
        Some(Verdict {
            measure,
            models,
            half: table.models[split],
            halves: table.spearman[split],
            predicted: table.predicted[split],
            largest_subset,
            models_for_stable: table.models_for_stable[split],
            convergence,
            growth,
        })
    }

    /// The verdicts on both measures' rankings, `leading` first.
    pub fn both(table: &ReliabilityTable, leading: Measure, models: usize, growth: Option<Growth>) -> Vec<Verdict> {
        leading.leading().into_iter().filter_map(|m| Verdict::new(table, m, models, growth.clone())).collect()
    }

    pub fn measure(&self) -> Measure {
        self.measure
    }

    /// The Spearman-Brown estimate for all models.
    pub fn predicted(&self) -> Option<f64> {
        self.predicted
    }

    /// Models of the run.
    pub fn models(&self) -> usize {
        self.models
    }

    fn stable(&self) -> bool {
        self.predicted.is_some_and(|p| p >= STABLE)
    }

    /// The run's total models to plan so that the verdict's models reach a stable ranking:
    /// None when the ranking is stable, or when no number follows from the halves.
    fn extend_to(&self) -> Option<usize> {
        let needed = self.models_for_stable.filter(|_| !self.stable())?;
        Some(((f64::from(needed) * self.growth.scale).ceil() as usize).max(self.growth.run_models + 1))
    }

    /// The verdict as `summary.json`'s `reliability` holds it.
    pub fn file(&self) -> ScoreReliability {
        let grow = self.extend_to();
        ScoreReliability {
            command: grow.map(|total| self.command(total)),
            convergence: self
                .convergence
                .iter()
                .map(|&(models, spearman)| ConvergencePoint { models, spearman })
                .collect(),
            extend_to: grow.map(|total| total as u64),
            half: self.half,
            halves: self.halves,
            hours: grow.and_then(|total| self.hours(total)),
            models: self.models,
            models_for_stable: self.models_for_stable,
            predicted: self.predicted,
            score: self.measure.score().to_string(),
            stable: self.stable(),
        }
    }

    fn command(&self, total: usize) -> String {
        format!("cfmem plan --extend {} --models {total}", self.growth.run)
    }

    /// Hours to train the models from the run's size to `total` at its measured rate.
    fn hours(&self, total: usize) -> Option<f64> {
        let rate = self.growth.models_per_hour?;
        Some(total.saturating_sub(self.growth.run_models) as f64 / rate)
    }
}

/// "40 min", "3.2 h", "2.5 days".
fn duration(hours: f64) -> String {
    if hours < 1.0 {
        format!("{:.0} min", (hours * 60.0).max(1.0))
    } else if hours < 48.0 {
        format!("{hours:.1} h")
    } else {
        format!("{:.1} days", hours / 24.0)
    }
}

/// A rate in models per hour: whole models from one up, two significant digits below (a
/// large model on a slow device trains 0.25 per hour, not 0).
fn per_hour(rate: f64) -> String {
    if rate >= 1.0 || rate <= 0.0 {
        return format!("{rate:.0}");
    }
    let decimals = (1.0 - rate.log10().floor()) as usize;
    format!("{rate:.decimals$}")
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let measure = self.measure;
        let (Some(halves), Some(predicted)) = (self.halves, self.predicted) else {
            return write!(
                f,
                "reliability ({measure}): too few models or scored documents to tell; grow the run, e.g. to twice its \
                 models: `{}`",
                self.command(self.growth.run_models * 2)
            );
        };
        write!(
            f,
            "reliability ({measure}): halves of {} models agree at Spearman {halves:.2}, {predicted:.2} estimated for \
             all {}",
            self.half, self.models
        )?;
        if let Some((m, Some(rho))) = self.largest_subset {
            write!(f, " (first {m} vs all: {rho:.2})")?;
        }
        if self.stable() {
            return write!(f, "; enough models for a stable ranking");
        }
        write!(f, "; not enough models for a stable ranking (below {STABLE})")?;
        let (Some(needed), Some(total)) = (self.models_for_stable, self.extend_to()) else {
            return write!(
                f,
                ": the halves do not agree, so the models needed cannot be estimated from them (is anything \
                 memorized? see the diagnosis); to look further, double the run: `{}`",
                self.command(self.growth.run_models * 2)
            );
        };
        let these = if self.growth.scale > 1.0 { " of this level" } else { "" };
        write!(
            f,
            ": about {needed} models{these} would reach it (Spearman-Brown from the halves): `{}`",
            self.command(total)
        )?;
        match (self.hours(total), self.growth.models_per_hour) {
            (Some(hours), Some(rate)) => write!(
                f,
                ", then `cfmem run`: {} models more, about {} at this run's {} models per hour",
                total - self.growth.run_models,
                duration(hours),
                per_hour(rate)
            ),
            _ => write!(f, ", then `cfmem run`: {} models more", total - self.growth.run_models),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_two_disjoint_halves_then_first_m_models() {
        let mut weights = Weights::new(10);
        let layout = Layout::push_rows(&mut weights, 3);
        assert_eq!(layout, Layout { half: 5, sizes: vec![4, 8, 10] });
        assert_eq!(weights.rows(), layout.rows());
        let row = |r: usize| &weights.values[r * 10..(r + 1) * 10];
        for m in 0..10 {
            assert_eq!(row(0)[m] + row(1)[m], 1.0, "model {m} is in exactly one half");
        }
        assert_eq!(row(0).iter().sum::<f32>(), 5.0);
        assert_eq!(row(2), [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(row(4).iter().all(|&w| w == 1.0));
    }

    #[test]
    fn measures_and_verdict_from_hand_made_values() {
        let layout = Layout { half: 4, sizes: vec![4, 8] };
        // mem_acc: halves rank 5 documents 1 2 3 4 5 and 2 1 4 3 5 (rho 0.8); first 4
        // equals all. mem_loss: the halves agree, and the first 4 rank them in reverse.
        let per_doc: Vec<ByMeasure<Vec<f32>>> = (0..5)
            .map(|d| {
                let second = [2.0, 1.0, 4.0, 3.0, 5.0][d];
                let d = d as f32;
                ByMeasure { mem_acc: vec![d, second, d, d], mem_loss: vec![d, d, -d, d] }
            })
            .collect();
        let table = measure(&layout, &per_doc);
        assert_eq!(table.score, ["mem_loss", "mem_loss", "mem_loss", "mem_acc", "mem_acc", "mem_acc"]);
        assert_eq!(table.measure, ["split-half", "convergence", "convergence"].repeat(2));
        assert_eq!(table.models, [4, 4, 8, 4, 4, 8]);
        assert_eq!(table.spearman[..3], [Some(1.0), Some(-1.0), Some(1.0)]);
        assert_eq!((table.predicted[0], table.models_for_stable[0]), (Some(1.0), Some(4)));
        assert!((table.spearman[3].unwrap() - 0.8).abs() < 1e-12);
        assert!((table.predicted[3].unwrap() - 1.6 / 1.8).abs() < 1e-12);
        assert_eq!(table.spearman[4..], [Some(1.0), Some(1.0)]);
        // Odds 0.8 / 0.2 = 4 at 4 models; odds 9 at 4 × 9 / 4 = 9 models.
        assert_eq!(table.models_for_stable[3..], [Some(9), None, None]);
        let line = Verdict::new(&table, Measure::Accuracy, 8, None).unwrap().to_string();
        assert_eq!(
            line,
            "reliability (mem_acc): halves of 4 models agree at Spearman 0.80, 0.89 estimated for all 8 \
             (first 4 vs all: 1.00); not enough models for a stable ranking (below 0.9): about 9 models would reach it \
             (Spearman-Brown from the halves): `cfmem plan --extend RUN --models 9`, then `cfmem run`: 1 models more"
        );
        let line = Verdict::new(&table, Measure::Loss, 8, None).unwrap().to_string();
        assert_eq!(
            line,
            "reliability (mem_loss): halves of 4 models agree at Spearman 1.00, 1.00 estimated for all 8 \
             (first 4 vs all: -1.00); enough models for a stable ranking"
        );
        let growth = Growth { run: "runs/a".into(), run_models: 16, scale: 2.0, models_per_hour: Some(4.0) };
        let line = Verdict::new(&table, Measure::Accuracy, 8, Some(growth)).unwrap().to_string();
        assert!(
            line.ends_with(
                "about 9 models of this level would reach it (Spearman-Brown from the halves): \
                 `cfmem plan --extend runs/a --models 18`, then `cfmem run`: 2 models more, about 30 min at this \
                 run's 4 models per hour"
            ),
            "{line}"
        );
        let file = Verdict::new(&table, Measure::Accuracy, 8, None).unwrap().file();
        assert_eq!(file.score, "mem_acc");
        assert_eq!(file.models_for_stable, Some(9));
        assert_eq!(file.command.as_deref(), Some("cfmem plan --extend RUN --models 9"));
        assert!(!file.stable);
        let point = |models| ConvergencePoint { models, spearman: Some(1.0) };
        assert_eq!(file.convergence, [point(4), point(8)]);
        let verdicts = Verdict::both(&table, Measure::Loss, 8, None);
        assert_eq!(verdicts.iter().map(Verdict::measure).collect::<Vec<_>>(), [Measure::Loss, Measure::Accuracy]);
        // A table written before mem_loss had rows (schema version 2) has only mem_acc's.
        let old = ReliabilityTable { score: vec!["mem_acc".into(); 6], ..table.clone() };
        assert!(Verdict::new(&old, Measure::Loss, 8, None).is_none());
    }

    #[test]
    fn models_for_a_stable_ranking_invert_spearman_brown() {
        // Halves of 8 at 0.5: odds 1, so odds 9 at 72 models; the prediction for 72 is 0.9.
        assert_eq!(models_for_stable(0.5, 8), Some(72));
        let reliability = |r1: f64, k: f64| k * r1 / (1.0 + (k - 1.0) * r1);
        for &(r1, half) in &[(0.02, 8u32), (0.1, 4), (0.3, 16), (0.01, 50)] {
            let halves = reliability(r1, f64::from(half));
            let needed = models_for_stable(halves, half).unwrap();
            assert!(reliability(r1, f64::from(needed)) >= STABLE - 1e-12, "{r1} {half}: {needed}");
            assert!(reliability(r1, f64::from(needed - 1)) < STABLE, "{r1} {half}: {needed} is the fewest");
        }
        assert_eq!(models_for_stable(0.0, 8), None);
        assert_eq!(models_for_stable(-0.2, 8), None);
        assert_eq!(models_for_stable(f64::NAN, 8), None);
        assert_eq!(models_for_stable(0.95, 8), Some(4), "already enough: fewer than the run");
    }

    #[test]
    fn a_slow_rate_keeps_two_significant_digits() {
        assert_eq!(per_hour(4.4), "4");
        assert_eq!(per_hour(0.25), "0.25");
        assert_eq!(per_hour(0.0304), "0.030");
    }
}
