//! The numbers of an analyzed run that both of its views show: the summary `cfmem analyze`
//! prints ([`crate::printed_summary`]) and the HTML report of `cfmem report`
//! ([`crate::html_report`]). They are computed here once, from the analysis tables, so the
//! two views cannot disagree: the ranking of the documents by mem_acc, its quantiles, the
//! per-source table, the near-duplicate clusters' member means and the copy sweep; and how
//! both name a document: its preview and the label of a document without a source.
//!
//! This module knows no layout: which rows a view shows, how many and in what format is
//! the view's business. It never reads files and never estimates: every number is a value
//! of the tables or a count, mean or quantile of one of their columns.

use std::collections::{BTreeMap, HashMap};

use subsets::schema::{ClusterTable, CopiesTable, ScoreTable};

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

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Quantiles of mem_acc over the scored documents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    pub min: f64,
    pub p10: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

/// mem_acc over the documents of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    /// None for the documents without a source.
    pub source: Option<String>,
    /// Documents of the source, scored or not.
    pub documents: usize,
    /// mem_acc of its scored documents, ascending.
    pub mem_acc: Vec<f64>,
    /// Mean and median of `mem_acc`; None when no document of the source is scored.
    pub mean: Option<f64>,
    pub median: Option<f64>,
}

impl SourceRow {
    pub fn label(&self) -> &str {
        source_label(self.source.as_deref())
    }

    /// The q-quantile of the source's mem_acc.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.mem_acc, q)
    }
}

/// A near-duplicate cluster's group score against its members' own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterRow {
    pub cluster: u32,
    pub size: u32,
    pub group_mem_acc: Option<f64>,
    /// Mean mem_acc of the cluster's scored members.
    pub member_mean: Option<f64>,
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
    /// Scored documents (by `doc`), most memorized first; equal mem_acc in document order.
    pub ranking: Vec<usize>,
    /// mem_acc of the scored documents, ascending.
    pub mem_acc: Vec<f64>,
    /// None when no document is scored.
    pub quantiles: Option<Quantiles>,
    /// One row per source in order of the source: the documents without one first.
    pub sources: Vec<SourceRow>,
    /// One row per cluster of two or more documents, as in `clusters.parquet`.
    pub clusters: Vec<ClusterRow>,
    /// One row per planted copy count, as in `copies.parquet`.
    pub copies: Vec<CopyRow>,
}

impl Summary {
    pub fn new(scores: &ScoreTable, clusters: &ClusterTable, copies: &CopiesTable) -> Summary {
        let documents = scores.doc.len();
        let scored: Vec<usize> = (0..documents).filter(|&d| scores.mem_acc[d].is_some()).collect();
        let score = |d: usize| scores.mem_acc[d].expect("scored");

        let mut ranking = scored.clone();
        ranking.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        let mut mem_acc: Vec<f64> = scored.iter().map(|&d| score(d)).collect();
        mem_acc.sort_by(f64::total_cmp);
        let quantiles = (!mem_acc.is_empty()).then(|| {
            let [min, p10, median, p90, max] =
                [0.0, 0.1, 0.5, 0.9, 1.0].map(|q| quantile(&mem_acc, q).expect("scored"));
            Quantiles { min, p10, median, p90, max }
        });

        let mut by_source: BTreeMap<Option<&str>, (usize, Vec<f64>)> = BTreeMap::new();
        for d in 0..documents {
            let (count, values) = by_source.entry(scores.source[d].as_deref()).or_default();
            *count += 1;
            values.extend(scores.mem_acc[d]);
        }
        let sources = by_source
            .into_iter()
            .map(|(source, (documents, mut values))| {
                values.sort_by(f64::total_cmp);
                SourceRow {
                    source: source.map(String::from),
                    documents,
                    mean: mean(&values),
                    median: quantile(&values, 0.5),
                    mem_acc: values,
                }
            })
            .collect();

        // One pass over the documents, not one per cluster.
        let mut members: HashMap<u32, Vec<f64>> = HashMap::new();
        for d in (0..documents).filter(|&d| scores.cluster_size[d] > 1) {
            if let Some(m) = scores.mem_acc[d] {
                members.entry(scores.cluster[d]).or_default().push(m);
            }
        }
        let clusters = (0..clusters.cluster.len())
            .map(|i| ClusterRow {
                cluster: clusters.cluster[i],
                size: clusters.cluster_size[i],
                group_mem_acc: clusters.group_mem_acc[i],
                member_mean: members.get(&clusters.cluster[i]).and_then(|m| mean(m)),
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
            ranking,
            mem_acc,
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
    /// not scored; documents 1 and 3 tie; documents 0 and 1 form cluster 7.
    fn scores() -> ScoreTable {
        ScoreTable {
            doc: vec![0, 1, 2, 3, 4],
            source: vec![Some("b".into()), None, Some("a".into()), Some("b".into()), None],
            holdout: vec![false, false, false, false, true],
            mem_acc: vec![Some(0.5), Some(0.25), Some(-0.5), Some(0.25), None],
            cluster: vec![7, 7, 2, 3, 4],
            cluster_size: vec![2, 2, 1, 1, 1],
            ..ScoreTable::default()
        }
    }

    fn summary() -> Summary {
        let clusters = ClusterTable {
            cluster: vec![7],
            cluster_size: vec![2],
            group_mem_acc: vec![Some(0.75)],
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
        Summary::new(&scores(), &clusters, &copies)
    }

    #[test]
    fn documents_are_ranked_by_mem_acc_with_ties_in_document_order() {
        let s = summary();
        assert_eq!(s.ranking, [0, 1, 3, 2], "document 4 has no score");
        assert_eq!(s.most_memorized(2).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(s.least_memorized(2).collect::<Vec<_>>(), [2, 3], "the same ranking read from its end");
        assert_eq!(s.mem_acc, [-0.5, 0.25, 0.25, 0.5]);
        let q = s.quantiles.unwrap();
        assert_eq!((q.min, q.median, q.max), (-0.5, 0.25, 0.5));
        assert!((q.p10 - -0.275).abs() < 1e-12 && (q.p90 - 0.425).abs() < 1e-12, "{q:?}");
        assert_eq!((s.documents, s.held_out), (5, 1));
    }

    #[test]
    fn sources_are_rows_with_the_unlabelled_documents_first() {
        let s = summary();
        let labels: Vec<&str> = s.sources.iter().map(SourceRow::label).collect();
        assert_eq!(labels, ["(none)", "a", "b"]);
        let none = &s.sources[0];
        assert_eq!((none.source.as_deref(), none.documents, &none.mem_acc[..]), (None, 2, &[0.25][..]));
        let b = &s.sources[2];
        assert_eq!((b.documents, b.mean, b.median), (2, Some(0.375), Some(0.375)));
        assert_eq!((b.quantile(0.0), b.quantile(1.0)), (Some(0.25), Some(0.5)));
    }

    #[test]
    fn clusters_and_copies_are_the_tables_rows_with_member_means() {
        let s = summary();
        assert_eq!(
            s.clusters,
            [ClusterRow { cluster: 7, size: 2, group_mem_acc: Some(0.75), member_mean: Some(0.375) }]
        );
        assert_eq!(s.copies.len(), 2);
        assert_eq!((s.copies[0].copies, s.copies[0].mem_acc, s.copies[1].mem_acc), (1, Some(0.125), None));
    }

    #[test]
    fn nothing_scored_has_no_quantiles() {
        let mut scores = scores();
        scores.mem_acc = vec![None; 5];
        let s = Summary::new(&scores, &ClusterTable::default(), &CopiesTable::default());
        assert!(s.ranking.is_empty() && s.quantiles.is_none());
        assert!(s.sources.iter().all(|row| row.mean.is_none() && row.median.is_none()));
    }

    #[test]
    fn previews_flatten_and_cut() {
        assert_eq!(preview("a\nb\tc", 10), "a b c");
        assert_eq!(preview("abcdef", 3), "abc…");
        assert_eq!(preview("abc", 3), "abc");
        assert_eq!(source_label(None), NO_SOURCE);
        assert_eq!(source_label(Some("web")), "web");
    }
}
