//! mem_acc and mem_loss recomputed under many weightings of the models at once: bootstrap
//! resamples (each model weighted by how often a resample drew it), halves of the models,
//! the first m models. One resample is shared by every document, as a bootstrap over models
//! must be.
//!
//! For weights w (rows r) and a document d, with I the IN indicator and a the accuracy,
//!
//! ```text
//! mem_r(d) = Σ_m w[r,m]·I[m,d]·a[m,d] / Σ_m w[r,m]·I[m,d]
//!          − Σ_m w[r,m]·(1−I[m,d])·a[m,d] / Σ_m w[r,m]·(1−I[m,d])
//! ```
//!
//! and mem_loss the same with the loss l, OUT side first. So all rows and documents are one
//! product of the weights (R × M) with the stacked matrix [I∘a | I | a | I∘l | l]
//! (M × 5N), computed in blocks of documents: memory is a block per thread, never R × N.

use rand::RngExt;
use rayon::prelude::*;

use crate::gemm;
use crate::measure::ByMeasure;
use crate::per_model::ModelValues;
use crate::stats::quantile;

/// Documents per block of the product.
const BLOCK: usize = 256;

/// Rows of non-negative weights over models (integer counts, exact in f32).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub models: usize,
    /// `rows × models`, row-major.
    pub values: Vec<f32>,
}

impl Weights {
    pub fn new(models: usize) -> Weights {
        Weights { models, values: Vec::new() }
    }

    pub fn rows(&self) -> usize {
        self.values.len() / self.models.max(1)
    }

    /// Adds a row with weight 1 for the models (rows of [`ModelValues`]) in `chosen`.
    pub fn push_subset(&mut self, chosen: impl IntoIterator<Item = usize>) {
        let mut row = vec![0.0; self.models];
        chosen.into_iter().for_each(|m| row[m] = 1.0);
        self.values.extend(row);
    }

    /// Adds `replicates` bootstrap rows: replicate b draws `models` models with
    /// replacement, from the generator `rng_of(b)`.
    pub fn push_bootstrap<R: rand::Rng>(&mut self, replicates: usize, rng_of: impl Fn(u64) -> R) {
        let all: Vec<usize> = (0..self.models).collect();
        self.push_bootstrap_of(replicates, &all, rng_of);
    }

    /// Adds `replicates` bootstrap rows over the models `among` only (the others weigh 0):
    /// replicate b draws as many of them with replacement, from `rng_of(b)`.
    pub fn push_bootstrap_of<R: rand::Rng>(&mut self, replicates: usize, among: &[usize], rng_of: impl Fn(u64) -> R) {
        for b in 0..replicates {
            let mut rng = rng_of(b as u64);
            let mut row = vec![0.0; self.models];
            for _ in 0..among.len() {
                row[among[rng.random_range(0..among.len())]] += 1.0;
            }
            self.values.extend(row);
        }
    }
}

/// Calls `each` with every document's mem_acc and mem_loss under every weight row (one
/// value per row, NaN where a side has no weight) and returns the results in document
/// order. `values` must hold losses.
pub fn map_documents<T: Send>(
    values: &ModelValues,
    weights: &Weights,
    each: impl Fn(usize, ByMeasure<&[f32]>) -> T + Sync,
) -> Vec<T> {
    let (models, docs, rows) = (values.models.len(), values.docs, weights.rows());
    assert_eq!(weights.models, models, "one weight per model");
    assert_eq!(values.kept.len(), docs, "every document's accuracy is kept");
    let loss = values.loss.as_deref().expect("the bootstrap reads losses");
    let totals: Vec<f32> = weights.values.chunks(models.max(1)).map(|row| row.iter().sum()).collect();
    let starts: Vec<usize> = (0..docs).step_by(BLOCK).collect();
    starts
        .par_iter()
        .flat_map_iter(|&start| {
            let width = BLOCK.min(docs - start);
            let stride = 5 * width;
            let mut stacked = vec![0.0f32; models * stride];
            for (m, row) in stacked.chunks_mut(stride).enumerate() {
                let acc = &values.acc_row(m)[start..start + width];
                let loss = &loss[m * docs + start..m * docs + start + width];
                let member = &values.member_row(m)[start..start + width];
                for j in 0..width {
                    let inside = if member[j] { 1.0 } else { 0.0 };
                    row[j] = inside * acc[j];
                    row[width + j] = inside;
                    row[2 * width + j] = acc[j];
                    row[3 * width + j] = inside * loss[j];
                    row[4 * width + j] = loss[j];
                }
            }
            let mut product = vec![0.0f32; rows * stride];
            gemm::matmul(&weights.values, &stacked, &mut product, rows, models, stride);
            let (mut mem_acc, mut mem_loss) = (vec![0.0f32; rows], vec![0.0f32; rows]);
            (0..width)
                .map(|j| {
                    for r in 0..rows {
                        let out = &product[r * stride..(r + 1) * stride];
                        let weight_in = out[width + j];
                        let weight_out = totals[r] - weight_in;
                        let both_sides = weight_in > 0.5 && weight_out > 0.5;
                        let (acc_in, acc_all) = (out[j], out[2 * width + j]);
                        let (loss_in, loss_all) = (out[3 * width + j], out[4 * width + j]);
                        mem_acc[r] =
                            if both_sides { acc_in / weight_in - (acc_all - acc_in) / weight_out } else { f32::NAN };
                        mem_loss[r] =
                            if both_sides { (loss_all - loss_in) / weight_out - loss_in / weight_in } else { f32::NAN };
                    }
                    each(start + j, ByMeasure { mem_loss: &mem_loss, mem_acc: &mem_acc })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The 95% percentile interval of the finite replicate values, None when there are none.
pub fn percentile_interval(replicates: &[f32]) -> Option<(f64, f64)> {
    let mut finite: Vec<f64> = replicates.iter().filter(|v| v.is_finite()).map(|&v| f64::from(v)).collect();
    finite.sort_by(f64::total_cmp);
    Some((quantile(&finite, 0.025)?, quantile(&finite, 0.975)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two documents, four models: document 0 IN for models 0 and 1, document 1 for 1 and 2.
    fn four_models() -> ModelValues {
        let mut values = ModelValues::new(vec![0, 1, 2, 3], 2, vec![0, 1], true);
        values.acc = vec![0.8, 0.5, 0.6, 0.5, 0.2, 0.5, 0.4, 0.1];
        values.loss = Some(vec![1.0, 2.0, 1.5, 2.5, 3.0, 2.0, 2.5, 4.0]);
        values.member = vec![true, false, true, true, false, true, false, false];
        values
    }

    #[test]
    fn weighted_mem_acc_and_mem_loss_match_hand_computation() {
        let values = four_models();
        let mut weights = Weights::new(4);
        weights.push_subset(0..4);
        weights.values.extend([2.0, 0.0, 1.0, 0.0]);
        weights.push_subset([0, 1]);
        let rows = map_documents(&values, &weights, |doc, row| (doc, row.mem_acc.to_vec(), row.mem_loss.to_vec()));
        let (doc0, doc1) = (&rows[0].1, &rows[1].1);
        assert_eq!((rows[0].0, rows[1].0), (0, 1));
        // All models: doc 0 IN 0.8, 0.6 / OUT 0.2, 0.4 → 0.4; doc 1 IN 0.5, 0.5 / OUT 0.5, 0.1 → 0.2.
        assert!((doc0[0] - 0.4).abs() < 1e-6 && (doc1[0] - 0.2).abs() < 1e-6, "{rows:?}");
        // Model 0 twice, model 2 once: doc 0 IN 0.8, OUT 0.2; doc 1 IN 0.5 (model 1 has weight 0),
        // OUT 0.5 (model 0 twice) → 0.6 and 0.0.
        assert!((doc0[1] - 0.6).abs() < 1e-6 && doc1[1].abs() < 1e-6, "{rows:?}");
        // Models 0 and 1 only: doc 0 has no OUT side.
        assert!(doc0[2].is_nan() && (doc1[2] - 0.0).abs() < 1e-6, "{rows:?}");
        // mem_loss = OUT − IN: doc 0 all models (3.0 + 2.5) / 2 − (1.0 + 1.5) / 2 = 1.5; doc 1
        // (2.0 + 4.0) / 2 − (2.0 + 2.5) / 2 = 0.75; model 0 twice, model 2 once: doc 0
        // 3.0 − 1.0 = 2.0, doc 1 2.0 − 2.0 = 0; models 0 and 1: doc 1 2.0 − 2.5 = −0.5.
        let (loss0, loss1) = (&rows[0].2, &rows[1].2);
        assert!((loss0[0] - 1.5).abs() < 1e-6 && (loss1[0] - 0.75).abs() < 1e-6, "{rows:?}");
        assert!((loss0[1] - 2.0).abs() < 1e-6 && loss1[1].abs() < 1e-6, "{rows:?}");
        assert!(loss0[2].is_nan() && (loss1[2] + 0.5).abs() < 1e-6, "{rows:?}");
    }

    #[test]
    fn bootstrap_rows_draw_every_model_count_once_per_model() {
        let mut weights = Weights::new(5);
        weights.push_bootstrap(3, |b| subsets::seeds::rng(7, "bootstrap", b));
        assert_eq!(weights.rows(), 3);
        assert!(weights.values.chunks(5).all(|row| row.iter().sum::<f32>() == 5.0));
        let mut again = Weights::new(5);
        again.push_bootstrap(3, |b| subsets::seeds::rng(7, "bootstrap", b));
        assert_eq!(weights, again);
    }

    #[test]
    fn interval_of_uniform_replicates() {
        let replicates: Vec<f32> = (0..=200).map(|i| i as f32 / 200.0).chain([f32::NAN]).collect();
        let (lo, hi) = percentile_interval(&replicates).unwrap();
        assert!((lo - 0.025).abs() < 1e-6 && (hi - 0.975).abs() < 1e-6, "{lo} {hi}");
        assert_eq!(percentile_interval(&[f32::NAN]), None);
    }
}
