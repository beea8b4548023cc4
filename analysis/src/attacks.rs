//! Membership inference attacks evaluated on the run itself (`analysis/attacks.parquet`):
//! each model in turn is the target, the others its shadows; its members are the documents
//! it trained on, its non-members those it did not (held-out documents are neither). The
//! targets' (score, member?) pairs are pooled into one ROC per attack: its AUC, its TPR at
//! 1% and at 0.1% FPR, and a bootstrap interval of the AUC over target models.
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
//! - `reference`: the target's loss minus a reference model's; listed as unavailable: the
//!   base's per-document loss is not logged.
//!
//! The shadows' medians and deviations without the target come from each document's sorted
//! values and running sums, O(M log M) per document, never O(M²·N).

use rand::RngExt;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use subsets::schema::{AttackTable, CorpusTable, MembershipTable, ScoreTable};
use subsets::seeds;

use crate::membership::{PER_DOCUMENT_VARIANCE, Side, Variance};
use crate::per_model::ModelValues;
use crate::stats::{quantile, spearman};

/// The attacks, in the order of `attacks.parquet`.
pub const ATTACKS: [&str; 7] = ["lira_online", "lira_offline", "loss", "zlib", "min_k", "min_k_pp", "reference"];

/// The shadows' Gaussians of one (target, document): (μ_in, σ_in, μ_out, σ_out).
type Gaussians = (f64, f64, f64, f64);

/// log N(x; μ, σ) less its constant.
fn log_density(x: f64, mu: f64, sd: f64) -> f64 {
    -sd.ln() - (x - mu).powi(2) / (2.0 * sd * sd)
}

/// (target, document) pairs evaluated at most; a larger run's targets are a subset of its
/// models drawn from its seed, every one of the others still a shadow.
pub const MAX_PAIRS: usize = 1 << 21;

/// Every attack's score of every (target, document), the targets being the rows `targets`
/// of `values`, and the variance rule used: `[attack][t * docs + doc]` for the t-th target,
/// NaN where an attack has none. `zlib_factor[d]` is tokens / zlib bytes of document d.
/// Two passes over the documents: the sides' moments (for the pooled variance), then each
/// document's sorted sides and its targets' scores; no per-model copy of the values.
fn attack_scores(
    values: &ModelValues,
    zlib_factor: &[f64],
    holdout: &[bool],
    targets: &[usize],
) -> (Vec<Vec<f32>>, Variance) {
    let loss = values.loss.as_deref().expect("attacks read losses");
    let (models, docs) = (values.models.len(), values.kept.len());
    let statistic = |row: usize, doc: usize| -f64::from(loss[row * docs + doc]);
    let member = |row: usize, doc: usize| values.member_row(row)[values.kept[doc] as usize];
    let side_values = |d: usize, inside: bool| -> Vec<f64> {
        (0..models).filter(|&r| member(r, d) == inside).map(|r| statistic(r, d)).collect()
    };
    // Pass 1, per side [OUT, IN]: each document's count, sum and squares.
    let moments: Vec<[(f64, f64, f64); 2]> = (0..docs)
        .into_par_iter()
        .map(|d| {
            [false, true].map(|inside| {
                let v = side_values(d, inside);
                (v.len() as f64, v.iter().sum::<f64>(), v.iter().map(|x| x * x).sum::<f64>())
            })
        })
        .collect();
    let scored: Vec<usize> =
        (0..docs).filter(|&d| !holdout[d] && moments[d].iter().all(|&(n, _, _)| n > 0.0)).collect();
    let per_document = scored.iter().all(|&d| moments[d].iter().all(|&(n, _, _)| n > PER_DOCUMENT_VARIANCE as f64));
    let variance = if per_document { Variance::PerDocument } else { Variance::Fixed };
    // Fixed variance: per side, the pooled squares and degrees of freedom, and what each
    // model's value adds to them (removing x from n values takes (x − mean)² · n / (n − 1)).
    let mut pooled = [(0.0, 0.0); 2];
    for &d in &scored {
        for (s, &(n, sum, squares)) in moments[d].iter().enumerate() {
            if n >= 2.0 {
                pooled[s].0 += squares - sum * sum / n;
                pooled[s].1 += n - 1.0;
            }
        }
    }
    let own: Vec<[(f64, f64); 2]> = scored
        .par_iter()
        .fold(
            || vec![[(0.0, 0.0); 2]; models],
            |mut own, &d| {
                for (r, own) in own.iter_mut().enumerate() {
                    let s = usize::from(member(r, d));
                    let (n, sum, _) = moments[d][s];
                    if n >= 2.0 {
                        own[s].0 += (statistic(r, d) - sum / n).powi(2) * n / (n - 1.0);
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
    let pooled_sd = |r: usize, s: usize| ((pooled[s].0 - own[r][s].0) / (pooled[s].1 - own[r][s].1)).max(0.0).sqrt();

    // Pass 2: per document, its sorted sides and every target's scores.
    let min_k = values.min_k.as_ref();
    let per_doc: Vec<Vec<[f32; 7]>> = (0..docs)
        .into_par_iter()
        .map(|d| {
            let [out_side, in_side] = [false, true].map(|inside| Side::new(side_values(d, inside)));
            let gaussians = |r: usize| -> Option<Gaussians> {
                let inside = member(r, d);
                let own_rank = |side: &Side| side.rank(statistic(r, d));
                let without_in = inside.then(|| own_rank(&in_side));
                let without_out = (!inside).then(|| own_rank(&out_side));
                let (mu_in, mu_out) = (in_side.median(without_in)?, out_side.median(without_out)?);
                let (sd_in, sd_out) = match variance {
                    Variance::PerDocument => (in_side.sd(without_in)?, out_side.sd(without_out)?),
                    Variance::Fixed => (pooled_sd(r, 1), pooled_sd(r, 0)),
                };
                (sd_in > 0.0 && sd_out > 0.0).then_some((mu_in, sd_in, mu_out, sd_out))
            };
            targets
                .iter()
                .map(|&r| {
                    let s = statistic(r, d);
                    let lira = gaussians(r).filter(|_| !holdout[d]);
                    let token_statistic = |i: usize| min_k.map_or(f64::NAN, |m| f64::from(m[i][r * docs + d]));
                    [
                        lira.map_or(f64::NAN, |(mi, si, mo, so)| log_density(s, mi, si) - log_density(s, mo, so)),
                        lira.map_or(f64::NAN, |(_, _, mo, so)| (s - mo) / so),
                        s,
                        s * zlib_factor[d],
                        token_statistic(0),
                        token_statistic(1),
                        f64::NAN,
                    ]
                    .map(|v| v as f32)
                })
                .collect()
        })
        .collect();
    let all = (0..ATTACKS.len())
        .map(|a| {
            let mut scores = vec![f32::NAN; targets.len() * docs];
            for (d, row) in per_doc.iter().enumerate() {
                for (t, values) in row.iter().enumerate() {
                    scores[t * docs + d] = values[a];
                }
            }
            scores
        })
        .collect();
    (all, variance)
}

/// AUC and TPR at `fprs` of pooled ROC `points` — (score, member, target row), ascending by
/// score — each weighted by its target's `weight`.
fn roc(points: &[(f64, bool, usize)], weight: &[f64], fprs: &[f64]) -> Option<(f64, Vec<f64>)> {
    let (positives, negatives) = points
        .iter()
        .fold((0.0, 0.0), |(p, n), &(_, member, t)| if member { (p + weight[t], n) } else { (p, n + weight[t]) });
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Ascending: each positive beats the negatives below it, ties count half.
    let (mut below, mut wins, mut start) = (0.0, 0.0, 0);
    while start < points.len() {
        let end = start + points[start..].iter().take_while(|p| p.0 == points[start].0).count();
        let (mut pos, mut neg) = (0.0, 0.0);
        for &(_, member, t) in &points[start..end] {
            if member { pos += weight[t] } else { neg += weight[t] }
        }
        wins += pos * (below + neg / 2.0);
        below += neg;
        start = end;
    }
    // Descending thresholds: TPR at the lowest threshold whose FPR stays within each bound.
    let mut tprs = vec![0.0; fprs.len()];
    let (mut tp, mut fp, mut end) = (0.0, 0.0, points.len());
    while end > 0 {
        let start = end - points[..end].iter().rev().take_while(|p| p.0 == points[end - 1].0).count();
        for &(_, member, t) in &points[start..end] {
            if member { tp += weight[t] } else { fp += weight[t] }
        }
        for (tpr, &bound) in tprs.iter_mut().zip(fprs) {
            if fp / negatives <= bound {
                *tpr = tp / positives;
            }
        }
        end = start;
    }
    Some((wins / (positives * negatives), tprs))
}

/// Evaluates every attack on the run's models (`values`, with losses), the documents'
/// `scores` giving mem_loss and `membership` their zlib lengths; `bootstrap` resamples of the
/// targets, seeded by `seed`. Returns the table and the variance rule the LiRA attacks used.
pub fn evaluate(
    values: &ModelValues,
    corpus: &CorpusTable,
    scores: &ScoreTable,
    membership: &MembershipTable,
    bootstrap: usize,
    seed: u64,
) -> (AttackTable, Variance) {
    let docs = values.kept.len();
    let zlib_factor: Vec<f64> = (0..docs)
        .map(|d| f64::from(corpus.tokens[values.kept[d] as usize]) / f64::from(membership.zlib_bytes[d]))
        .collect();
    let holdout: Vec<bool> = values.kept.iter().map(|&d| corpus.holdout[d as usize]).collect();
    let scored_docs = holdout.iter().filter(|&&h| !h).count().max(1);
    let mut targets: Vec<usize> = (0..values.models.len()).collect();
    if targets.len() * scored_docs > MAX_PAIRS {
        targets.shuffle(&mut seeds::rng(seed, "attack-targets", 0));
        targets.truncate((MAX_PAIRS / scored_docs).max(2));
        targets.sort_unstable();
    }
    let (all, variance) = attack_scores(values, &zlib_factor, &holdout, &targets);
    let models = targets.len();
    let member = |t: usize, doc: usize| values.member_row(targets[t])[values.kept[doc] as usize];
    let weights: Vec<Vec<f64>> = (0..bootstrap)
        .map(|b| {
            let mut rng = seeds::rng(seed, "attack-bootstrap", b as u64);
            let mut w = vec![0.0; models];
            for _ in 0..models {
                w[rng.random_range(0..models)] += 1.0;
            }
            w
        })
        .collect();
    let mut table = AttackTable::default();
    for (a, name) in ATTACKS.iter().enumerate() {
        let values_of = &all[a];
        let mut points: Vec<(f64, bool, usize)> = (0..models)
            .flat_map(|r| (0..docs).filter(|&d| !holdout[d]).map(move |d| (r, d)))
            .map(|(r, d)| (f64::from(values_of[r * docs + d]), member(r, d), r))
            .collect();
        let missing = points.iter().filter(|p| !p.0.is_finite()).count();
        let note = match *name {
            "reference" => Some("needs a reference model's per-document loss, which the run does not log".to_string()),
            "min_k" | "min_k_pp" if missing > 0 => {
                Some("the logs have no per-token statistics (written before schema version 4)".to_string())
            }
            _ if missing > 0 => Some(format!("{missing} (target, document) pairs without a score left out")),
            _ => None,
        };
        points.retain(|p| p.0.is_finite());
        points.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let unavailable = matches!(*name, "reference") || (name.starts_with("min_k") && missing > 0);
        let result = (!unavailable).then(|| roc(&points, &vec![1.0; models], &[0.01, 0.001])).flatten();
        let interval = result.as_ref().and_then(|_| {
            let mut aucs: Vec<f64> = weights.par_iter().filter_map(|w| roc(&points, w, &[]).map(|r| r.0)).collect();
            aucs.sort_by(f64::total_cmp);
            Some((quantile(&aucs, 0.025)?, quantile(&aucs, 0.975)?))
        });
        // Per document: the mean score its members give it, against mem_loss.
        let spearman_mem_loss = (!unavailable).then(|| {
            let (mut mean_score, mut mem_loss) = (Vec::new(), Vec::new());
            for d in (0..docs).filter(|&d| !holdout[d]) {
                let member_scores: Vec<f64> = (0..models)
                    .filter(|&r| member(r, d))
                    .map(|r| f64::from(values_of[r * docs + d]))
                    .filter(|v| v.is_finite())
                    .collect();
                if let (false, Some(m)) = (member_scores.is_empty(), scores.mem_loss[values.kept[d] as usize]) {
                    mean_score.push(member_scores.iter().sum::<f64>() / member_scores.len() as f64);
                    mem_loss.push(m);
                }
            }
            spearman(&mean_score, &mem_loss)
        });
        table.attack.push(name.to_string());
        table.auc.push(result.as_ref().map(|r| r.0));
        table.auc_lo.push(interval.map(|i| i.0));
        table.auc_hi.push(interval.map(|i| i.1));
        table.tpr_at_1pct_fpr.push(result.as_ref().map(|r| r.1[0]));
        table.tpr_at_0_1pct_fpr.push(result.as_ref().map(|r| r.1[1]));
        table.targets.push(if unavailable { 0 } else { models as u32 });
        table.spearman_mem_loss.push(spearman_mem_loss.flatten());
        table.note.push(note);
    }
    (table, variance)
}

/// What the views say of the attacks: the table and the variance rule LiRA used.
#[derive(Debug, Clone)]
pub struct AttackSummary {
    pub table: AttackTable,
    pub variance: Variance,
}

impl AttackSummary {
    /// `summary.json`'s `attacks`: `{"variance": "per-document" | "fixed", "attacks":
    /// [{attack, auc, auc_lo, auc_hi, tpr_at_1pct_fpr, tpr_at_0_1pct_fpr, targets,
    /// spearman_mem_loss, note}]}`, the rows of `attacks.parquet`.
    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.table;
        let rows: Vec<serde_json::Value> = (0..t.attack.len())
            .map(|i| {
                serde_json::json!({
                    "attack": t.attack[i], "auc": t.auc[i], "auc_lo": t.auc_lo[i], "auc_hi": t.auc_hi[i],
                    "tpr_at_1pct_fpr": t.tpr_at_1pct_fpr[i], "tpr_at_0_1pct_fpr": t.tpr_at_0_1pct_fpr[i],
                    "targets": t.targets[i], "spearman_mem_loss": t.spearman_mem_loss[i], "note": t.note[i],
                })
            })
            .collect();
        serde_json::json!({"variance": self.variance, "attacks": rows})
    }
}

impl std::fmt::Display for AttackSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.table;
        let targets = t.targets.iter().copied().max().unwrap_or(0);
        writeln!(
            f,
            "membership attacks (each of {targets} models the target, the others its shadows; pooled ROC; AUC [95% \
             interval over targets], TPR at 1% and 0.1% FPR, Spearman of the score with mem_loss):"
        )?;
        let percent = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        for i in 0..t.attack.len() {
            match (t.auc[i], t.auc_lo[i], t.auc_hi[i]) {
                (Some(auc), lo, hi) => writeln!(
                    f,
                    "  {:<13} AUC {auc:.3} [{}, {}]  TPR {:>6} at 1%, {:>6} at 0.1%  Spearman {}",
                    t.attack[i],
                    lo.map_or("-".into(), |v| format!("{v:.3}")),
                    hi.map_or("-".into(), |v| format!("{v:.3}")),
                    percent(t.tpr_at_1pct_fpr[i]),
                    percent(t.tpr_at_0_1pct_fpr[i]),
                    t.spearman_mem_loss[i].map_or("-".into(), |r| format!("{r:+.2}")),
                )?,
                _ => writeln!(f, "  {:<13} unavailable: {}", t.attack[i], t.note[i].as_deref().unwrap_or("no score"))?,
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

    /// The LiRA scores of target `r` on document `d`, from its shadows by brute force.
    fn brute_lira(values: &ModelValues, r: usize, d: usize, variance: Variance) -> (f64, f64) {
        let (models, docs) = (values.models.len(), values.kept.len());
        let loss = values.loss.as_ref().unwrap();
        let statistic = |m: usize, d: usize| -f64::from(loss[m * docs + d]);
        let member = |m: usize, d: usize| values.member[m * docs + d];
        let shadow_side = |d: usize, inside: bool| -> Vec<f64> {
            (0..models).filter(|&m| m != r && member(m, d) == inside).map(|m| statistic(m, d)).collect()
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
        let s = statistic(r, d);
        (log_density(s, mu_in, sd_in) - log_density(s, mu_out, sd_out), (s - mu_out) / sd_out)
    }

    #[test]
    fn leave_one_model_out_lira_equals_brute_force_with_either_variance() {
        for (models, expected) in [(9, Variance::Fixed), (120, Variance::PerDocument)] {
            let values = random_values(models, 5);
            let targets: Vec<usize> = (0..models as usize).collect();
            let (all, variance) = attack_scores(&values, &[1.0; 5], &[false; 5], &targets);
            assert_eq!(variance, expected, "{models} models");
            for r in 0..models as usize {
                for d in 0..5 {
                    let (online, offline) = brute_lira(&values, r, d, variance);
                    let i = r * 5 + d;
                    let close =
                        |ours: f32, theirs: f64| (f64::from(ours) - theirs).abs() < 1e-5 * theirs.abs().max(1.0);
                    assert!(close(all[0][i], online), "{models} models, target {r}, doc {d}");
                    assert!(close(all[1][i], offline), "{models} models, target {r}, doc {d}");
                    assert_eq!(all[2][i], -values.loss.as_ref().unwrap()[i], "loss");
                }
            }
        }
    }

    #[test]
    fn auc_and_tpr_match_counting_every_pair() {
        // Scores with ties; labels; two targets, weights 1 and 2 (a bootstrap resample).
        let points = vec![
            (0.1, false, 0),
            (0.2, true, 1),
            (0.2, false, 1),
            (0.5, false, 0),
            (0.7, true, 0),
            (0.9, true, 1),
            (0.95, false, 1),
            (1.3, true, 0),
        ];
        let weight = [1.0, 2.0];
        let (auc, tprs) = roc(&points, &weight, &[0.0, 0.4]).unwrap();
        let (mut wins, mut pairs) = (0.0, 0.0);
        for p in points.iter().filter(|p| p.1) {
            for n in points.iter().filter(|p| !p.1) {
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
        assert!(roc(&points[..1], &weight, &[]).is_none(), "no positives");
    }
}
