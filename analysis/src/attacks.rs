//! Membership inference attacks: evaluated on the run itself (`analysis/attacks.parquet`),
//! and on a model from outside the run (`cfmem attack`, [`attack_model`]).
//!
//! On the run, each model in turn is the target, the others its shadows; its members are the
//! documents it trained on, its non-members those it did not (held-out documents are
//! neither). The targets' (score, member?) pairs are pooled into one ROC per attack: its
//! AUC, its TPR at 1% and at 0.1% FPR, and bootstrap intervals of each over target models.
//! A model from outside has every run model as a shadow (but one it is an export of, when
//! told so), and its intervals are over documents.
//!
//! The attacks, each a score that is higher for a member, from the target's statistic s =
//! −nll / tokens (see [`crate::membership`]) and the logs' per-token statistics:
//!
//! - `lira_online`: log N(s; μ_in, σ_in) − log N(s; μ_out, σ_out), the Gaussians of the
//!   document's statistic over the shadows that trained on it and over those that did not
//!   (center the median, spread as [`crate::membership`] rules, with at least
//!   [`crate::membership::PER_DOCUMENT_VARIANCE`] shadows a side for every document for its
//!   own variance);
//! - `lira_offline`: one-sided against the OUT Gaussian alone, (s − μ_out) / σ_out (the
//!   one-sided test's p-value is monotone in it);
//! - `loss`: s;
//! - `zlib`: the document's log-likelihood over its zlib-compressed length, s · tokens /
//!   zlib bytes (`membership.parquet`'s `zlib_bytes`);
//! - `min_k`, `min_k_pp`: the logs' Min-K% and Min-K%++ at 20%;
//! - `reference`: s − s_ref, the target's log-likelihood above a reference model's: the
//!   run's base, evaluated once into `RUN/reference.parquet` (the target's loss minus the
//!   base's, negated); unavailable for a run from scratch.
//!
//! The shadows' medians and deviations without the target come from each document's sorted
//! values and running sums, O(M log M) per document, never O(M²·N).

use rand::RngExt;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use subsets::config::RunConfig;
use subsets::layout::RunDir;
use subsets::schema::{
    self, AttackRocTable, AttackTable, CorpusTable, EvaluationTable, MembershipTable, ScoreTable, Table,
    TargetAttackTable,
};
use subsets::seeds;

use crate::membership::{PER_DOCUMENT_VARIANCE, Side, Variance, zlib_bytes};
use crate::per_model::{self, ModelValues, RunLogs};
use crate::stats::{quantile, spearman};
use crate::summary_file::{AttackRow, Attacks};
use crate::{Error, Result};

/// The attacks, in the order of `attacks.parquet` and of `cfmem attack`'s columns.
pub const ATTACKS: [&str; 7] = ["lira_online", "lira_offline", "loss", "zlib", "min_k", "min_k_pp", "reference"];

/// The FPR bounds whose TPR the tables give.
const FPRS: [f64; 2] = [0.01, 0.001];

/// The FPRs `attack_roc.parquet` samples each curve at: 10⁻⁴ to 1, ten a decade.
fn roc_grid() -> Vec<f64> {
    (0..=40).map(|k| 10f64.powf(-4.0 + f64::from(k) / 10.0)).collect()
}

/// The shadows' Gaussians of one (target, document): (μ_in, σ_in, μ_out, σ_out).
type Gaussians = (f64, f64, f64, f64);

/// One (target, document)'s score under each attack, NaN where it has none.
type Scores = [f32; 7];

/// log N(x; μ, σ) less its constant.
fn log_density(x: f64, mu: f64, sd: f64) -> f64 {
    -sd.ln() - (x - mu).powi(2) / (2.0 * sd * sd)
}

/// (target, document) pairs evaluated at most; a larger run's targets are a subset of its
/// models drawn from its seed, every one of the others still a shadow.
pub const MAX_PAIRS: usize = 1 << 21;

/// What an attack reads of a target on one document: its statistic s = −nll / tokens and
/// its Min-K% and Min-K%++ (NaN where unknown).
#[derive(Debug, Clone, Copy)]
pub struct TargetValues {
    pub statistic: f64,
    pub min_k: f64,
    pub min_k_pp: f64,
}

/// The reference model's statistic of every document in corpus order, from
/// `RUN/reference.parquet`; None where the run has no such file. A file that does not
/// cover the corpus document by document (ids and token counts) is refused.
pub fn reference_statistic(run: &RunDir, corpus: &CorpusTable) -> Result<Option<Vec<f64>>> {
    let path = run.reference();
    if !path.exists() {
        return Ok(None);
    }
    let table: EvaluationTable = schema::read(&path)?;
    if table.doc.len() != corpus.doc.len() {
        let message = format!("{} documents, but corpus.parquet has {}", table.doc.len(), corpus.doc.len());
        return Err(subsets::Error::file(&path, message).into());
    }
    for (row, doc) in table.doc.iter().enumerate() {
        let differs = if *doc as usize != row || table.doc_id[row] != corpus.doc_id[row] {
            Some(format!("doc {doc} ({:?}) is not the corpus's row {row}", table.doc_id[row]))
        } else if table.tokens[row] != corpus.tokens[row] {
            Some(format!("field tokens: {} tokens, the corpus has {}", table.tokens[row], corpus.tokens[row]))
        } else {
            None
        };
        if let Some(message) = differs {
            let message = format!("{message}: it is not an evaluation of this run's documents");
            return Err(subsets::Error::Row { path, row, message }.into());
        }
    }
    Ok(Some(table.nll.iter().zip(&table.tokens).map(|(&nll, &tokens)| -nll / f64::from(tokens.max(1))).collect()))
}

/// The shadow models' side of every attack: each document's IN and OUT statistics over the
/// run's models (`values`, with losses and, for Min-K%, token statistics), the variance
/// rule and its pooled sums, and what a target is scored with besides (zlib lengths, the
/// reference model). Documents are `values.kept`'s.
pub struct Shadows<'a> {
    values: &'a ModelValues,
    loss: &'a [f32],
    holdout: Vec<bool>,
    /// tokens / zlib bytes of each document.
    zlib_factor: Vec<f64>,
    /// The reference model's statistic of each document.
    reference: Option<Vec<f64>>,
    variance: Variance,
    /// Per side [OUT, IN]: the pooled squares and degrees of freedom of the fixed variance.
    pooled: [(f64, f64); 2],
    /// Per model and side: what its own value adds to `pooled` (removing x from n values
    /// takes (x − mean)² · n / (n − 1)).
    own: Vec<[(f64, f64); 2]>,
}

impl<'a> Shadows<'a> {
    /// The shadows of `values`; `corpus` gives tokens and held-out flags, `zlib_bytes` each
    /// kept document's compressed length, `reference` the reference statistic of every
    /// corpus document.
    pub fn new(
        values: &'a ModelValues,
        corpus: &CorpusTable,
        zlib_bytes: &[u32],
        reference: Option<&[f64]>,
    ) -> Shadows<'a> {
        let loss = values.loss.as_deref().expect("attacks read losses");
        let kept = |d: usize| values.kept[d] as usize;
        let docs = values.kept.len();
        let mut shadows = Shadows {
            values,
            loss,
            holdout: (0..docs).map(|d| corpus.holdout[kept(d)]).collect(),
            zlib_factor: (0..docs).map(|d| f64::from(corpus.tokens[kept(d)]) / f64::from(zlib_bytes[d])).collect(),
            reference: reference.map(|r| (0..docs).map(|d| r[kept(d)]).collect()),
            variance: Variance::Fixed,
            pooled: [(0.0, 0.0); 2],
            own: Vec::new(),
        };
        shadows.fit_variance();
        shadows
    }

    fn models(&self) -> usize {
        self.values.models.len()
    }

    fn docs(&self) -> usize {
        self.values.kept.len()
    }

    fn statistic(&self, row: usize, doc: usize) -> f64 {
        -f64::from(self.loss[row * self.docs() + doc])
    }

    fn member(&self, row: usize, doc: usize) -> bool {
        self.values.member_row(row)[self.values.kept[doc] as usize]
    }

    fn side_values(&self, doc: usize, inside: bool) -> Vec<f64> {
        (0..self.models()).filter(|&r| self.member(r, doc) == inside).map(|r| self.statistic(r, doc)).collect()
    }

    /// The variance rule, and for the fixed variance its pooled sums and each model's part.
    fn fit_variance(&mut self) {
        let (models, docs) = (self.models(), self.docs());
        // Per side [OUT, IN]: each document's count, sum and squares.
        let moments: Vec<[(f64, f64, f64); 2]> = (0..docs)
            .into_par_iter()
            .map(|d| {
                [false, true].map(|inside| {
                    let v = self.side_values(d, inside);
                    (v.len() as f64, v.iter().sum::<f64>(), v.iter().map(|x| x * x).sum::<f64>())
                })
            })
            .collect();
        let scored: Vec<usize> =
            (0..docs).filter(|&d| !self.holdout[d] && moments[d].iter().all(|&(n, _, _)| n > 0.0)).collect();
        let per_document = scored.iter().all(|&d| moments[d].iter().all(|&(n, _, _)| n > PER_DOCUMENT_VARIANCE as f64));
        self.variance = if per_document { Variance::PerDocument } else { Variance::Fixed };
        for &d in &scored {
            for (s, &(n, sum, squares)) in moments[d].iter().enumerate() {
                if n >= 2.0 {
                    self.pooled[s].0 += squares - sum * sum / n;
                    self.pooled[s].1 += n - 1.0;
                }
            }
        }
        self.own = scored
            .par_iter()
            .fold(
                || vec![[(0.0, 0.0); 2]; models],
                |mut own, &d| {
                    for (r, own) in own.iter_mut().enumerate() {
                        let s = usize::from(self.member(r, d));
                        let (n, sum, _) = moments[d][s];
                        if n >= 2.0 {
                            own[s].0 += (self.statistic(r, d) - sum / n).powi(2) * n / (n - 1.0);
                            own[s].1 += 1.0;
                        }
                    }
                    own
                },
            )
            .reduce(
                || vec![[(0.0, 0.0); 2]; models],
                |mut a, b| {
                    for (a, b) in a.iter_mut().zip(b) {
                        for s in 0..2 {
                            a[s].0 += b[s].0;
                            a[s].1 += b[s].1;
                        }
                    }
                    a
                },
            );
    }

    /// The variance rule the LiRA attacks use.
    pub fn variance(&self) -> Variance {
        self.variance
    }

    /// The pooled deviation of side `s` without model row `without`'s values.
    fn pooled_sd(&self, without: Option<usize>, s: usize) -> f64 {
        let (squares, dof) = without.map_or((0.0, 0.0), |r| self.own[r][s]);
        ((self.pooled[s].0 - squares) / (self.pooled[s].1 - dof)).max(0.0).sqrt()
    }

    /// Document `d`'s Gaussians from its sorted sides [OUT, IN], without model row
    /// `without`'s value (the target itself, or the run model a target was exported from).
    fn gaussians(&self, d: usize, sides: &[Side; 2], without: Option<usize>) -> Option<Gaussians> {
        if self.holdout[d] {
            return None;
        }
        let [out_side, in_side] = sides;
        let rank = |inside: bool| {
            without
                .filter(|&r| self.member(r, d) == inside)
                .map(|r| sides[usize::from(inside)].rank(self.statistic(r, d)))
        };
        let (without_in, without_out) = (rank(true), rank(false));
        let (mu_in, mu_out) = (in_side.median(without_in)?, out_side.median(without_out)?);
        let (sd_in, sd_out) = match self.variance {
            Variance::PerDocument => (in_side.sd(without_in)?, out_side.sd(without_out)?),
            Variance::Fixed => (self.pooled_sd(without, 1), self.pooled_sd(without, 0)),
        };
        (sd_in > 0.0 && sd_out > 0.0).then_some((mu_in, sd_in, mu_out, sd_out))
    }

    /// Every attack's score of a target with `target` values on document `d`.
    fn scores(&self, d: usize, sides: &[Side; 2], target: TargetValues, without: Option<usize>) -> Scores {
        let s = target.statistic;
        let lira = self.gaussians(d, sides, without);
        [
            lira.map_or(f64::NAN, |(mi, si, mo, so)| log_density(s, mi, si) - log_density(s, mo, so)),
            lira.map_or(f64::NAN, |(_, _, mo, so)| (s - mo) / so),
            s,
            s * self.zlib_factor[d],
            target.min_k,
            target.min_k_pp,
            self.reference.as_ref().map_or(f64::NAN, |r| s - r[d]),
        ]
        .map(|v| v as f32)
    }

    fn sides(&self, d: usize) -> [Side; 2] {
        [false, true].map(|inside| Side::new(self.side_values(d, inside)))
    }

    /// The values run model row `row` gives document `d`.
    fn model_values(&self, row: usize, d: usize) -> TargetValues {
        let token = |i: usize| self.values.min_k.as_ref().map_or(f64::NAN, |m| f64::from(m[i][row * self.docs() + d]));
        TargetValues { statistic: self.statistic(row, d), min_k: token(0), min_k_pp: token(1) }
    }

    /// Every attack's score of every (target, document), the targets being the model rows
    /// `targets`, each left out of its own shadows: `[attack][t * docs + doc]`. One pass over
    /// the documents, each document's sides sorted once for all its targets.
    pub fn leave_one_out(&self, targets: &[usize]) -> Vec<Vec<f32>> {
        let docs = self.docs();
        let per_doc: Vec<Vec<Scores>> = (0..docs)
            .into_par_iter()
            .map(|d| {
                let sides = self.sides(d);
                targets.iter().map(|&r| self.scores(d, &sides, self.model_values(r, d), Some(r))).collect()
            })
            .collect();
        (0..ATTACKS.len())
            .map(|a| {
                let mut scores = vec![f32::NAN; targets.len() * docs];
                for (d, row) in per_doc.iter().enumerate() {
                    for (t, values) in row.iter().enumerate() {
                        scores[t * docs + d] = values[a];
                    }
                }
                scores
            })
            .collect()
    }

    /// Every attack's score of a model from outside the run on each document, from its
    /// `target` values there; every run model is a shadow but row `without` (the model the
    /// target was exported from: then its scores are that model's leave-one-out scores).
    pub fn external(&self, target: &[TargetValues], without: Option<usize>) -> Vec<Scores> {
        (0..self.docs()).into_par_iter().map(|d| self.scores(d, &self.sides(d), target[d], without)).collect()
    }
}

/// A pooled ROC's points, (score, member, group) ascending by score, where a group is what
/// the bootstrap resamples (a target model, or a document), and each group's count of
/// members and of non-members.
struct Pooled {
    points: Vec<(f64, bool, usize)>,
    counts: Vec<(f64, f64)>,
}

impl Pooled {
    /// The points with a finite score, sorted.
    fn new(mut points: Vec<(f64, bool, usize)>, groups: usize) -> Pooled {
        points.retain(|p| p.0.is_finite());
        points.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut counts = vec![(0.0, 0.0); groups];
        for &(_, member, g) in &points {
            if member { counts[g].0 += 1.0 } else { counts[g].1 += 1.0 }
        }
        Pooled { points, counts }
    }

    /// The weighted members and non-members.
    fn totals(&self, weight: &[f64]) -> (f64, f64) {
        self.counts.iter().zip(weight).fold((0.0, 0.0), |(p, n), (&(gp, gn), &w)| (p + w * gp, n + w * gn))
    }

    /// The AUC, each point weighted by its group's `weight`: P(member's score > non-member's)
    /// + ½ P(equal), over the pairs' weights. One ascending pass.
    fn auc(&self, weight: &[f64]) -> Option<f64> {
        let (positives, negatives) = self.totals(weight);
        if positives == 0.0 || negatives == 0.0 {
            return None;
        }
        let points = &self.points;
        // Ascending: each positive beats the negatives below it, ties count half.
        let (mut below, mut wins, mut start) = (0.0, 0.0, 0);
        while start < points.len() {
            let end = start + points[start..].iter().take_while(|p| p.0 == points[start].0).count();
            let (mut pos, mut neg) = (0.0, 0.0);
            for &(_, member, g) in &points[start..end] {
                if member { pos += weight[g] } else { neg += weight[g] }
            }
            wins += pos * (below + neg / 2.0);
            below += neg;
            start = end;
        }
        Some(wins / (positives * negatives))
    }

    /// The TPR at each FPR bound in `fprs`, each point weighted by its group's `weight`: at
    /// the lowest threshold whose FPR stays within the bound. A descending pass that stops
    /// past the largest bound.
    fn tprs(&self, weight: &[f64], fprs: &[f64]) -> Option<Vec<f64>> {
        let (positives, negatives) = self.totals(weight);
        if positives == 0.0 || negatives == 0.0 {
            return None;
        }
        let points = &self.points;
        let largest = fprs.iter().copied().fold(0.0, f64::max);
        let mut tprs = vec![0.0; fprs.len()];
        let (mut tp, mut fp, mut end) = (0.0, 0.0, points.len());
        while end > 0 {
            let start = end - points[..end].iter().rev().take_while(|p| p.0 == points[end - 1].0).count();
            for &(_, member, g) in &points[start..end] {
                if member { tp += weight[g] } else { fp += weight[g] }
            }
            if fp / negatives > largest {
                break;
            }
            for (tpr, &bound) in tprs.iter_mut().zip(fprs) {
                if fp / negatives <= bound {
                    *tpr = tp / positives;
                }
            }
            end = start;
        }
        Some(tprs)
    }

    /// The pair counts between groups: `wins[g * groups + h]` the (member of g, non-member
    /// of h) pairs the member wins (ties half), from which any weighting's AUC is
    /// Σ w_g w_h wins[g, h] / (Σ w_g P_g · Σ w_h N_h) in O(groups²). One ascending pass, a
    /// row of `groups` additions per member: cheaper than a pass per resample when there
    /// are fewer groups than resamples.
    fn pair_wins(&self) -> Vec<f64> {
        let groups = self.counts.len();
        let points = &self.points;
        let mut wins = vec![0.0; groups * groups];
        let mut below = vec![0.0; groups];
        let mut start = 0;
        while start < points.len() {
            let end = start + points[start..].iter().take_while(|p| p.0 == points[start].0).count();
            let tied = &points[start..end];
            let mut tied_negatives = vec![0.0; groups];
            for &(_, member, h) in tied {
                if !member {
                    tied_negatives[h] += 0.5;
                }
            }
            for &(_, member, g) in tied {
                if member {
                    let row = &mut wins[g * groups..(g + 1) * groups];
                    for ((w, b), t) in row.iter_mut().zip(&below).zip(&tied_negatives) {
                        *w += b + t;
                    }
                }
            }
            for &(_, member, h) in tied {
                if !member {
                    below[h] += 1.0;
                }
            }
            start = end;
        }
        wins
    }

    /// AUC, TPRs at [`FPRS`], and their 95% percentile intervals over resampling `weights`
    /// of the groups; None without members or non-members.
    fn figures(&self, weights: &[Vec<f64>]) -> Option<Figures> {
        let groups = self.counts.len();
        let ones = vec![1.0; groups];
        let auc = self.auc(&ones)?;
        let tprs = self.tprs(&ones, &FPRS)?;
        let resampled_aucs: Vec<f64> = if groups < weights.len() {
            let wins = self.pair_wins();
            weights
                .par_iter()
                .filter_map(|w| {
                    let (positives, negatives) = self.totals(w);
                    let won: f64 = (0..groups)
                        .filter(|&g| w[g] > 0.0)
                        .map(|g| w[g] * (0..groups).map(|h| w[h] * wins[g * groups + h]).sum::<f64>())
                        .sum();
                    (positives > 0.0 && negatives > 0.0).then(|| won / (positives * negatives))
                })
                .collect()
        } else {
            weights.par_iter().filter_map(|w| self.auc(w)).collect()
        };
        let resampled_tprs: Vec<Vec<f64>> = weights.par_iter().filter_map(|w| self.tprs(w, &FPRS)).collect();
        let tpr_interval = |i: usize| interval(resampled_tprs.iter().map(|t| t[i]).collect());
        let grid = roc_grid();
        let curve = grid.iter().copied().zip(self.tprs(&ones, &grid)?).collect();
        Some(Figures {
            curve,
            auc,
            auc_interval: interval(resampled_aucs),
            tprs: [tprs[0], tprs[1]],
            tpr_intervals: [tpr_interval(0), tpr_interval(1)],
        })
    }
}

/// A pooled ROC's figures.
struct Figures {
    /// (FPR, TPR) at [`roc_grid`]'s FPRs.
    curve: Vec<(f64, f64)>,
    auc: f64,
    auc_interval: Option<(f64, f64)>,
    tprs: [f64; 2],
    tpr_intervals: [Option<(f64, f64)>; 2],
}

/// The 95% percentile interval of resampled values.
fn interval(mut values: Vec<f64>) -> Option<(f64, f64)> {
    values.sort_by(f64::total_cmp);
    Some((quantile(&values, 0.025)?, quantile(&values, 0.975)?))
}

/// `count` bootstrap resamples of `groups` groups, as counts per group, seeded by `seed`
/// and `stream`.
fn resampling_weights(groups: usize, count: usize, seed: u64, stream: &str) -> Vec<Vec<f64>> {
    (0..count)
        .map(|b| {
            let mut rng = seeds::rng(seed, stream, b as u64);
            let mut w = vec![0.0; groups];
            for _ in 0..groups {
                w[rng.random_range(0..groups)] += 1.0;
            }
            w
        })
        .collect()
}

/// Appends attack `name`'s row to `table`: its figures (None: unavailable, or no pairs),
/// the targets pooled, the Spearman correlation with mem_loss and a note.
fn push_row(
    table: &mut AttackTable,
    name: &str,
    figures: Option<&Figures>,
    targets: u32,
    spearman: Option<f64>,
    note: Option<String>,
) {
    let lo = |i: Option<(f64, f64)>| i.map(|i| i.0);
    let hi = |i: Option<(f64, f64)>| i.map(|i| i.1);
    table.attack.push(name.to_string());
    table.auc.push(figures.map(|f| f.auc));
    table.auc_lo.push(lo(figures.and_then(|f| f.auc_interval)));
    table.auc_hi.push(hi(figures.and_then(|f| f.auc_interval)));
    table.tpr_at_1pct_fpr.push(figures.map(|f| f.tprs[0]));
    table.tpr_at_1pct_fpr_lo.push(lo(figures.and_then(|f| f.tpr_intervals[0])));
    table.tpr_at_1pct_fpr_hi.push(hi(figures.and_then(|f| f.tpr_intervals[0])));
    table.tpr_at_0_1pct_fpr.push(figures.map(|f| f.tprs[1]));
    table.tpr_at_0_1pct_fpr_lo.push(lo(figures.and_then(|f| f.tpr_intervals[1])));
    table.tpr_at_0_1pct_fpr_hi.push(hi(figures.and_then(|f| f.tpr_intervals[1])));
    table.targets.push(if figures.is_some() { targets } else { 0 });
    table.spearman_mem_loss.push(spearman);
    table.note.push(note);
}

/// Why the reference attack is unavailable, for a run without a reference statistic.
fn no_reference(has_base: bool) -> String {
    if has_base {
        "the base's evaluation (reference.parquet) is missing: `cfmem run RUN` writes it after its jobs".into()
    } else {
        "needs a reference model: the run trains from scratch, without a base".into()
    }
}

/// Evaluates every attack on the run's models (`values`, with losses), the documents'
/// `scores` giving mem_loss and `membership` their zlib lengths, `reference` the reference
/// statistic of every corpus document (`has_base`: why there is none); `bootstrap`
/// resamples of the targets, seeded by `seed`.
pub fn evaluate(
    values: &ModelValues,
    corpus: &CorpusTable,
    scores: &ScoreTable,
    membership: &MembershipTable,
    (reference, has_base): (Option<&[f64]>, bool),
    bootstrap: usize,
    seed: u64,
) -> AttackSummary {
    let docs = values.kept.len();
    let shadows = Shadows::new(values, corpus, &membership.zlib_bytes, reference);
    let holdout = &shadows.holdout;
    let scored_docs = holdout.iter().filter(|&&h| !h).count().max(1);
    let mut targets: Vec<usize> = (0..values.models.len()).collect();
    if targets.len() * scored_docs > MAX_PAIRS {
        targets.shuffle(&mut seeds::rng(seed, "attack-targets", 0));
        targets.truncate((MAX_PAIRS / scored_docs).max(2));
        targets.sort_unstable();
    }
    let all = shadows.leave_one_out(&targets);
    let models = targets.len();
    let member = |t: usize, doc: usize| shadows.member(targets[t], doc);
    let weights = resampling_weights(models, bootstrap, seed, "attack-bootstrap");
    let (mut table, mut roc) = (AttackTable::default(), AttackRocTable::default());
    for (a, name) in ATTACKS.iter().enumerate() {
        let values_of = &all[a];
        let points: Vec<(f64, bool, usize)> = (0..models)
            .flat_map(|t| (0..docs).filter(|&d| !holdout[d]).map(move |d| (t, d)))
            .map(|(t, d)| (f64::from(values_of[t * docs + d]), member(t, d), t))
            .collect();
        let missing = points.iter().filter(|p| !p.0.is_finite()).count();
        let unavailable = match *name {
            "reference" => reference.is_none().then(|| no_reference(has_base)),
            "min_k" | "min_k_pp" => (missing > 0)
                .then(|| "the logs have no per-token statistics (written before schema version 4)".to_string()),
            _ => None,
        };
        if let Some(note) = unavailable {
            push_row(&mut table, name, None, 0, None, Some(note));
            continue;
        }
        let note = (missing > 0).then(|| format!("{missing} (target, document) pairs without a score left out"));
        let figures = Pooled::new(points, models).figures(&weights);
        for &(fpr, tpr) in figures.iter().flat_map(|f| &f.curve) {
            roc.attack.push(name.to_string());
            roc.fpr.push(fpr);
            roc.tpr.push(tpr);
        }
        // Per document: the mean score its members give it, against mem_loss.
        let (mut mean_score, mut mem_loss) = (Vec::new(), Vec::new());
        for d in (0..docs).filter(|&d| !holdout[d]) {
            let member_scores: Vec<f64> = (0..models)
                .filter(|&t| member(t, d))
                .map(|t| f64::from(values_of[t * docs + d]))
                .filter(|v| v.is_finite())
                .collect();
            if let (false, Some(m)) = (member_scores.is_empty(), scores.mem_loss[values.kept[d] as usize]) {
                mean_score.push(member_scores.iter().sum::<f64>() / member_scores.len() as f64);
                mem_loss.push(m);
            }
        }
        push_row(&mut table, name, figures.as_ref(), models as u32, spearman(&mean_score, &mem_loss), note);
    }
    AttackSummary { table, roc, variance: shadows.variance() }
}

/// A model from outside the run evaluated on one document: what `cfmem attack` hands over
/// from its evaluation.
#[derive(Debug, Clone, Copy)]
pub struct TargetEvaluation {
    pub tokens: u32,
    /// Summed over the tokens.
    pub nll: f64,
    pub min_k: Option<f64>,
    pub min_k_pp: Option<f64>,
}

/// What `cfmem attack` asks besides the target's evaluation.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// The documents the target trained on (corpus rows), when known: then every attack's
    /// ROC on it.
    pub members: Option<Vec<u32>>,
    /// A run model left out of the shadows: the one the target was exported from.
    pub leave_out: Option<u32>,
    pub bootstrap: usize,
}

/// `cfmem attack`'s result: every attack's score of each document, and with members known
/// the target's ROC figures.
pub struct TargetReport {
    pub table: TargetAttackTable,
    pub roc: Option<AttackTable>,
    pub variance: Variance,
    /// The run models that were the shadows.
    pub shadows: usize,
}

/// The complete logs of `run` (`verified`), which an attack on a model from outside it
/// needs: the run's models are its shadows.
pub fn shadow_logs(run: &RunDir, verified: &queue::verify::Verified) -> Result<RunLogs> {
    match verified.incomplete() {
        Some(what) => Err(Error::ShadowsIncomplete { run: run.root().to_path_buf(), what }),
        None => RunLogs::new(verified),
    }
}

/// Attacks a model from outside the run `run` (whose complete logs are `logs`), evaluated
/// on every document of the run's corpus (`target`, corpus order), with the run's models as
/// its shadows.
pub fn attack_model(
    run: &RunDir,
    logs: &RunLogs,
    target: &[TargetEvaluation],
    settings: &TargetSettings,
) -> Result<TargetReport> {
    let config = RunConfig::from_file(&run.config())?;
    let corpus: CorpusTable = schema::read(&run.corpus())?;
    if target.len() != corpus.len() {
        return Err(Error::TargetDocuments { evaluated: target.len(), documents: corpus.len() });
    }
    let values = logs.scored_values(&config.design, corpus.len(), (0..corpus.len() as u32).collect(), true);
    let values = per_model::read(&logs.logs, values.with_token_statistics())?;
    let leave_out = match settings.leave_out {
        None => None,
        Some(model) => Some(values.row(model).ok_or(Error::NotAShadow { model, models: values.models.len() })?),
    };
    let zlib: Vec<u32> = corpus.text.par_iter().map(|text| zlib_bytes(text)).collect();
    let reference = reference_statistic(run, &corpus)?;
    let target_values: Vec<TargetValues> = target
        .iter()
        .map(|e| TargetValues {
            statistic: -e.nll / f64::from(e.tokens.max(1)),
            min_k: e.min_k.unwrap_or(f64::NAN),
            min_k_pp: e.min_k_pp.unwrap_or(f64::NAN),
        })
        .collect();
    let shadows = Shadows::new(&values, &corpus, &zlib, reference.as_deref());
    let scores = shadows.external(&target_values, leave_out);
    let members = settings.members.as_ref().map(|listed| {
        let mut flags = vec![false; corpus.len()];
        for &doc in listed {
            flags[doc as usize] = true;
        }
        flags
    });
    let roc = members.as_ref().map(|members| {
        let note = reference.is_none().then(|| no_reference(config.base.is_some()));
        target_roc(&scores, members, note, settings.bootstrap, config.seed)
    });
    let mut table = TargetAttackTable::default();
    for (doc, (eval, scores)) in target.iter().zip(&scores).enumerate() {
        table.doc.push(doc as u32);
        table.doc_id.push(corpus.doc_id[doc].clone());
        table.source.push(corpus.source[doc].clone());
        table.member.push(members.as_ref().map(|m| m[doc]));
        table.tokens.push(eval.tokens);
        table.nll.push(eval.nll);
        let score = |a: usize| Some(f64::from(scores[a])).filter(|v| v.is_finite());
        table.lira_online.push(score(0));
        table.lira_offline.push(score(1));
        table.loss.push(score(2));
        table.zlib.push(score(3));
        table.min_k.push(score(4));
        table.min_k_pp.push(score(5));
        table.reference.push(score(6));
    }
    let shadow_count = values.models.len() - usize::from(leave_out.is_some());
    Ok(TargetReport { table, roc, variance: shadows.variance(), shadows: shadow_count })
}

impl std::fmt::Display for TargetReport {
    /// What `cfmem attack` prints: the shadows, the documents LiRA finds most likely members,
    /// and with members known every attack's ROC figures.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.table;
        let variance = match self.variance {
            Variance::PerDocument => "each document's own variance",
            Variance::Fixed => "variance pooled over documents",
        };
        writeln!(f, "{} documents attacked with {} run models as shadows ({variance})", t.doc.len(), self.shadows)?;
        let mut ranked: Vec<(f64, usize)> = (0..t.doc.len()).filter_map(|d| Some((t.lira_online[d]?, d))).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        writeln!(f, "most likely members by lira_online:")?;
        for &(score, d) in ranked.iter().take(5) {
            let member = match t.member[d] {
                Some(true) => " (member)",
                Some(false) => " (non-member)",
                None => "",
            };
            writeln!(f, "  {score:>9.2}  {}{member}", t.doc_id[d])?;
        }
        if let Some(roc) = &self.roc {
            let members = t.member.iter().filter(|m| **m == Some(true)).count();
            writeln!(
                f,
                "attacks on this target ({members} members, {} non-members; AUC and TPR at 1% and 0.1% FPR [95% \
                 intervals over documents]):",
                t.doc.len() - members
            )?;
            write!(f, "{}", AttackRows(roc))?;
        }
        Ok(())
    }
}

/// Every attack's ROC on one target whose members are `members` (one flag per document of
/// `scores`), its intervals over `bootstrap` resamples of the documents seeded by `seed`;
/// documents an attack has no score for are left out of its ROC, with a note.
fn target_roc(
    scores: &[[f32; 7]],
    members: &[bool],
    reference_note: Option<String>,
    bootstrap: usize,
    seed: u64,
) -> AttackTable {
    let docs = scores.len();
    let weights = resampling_weights(docs, bootstrap, seed, "attack-target-bootstrap");
    let mut table = AttackTable::default();
    for (a, name) in ATTACKS.iter().enumerate() {
        let points: Vec<(f64, bool, usize)> = (0..docs).map(|d| (f64::from(scores[d][a]), members[d], d)).collect();
        let missing = points.iter().filter(|p| !p.0.is_finite()).count();
        if missing == docs {
            let note = match *name {
                "reference" => reference_note.clone(),
                _ => Some("no document has a score".to_string()),
            };
            push_row(&mut table, name, None, 0, None, note);
            continue;
        }
        let note = (missing > 0)
            .then(|| format!("{missing} documents without a score left out (held out of the run's models)"));
        let figures = Pooled::new(points, docs).figures(&weights);
        push_row(&mut table, name, figures.as_ref(), 1, None, note);
    }
    table
}

/// The attacks on the run's models: the table, the ROC curves and the variance rule LiRA
/// used.
#[derive(Debug, Clone)]
pub struct AttackSummary {
    pub table: AttackTable,
    pub roc: AttackRocTable,
    pub variance: Variance,
}

impl AttackSummary {
    /// The attacks as `summary.json`'s `attacks` holds them.
    pub fn file(&self) -> Attacks {
        let t = &self.table;
        let attacks = (0..t.attack.len())
            .map(|i| AttackRow {
                attack: t.attack[i].clone(),
                auc: t.auc[i],
                auc_hi: t.auc_hi[i],
                auc_lo: t.auc_lo[i],
                note: t.note[i].clone(),
                spearman_mem_loss: t.spearman_mem_loss[i],
                targets: t.targets[i],
                tpr_at_0_1pct_fpr: t.tpr_at_0_1pct_fpr[i],
                tpr_at_0_1pct_fpr_hi: t.tpr_at_0_1pct_fpr_hi[i],
                tpr_at_0_1pct_fpr_lo: t.tpr_at_0_1pct_fpr_lo[i],
                tpr_at_1pct_fpr: t.tpr_at_1pct_fpr[i],
                tpr_at_1pct_fpr_hi: t.tpr_at_1pct_fpr_hi[i],
                tpr_at_1pct_fpr_lo: t.tpr_at_1pct_fpr_lo[i],
            })
            .collect();
        Attacks { attacks, variance: self.variance }
    }
}

impl std::fmt::Display for AttackSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets = self.table.targets.iter().copied().max().unwrap_or(0);
        writeln!(
            f,
            "membership attacks (each of {targets} models the target, the others its shadows; pooled ROC; AUC and \
             TPR at 1% and 0.1% FPR [95% intervals over targets], Spearman of the score with mem_loss):"
        )?;
        write!(f, "{}", AttackRows(&self.table))
    }
}

/// An attack table's rows as printed, one an attack: AUC, TPR at 1% and 0.1% FPR, each with
/// its interval, and the Spearman correlation with mem_loss where there is one.
pub struct AttackRows<'a>(pub &'a AttackTable);

impl std::fmt::Display for AttackRows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0;
        let percent = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.1}", 100.0 * v));
        let tpr = |v: Option<f64>, lo: Option<f64>, hi: Option<f64>| {
            format!("{}% [{}, {}]", percent(v), percent(lo), percent(hi))
        };
        let fixed = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        for i in 0..t.attack.len() {
            let Some(auc) = t.auc[i] else {
                writeln!(f, "  {:<13} unavailable: {}", t.attack[i], t.note[i].as_deref().unwrap_or("no score"))?;
                continue;
            };
            write!(
                f,
                "  {:<13} AUC {auc:.3} [{}, {}]  TPR {} at 1%, {} at 0.1%",
                t.attack[i],
                fixed(t.auc_lo[i]),
                fixed(t.auc_hi[i]),
                tpr(t.tpr_at_1pct_fpr[i], t.tpr_at_1pct_fpr_lo[i], t.tpr_at_1pct_fpr_hi[i]),
                tpr(t.tpr_at_0_1pct_fpr[i], t.tpr_at_0_1pct_fpr_lo[i], t.tpr_at_0_1pct_fpr_hi[i]),
            )?;
            if let Some(r) = t.spearman_mem_loss[i] {
                write!(f, "  Spearman {r:+.2}")?;
            }
            match &t.note[i] {
                Some(note) => writeln!(f, " ({note})")?,
                None => writeln!(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_deviations_without_one_value_equal_brute_force() {
        let values = vec![0.3, -1.2, 0.7, 0.7, 2.5, -0.1, 1.9];
        let side = Side::new(values.clone());
        let brute = |without: Option<usize>| {
            let mut rest = side.sorted.clone();
            if let Some(r) = without {
                rest.remove(r);
            }
            let n = rest.len() as f64;
            let mean = rest.iter().sum::<f64>() / n;
            let sd = (rest.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            (quantile(&rest, 0.5).unwrap(), sd)
        };
        for without in std::iter::once(None).chain((0..values.len()).map(Some)) {
            let (median, sd) = brute(without);
            assert!((side.median(without).unwrap() - median).abs() < 1e-12, "{without:?}");
            assert!((side.sd(without).unwrap() - sd).abs() < 1e-12, "{without:?}");
        }
        assert_eq!(side.rank(0.7), 3, "the first of equal values");
    }

    /// `models` models over `docs` documents with pseudo-random losses, document d IN for
    /// model m when (m + d) mod 3 ≠ 0, and members' losses lower.
    fn random_values(models: u32, docs: usize) -> ModelValues {
        use rand::RngExt;
        let mut values = ModelValues::new((0..models).collect(), docs, (0..docs as u32).collect(), true);
        let mut rng = seeds::rng(5, "attack-test", u64::from(models));
        let mut losses = Vec::new();
        for m in 0..models as usize {
            for d in 0..docs {
                let inside = (m + d) % 3 != 0;
                values.member[m * docs + d] = inside;
                losses.push(2.0 + rng.random::<f32>() - if inside { 0.3 } else { 0.0 });
            }
        }
        values.loss = Some(losses);
        values
    }

    /// The LiRA scores of model row `r` on document `d`, from its shadows (every other
    /// model) by brute force.
    fn brute_lira(values: &ModelValues, r: Option<usize>, d: usize, variance: Variance) -> (f64, f64) {
        let s = -f64::from(values.loss.as_ref().unwrap()[r.unwrap() * values.kept.len() + d]);
        brute_lira_of(values, r, d, variance, s)
    }

    /// The LiRA scores of statistic `s` on document `d`, every model but `without` a shadow,
    /// by brute force.
    fn brute_lira_of(values: &ModelValues, without: Option<usize>, d: usize, variance: Variance, s: f64) -> (f64, f64) {
        let (models, docs) = (values.models.len(), values.kept.len());
        let loss = values.loss.as_ref().unwrap();
        let statistic = |m: usize, d: usize| -f64::from(loss[m * docs + d]);
        let member = |m: usize, d: usize| values.member[m * docs + d];
        let shadow_side = |d: usize, inside: bool| -> Vec<f64> {
            (0..models).filter(|&m| Some(m) != without && member(m, d) == inside).map(|m| statistic(m, d)).collect()
        };
        let squares = |v: &[f64]| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>(), v.len() as f64 - 1.0)
        };
        let sd = |inside: bool| match variance {
            Variance::PerDocument => {
                let (ss, dof) = squares(&shadow_side(d, inside));
                (ss / dof).sqrt()
            }
            Variance::Fixed => {
                let (ss, dof) = (0..docs)
                    .map(|d| squares(&shadow_side(d, inside)))
                    .fold((0.0, 0.0), |(a, b), (ss, dof)| (a + ss, b + dof));
                (ss / dof).sqrt()
            }
        };
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            quantile(&v, 0.5).unwrap()
        };
        let (mu_in, mu_out) = (median(shadow_side(d, true)), median(shadow_side(d, false)));
        let (sd_in, sd_out) = (sd(true), sd(false));
        (log_density(s, mu_in, sd_in) - log_density(s, mu_out, sd_out), (s - mu_out) / sd_out)
    }

    #[test]
    fn leave_one_model_out_lira_equals_brute_force_with_either_variance() {
        let corpus = CorpusTable { tokens: vec![1; 5], holdout: vec![false; 5], ..Default::default() };
        for (models, expected) in [(9, Variance::Fixed), (120, Variance::PerDocument)] {
            let values = random_values(models, 5);
            let shadows = Shadows::new(&values, &corpus, &[1; 5], None);
            assert_eq!(shadows.variance(), expected, "{models} models");
            let targets: Vec<usize> = (0..models as usize).collect();
            let all = shadows.leave_one_out(&targets);
            let close = |ours: f32, theirs: f64| (f64::from(ours) - theirs).abs() < 1e-5 * theirs.abs().max(1.0);
            for r in 0..models as usize {
                // The same model from outside the run, its own row left out: the same scores.
                let outside: Vec<TargetValues> = (0..5).map(|d| shadows.model_values(r, d)).collect();
                let exported = shadows.external(&outside, Some(r));
                for (d, exported) in exported.iter().enumerate() {
                    let (online, offline) = brute_lira(&values, Some(r), d, expected);
                    let i = r * 5 + d;
                    assert!(close(all[0][i], online), "{models} models, target {r}, doc {d}");
                    assert!(close(all[1][i], offline), "{models} models, target {r}, doc {d}");
                    assert_eq!(all[2][i], -values.loss.as_ref().unwrap()[i], "loss");
                    for a in 0..ATTACKS.len() {
                        assert!(exported[a].total_cmp(&all[a][i]).is_eq(), "{}: target {r}, doc {d}", ATTACKS[a]);
                    }
                }
            }
            // A model outside the run with every run model a shadow.
            let outside: Vec<TargetValues> = (0..5)
                .map(|d| TargetValues { statistic: -2.0 + 0.1 * d as f64, min_k: 0.5, min_k_pp: f64::NAN })
                .collect();
            let scores = shadows.external(&outside, None);
            for (d, scores) in scores.iter().enumerate() {
                let (online, offline) = brute_lira_of(&values, None, d, expected, outside[d].statistic);
                assert!(close(scores[0], online) && close(scores[1], offline), "{models} models, doc {d}");
                assert_eq!((scores[4], scores[6].is_nan()), (0.5, true), "Min-K% as given, no reference");
            }
        }
    }

    #[test]
    fn the_reference_attack_is_the_targets_log_likelihood_above_the_references() {
        let corpus = CorpusTable { tokens: vec![1; 5], holdout: vec![false; 5], ..Default::default() };
        let values = random_values(6, 5);
        let reference = [-1.0, -2.0, -3.0, -4.0, -5.0];
        let shadows = Shadows::new(&values, &corpus, &[1; 5], Some(&reference));
        let all = shadows.leave_one_out(&[2]);
        for d in 0..5 {
            let s = -f64::from(values.loss.as_ref().unwrap()[2 * 5 + d]);
            assert!((f64::from(all[6][d]) - (s - reference[d])).abs() < 1e-6, "doc {d}");
        }
    }

    /// `[(score, member, group)]` with ties over two groups.
    fn tied_points() -> Vec<(f64, bool, usize)> {
        vec![
            (0.1, false, 0),
            (0.2, true, 1),
            (0.2, false, 1),
            (0.5, false, 0),
            (0.7, true, 0),
            (0.9, true, 1),
            (0.95, false, 1),
            (1.3, true, 0),
        ]
    }

    #[test]
    fn auc_and_tpr_match_counting_every_pair() {
        // Two targets, weights 1 and 2 (a bootstrap resample).
        let pooled = Pooled::new(tied_points(), 2);
        let weight = [1.0, 2.0];
        let auc = pooled.auc(&weight).unwrap();
        let tprs = pooled.tprs(&weight, &[0.0, 0.4]).unwrap();
        let (mut wins, mut pairs) = (0.0, 0.0);
        for p in pooled.points.iter().filter(|p| p.1) {
            for n in pooled.points.iter().filter(|p| !p.1) {
                let w = weight[p.2] * weight[n.2];
                pairs += w;
                wins += w * if p.0 > n.0 {
                    1.0
                } else if p.0 == n.0 {
                    0.5
                } else {
                    0.0
                };
            }
        }
        assert!((auc - wins / pairs).abs() < 1e-12, "{auc} vs {}", wins / pairs);
        // Negatives weigh 1 + 2 + 1 + 2 = 6; positives 2 + 1 + 2 + 1 = 6. At FPR 0 only the
        // top score (positive, target 0: weight 1) is above every negative: TPR 1/6. Within
        // 0.4 (2.4 of 6): down to 0.7 the negatives weigh 2 (0.95): TPR (1 + 2 + 1) / 6.
        assert!((tprs[0] - 1.0 / 6.0).abs() < 1e-12 && (tprs[1] - 4.0 / 6.0).abs() < 1e-12, "{tprs:?}");
        assert!(Pooled::new(tied_points()[..1].to_vec(), 2).auc(&weight).is_none(), "no positives");
    }

    #[test]
    fn resampled_aucs_from_pair_counts_equal_a_pass_per_resample() {
        let mut points = tied_points();
        let mut rng = seeds::rng(3, "pair-counts", 0);
        points.extend((0..300).map(|i| ((rng.random::<f64>() * 20.0).round(), rng.random::<bool>(), i % 5)));
        let pooled = Pooled::new(points, 5);
        let weights = resampling_weights(5, 40, 9, "test");
        let wins = pooled.pair_wins();
        for w in &weights {
            let (positives, negatives) = pooled.totals(w);
            let won: f64 = (0..5).map(|g| w[g] * (0..5).map(|h| w[h] * wins[g * 5 + h]).sum::<f64>()).sum();
            let direct = pooled.auc(w).unwrap();
            assert!((won / (positives * negatives) - direct).abs() < 1e-12, "{w:?}");
        }
        // 5 groups, 40 resamples: figures take the pair counts, and agree with the direct intervals.
        let figures = pooled.figures(&weights).unwrap();
        let direct = interval(weights.iter().filter_map(|w| pooled.auc(w)).collect()).unwrap();
        let (lo, hi) = figures.auc_interval.unwrap();
        assert!((lo - direct.0).abs() < 1e-12 && (hi - direct.1).abs() < 1e-12);
    }
}
