//! Do the models generalize? Counterfactual memorization separates documents only when
//! models also predict text they never trained on: tiny models trained many epochs on a
//! tiny corpus reach high accuracy on every IN document and near-nothing on OUT ones, and
//! then every document looks memorized. This module owns the check:
//!
//! - [`leave_one_out_baselines`]: per document, how many of its tokens a bigram table (and,
//!   weaker, a unigram table) fit on the training pool *without that document* predicts,
//!   the accuracy a model must beat on a document it did not train on;
//! - [`diagnose`]: per source and overall, the mean accuracy of IN models, of OUT models
//!   and of the baselines, and a [`Diagnosis`] with a warning when OUT accuracy does not
//!   beat the bigram baseline while IN accuracy does (the rule is on [`Diagnosis`]).
//!
//! It takes token ids, weights and accuracies as arguments: it knows no files, no
//! tokenizer and no tch.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use subsets::canaries::CANARY_SOURCE;

use crate::summary::source_label;
use crate::{Error, Result};

/// The generalization gap (mean OUT accuracy − mean bigram baseline) below which the models
/// are said not to beat a bigram table on text they never saw.
pub const GENERALIZATION_MARGIN: f64 = 0.05;
/// The memorization gap (mean IN accuracy − mean OUT accuracy) above which the models are
/// said to fit the text they trained on far better than other text.
pub const MEMORIZATION_MARGIN: f64 = 0.2;

/// Shards of previous tokens per thread when counting bigrams: more shards balance threads
/// better but each one scans the whole pool.
const SHARDS_PER_THREAD: usize = 4;
/// Fewest bigram positions worth a shard of their own; a small pool is one shard.
const MIN_SHARD_POSITIONS: u64 = 1 << 20;

/// What the leave-one-out baselines predict of one corpus document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Baseline {
    pub tokens: u64,
    /// Tokens the leave-one-out bigram table predicts from the previous token.
    pub bigram_correct: u64,
    /// Tokens equal to the most frequent token of the pool without the document.
    pub unigram_correct: u64,
}

impl Baseline {
    /// `bigram_correct / tokens`, None for an empty document.
    pub fn bigram_accuracy(&self) -> Option<f64> {
        (self.tokens > 0).then(|| self.bigram_correct as f64 / self.tokens as f64)
    }

    /// `unigram_correct / tokens`, None for an empty document.
    pub fn unigram_accuracy(&self) -> Option<f64> {
        (self.tokens > 0).then(|| self.unigram_correct as f64 / self.tokens as f64)
    }
}

/// The baselines of every corpus document, in corpus order.
///
/// The training pool is every corpus document `corpus[d]` repeated `weights[d]` times (its
/// copy count, 0 for a held-out document no model trains on) and every `background`
/// document once. `bos` (the vocabulary size, above every token id) precedes each
/// document, so a document's first token is predicted from `bos`.
///
/// For document x with weight w, the pool's next-token counts `C[a][b]` less w times x's own
/// counts are the bigram table x would be predicted by if it were OUT. Token t_i after a
/// is predicted as the b with the largest remaining count, the smaller id on a tie; where
/// nothing follows a in the remaining pool, as the most frequent remaining token (the
/// unigram baseline's single guess); where the pool holds nothing but x, as token 0.
///
/// Memory is one entry per distinct bigram of the pool (12 bytes) plus, while counting, 8
/// bytes per pool position of the shards in progress; no V × V table. A token id not
/// below `bos` is an error.
pub fn leave_one_out_baselines(
    corpus: &[Vec<u32>],
    weights: &[u32],
    background: &[Vec<u32>],
    bos: u32,
) -> Result<Vec<Baseline>> {
    assert_eq!(corpus.len(), weights.len(), "one weight per corpus document");
    check_tokens(corpus, "corpus", bos)?;
    check_tokens(background, "background", bos)?;
    let pool = training_pool(corpus, weights, background);
    let positions = positions_per_previous(&pool, bos);
    let total: u64 = positions.iter().sum();
    let shard_positions = (total / (SHARDS_PER_THREAD * rayon::current_num_threads()) as u64).max(MIN_SHARD_POSITIONS);
    let bigrams = successors(&pool, &positions, &shard_bounds(&positions, shard_positions));
    let unigrams = bigrams.next_token_totals(bos);
    Ok(corpus
        .par_iter()
        .zip(weights)
        .map(|(tokens, &weight)| document_baseline(tokens, u64::from(weight), &bigrams, &unigrams, bos))
        .collect())
}

fn check_tokens(documents: &[Vec<u32>], what: &str, bos: u32) -> Result<()> {
    match documents
        .par_iter()
        .enumerate()
        .find_map_any(|(d, tokens)| tokens.iter().find(|&&t| t >= bos).map(|&t| (d, t)))
    {
        Some((doc, token)) => Err(Error::TokenBeyondVocabulary { what: what.to_string(), doc, token, bos }),
        None => Ok(()),
    }
}

/// A document of the training pool and how many times the pool holds it.
struct PoolDocument<'a> {
    tokens: &'a [u32],
    weight: u32,
}

fn training_pool<'a>(corpus: &'a [Vec<u32>], weights: &[u32], background: &'a [Vec<u32>]) -> Vec<PoolDocument<'a>> {
    let weighted = corpus.iter().zip(weights).filter(|(_, w)| **w > 0);
    weighted
        .map(|(tokens, &weight)| PoolDocument { tokens, weight })
        .chain(background.iter().map(|tokens| PoolDocument { tokens, weight: 1 }))
        .collect()
}

/// Every (previous, next) pair of a document, the first token's previous being `bos`.
fn pairs(tokens: &[u32], bos: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
    std::iter::once(bos).chain(tokens.iter().copied()).zip(tokens.iter().copied())
}

/// Positions of the pool (unweighted) per previous token, `bos` included: the sizes by which
/// previous tokens are cut into shards.
fn positions_per_previous(pool: &[PoolDocument], bos: u32) -> Vec<u64> {
    let previous_tokens = bos as usize + 1;
    pool.par_iter()
        .fold(
            || vec![0u64; previous_tokens],
            |mut positions, doc| {
                pairs(doc.tokens, bos).for_each(|(a, _)| positions[a as usize] += 1);
                positions
            },
        )
        .reduce(
            || vec![0u64; previous_tokens],
            |mut sum, other| {
                sum.iter_mut().zip(&other).for_each(|(s, o)| *s += o);
                sum
            },
        )
}

/// Boundaries of contiguous ranges of previous tokens of about `shard_positions` positions
/// each (a single frequent previous token may exceed it), from 0 to every previous token.
fn shard_bounds(positions: &[u64], shard_positions: u64) -> Vec<usize> {
    let mut bounds = vec![0];
    let mut filled = 0;
    for (a, &n) in positions.iter().enumerate() {
        filled += n;
        if filled >= shard_positions {
            bounds.push(a + 1);
            filled = 0;
        }
    }
    if bounds.last() != Some(&positions.len()) {
        bounds.push(positions.len());
    }
    bounds
}

/// Next-token counts of the pool, one list per previous token, by count descending then
/// token ascending: the order in which [`leave_one_out_argmax`] may stop early.
#[derive(Debug, Clone, PartialEq)]
struct Successors {
    /// The list of previous token a is `next[offsets[a]..offsets[a + 1]]`.
    offsets: Vec<usize>,
    next: Vec<u32>,
    count: Vec<u64>,
}

impl Successors {
    fn of(&self, previous: u32) -> (&[u32], &[u64]) {
        let range = self.offsets[previous as usize]..self.offsets[previous as usize + 1];
        (&self.next[range.clone()], &self.count[range])
    }

    /// How often each token occurs in the pool, as one ranked list: every token is the next
    /// token of exactly one pair.
    fn next_token_totals(&self, bos: u32) -> Ranked {
        let mut totals = vec![0u64; bos as usize];
        self.next.iter().zip(&self.count).for_each(|(&b, &c)| totals[b as usize] += c);
        let counted = totals.into_iter().enumerate().filter(|&(_, c)| c > 0);
        Ranked::new(counted.map(|(b, c)| (b as u32, c)).collect())
    }
}

/// (token, count) pairs with positive counts, by count descending then token ascending.
struct Ranked {
    next: Vec<u32>,
    count: Vec<u64>,
}

impl Ranked {
    fn new(mut counts: Vec<(u32, u64)>) -> Ranked {
        counts.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let (next, count) = counts.into_iter().unzip();
        Ranked { next, count }
    }
}

/// The pool's bigram lists, each shard of previous tokens counted by its own task.
fn successors(pool: &[PoolDocument], positions: &[u64], bounds: &[usize]) -> Successors {
    let shards: Vec<(Vec<usize>, Ranked)> =
        bounds.par_windows(2).map(|w| count_shard(pool, positions, w[0]..w[1])).collect();
    let mut offsets = vec![0];
    let (mut next, mut count) = (Vec::new(), Vec::new());
    for (lengths, ranked) in shards {
        for length in lengths {
            offsets.push(offsets.last().expect("starts with 0") + length);
        }
        next.extend(ranked.next);
        count.extend(ranked.count);
    }
    Successors { offsets, next, count }
}

/// The ranked lists of the previous tokens in `shard`, concatenated, and their lengths.
/// The shard's pairs are first bucketed by previous token (a counting sort on `positions`),
/// so each list is a sort of its own bucket.
fn count_shard(pool: &[PoolDocument], positions: &[u64], shard: Range<usize>) -> (Vec<usize>, Ranked) {
    let bos = (positions.len() - 1) as u32;
    let mut starts = vec![0usize];
    for &n in &positions[shard.clone()] {
        starts.push(starts.last().expect("starts with 0") + n as usize);
    }
    let mut cursor = starts[..starts.len() - 1].to_vec();
    let mut buckets = vec![(0u32, 0u32); *starts.last().expect("starts with 0")];
    for doc in pool {
        for (a, b) in pairs(doc.tokens, bos) {
            if shard.contains(&(a as usize)) {
                let slot = &mut cursor[a as usize - shard.start];
                buckets[*slot] = (b, doc.weight);
                *slot += 1;
            }
        }
    }
    let mut lengths = Vec::with_capacity(shard.len());
    let (mut next, mut count) = (Vec::new(), Vec::new());
    for bucket in starts.windows(2) {
        let bucket = &mut buckets[bucket[0]..bucket[1]];
        bucket.sort_unstable_by_key(|&(b, _)| b);
        let merged: Vec<(u32, u64)> = bucket
            .chunk_by(|x, y| x.0 == y.0)
            .map(|run| (run[0].0, run.iter().map(|&(_, w)| u64::from(w)).sum()))
            .collect();
        let ranked = Ranked::new(merged);
        lengths.push(ranked.next.len());
        next.extend(ranked.next);
        count.extend(ranked.count);
    }
    (lengths, Ranked { next, count })
}

/// The token with the largest `count − own(token)`, the smaller on a tie, None when every
/// remaining count is 0. `next` and `count` are ranked (count descending, token ascending)
/// and `own` never exceeds a count, so the scan stops at the first entry that could not
/// win even untouched: it reads at most the entries the document touches, plus two.
fn leave_one_out_argmax(next: &[u32], count: &[u64], own: impl Fn(u32) -> u64) -> Option<u32> {
    let mut best: Option<(u64, u32)> = None;
    for (&b, &c) in next.iter().zip(count) {
        if let Some((best_count, best_next)) = best
            && (c < best_count || (c == best_count && b > best_next))
        {
            break;
        }
        let remaining = c - own(b);
        let wins = best
            .is_none_or(|(best_count, best_next)| remaining > best_count || (remaining == best_count && b < best_next));
        if remaining > 0 && wins {
            best = Some((remaining, b));
        }
    }
    best.map(|(_, b)| b)
}

/// Runs of equal values of a sorted slice, as (value, length).
fn run_lengths<T: Copy + PartialEq>(sorted: &[T]) -> Vec<(T, u64)> {
    sorted.chunk_by(|x, y| x == y).map(|run| (run[0], run.len() as u64)).collect()
}

fn document_baseline(tokens: &[u32], weight: u64, bigrams: &Successors, unigrams: &Ranked, bos: u32) -> Baseline {
    let mut sorted_tokens = tokens.to_vec();
    sorted_tokens.sort_unstable();
    let own_tokens = run_lengths(&sorted_tokens);
    let own_token = |b: u32| own_tokens.binary_search_by_key(&b, |&(t, _)| t).map_or(0, |i| own_tokens[i].1);
    let unigram_guess = leave_one_out_argmax(&unigrams.next, &unigrams.count, |b| weight * own_token(b)).unwrap_or(0);

    let mut sorted_pairs: Vec<(u32, u32)> = pairs(tokens, bos).collect();
    sorted_pairs.sort_unstable();
    let own_pairs = run_lengths(&sorted_pairs);
    let bigram_correct = own_pairs
        .chunk_by(|x, y| x.0.0 == y.0.0)
        .map(|after_a| {
            let own_pair = |b: u32| after_a.binary_search_by_key(&b, |&((_, t), _)| t).map_or(0, |i| after_a[i].1);
            let (next, count) = bigrams.of(after_a[0].0.0);
            let guess = leave_one_out_argmax(next, count, |b| weight * own_pair(b)).unwrap_or(unigram_guess);
            own_pair(guess)
        })
        .sum();
    Baseline { tokens: tokens.len() as u64, bigram_correct, unigram_correct: own_token(unigram_guess) }
}

/// One corpus document's accuracies, the input of [`diagnose`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentAccuracy {
    pub source: Option<String>,
    pub holdout: bool,
    /// Mean per-token accuracy of the models that trained on the document, None if none did.
    pub acc_in: Option<f64>,
    /// Mean per-token accuracy of the models that did not, None if every model did.
    pub acc_out: Option<f64>,
    /// Mean per-token loss (nats) of the models that trained on the document.
    pub loss_in: Option<f64>,
    /// Mean per-token loss of the models that did not.
    pub loss_out: Option<f64>,
    /// [`Baseline::bigram_accuracy`].
    pub bigram: Option<f64>,
    /// [`Baseline::unigram_accuracy`].
    pub unigram: Option<f64>,
}

/// Means over a group of documents. Every mean is unweighted over the group's documents
/// that have the value (a long document counts as much as a short one), None when none
/// has it; the gaps are differences of the means shown, so a reader can check them.
///
/// JSON fields: `documents`, `holdout`, `acc_in`, `acc_out`, `loss_in`, `loss_out`,
/// `bigram_baseline`, `unigram_baseline`, `generalization_gap`, `memorization_gap`
/// (numbers or null) and `memorizing` (bool). The losses are shown beside the accuracies;
/// the rule is on accuracy, which the baselines are in. Summaries written before the
/// losses were shown read with them null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupAccuracy {
    pub documents: usize,
    /// Held-out documents among them (only OUT accuracy).
    pub holdout: usize,
    pub acc_in: Option<f64>,
    pub acc_out: Option<f64>,
    /// Mean per-token loss IN and OUT: `loss_out − loss_in` is the group's mean mem_loss.
    #[serde(default)]
    pub loss_in: Option<f64>,
    #[serde(default)]
    pub loss_out: Option<f64>,
    pub bigram_baseline: Option<f64>,
    pub unigram_baseline: Option<f64>,
    /// `acc_out − bigram_baseline`: how much better than a bigram table the models predict
    /// text they never saw.
    pub generalization_gap: Option<f64>,
    /// `acc_in − acc_out`.
    pub memorization_gap: Option<f64>,
    /// Whether the group is in a memorizing regime by the rule of [`Diagnosis`]; always
    /// false for the canaries, random text that no model could generalize to.
    pub memorizing: bool,
}

/// A source's row: JSON is `source` (a string, null for documents without a source) next
/// to the fields of [`GroupAccuracy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAccuracy {
    pub source: Option<String>,
    #[serde(flatten)]
    pub accuracy: GroupAccuracy,
}

/// The generalization check of a run, stored in `analysis/summary.json` under
/// `"diagnosis"`.
///
/// The rule: a group of documents is *memorizing* when its generalization gap (mean OUT
/// accuracy − mean bigram baseline) is below [`GENERALIZATION_MARGIN`] while its
/// memorization gap (mean IN − mean OUT accuracy) is above [`MEMORIZATION_MARGIN`]: the
/// models do not beat a bigram table on text they never saw, but do on text they trained
/// on. A warning is given when all documents but the canaries are memorizing, or else
/// when some source other than the canaries is.
///
/// JSON: `{"overall": GroupAccuracy, "sources": [SourceAccuracy, ...],
/// "generalization_margin": 0.05, "memorization_margin": 0.2, "memorizing": bool,
/// "warning": string or null}`, `overall` covering every document but the canaries,
/// `sources` ordered by name with documents without a source first, the canaries (source
/// `"canary"`) included, and `memorizing` the overall flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub overall: GroupAccuracy,
    pub sources: Vec<SourceAccuracy>,
    pub generalization_margin: f64,
    pub memorization_margin: f64,
    pub memorizing: bool,
    /// What was measured, what it means and the remedies; None when nothing is memorizing.
    pub warning: Option<String>,
}

fn is_canary(source: Option<&str>) -> bool {
    source == Some(CANARY_SOURCE)
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values.flatten().fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn group_accuracy(documents: &[&DocumentAccuracy], canaries: bool) -> GroupAccuracy {
    let acc_in = mean(documents.iter().map(|d| d.acc_in));
    let acc_out = mean(documents.iter().map(|d| d.acc_out));
    let bigram_baseline = mean(documents.iter().map(|d| d.bigram));
    let generalization_gap = acc_out.zip(bigram_baseline).map(|(out, bigram)| out - bigram);
    let memorization_gap = acc_in.zip(acc_out).map(|(inside, out)| inside - out);
    let memorizing = !canaries
        && generalization_gap.is_some_and(|gap| gap < GENERALIZATION_MARGIN)
        && memorization_gap.is_some_and(|gap| gap > MEMORIZATION_MARGIN);
    GroupAccuracy {
        documents: documents.len(),
        holdout: documents.iter().filter(|d| d.holdout).count(),
        acc_in,
        acc_out,
        loss_in: mean(documents.iter().map(|d| d.loss_in)),
        loss_out: mean(documents.iter().map(|d| d.loss_out)),
        bigram_baseline,
        unigram_baseline: mean(documents.iter().map(|d| d.unigram)),
        generalization_gap,
        memorization_gap,
        memorizing,
    }
}

/// The per-source and overall means of `documents` and the warning, by the rule of
/// [`Diagnosis`].
pub fn diagnose(documents: &[DocumentAccuracy]) -> Diagnosis {
    let mut by_source: BTreeMap<Option<&str>, Vec<&DocumentAccuracy>> = BTreeMap::new();
    for doc in documents {
        by_source.entry(doc.source.as_deref()).or_default().push(doc);
    }
    let sources: Vec<SourceAccuracy> = by_source
        .into_iter()
        .map(|(source, docs)| SourceAccuracy {
            source: source.map(str::to_string),
            accuracy: group_accuracy(&docs, is_canary(source)),
        })
        .collect();
    let not_canaries: Vec<&DocumentAccuracy> = documents.iter().filter(|d| !is_canary(d.source.as_deref())).collect();
    let overall = group_accuracy(&not_canaries, false);
    let warning = warning(&overall, &sources);
    Diagnosis {
        memorizing: overall.memorizing,
        overall,
        sources,
        generalization_margin: GENERALIZATION_MARGIN,
        memorization_margin: MEMORIZATION_MARGIN,
        warning,
    }
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

const MEANING: &str = "mem scores measure a memorizing regime; most documents will look memorized";
const REMEDIES: &str = "Remedies: a background corpus every model trains on (`cfmem plan --background PATH`), \
     fewer epochs (`[train] epochs`), more data.";

fn warning(overall: &GroupAccuracy, sources: &[SourceAccuracy]) -> Option<String> {
    let numbers = |group: &GroupAccuracy| {
        format!(
            "mean accuracy OUT {} vs leave-one-out bigram baseline {} (gap {}, below {GENERALIZATION_MARGIN}), \
             IN {} (IN − OUT {}, above {MEMORIZATION_MARGIN})",
            show(group.acc_out),
            show(group.bigram_baseline),
            show(group.generalization_gap),
            show(group.acc_in),
            show(group.memorization_gap),
        )
    };
    if overall.memorizing {
        return Some(format!(
            "warning: the models do not generalize: on documents they did not train on they do not beat a bigram \
             table, on documents they trained on they do ({}). {MEANING}. {REMEDIES}",
            numbers(overall)
        ));
    }
    let flagged: Vec<String> = sources
        .iter()
        .filter(|s| s.accuracy.memorizing)
        .map(|s| format!("{}: {}", source_label(s.source.as_deref()), numbers(&s.accuracy)))
        .collect();
    (!flagged.is_empty()).then(|| {
        format!(
            "warning: the models do not generalize on some sources: on their documents they did not train on they \
             do not beat a bigram table, on those they trained on they do ({}). For these sources {MEANING}. {REMEDIES}",
            flagged.join("; ")
        )
    })
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, label: &str, group: &GroupAccuracy| {
            let flag = if group.memorizing { "  memorizing" } else { "" };
            writeln!(
                f,
                "  {label:<20} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}{flag}",
                group.documents,
                show(group.acc_in),
                show(group.acc_out),
                show(group.bigram_baseline),
                show(group.unigram_baseline),
                show(group.loss_in),
                show(group.loss_out),
            )
        };
        writeln!(
            f,
            "generalization (mean per-token accuracy and loss over documents; baselines leave the document out):"
        )?;
        writeln!(
            f,
            "  {:<20} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "source", "docs", "acc IN", "acc OUT", "bigram", "unigram", "loss IN", "loss OUT"
        )?;
        let has_canaries = self.sources.iter().any(|s| is_canary(s.source.as_deref()));
        row(f, if has_canaries { "all but canaries" } else { "all" }, &self.overall)?;
        for source in &self.sources {
            row(f, source_label(source.source.as_deref()), &source.accuracy)?;
        }
        if let Some(warning) = &self.warning {
            writeln!(f, "{warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn counts(baselines: &[Baseline]) -> Vec<(u64, u64, u64)> {
        baselines.iter().map(|b| (b.tokens, b.bigram_correct, b.unigram_correct)).collect()
    }

    #[test]
    fn hand_computed_leave_one_out_baselines() {
        // Tokens 0..=3, bos 4 (B). Corpus with weights: d0 [0 1 0 1] ×1, d1 [0 2] ×3,
        // d2 [3 0] ×0 (held out), d3 [3 3 0] ×1, d4 [] ×1; background [0 2 1].
        // Pool bigrams: B→0: 1 + 3 + 1 = 5, B→3: 1; 0→1: 2, 0→2: 3 + 1 = 4; 1→0: 1;
        // 2→1: 1; 3→3: 1, 3→0: 1. Tokens: 0: 7, 1: 3, 2: 4, 3: 2.
        let corpus = vec![vec![0, 1, 0, 1], vec![0, 2], vec![3, 0], vec![3, 3, 0], vec![]];
        let weights = [1, 3, 0, 1, 1];
        let background = vec![vec![0, 2, 1]];
        let baselines = leave_one_out_baselines(&corpus, &weights, &background, 4).unwrap();
        let expected = [
            // d0: tokens less its own 0: 5, 1: 1, 2: 4 → unigram guesses 0, right twice.
            // B→0: 4, B→3: 1 → 0, right; 0→1: 0, 0→2: 4 → 2, wrong twice; 1→0: 0, nothing
            // after 1 remains → unigram's 0, right. 2 of 4.
            (4, 2, 2),
            // d1, subtracting 3×: tokens 0: 4, 1: 3, 2: 1 → 0, right once. B→0: 2 → 0,
            // right; 0→1: 2, 0→2: 4 − 3 = 1 → 1, wrong (subtracting once would leave 3 and
            // predict 2). 1 of 2.
            (2, 1, 1),
            // d2, held out, nothing subtracted: unigram 0, right once. B→0: 5 → 0, wrong;
            // 3→3: 1 ties 3→0: 1 → the smaller, 0, right. 1 of 2.
            (2, 1, 1),
            // d3: tokens 0: 6 → 0, right once. B→0: 5, B→3: 0 → 0, wrong; 3→3 and 3→0 both
            // 0 → unigram's 0 for both: 3 wrong, 0 right. 1 of 3.
            (3, 1, 1),
            (0, 0, 0),
        ];
        assert_eq!(counts(&baselines), expected);
        assert_eq!(baselines[0].bigram_accuracy(), Some(0.5));
        assert_eq!(baselines[4].bigram_accuracy(), None);
        assert_eq!(baselines[4].unigram_accuracy(), None);
    }

    #[test]
    fn a_pool_of_only_the_document_predicts_token_0() {
        let baselines = leave_one_out_baselines(&[vec![0, 0, 2], vec![2, 2]], &[2, 0], &[], 3).unwrap();
        // Without d0 nothing remains: every token is predicted 0. d1 is held out, so d0's
        // 2× counts predict it: B→0 (wrong), 2→? nothing after 2 in d0 → unigram 0 (wrong).
        assert_eq!(counts(&baselines), [(3, 2, 2), (2, 0, 0)]);
    }

    #[test]
    fn token_ids_must_be_below_bos() {
        let error = leave_one_out_baselines(&[vec![0, 3]], &[1], &[], 3).unwrap_err();
        assert_eq!(error.to_string(), "corpus document 0 has token id 3, not below bos 3");
        assert!(leave_one_out_baselines(&[vec![0]], &[1], &[vec![5]], 3).is_err());
    }

    /// The baselines by their definition: for each document, dense counts of the pool
    /// rebuilt without it.
    fn brute_force(corpus: &[Vec<u32>], weights: &[u32], background: &[Vec<u32>], bos: u32) -> Vec<(u64, u64, u64)> {
        let vocab = bos as usize;
        let argmax = |counts: &[u64]| {
            let best = (0..counts.len()).max_by(|&x, &y| counts[x].cmp(&counts[y]).then(y.cmp(&x)))?;
            (counts[best] > 0).then_some(best as u32)
        };
        (0..corpus.len())
            .map(|x| {
                let mut bigram = vec![vec![0u64; vocab]; vocab + 1];
                let mut unigram = vec![0u64; vocab];
                let others = (0..corpus.len()).filter(|&d| d != x).map(|d| (&corpus[d], weights[d]));
                for (tokens, w) in others.chain(background.iter().map(|t| (t, 1))) {
                    for (a, b) in pairs(tokens, bos) {
                        bigram[a as usize][b as usize] += u64::from(w);
                        unigram[b as usize] += u64::from(w);
                    }
                }
                let unigram_guess = argmax(&unigram).unwrap_or(0);
                let tokens = &corpus[x];
                let bigram_correct =
                    pairs(tokens, bos).filter(|&(a, b)| argmax(&bigram[a as usize]).unwrap_or(unigram_guess) == b);
                let unigram_correct = tokens.iter().filter(|&&t| t == unigram_guess);
                (tokens.len() as u64, bigram_correct.count() as u64, unigram_correct.count() as u64)
            })
            .collect()
    }

    /// Skewed random documents: token min(u, v) of two uniform draws, so high ids are rare
    /// and many previous tokens have nothing left after one document is removed.
    fn random_documents(rng: &mut ChaCha8Rng, count: usize, vocab: u32) -> Vec<Vec<u32>> {
        (0..count)
            .map(|_| {
                let len = rng.random_range(0..12);
                (0..len).map(|_| rng.random_range(0..vocab).min(rng.random_range(0..vocab))).collect()
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_on_random_pools() {
        for (seed, docs, backgrounds, vocab) in [(1, 300, 20, 12), (2, 200, 0, 40), (3, 5, 1, 5), (4, 1, 0, 3)] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let corpus = random_documents(&mut rng, docs, vocab);
            let background = random_documents(&mut rng, backgrounds, vocab);
            let weights: Vec<u32> = (0..docs).map(|_| [0, 1, 1, 1, 2, 5][rng.random_range(0..6)]).collect();
            let fast = leave_one_out_baselines(&corpus, &weights, &background, vocab).unwrap();
            assert_eq!(counts(&fast), brute_force(&corpus, &weights, &background, vocab), "seed {seed}");
        }
    }

    #[test]
    fn shards_count_the_same_lists_as_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let corpus = random_documents(&mut rng, 100, 20);
        let weights: Vec<u32> = (0..100).map(|_| rng.random_range(0..3)).collect();
        let pool = training_pool(&corpus, &weights, &[]);
        let positions = positions_per_previous(&pool, 20);
        let one = successors(&pool, &positions, &[0, 21]);
        let bounds = shard_bounds(&positions, 30);
        assert!(bounds.len() > 4, "{bounds:?}");
        assert_eq!(successors(&pool, &positions, &bounds), one);
    }

    /// A document whose losses are 1 − its accuracies.
    fn document(
        source: Option<&str>,
        acc_in: Option<f64>,
        acc_out: f64,
        bigram: f64,
        unigram: f64,
    ) -> DocumentAccuracy {
        DocumentAccuracy {
            source: source.map(str::to_string),
            holdout: acc_in.is_none(),
            acc_in,
            acc_out: Some(acc_out),
            loss_in: acc_in.map(|a| 1.0 - a),
            loss_out: Some(1.0 - acc_out),
            bigram: Some(bigram),
            unigram: Some(unigram),
        }
    }

    #[test]
    fn warns_for_a_memorizing_regime_only() {
        let memorizing = diagnose(&vec![document(None, Some(0.9), 0.2, 0.22, 0.05); 10]);
        assert!(memorizing.memorizing && memorizing.overall.memorizing);
        let warning = memorizing.warning.as_deref().unwrap();
        for part in ["OUT 0.200", "baseline 0.220", "IN 0.900", "most documents will look memorized"] {
            assert!(warning.contains(part), "{part:?} not in {warning}");
        }
        for remedy in ["cfmem plan --background PATH", "[train] epochs", "more data"] {
            assert!(warning.contains(remedy), "{remedy:?} not in {warning}");
        }
        assert!(memorizing.to_string().ends_with(&format!("{warning}\n")));

        let generalizing = diagnose(&vec![document(Some("web"), Some(0.6), 0.55, 0.3, 0.1); 10]);
        assert!(!generalizing.memorizing && !generalizing.sources[0].accuracy.memorizing);
        assert_eq!(generalizing.warning, None);
    }

    fn close(value: Option<f64>, expected: f64) -> bool {
        value.is_some_and(|v| (v - expected).abs() < 1e-12)
    }

    #[test]
    fn per_source_means_and_canaries_left_out_of_overall() {
        let documents = [
            document(Some("web"), Some(0.8), 0.4, 0.3, 0.1),
            document(Some("web"), None, 0.2, 0.5, 0.2),
            document(None, Some(0.5), 0.6, 0.2, 0.1),
            document(Some("canary"), Some(1.0), 0.0, 0.01, 0.01),
            document(Some("canary"), Some(1.0), 0.0, 0.01, 0.01),
        ];
        let diagnosis = diagnose(&documents);
        let names: Vec<Option<&str>> = diagnosis.sources.iter().map(|s| s.source.as_deref()).collect();
        assert_eq!(names, [None, Some("canary"), Some("web")]);

        // web: IN 0.8 (the held-out document has none), OUT (0.4 + 0.2) / 2 = 0.3, bigram
        // 0.4, unigram 0.15; gaps 0.3 − 0.4 = −0.1 and 0.8 − 0.3 = 0.5: memorizing.
        let web = &diagnosis.sources[2].accuracy;
        assert_eq!((web.documents, web.holdout), (2, 1));
        assert!(close(web.acc_in, 0.8) && close(web.acc_out, 0.3), "{web:?}");
        assert!(close(web.bigram_baseline, 0.4) && close(web.unigram_baseline, 0.15), "{web:?}");
        assert!(close(web.generalization_gap, -0.1) && close(web.memorization_gap, 0.5), "{web:?}");
        assert!(web.memorizing);

        // The canaries look memorizing by the numbers, but are random text: never flagged.
        let canary = &diagnosis.sources[1].accuracy;
        assert!(close(canary.acc_in, 1.0) && !canary.memorizing, "{canary:?}");

        // Overall, canaries left out: IN (0.8 + 0.5) / 2 = 0.65, OUT (0.4 + 0.2 + 0.6) / 3
        // = 0.4, bigram 1.0 / 3, unigram 0.4 / 3; generalization gap 0.4 − 1/3 ≈ 0.067 is
        // above the margin, so only web is flagged.
        let overall = &diagnosis.overall;
        assert_eq!((overall.documents, overall.holdout), (3, 1));
        assert!(close(overall.acc_in, 0.65) && close(overall.acc_out, 0.4), "{overall:?}");
        assert!(close(overall.bigram_baseline, 1.0 / 3.0) && close(overall.unigram_baseline, 0.4 / 3.0));
        assert!(!overall.memorizing && !diagnosis.memorizing);
        let warning = diagnosis.warning.as_deref().unwrap();
        assert!(warning.contains("web: mean accuracy OUT 0.300") && !warning.contains("canary"), "{warning}");

        let table = diagnosis.to_string();
        // Losses beside them: IN (0.2 + 0.5) / 2, OUT (0.6 + 0.8 + 0.4) / 3.
        assert!(close(overall.loss_in, 0.35) && close(overall.loss_out, 0.6), "{overall:?}");
        assert!(
            table.contains("  all but canaries           3    0.650    0.400    0.333    0.133    0.350    0.600\n"),
            "{table}"
        );
        assert!(table.contains(
            "  web                        2    0.800    0.300    0.400    0.150    0.200    0.700  memorizing\n"
        ));
        assert!(
            table.contains("  (none)                     1    0.500    0.600    0.200    0.100    0.500    0.400\n")
        );
    }

    #[test]
    fn json_fields() {
        let diagnosis = diagnose(&[document(None, Some(0.9), 0.2, 0.22, 0.05)]);
        let json = serde_json::to_value(&diagnosis).unwrap();
        let keys = |value: &serde_json::Value| {
            let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let group = [
            "acc_in",
            "acc_out",
            "bigram_baseline",
            "documents",
            "generalization_gap",
            "holdout",
            "loss_in",
            "loss_out",
            "memorization_gap",
            "memorizing",
            "unigram_baseline",
        ];
        assert_eq!(
            keys(&json),
            ["generalization_margin", "memorization_margin", "memorizing", "overall", "sources", "warning"]
        );
        assert_eq!(keys(&json["overall"]), group);
        let mut source_keys = group.map(String::from).to_vec();
        source_keys.push("source".into());
        source_keys.sort();
        assert_eq!(keys(&json["sources"][0]), source_keys);
        assert_eq!(json["sources"][0]["source"], serde_json::Value::Null);
        assert_eq!(json["overall"]["acc_out"], 0.2);
        assert_eq!(json["memorizing"], true);
        assert!(json["warning"].is_string());
    }
}
