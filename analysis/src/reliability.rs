//! Are there enough models? Two measures of how stable the ranking of documents by mem_acc
//! is, written to `analysis/reliability.parquet`:
//!
//! - split-half: the models are split into two random halves (seeded by the run), each
//!   half ranks the documents, and the Spearman correlation of the two rankings is
//!   stepped up to all models with the Spearman-Brown formula 2r / (1 + r);
//! - convergence: the Spearman correlation between the ranking from the first m models
//!   (by id) and from all M, for m = 4, 8, 16, … and M.
//!
//! Both are weight rows of [`crate::bootstrap`]: their mem_acc values come from the same
//! products as the bootstrap's.

use std::fmt;

use rand::seq::SliceRandom;

use subsets::schema::ReliabilityTable;
use subsets::seeds;

use crate::bootstrap::Weights;
use crate::stats::spearman;

/// Spearman-Brown reliability from which the ranking is called stable.
const STABLE: f64 = 0.9;

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

/// The measures, from each document's values of the layout's rows (`per_doc[d]`, in
/// [`Layout::push_rows`] order).
pub fn measure(layout: &Layout, per_doc: &[Vec<f32>]) -> ReliabilityTable {
    let column = |r: usize| -> Vec<f64> { per_doc.iter().map(|values| f64::from(values[r])).collect() };
    let all = column(layout.rows() - 1);
    let mut table = ReliabilityTable::default();
    let halves = spearman(&column(0), &column(1));
    table.measure.push("split-half".into());
    table.models.push(layout.half as u32);
    table.spearman.push(halves);
    table.predicted.push(halves.and_then(|r| (r > -1.0).then(|| 2.0 * r / (1.0 + r))));
    for (i, &m) in layout.sizes.iter().enumerate() {
        table.measure.push("convergence".into());
        table.models.push(m as u32);
        table.spearman.push(spearman(&column(2 + i), &all));
        table.predicted.push(None);
    }
    table
}

/// The summary's one line: do the models rank the documents stably?
#[derive(Debug, Clone)]
pub struct Verdict {
    models: usize,
    half: u32,
    halves: Option<f64>,
    predicted: Option<f64>,
    /// m and Spearman of the largest convergence row below all models.
    largest_subset: Option<(u32, Option<f64>)>,
}

impl Verdict {
    pub fn new(table: &ReliabilityTable, models: usize) -> Verdict {
        let largest_subset = (0..table.measure.len())
            .rfind(|&i| table.measure[i] == "convergence" && (table.models[i] as usize) < models)
            .map(|i| (table.models[i], table.spearman[i]));
        Verdict {
            models,
            half: table.models[0],
            halves: table.spearman[0],
            predicted: table.predicted[0],
            largest_subset,
        }
    }

    /// Models of the run.
    pub fn models(&self) -> usize {
        self.models
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(halves), Some(predicted)) = (self.halves, self.predicted) else {
            return write!(
                f,
                "reliability: too few models or scored documents to tell; grow the run with `cfmem plan --extend RUN --models M2`"
            );
        };
        write!(
            f,
            "reliability: halves of {} models agree at Spearman {halves:.2}, {predicted:.2} estimated for all {}",
            self.half, self.models
        )?;
        if let Some((m, Some(rho))) = self.largest_subset {
            write!(f, " (first {m} vs all: {rho:.2})")?;
        }
        if predicted >= STABLE {
            write!(f, "; enough models for a stable ranking")
        } else {
            write!(
                f,
                "; not enough models for a stable ranking (below {STABLE}): grow the run with `cfmem plan --extend RUN --models M2`"
            )
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
        // Halves rank 5 documents 1 2 3 4 5 and 2 1 4 3 5 (rho 0.8); first 4 equals all.
        let per_doc: Vec<Vec<f32>> = (0..5)
            .map(|d| {
                let second = [2.0, 1.0, 4.0, 3.0, 5.0][d];
                vec![d as f32, second, d as f32, d as f32]
            })
            .collect();
        let table = measure(&layout, &per_doc);
        assert_eq!(table.measure, ["split-half", "convergence", "convergence"]);
        assert_eq!(table.models, [4, 4, 8]);
        assert!((table.spearman[0].unwrap() - 0.8).abs() < 1e-12);
        assert!((table.predicted[0].unwrap() - 1.6 / 1.8).abs() < 1e-12);
        assert_eq!(table.spearman[1..], [Some(1.0), Some(1.0)]);
        let line = Verdict::new(&table, 8).to_string();
        assert_eq!(
            line,
            "reliability: halves of 4 models agree at Spearman 0.80, 0.89 estimated for all 8 \
             (first 4 vs all: 1.00); not enough models for a stable ranking (below 0.9): grow the run with `cfmem plan --extend RUN --models M2`"
        );
    }
}
