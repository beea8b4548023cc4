//! The numbers of an analyzed run that both of its views show: the summary `cfmem analyze`
//! prints ([`crate::printed_summary`]) and the HTML report of `cfmem report`
//! ([`crate::html_report`]). They are computed here once, from the analysis tables, so the
//! two views cannot disagree: the ranking of the documents by the chosen score
//! ([`Measure`]), both scores' quantiles, the per-source table and the near-duplicate
//! clusters' member means of both, and the copy sweep; and how both name a document: its
//! preview and the label of a document without a source.
//!
//! This module knows no layout: which rows a view shows, how many and in what format is
//! the view's business. It never reads files and never estimates: every number is a value
//! of the tables or a count, mean or quantile of one of their columns.

use std::collections::{BTreeMap, HashMap};

use subsets::schema::{ClusterTable, CopiesTable, ScoreTable};

use crate::measure::{ByMeasure, Measure};
use crate::spectrum::Shared;
use crate::stats::quantile;

/// How every view names the source of a document that has none.
pub const NO_SOURCE: &str = "(none)";

/// The name a view shows for `source`.
pub fn source_label(source: Option<&str>) -> &str {
    source.unwrap_or(NO_SOURCE)
}

/// The first `chars` characters of a text on one line: control characters become spaces,
/// and a text that was cut ends with "…".
pub fn preview(text: &str, chars: usize) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut cut: String = flat.chars().take(chars).collect();
    if flat.chars().count() > chars {
        cut.push('…');
    }
    cut
}

/// What a unit of `size` documents shares, in words, its quoted text cut to `chars`.
pub fn shared_words(shared: &Shared, size: u32, chars: usize) -> String {
    match shared {
        Shared::Cluster => format!("a near-duplicate cluster of {size} documents"),
        Shared::Passage(Some(text)) => format!("a passage shared by {size} documents: \"{}\"", preview(text, chars)),
        Shared::Passage(None) => format!("a passage shared by {size} documents"),
        Shared::Topic => format!("a topic of {size} documents"),
        Shared::Field { name, value } => {
            format!("{name} = \"{}\", {size} documents", preview(value.as_deref().unwrap_or_default(), chars))
        }
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Quantiles of a score over the scored documents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    pub min: f64,
    pub p10: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Quantiles {
    /// The quantiles of `ascending`, None when it is empty.
    fn of(ascending: &[f64]) -> Option<Quantiles> {
        let [min, p10, median, p90, max] = [0.0, 0.1, 0.5, 0.9, 1.0].map(|q| quantile(ascending, q));
        Some(Quantiles { min: min?, p10: p10?, median: median?, p90: p90?, max: max? })
    }
}

/// Both scores over the documents of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    /// None for the documents without a source.
    pub source: Option<String>,
    /// Documents of the source, scored or not.
    pub documents: usize,
    /// Each score of its scored documents, ascending.
    pub values: ByMeasure<Vec<f64>>,
}

impl SourceRow {
    pub fn label(&self) -> &str {
        source_label(self.source.as_deref())
    }

    /// The scored documents' values of `measure`, ascending.
    pub fn values(&self, measure: Measure) -> &[f64] {
        self.values.of(measure)
    }

    /// Scored documents of the source.
    pub fn scored(&self) -> usize {
        self.values.mem_acc.len()
    }

    /// None when no document of the source is scored.
    pub fn mean(&self, measure: Measure) -> Option<f64> {
        mean(self.values(measure))
    }

    pub fn median(&self, measure: Measure) -> Option<f64> {
        self.quantile(measure, 0.5)
    }

    /// The q-quantile of the source's values of `measure`.
    pub fn quantile(&self, measure: Measure, q: f64) -> Option<f64> {
        quantile(self.values(measure), q)
    }
}

/// A near-duplicate cluster's group scores against its members' own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterRow {
    pub cluster: u32,
    pub size: u32,
    pub group: ByMeasure<Option<f64>>,
    /// Mean score of the cluster's scored members.
    pub member_mean: ByMeasure<Option<f64>>,
}

/// The canaries planted with one copy count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyRow {
    pub copies: u16,
    pub canaries: u32,
    pub mem_acc: Option<f64>,
    pub mem_acc_se: Option<f64>,
    pub mem_loss: Option<f64>,
    pub mem_loss_se: Option<f64>,
}

/// The numbers both views show, computed once from `scores.parquet`, `clusters.parquet`
/// and `copies.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub documents: usize,
    pub held_out: usize,
    /// The score that ranks.
    pub rank_by: Measure,
    /// Documents (by `doc`) with a score of `rank_by`, most memorized first; equal scores
    /// in document order.
    pub ranking: Vec<usize>,
    /// Each score of the scored documents, ascending.
    pub values: ByMeasure<Vec<f64>>,
    /// Each score's quantiles, None when no document has it.
    pub quantiles: ByMeasure<Option<Quantiles>>,
    /// One row per source in order of the source: the documents without one first.
    pub sources: Vec<SourceRow>,
    /// One row per cluster of two or more documents, as in `clusters.parquet`.
    pub clusters: Vec<ClusterRow>,
    /// One row per planted copy count, as in `copies.parquet`.
    pub copies: Vec<CopyRow>,
}

impl Summary {
    /// The numbers of the tables, documents ranked by `rank_by`.
    pub fn new(scores: &ScoreTable, clusters: &ClusterTable, copies: &CopiesTable, rank_by: Measure) -> Summary {
        let documents = scores.doc.len();
        let column = |m: Measure| m.columns(scores).value;
        let ranked = column(rank_by);
        let mut ranking: Vec<usize> = (0..documents).filter(|&d| ranked[d].is_some()).collect();
        let score = |d: usize| ranked[d].expect("scored");
        ranking.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        let ascending = |values: &mut Vec<f64>| values.sort_by(f64::total_cmp);
        let values = ByMeasure::from_fn(|m| {
            let mut values: Vec<f64> = column(m).iter().flatten().copied().collect();
            ascending(&mut values);
            values
        });
        let quantiles = ByMeasure::from_fn(|m| Quantiles::of(values.of(m)));

        let mut by_source: BTreeMap<Option<&str>, (usize, ByMeasure<Vec<f64>>)> = BTreeMap::new();
        for d in 0..documents {
            let (count, values) = by_source.entry(scores.source[d].as_deref()).or_default();
            *count += 1;
            for m in Measure::BOTH {
                values.of_mut(m).extend(column(m)[d]);
            }
        }
        let sources = by_source
            .into_iter()
            .map(|(source, (documents, mut values))| {
                ascending(&mut values.mem_loss);
                ascending(&mut values.mem_acc);
                SourceRow { source: source.map(String::from), documents, values }
            })
            .collect();

        // One pass over the documents, not one per cluster.
        let mut members: HashMap<u32, ByMeasure<Vec<f64>>> = HashMap::new();
        for d in (0..documents).filter(|&d| scores.cluster_size[d] > 1) {
            let values = members.entry(scores.cluster[d]).or_default();
            for m in Measure::BOTH {
                values.of_mut(m).extend(column(m)[d]);
            }
        }
        let clusters = (0..clusters.cluster.len())
            .map(|i| {
                let of_members = members.get(&clusters.cluster[i]);
                ClusterRow {
                    cluster: clusters.cluster[i],
                    size: clusters.cluster_size[i],
                    group: ByMeasure { mem_loss: clusters.group_mem_loss[i], mem_acc: clusters.group_mem_acc[i] },
                    member_mean: ByMeasure::from_fn(|m| of_members.and_then(|v| mean(v.of(m)))),
                }
            })
            .collect();

        let copies = (0..copies.copies.len())
            .map(|i| CopyRow {
                copies: copies.copies[i],
                canaries: copies.canaries[i],
                mem_acc: copies.mem_acc[i],
                mem_acc_se: copies.mem_acc_se[i],
                mem_loss: copies.mem_loss[i],
                mem_loss_se: copies.mem_loss_se[i],
            })
            .collect();

        Summary {
            documents,
            held_out: scores.holdout.iter().filter(|&&h| h).count(),
            rank_by,
            ranking,
            values,
            quantiles,
            sources,
            clusters,
            copies,
        }
    }

    /// The `n` most memorized documents, most memorized first.
    pub fn most_memorized(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.ranking.iter().copied().take(n)
    }

    /// The `n` least memorized documents, least memorized first: the ranking read from its
    /// end.
    pub fn least_memorized(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.ranking.iter().rev().copied().take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five documents: two of source "b", one of "a", two without a source; the last is
    /// not scored; documents 1 and 3 tie on mem_acc; documents 0 and 1 form cluster 7.
    /// mem_loss ranks them 2, 3, 0, 1.
    fn scores() -> ScoreTable {
        ScoreTable {
            doc: vec![0, 1, 2, 3, 4],
            source: vec![Some("b".into()), None, Some("a".into()), Some("b".into()), None],
            holdout: vec![false, false, false, false, true],
            mem_acc: vec![Some(0.5), Some(0.25), Some(-0.5), Some(0.25), None],
            mem_loss: vec![Some(0.1), Some(-0.2), Some(0.9), Some(0.3), None],
            cluster: vec![7, 7, 2, 3, 4],
            cluster_size: vec![2, 2, 1, 1, 1],
            ..ScoreTable::default()
        }
    }

    fn summary(rank_by: Measure) -> Summary {
        let clusters = ClusterTable {
            cluster: vec![7],
            cluster_size: vec![2],
            group_mem_acc: vec![Some(0.75)],
            group_mem_loss: vec![Some(0.5)],
            ..Default::default()
        };
        let copies = CopiesTable {
            copies: vec![1, 4],
            canaries: vec![3, 3],
            mem_acc: vec![Some(0.125), None],
            mem_acc_se: vec![Some(0.01), None],
            mem_loss: vec![Some(1.0), None],
            mem_loss_se: vec![None, None],
        };
        Summary::new(&scores(), &clusters, &copies, rank_by)
    }

    #[test]
    fn documents_are_ranked_by_mem_acc_with_ties_in_document_order() {
        let s = summary(Measure::Accuracy);
        assert_eq!(s.ranking, [0, 1, 3, 2], "document 4 has no score");
        assert_eq!(s.most_memorized(2).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(s.least_memorized(2).collect::<Vec<_>>(), [2, 3], "the same ranking read from its end");
        assert_eq!(s.values.mem_acc, [-0.5, 0.25, 0.25, 0.5]);
        let q = s.quantiles.mem_acc.unwrap();
        assert_eq!((q.min, q.median, q.max), (-0.5, 0.25, 0.5));
        assert!((q.p10 - -0.275).abs() < 1e-12 && (q.p90 - 0.425).abs() < 1e-12, "{q:?}");
        assert_eq!((s.documents, s.held_out), (5, 1));
    }

    #[test]
    fn ranking_by_loss_orders_by_mem_loss_and_keeps_both_scores() {
        let s = summary(Measure::Loss);
        assert_eq!(s.ranking, [2, 3, 0, 1]);
        assert_eq!(s.values.mem_loss, [-0.2, 0.1, 0.3, 0.9]);
        assert_eq!(s.values.mem_acc, summary(Measure::Accuracy).values.mem_acc, "both scores are kept");
        assert_eq!(s.quantiles.mem_loss.unwrap().max, 0.9);
    }

    #[test]
    fn sources_are_rows_with_the_unlabelled_documents_first() {
        let s = summary(Measure::Loss);
        let labels: Vec<&str> = s.sources.iter().map(SourceRow::label).collect();
        assert_eq!(labels, ["(none)", "a", "b"]);
        let none = &s.sources[0];
        assert_eq!((none.source.as_deref(), none.documents, none.values(Measure::Accuracy)), (None, 2, &[0.25][..]));
        let b = &s.sources[2];
        let acc = Measure::Accuracy;
        assert_eq!((b.documents, b.scored(), b.mean(acc), b.median(acc)), (2, 2, Some(0.375), Some(0.375)));
        assert_eq!((b.quantile(acc, 0.0), b.quantile(acc, 1.0)), (Some(0.25), Some(0.5)));
        assert_eq!(b.values(Measure::Loss), [0.1, 0.3]);
        assert!((b.mean(Measure::Loss).unwrap() - 0.2).abs() < 1e-12);
    }

    #[test]
    fn clusters_and_copies_are_the_tables_rows_with_member_means() {
        let s = summary(Measure::Loss);
        assert_eq!(s.clusters.len(), 1);
        let row = s.clusters[0];
        assert_eq!((row.cluster, row.size), (7, 2));
        assert_eq!(row.group, ByMeasure { mem_loss: Some(0.5), mem_acc: Some(0.75) });
        assert_eq!(row.member_mean.mem_acc, Some(0.375));
        assert!((row.member_mean.mem_loss.unwrap() - -0.05).abs() < 1e-12);
        assert_eq!(s.copies.len(), 2);
        assert_eq!((s.copies[0].copies, s.copies[0].mem_acc, s.copies[1].mem_acc), (1, Some(0.125), None));
    }

    #[test]
    fn nothing_scored_has_no_quantiles() {
        let mut scores = scores();
        scores.mem_acc = vec![None; 5];
        scores.mem_loss = vec![None; 5];
        let s = Summary::new(&scores, &ClusterTable::default(), &CopiesTable::default(), Measure::Loss);
        assert!(s.ranking.is_empty() && s.quantiles.mem_loss.is_none() && s.quantiles.mem_acc.is_none());
        assert!(
            s.sources.iter().all(|row| row.mean(Measure::Loss).is_none() && row.median(Measure::Accuracy).is_none())
        );
    }

    #[test]
    fn previews_flatten_and_cut() {
        assert_eq!(preview("a\nb\tc", 10), "a b c");
        assert_eq!(preview("abcdef", 3), "abc…");
        assert_eq!(preview("abc", 3), "abc");
        let passage = Shared::Passage(Some("In the beginning\nwas".into()));
        assert_eq!(shared_words(&passage, 3, 6), "a passage shared by 3 documents: \"In the…\"");
        let field = Shared::Field { name: "topic".into(), value: None };
        assert_eq!(shared_words(&field, 5, 60), "topic = \"\", 5 documents");
        assert_eq!(source_label(None), NO_SOURCE);
        assert_eq!(source_label(Some("web")), "web");
    }
}
