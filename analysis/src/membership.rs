//! Each document's membership exposure: how well a model's own output tells whether the
//! document was in its training set, measured on the run's models
//! (`analysis/membership.parquet`), and what the summary says of it
//! ([`MembershipSummary`]).
//!
//! The statistic is LiRA's per-example statistic for sequences: per (model, document), the
//! mean per-token log-likelihood s = −nll / tokens (the log of the geometric mean of the
//! document's token probabilities). Per document, the statistics of the models that
//! trained on it (IN) and of those that did not (OUT) are each summarized as a Gaussian:
//! its center the median (as in the LiRA reference code), its spread
//!
//! - the standard deviation of the document's own values, when every scored document has at
//!   least [`PER_DOCUMENT_VARIANCE`] models on each side;
//! - otherwise one standard deviation per side pooled over the documents (within-document
//!   deviations from each document's mean: Σ_d Σ_i (s − s̄_d)² / Σ_d (n_d − 1)), the "fixed
//!   variance" that the LiRA paper finds better with few shadow models.
//!
//! The document's exposure is the separation of the two sides: d′ = (μ_in − μ_out) /
//! √((σ_in² + σ_out²) / 2), the ranking to show, and the AUC of its IN values against its OUT
//! values (P(s_in > s_out) + ½ P(s_in = s_out)), which saturates at 1 once the sides no
//! longer overlap while d′ still ranks the documents.
//!
//! It works on the per-model values the analysis already read; it reads no files.

use std::io::Write;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use subsets::schema::{CorpusTable, MembershipTable};

use crate::per_model::ModelValues;

/// Models a side from which every document's own variance is used.
pub const PER_DOCUMENT_VARIANCE: usize = 32;
/// The most exposed documents the summary names.
const MOST_EXPOSED: usize = 5;

/// The zlib-compressed length of `text`'s UTF-8 bytes (level 6; zlib-rs, whose streams may
/// differ from C zlib's by a byte or two): the denominator of the zlib attack.
pub fn zlib_bytes(text: &str) -> u32 {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(text.as_bytes()).expect("writing to memory");
    encoder.finish().expect("writing to memory").len() as u32
}

/// How the spread of each side was estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variance {
    /// Every document's own standard deviation per side.
    PerDocument,
    /// One standard deviation per side, pooled over the documents.
    Fixed,
}

/// A document's values on one side, sorted, with running sums.
pub(crate) struct Side {
    pub(crate) sorted: Vec<f64>,
    sum: f64,
    squares: f64,
}

impl Side {
    pub(crate) fn new(mut values: Vec<f64>) -> Side {
        values.sort_by(f64::total_cmp);
        Side { sum: values.iter().sum(), squares: values.iter().map(|v| v * v).sum(), sorted: values }
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The median without the value at rank `without` (None: all values).
    pub(crate) fn median(&self, without: Option<usize>) -> Option<f64> {
        let n = self.len() - usize::from(without.is_some());
        if n == 0 {
            return None;
        }
        // The i-th remaining value in order.
        let at = |i: usize| self.sorted[if without.is_some_and(|r| i >= r) { i + 1 } else { i }];
        Some(if n % 2 == 1 { at(n / 2) } else { (at(n / 2 - 1) + at(n / 2)) / 2.0 })
    }

    /// The sample standard deviation without the value at rank `without`.
    pub(crate) fn sd(&self, without: Option<usize>) -> Option<f64> {
        let (mut n, mut sum, mut squares) = (self.len() as f64, self.sum, self.squares);
        if let Some(r) = without {
            let v = self.sorted[r];
            (n, sum, squares) = (n - 1.0, sum - v, squares - v * v);
        }
        (n >= 2.0).then(|| ((squares - sum * sum / n) / (n - 1.0)).max(0.0).sqrt())
    }

    /// The rank of `value` (one of the side's).
    pub(crate) fn rank(&self, value: f64) -> usize {
        self.sorted.partition_point(|&v| v < value)
    }
}

/// The AUC of sorted `inside` against sorted `outside`: P(in > out) + ½ P(in = out), by one
/// merge of the two.
fn auc(inside: &[f64], outside: &[f64]) -> Option<f64> {
    if inside.is_empty() || outside.is_empty() {
        return None;
    }
    // For each IN value x: the OUT values below it, and those at most x.
    let (mut below, mut at_most, mut wins) = (0, 0, 0.0);
    for &x in inside {
        while below < outside.len() && outside[below] < x {
            below += 1;
        }
        at_most = at_most.max(below);
        while at_most < outside.len() && outside[at_most] <= x {
            at_most += 1;
        }
        wins += below as f64 + (at_most - below) as f64 / 2.0;
    }
    Some(wins / (inside.len() as f64 * outside.len() as f64))
}

/// One document's row of `membership.parquet`, less its identity.
struct Exposure {
    mu_in: Option<f64>,
    sd_in: Option<f64>,
    mu_out: Option<f64>,
    sd_out: Option<f64>,
    exposure_d: Option<f64>,
    exposure_auc: Option<f64>,
    zlib_bytes: u32,
}

/// `membership.parquet` from the models' losses in `values` (which must hold them), and the
/// variance rule it used. Held-out documents (no IN side) have nulls. Two parallel passes
/// over the documents, neither keeping every document's values: the sides' sums (for the
/// pooled variance), then each document's sorted sides.
pub fn table(values: &ModelValues, corpus: &CorpusTable) -> (MembershipTable, Variance) {
    let loss = values.loss.as_deref().expect("membership reads losses");
    let width = values.kept.len();
    let side = |c: usize, inside: bool| -> Vec<f64> {
        let doc = values.kept[c] as usize;
        let rows = (0..values.models.len()).filter(|&row| values.member_row(row)[doc] == inside);
        rows.map(|row| -f64::from(loss[row * width + c])).collect()
    };
    // Pass 1: per document and side [OUT, IN], the count and the squares about the mean.
    let moments: Vec<[(usize, f64); 2]> = (0..width)
        .into_par_iter()
        .map(|c| {
            [false, true].map(|inside| {
                let v = side(c, inside);
                let (sum, squares) = v.iter().fold((0.0, 0.0), |(s, q), x| (s + x, q + x * x));
                (v.len(), if v.is_empty() { 0.0 } else { (squares - sum * sum / v.len() as f64).max(0.0) })
            })
        })
        .collect();
    let scored = |c: usize| moments[c].iter().all(|&(n, _)| n > 0);
    let per_document =
        (0..width).filter(|&c| scored(c)).all(|c| moments[c].iter().all(|&(n, _)| n >= PER_DOCUMENT_VARIANCE));
    let variance = if per_document { Variance::PerDocument } else { Variance::Fixed };
    let pooled = |i: usize| -> Option<f64> {
        let (squares, dof) = (0..width)
            .filter(|&c| scored(c) && moments[c][i].0 >= 2)
            .fold((0.0, 0.0), |(squares, dof), c| (squares + moments[c][i].1, dof + moments[c][i].0 as f64 - 1.0));
        (dof > 0.0).then(|| (squares / dof).sqrt())
    };
    let (pooled_out, pooled_in) = (pooled(0), pooled(1));

    // Pass 2: per document, its sorted sides.
    let rows: Vec<Exposure> = (0..width)
        .into_par_iter()
        .map(|c| {
            let [outside, inside] = [false, true].map(|inside| Side::new(side(c, inside)));
            let (sd_in, sd_out) = match (variance, scored(c)) {
                (_, false) => (None, None),
                (Variance::PerDocument, true) => (inside.sd(None), outside.sd(None)),
                (Variance::Fixed, true) => (pooled_in, pooled_out),
            };
            let (mu_in, mu_out) = (inside.median(None), outside.median(None));
            let exposure_d = match (mu_in, mu_out, sd_in, sd_out) {
                (Some(mu_in), Some(mu_out), Some(sd_in), Some(sd_out)) => {
                    let spread = ((sd_in * sd_in + sd_out * sd_out) / 2.0).sqrt();
                    (spread > 0.0).then(|| (mu_in - mu_out) / spread)
                }
                _ => None,
            };
            Exposure {
                mu_in,
                sd_in,
                mu_out,
                sd_out,
                exposure_d,
                exposure_auc: auc(&inside.sorted, &outside.sorted),
                zlib_bytes: zlib_bytes(&corpus.text[values.kept[c] as usize]),
            }
        })
        .collect();
    let mut table = MembershipTable::default();
    for (c, row) in rows.into_iter().enumerate() {
        let doc = values.kept[c] as usize;
        table.doc.push(doc as u32);
        table.doc_id.push(corpus.doc_id[doc].clone());
        table.source.push(corpus.source[doc].clone());
        table.mu_in.push(row.mu_in);
        table.sd_in.push(row.sd_in);
        table.mu_out.push(row.mu_out);
        table.sd_out.push(row.sd_out);
        table.exposure_d.push(row.exposure_d);
        table.exposure_auc.push(row.exposure_auc);
        table.zlib_bytes.push(row.zlib_bytes);
    }
    (table, variance)
}

/// A document the summary names as exposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposed {
    pub id: String,
    pub source: Option<String>,
    pub exposure_d: f64,
    pub exposure_auc: Option<f64>,
}

/// What the views say of the documents' exposure: `summary.json`'s `membership`.
///
/// JSON: `{"statistic": "mean log-likelihood per token", "variance": "per-document" |
/// "fixed", "per_document_variance_from": 32, "documents": n, "median_exposure_d",
/// "median_exposure_auc", "saturated": share of documents at AUC 1, "most_exposed": [{id,
/// source, exposure_d, exposure_auc}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipSummary {
    pub statistic: String,
    pub variance: Variance,
    pub per_document_variance_from: usize,
    /// Documents with an exposure.
    pub documents: usize,
    pub median_exposure_d: Option<f64>,
    pub median_exposure_auc: Option<f64>,
    /// Share of those documents whose IN and OUT values do not overlap (AUC 1).
    pub saturated: Option<f64>,
    pub most_exposed: Vec<Exposed>,
}

impl MembershipSummary {
    pub fn new(table: &MembershipTable, variance: Variance) -> MembershipSummary {
        let mut ranked: Vec<usize> = (0..table.doc.len()).filter(|&i| table.exposure_d[i].is_some()).collect();
        let d = |i: usize| table.exposure_d[i].expect("filtered");
        ranked.sort_by(|&a, &b| d(b).total_cmp(&d(a)).then(a.cmp(&b)));
        let exposures: Vec<f64> = ranked.iter().map(|&i| d(i)).collect();
        let aucs: Vec<f64> = ranked.iter().filter_map(|&i| table.exposure_auc[i]).collect();
        let saturated =
            (!aucs.is_empty()).then(|| aucs.iter().filter(|&&a| a >= 1.0).count() as f64 / aucs.len() as f64);
        MembershipSummary {
            statistic: "mean log-likelihood per token".to_string(),
            variance,
            per_document_variance_from: PER_DOCUMENT_VARIANCE,
            documents: ranked.len(),
            median_exposure_d: Side::new(exposures).median(None),
            median_exposure_auc: Side::new(aucs).median(None),
            saturated,
            most_exposed: ranked
                .iter()
                .take(MOST_EXPOSED)
                .map(|&i| Exposed {
                    id: table.doc_id[i].clone(),
                    source: table.source[i].clone(),
                    exposure_d: d(i),
                    exposure_auc: table.exposure_auc[i],
                })
                .collect(),
        }
    }
}

impl std::fmt::Display for MembershipSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (Some(d), Some(auc), Some(saturated)) = (self.median_exposure_d, self.median_exposure_auc, self.saturated)
        else {
            return writeln!(f, "membership exposure: no document has models on both sides");
        };
        let variance = match self.variance {
            Variance::PerDocument => "each document's own variance".to_string(),
            Variance::Fixed => format!(
                "one variance per side pooled over documents, as fewer than {} models a side",
                self.per_document_variance_from
            ),
        };
        writeln!(
            f,
            "membership exposure ({} of IN vs OUT models, {variance}): median d′ {d:+.2}, median AUC {auc:.3} \
             ({:.0}% of documents at AUC 1: IN and OUT never overlap)",
            self.statistic,
            100.0 * saturated
        )?;
        let named: Vec<String> = self
            .most_exposed
            .iter()
            .map(|e| {
                format!(
                    "{} (d′ {:+.2}, AUC {})",
                    e.id,
                    e.exposure_d,
                    e.exposure_auc.map_or("-".into(), |a| format!("{a:.3}"))
                )
            })
            .collect();
        writeln!(f, "  most exposed: {}", named.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `models` models over three documents: document 0 IN for even models, document 1 for
    /// odd ones, document 2 for none (held out); `loss(model, doc)`.
    fn values(models: u32, loss: impl Fn(u32, usize) -> f32) -> ModelValues {
        let mut values = ModelValues::new((0..models).collect(), 3, vec![0, 1, 2], true);
        let mut losses = Vec::new();
        for m in 0..models {
            for doc in 0..3 {
                values.member[m as usize * 3 + doc] = (doc == 0 && m % 2 == 0) || (doc == 1 && m % 2 == 1);
                losses.push(loss(m, doc));
            }
        }
        values.loss = Some(losses);
        values
    }

    fn corpus() -> CorpusTable {
        CorpusTable {
            text: vec!["x".into(); 3],
            doc_id: vec!["a".into(), "b".into(), "held".into()],
            source: vec![Some("x".into()), None, Some("x".into())],
            ..CorpusTable::default()
        }
    }

    #[test]
    fn few_models_pool_the_variance_and_exposure_is_d_prime_and_auc_by_hand() {
        // Four models. Doc 0: IN (models 0, 2) statistics −1.0, −1.2; OUT (1, 3) −2.0, −2.6.
        // Doc 1: IN (1, 3) −1.5, −1.5; OUT (0, 2) −1.4, −1.6.
        let loss = |m: u32, doc: usize| -> f32 {
            [[1.0, 1.4, 9.0], [2.0, 1.5, 9.0], [1.2, 1.6, 9.0], [2.6, 1.5, 9.0]][m as usize][doc]
        };
        let (table, variance) = table(&values(4, loss), &corpus());
        assert_eq!(variance, Variance::Fixed);
        // Pooled IN: squares 0.02 (doc 0) + 0 (doc 1) over 1 + 1 degrees; OUT: 0.18 + 0.02.
        let (sd_in, sd_out) = ((0.02f64 / 2.0).sqrt(), (0.2f64 / 2.0).sqrt());
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-5;
        assert!(close(table.sd_in[0], sd_in) && close(table.sd_out[1], sd_out), "{table:?}");
        assert!(close(table.mu_in[0], -1.1) && close(table.mu_out[0], -2.3));
        let spread = ((sd_in * sd_in + sd_out * sd_out) / 2.0).sqrt();
        assert!(close(table.exposure_d[0], 1.2 / spread));
        assert!(close(table.exposure_d[1], 0.0), "medians equal: −1.5 both sides");
        // AUC: doc 0 every IN above every OUT; doc 1 IN −1.5, −1.5 vs OUT −1.4, −1.6: half.
        assert_eq!((table.exposure_auc[0], table.exposure_auc[1]), (Some(1.0), Some(0.5)));
        assert_eq!((table.mu_in[2], table.exposure_d[2], table.exposure_auc[2]), (None, None, None), "held out");
        assert_eq!(table.doc_id, ["a", "b", "held"]);

        let summary = MembershipSummary::new(&table, variance);
        assert_eq!((summary.documents, summary.saturated), (2, Some(0.5)));
        assert_eq!(summary.most_exposed[0].id, "a");
        let line = summary.to_string();
        assert!(line.contains("pooled over documents, as fewer than 32 models a side"), "{line}");
        assert!(line.contains("most exposed: a (d′ +"), "{line}");
    }

    #[test]
    fn thirty_two_models_a_side_use_each_documents_own_variance() {
        // 64 models; doc 0's statistics spread by model, doc 1's constant a side.
        let loss = |m: u32, doc: usize| -> f32 {
            match doc {
                0 => 1.0 + (m % 8) as f32 * 0.1,
                1 => 2.0 - 0.5 * (m % 2) as f32,
                _ => 3.0,
            }
        };
        let (table, variance) = table(&values(64, loss), &corpus());
        assert_eq!(variance, Variance::PerDocument);
        // Doc 0 IN: even models, m % 8 in {0, 2, 4, 6}, 8 times each: loss 1.0 .. 1.6.
        let inside: Vec<f64> = (0..64).filter(|m| m % 2 == 0).map(|m| -(1.0 + (m % 8) as f64 * 0.1)).collect();
        let mean = inside.iter().sum::<f64>() / 32.0;
        let sd = (inside.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 31.0).sqrt();
        assert!((table.sd_in[0].unwrap() - sd).abs() < 1e-6, "{:?} vs {sd}", table.sd_in[0]);
        assert_eq!(table.sd_in[1], Some(0.0));
        assert_eq!(table.exposure_d[1], None, "no spread: no d′");
        assert_eq!(table.exposure_auc[1], Some(1.0));
    }

    #[test]
    fn auc_counts_ties_as_half() {
        assert_eq!(auc(&[1.0, 3.0], &[2.0]), Some(0.5));
        assert_eq!(auc(&[2.0], &[1.0, 2.0]), Some(0.75));
        assert_eq!(auc(&[], &[1.0]), None);
        // Against counting every pair, with runs of ties on both sides.
        let inside = [0.5, 1.0, 1.0, 2.0, 2.0, 2.0, 3.5, 4.0];
        let outside = [0.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 9.0];
        let pairs: f64 = inside
            .iter()
            .flat_map(|x| {
                outside.iter().map(move |y| {
                    if x > y {
                        1.0
                    } else if x == y {
                        0.5
                    } else {
                        0.0
                    }
                })
            })
            .sum();
        assert_eq!(auc(&inside, &outside), Some(pairs / 64.0));
    }

    #[test]
    fn zlib_lengths_are_those_of_zlib_streams_of_the_text() {
        use std::io::Read;
        // An empty stream: header, empty block, Adler-32 (8 bytes, as Python's zlib.compress).
        assert_eq!(zlib_bytes(""), 8);
        assert_eq!(zlib_bytes(&"a".repeat(100)), 12, "Python's zlib.compress gives 12 too");
        let text = "the quick brown fox jumps over the lazy dog, again and again and again";
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(text.as_bytes()).unwrap();
        let stream = encoder.finish().unwrap();
        assert_eq!(stream.len(), zlib_bytes(text) as usize);
        let mut back = String::new();
        flate2::read::ZlibDecoder::new(&stream[..]).read_to_string(&mut back).unwrap();
        assert_eq!(back, text);
        assert!((zlib_bytes(text) as usize) < text.len(), "repeated words compress");
    }
}
