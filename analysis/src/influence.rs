//! `cfmem influence`: counterfactual influence of training documents x on target
//! documents y (Zhang et al.), from the logs alone, no new training:
//!
//! ```text
//! infl_acc(x ⇒ y)  = E[acc(f_S, y) | x ∈ S] − E[acc(f_S, y) | x ∉ S]
//! infl_loss(x ⇒ y) = E[loss(f_S, y) | x ∉ S] − E[loss(f_S, y) | x ∈ S]
//! ```
//!
//! For a block of targets, their accuracies (centered per target) form a (targets ×
//! models) matrix A; with Z the (models × sources) membership of a block of training
//! documents, A·Z holds every pair's IN sum, and the OUT sum is the target's total less
//! it. Blocks of sources run in parallel: each expands its Z once, multiplies every block
//! of targets with it, and offers each target its sources; every thread keeps each
//! target's top K by |infl_acc|, and the threads' lists are merged. Memory is a block pair
//! and K candidates per target per thread, never the targets × sources matrix. The products are in `f32`; the K pairs kept
//! per target are then recomputed exactly (`f64`) from the per-model values, with their
//! standard errors sqrt(s²_in/n_in + s²_out/n_out) and the loss version, and re-ranked.
//! Self-influence (x = y, which is mem) is left out, as are training documents without
//! both IN and OUT models.

use std::fmt;
use std::path::PathBuf;

use rayon::prelude::*;

use subsets::layout::RunDir;
use subsets::schema::{self, CorpusTable, InfluenceTable, Table};

use crate::per_model::{self, ModelValues, RunLogs};
use crate::printed_summary::PREVIEW_CHARS;
use crate::stats::{self, Moments};
use crate::summary::preview;
use crate::{Error, Result, gemm};

/// Targets per block of the product.
const TARGET_BLOCK: usize = 128;
/// Training documents per block of the product.
const SOURCE_BLOCK: usize = 1024;
/// Pairs the summary prints.
const SUMMARY_PAIRS: usize = 10;

/// Which documents influence is measured on.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// The held-out documents (`--holdout`, `--holdout-ids`): test-set contamination.
    Holdout,
    All,
    /// The documents whose ids are listed, one per line, in this file.
    Ids(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct InfluenceSettings {
    pub targets: Targets,
    /// Training documents kept per target.
    pub top: usize,
    /// Pairs with |infl_acc| below this are left out.
    pub min_abs: f64,
}

impl Default for InfluenceSettings {
    /// The held-out documents, each with its 10 strongest training documents, however weak.
    fn default() -> Self {
        InfluenceSettings { targets: Targets::Holdout, top: 10, min_abs: 0.0 }
    }
}

/// What `cfmem influence` writes and prints.
pub struct Influence {
    pub table: InfluenceTable,
    pub summary: InfluenceSummary,
    /// The run's seed, written into the table's metadata.
    pub run_seed: u64,
}

impl Influence {
    pub fn write(&self, run: &RunDir) -> Result<()> {
        let dir = run.analysis_dir();
        std::fs::create_dir_all(&dir).map_err(subsets::Error::io(&dir))?;
        schema::write(&run.influence(), &self.table, Some(self.run_seed))?;
        Ok(())
    }
}

/// Computes the influence table of `run` from its complete logs `logs`.
pub fn influence(run: &RunDir, logs: &RunLogs, settings: &InfluenceSettings) -> Result<Influence> {
    let config = subsets::config::RunConfig::from_file(&run.config())?;
    let run_seed = config.seed;
    let corpus: CorpusTable = schema::read(&run.corpus())?;
    let targets = target_docs(&corpus, &settings.targets)?;
    // In a spectrum run, from the models of its finest level, as its scores.
    let values = per_model::read(&logs.logs, logs.scored_values(&config.design, corpus.len(), targets.clone(), true))?;
    let matrix = TargetMatrix::new(&values);
    let sources = Sources::new(&values);
    let top = settings.top;
    let min_abs = settings.min_abs as f32;
    let fresh = || -> Vec<TopK> { (0..targets.len()).map(|_| TopK::new(top, min_abs)).collect() };
    let candidates = (0..sources.docs.len().div_ceil(SOURCE_BLOCK))
        .into_par_iter()
        .fold(fresh, |mut best, block| {
            offer_source_block(&matrix, &sources, &targets, block * SOURCE_BLOCK, &mut best);
            best
        })
        .reduce(fresh, |mut best, other| {
            for (mine, theirs) in best.iter_mut().zip(other) {
                theirs.kept.into_iter().for_each(|(doc, value)| mine.offer(doc, value));
            }
            best
        });

    let mut table = InfluenceTable::default();
    for (t, found) in candidates.into_iter().enumerate() {
        let mut pairs: Vec<Pair> = found.kept.into_iter().map(|(source, _)| exact_pair(&values, t, source)).collect();
        pairs.retain(|p| p.infl_acc.abs() >= settings.min_abs);
        pairs.sort_by(|a, b| b.infl_acc.abs().total_cmp(&a.infl_acc.abs()).then(a.source.cmp(&b.source)));
        let target = targets[t] as usize;
        for (rank, pair) in pairs.iter().enumerate() {
            table.target.push(target as u32);
            table.target_id.push(corpus.doc_id[target].clone());
            table.source_doc.push(pair.source as u32);
            table.source_id.push(corpus.doc_id[pair.source].clone());
            table.rank.push(rank as u32 + 1);
            table.infl_acc.push(pair.infl_acc);
            table.infl_acc_se.push(pair.infl_acc_se);
            table.infl_loss.push(pair.infl_loss);
            table.infl_loss_se.push(pair.infl_loss_se);
        }
    }
    let summary = InfluenceSummary::new(&table, &corpus, targets.len(), sources.docs.len(), values.models.len());
    Ok(Influence { table, summary, run_seed })
}

fn target_docs(corpus: &CorpusTable, targets: &Targets) -> Result<Vec<u32>> {
    let docs: Vec<u32> = match targets {
        Targets::All => corpus.doc.clone(),
        Targets::Holdout => {
            let held: Vec<u32> = corpus.doc.iter().copied().filter(|&d| corpus.holdout[d as usize]).collect();
            if held.is_empty() {
                return Err(Error::NoHeldOutTargets);
            }
            held
        }
        Targets::Ids(path) => subsets::corpus::listed_documents(path, &corpus.doc_id)?,
    };
    Ok(docs)
}

/// Targets' centered accuracies, target-major, and their totals over models.
struct TargetMatrix {
    models: usize,
    /// `targets × models`: accuracy minus the target's mean over models.
    centered: Vec<f32>,
    /// Sum of each target's row (about 0), the IN plus OUT sum.
    totals: Vec<f32>,
}

impl TargetMatrix {
    fn new(values: &ModelValues) -> TargetMatrix {
        let (models, targets) = (values.models.len(), values.kept.len());
        let mut centered = vec![0.0f32; targets * models];
        for t in 0..targets {
            let row = &mut centered[t * models..(t + 1) * models];
            (0..models).for_each(|m| row[m] = values.acc[m * targets + t]);
            let mean = row.iter().map(|&a| f64::from(a)).sum::<f64>() / models.max(1) as f64;
            row.iter_mut().for_each(|a| *a = (f64::from(*a) - mean) as f32);
        }
        let totals = centered.chunks(models.max(1)).map(|row| row.iter().sum()).collect();
        TargetMatrix { models, centered, totals }
    }
}

/// Training documents with IN and OUT models: the possible sources.
struct Sources<'a> {
    values: &'a ModelValues,
    docs: Vec<usize>,
    /// 1/n_in and 1/n_out of each source.
    inv_in: Vec<f32>,
    inv_out: Vec<f32>,
}

impl<'a> Sources<'a> {
    fn new(values: &'a ModelValues) -> Sources<'a> {
        let models = values.models.len();
        let mut n_in = vec![0u32; values.docs];
        for m in 0..models {
            values.member_row(m).iter().zip(&mut n_in).for_each(|(&inside, n)| *n += u32::from(inside));
        }
        let docs: Vec<usize> = (0..values.docs).filter(|&d| n_in[d] > 0 && (n_in[d] as usize) < models).collect();
        let inv_in = docs.iter().map(|&d| 1.0 / n_in[d] as f32).collect();
        let inv_out = docs.iter().map(|&d| 1.0 / (models - n_in[d] as usize) as f32).collect();
        Sources { values, docs, inv_in, inv_out }
    }

    /// Membership of sources `range` as a (models × range) 0/1 matrix.
    fn block(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let width = range.len();
        let mut z = vec![0.0f32; self.values.models.len() * width];
        for (m, row) in z.chunks_mut(width).enumerate() {
            let member = self.values.member_row(m);
            for (cell, &doc) in row.iter_mut().zip(&self.docs[range.clone()]) {
                *cell = if member[doc] { 1.0 } else { 0.0 };
            }
        }
        z
    }
}

/// Offers every target the sources of the block starting at source `start`: the
/// block's membership is expanded once and multiplied with each block of targets.
fn offer_source_block(matrix: &TargetMatrix, sources: &Sources, targets: &[u32], start: usize, best: &mut [TopK]) {
    let models = matrix.models;
    let range = start..(start + SOURCE_BLOCK).min(sources.docs.len());
    let width = range.len();
    let z = sources.block(range);
    let (inv_in, inv_out) = (&sources.inv_in[start..start + width], &sources.inv_out[start..start + width]);
    let mut product = vec![0.0f32; TARGET_BLOCK * width];
    let mut infl = vec![0.0f32; width];
    for first in (0..targets.len()).step_by(TARGET_BLOCK) {
        let rows = TARGET_BLOCK.min(targets.len() - first);
        let a = &matrix.centered[first * models..(first + rows) * models];
        gemm::matmul(a, &z, &mut product[..rows * width], rows, models, width);
        for r in 0..rows {
            let (t, total) = (first + r, matrix.totals[first + r]);
            // A branch-free pass the compiler vectorizes, then a scan that rarely offers.
            let sums = &product[r * width..(r + 1) * width];
            for j in 0..width {
                infl[j] = sums[j] * inv_in[j] - (total - sums[j]) * inv_out[j];
            }
            let keep = &mut best[t];
            for (j, &value) in infl.iter().enumerate() {
                if value.abs() > keep.floor && sources.docs[start + j] != targets[t] as usize {
                    keep.offer(sources.docs[start + j], value);
                }
            }
        }
    }
}

/// The `k` largest |value| offered, with |value| at least `min_abs` less [`SLACK`].
struct TopK {
    k: usize,
    kept: Vec<(usize, f32)>,
    /// What a new value's |value| must exceed to enter.
    floor: f32,
    min_abs: f32,
}

/// Room for the `f32` products' rounding: a pair within it of the threshold is kept as a
/// candidate and decided by its exact value.
const SLACK: f32 = 1e-4;

impl TopK {
    fn new(k: usize, min_abs: f32) -> TopK {
        let floor = if k == 0 { f32::INFINITY } else { min_abs - SLACK };
        TopK { k, kept: Vec::with_capacity(k), floor, min_abs }
    }

    /// Keeps `value` if it beats the floor (callers in hot loops check the floor first).
    fn offer(&mut self, doc: usize, value: f32) {
        if value.abs() <= self.floor {
            return;
        }
        if self.kept.len() < self.k {
            self.kept.push((doc, value));
        } else {
            let weakest = (0..self.kept.len())
                .min_by(|&a, &b| self.kept[a].1.abs().total_cmp(&self.kept[b].1.abs()))
                .expect("k > 0");
            self.kept[weakest] = (doc, value);
        }
        if self.kept.len() == self.k {
            let weakest = self.kept.iter().map(|(_, v)| v.abs()).fold(f32::INFINITY, f32::min);
            self.floor = weakest.max(self.min_abs - SLACK);
        }
    }
}

/// One (target, source) pair, computed exactly.
struct Pair {
    source: usize,
    infl_acc: f64,
    infl_acc_se: Option<f64>,
    infl_loss: f64,
    infl_loss_se: Option<f64>,
}

/// The pair of kept target column `t` and document `source`, in `f64` over the models.
fn exact_pair(values: &ModelValues, t: usize, source: usize) -> Pair {
    let width = values.kept.len();
    let loss = values.loss.as_ref().expect("influence reads losses");
    let (mut acc_in, mut acc_out, mut loss_in, mut loss_out) = Default::default();
    for m in 0..values.models.len() {
        let (a, l) = (f64::from(values.acc[m * width + t]), f64::from(loss[m * width + t]));
        let (acc_side, loss_side): (&mut Moments, &mut Moments) =
            if values.member_row(m)[source] { (&mut acc_in, &mut loss_in) } else { (&mut acc_out, &mut loss_out) };
        acc_side.push(a);
        loss_side.push(l);
    }
    let (infl_acc, infl_acc_se) = stats::difference(&acc_in, &acc_out);
    let (infl_loss, infl_loss_se) = stats::difference(&loss_out, &loss_in);
    Pair {
        source,
        infl_acc: infl_acc.expect("sources have IN and OUT models"),
        infl_acc_se,
        infl_loss: infl_loss.expect("sources have IN and OUT models"),
        infl_loss_se,
    }
}

/// What `cfmem influence` prints: the strongest pairs, each target's top one, with previews
/// of their texts at the printed summary's width.
#[derive(Debug, Clone)]
pub struct InfluenceSummary {
    targets: usize,
    sources: usize,
    models: usize,
    pairs: usize,
    strongest: Vec<SummaryPair>,
}

#[derive(Debug, Clone)]
struct SummaryPair {
    infl_acc: f64,
    se: Option<f64>,
    target: String,
    /// The target's text, whole: the printed view cuts it.
    target_text: String,
    source: String,
    source_text: String,
}

impl InfluenceSummary {
    fn new(table: &InfluenceTable, corpus: &CorpusTable, targets: usize, sources: usize, models: usize) -> Self {
        // Each target's strongest source, strongest targets first.
        let mut order: Vec<usize> = (0..table.target.len()).filter(|&i| table.rank[i] == 1).collect();
        order.sort_by(|&a, &b| table.infl_acc[b].abs().total_cmp(&table.infl_acc[a].abs()));
        let strongest = order
            .iter()
            .take(SUMMARY_PAIRS)
            .map(|&i| SummaryPair {
                infl_acc: table.infl_acc[i],
                se: table.infl_acc_se[i],
                target: table.target_id[i].clone(),
                target_text: corpus.text[table.target[i] as usize].clone(),
                source: table.source_id[i].clone(),
                source_text: corpus.text[table.source_doc[i] as usize].clone(),
            })
            .collect();
        InfluenceSummary { targets, sources, models, pairs: table.target.len(), strongest }
    }
}

impl fmt::Display for InfluenceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "influence of {} training documents on {} targets over {} models: {} pairs kept",
            self.sources, self.targets, self.models, self.pairs
        )?;
        if !self.strongest.is_empty() {
            writeln!(f, "strongest pairs, one per target (infl_acc ± se: training document ⇒ target):")?;
        }
        for pair in &self.strongest {
            let se = pair.se.map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
            writeln!(f, "  {:+.3} ± {se}  {} ⇒ {}", pair.infl_acc, pair.source, pair.target)?;
            let (source, target) =
                (preview(&pair.source_text, PREVIEW_CHARS), preview(&pair.target_text, PREVIEW_CHARS));
            writeln!(f, "      {source}\n    ⇒ {target}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic_run::{self, Row, Spec};
    use subsets::config::Unit;
    use subsets::corpus::Document;

    fn influence_of(run: &RunDir, settings: &InfluenceSettings) -> Result<Influence> {
        influence(run, &RunLogs::open(run)?, settings)
    }

    /// 20 training documents and two held out: `target`, which models predict well when
    /// doc-3 was in their training set, and `plain`, which nothing influences.
    fn planted(dir: &std::path::Path) -> (RunDir, subsets::plan::Plan) {
        let mut documents = synthetic_run::documents(20, 2);
        for id in ["target", "plain"] {
            documents.push(Document { id: id.into(), text: format!("the held out {id} document"), source: None });
        }
        let spec = Spec {
            documents,
            models: 12,
            stack: 4,
            seed: 8,
            unit: Unit::Document,
            holdout_ids: vec!["target".into(), "plain".into()],
        };
        let run = RunDir::new(dir.join("run"));
        let plan = synthetic_run::write(&run, &spec, |model, doc, in_train| {
            let correct = match doc {
                20 => 20 + 60 * u32::from(in_train[3]) + model % 4,
                21 => 20 + model % 4,
                _ => 30 + 10 * u32::from(in_train[doc]),
            };
            Row { tokens: 100, correct, nll: f64::from(100 - correct) / 10.0 }
        })
        .unwrap();
        (run, plan)
    }

    fn settings(targets: Targets, top: usize, min_abs: f64) -> InfluenceSettings {
        InfluenceSettings { targets, top, min_abs }
    }

    #[test]
    fn a_planted_source_is_the_top_influence_with_exact_values() {
        let dir = tempfile::tempdir().unwrap();
        let (run, plan) = planted(dir.path());
        let found = influence_of(&run, &settings(Targets::Holdout, 3, 0.0)).unwrap();
        let t = &found.table;
        assert_eq!(t.target, [20, 20, 20, 21, 21, 21]);
        assert_eq!(t.rank, [1, 2, 3, 1, 2, 3]);
        assert_eq!((t.source_doc[0], t.source_id[0].as_str(), t.target_id[0].as_str()), (3, "doc-3", "target"));

        // By hand: accuracy on the target is 0.2 + 0.6·[doc-3 IN] + (model mod 4)/100.
        let inside: Vec<u32> = (0..plan.membership.models()).filter(|&m| plan.membership.contains(m, 3)).collect();
        let side = |is_in: bool| -> Moments {
            let mut m = Moments::default();
            (0..12u32)
                .filter(|m| inside.contains(m) == is_in)
                .for_each(|model| m.push(0.2 + if is_in { 0.6 } else { 0.0 } + f64::from(model % 4) / 100.0));
            m
        };
        let (infl, se) = stats::difference(&side(true), &side(false));
        assert!((t.infl_acc[0] - infl.unwrap()).abs() < 1e-6, "{} vs {infl:?}", t.infl_acc[0]);
        assert!((t.infl_acc_se[0].unwrap() - se.unwrap()).abs() < 1e-6);
        // Loss per token is (100 − correct)/1000 = (1 − accuracy)/10.
        assert!((t.infl_loss[0] - infl.unwrap() / 10.0).abs() < 1e-6, "{}", t.infl_loss[0]);
        // Other sources move the target only through their membership's overlap with
        // doc-3's (at most 5 of 6 models shared: 0.6 · (5/6 − 1/6) = 0.4, plus offsets).
        assert!(t.infl_acc[1].abs() <= 0.43 && t.infl_acc[0] > 0.59, "{:?}", t.infl_acc);
        // Nothing moves the plain target beyond the model offsets (at most 0.03).
        assert!(t.infl_acc[3..].iter().all(|v| v.abs() <= 0.03 + 1e-6), "{:?}", t.infl_acc);
        assert!(!t.source_doc.contains(&20) && !t.source_doc.contains(&21), "held-out documents are no sources");

        let summary = found.summary.to_string();
        assert!(summary.contains("influence of 20 training documents on 2 targets over 12 models: 6 pairs kept"));
        assert!(summary.contains("doc-3 ⇒ target"), "{summary}");
    }

    #[test]
    fn top_k_keeps_the_largest_magnitudes_above_the_threshold() {
        let mut top = TopK::new(2, 0.1);
        for (doc, value) in [(0, 0.05), (1, -0.3), (2, 0.2), (3, 0.25), (4, -0.1), (5, 0.21)] {
            top.offer(doc, value);
        }
        let mut kept = top.kept.clone();
        kept.sort_by_key(|&(doc, _)| doc);
        assert_eq!(kept, [(1, -0.3), (3, 0.25)]);
        let mut empty = TopK::new(0, 0.0);
        empty.offer(0, 1.0);
        assert!(empty.kept.is_empty());
    }

    #[test]
    fn min_abs_and_all_targets_and_self_influence() {
        let dir = tempfile::tempdir().unwrap();
        let (run, _) = planted(dir.path());
        let strong = influence_of(&run, &settings(Targets::Holdout, 5, 0.5)).unwrap().table;
        assert_eq!((strong.target.clone(), strong.source_doc.clone()), (vec![20], vec![3]));
        let all = influence_of(&run, &settings(Targets::All, 2, 0.0)).unwrap().table;
        assert_eq!(all.target.len(), 22 * 2);
        assert!((0..all.target.len()).all(|i| all.target[i] != all.source_doc[i]), "no self-influence");
    }

    #[test]
    fn target_ids_come_from_a_file_and_unknown_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (run, _) = planted(dir.path());
        let ids = dir.path().join("ids.txt");
        std::fs::write(&ids, "doc-5\n\nplain\n").unwrap();
        let table = influence_of(&run, &settings(Targets::Ids(ids.clone()), 1, 0.0)).unwrap().table;
        assert_eq!(table.target, [5, 21]);
        std::fs::write(&ids, "doc-5\nnope\n").unwrap();
        let err = influence_of(&run, &settings(Targets::Ids(ids), 1, 0.0)).err().unwrap().to_string();
        assert!(err.ends_with("ids.txt: line 2: no document has id \"nope\""), "{err}");
    }
}
