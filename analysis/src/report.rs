//! The short text summary `cfmem analyze` prints, and its numbers as `summary.json`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use subsets::config::RunConfig;
use subsets::schema::{ClusterTable, CopiesTable, CorpusTable, ScoreTable};

use crate::diagnosis::Diagnosis;
use crate::reliability::Verdict;
use crate::stats::quantile;

/// How many of the most memorized documents are listed.
const TOP: usize = 10;
const PREVIEW_CHARS: usize = 60;

#[derive(Debug, Clone)]
pub struct Summary {
    models: usize,
    documents: usize,
    holdout: usize,
    logs: (usize, usize),
    /// Documents cut to `max_tokens_per_doc`, and the cap.
    capped: (u32, Option<u32>),
    /// min, 10%, median, 90%, max of mem_acc over scored documents.
    quantiles: Option<[f64; 5]>,
    top: Vec<TopDoc>,
    /// source → (count, median, mean) of mem_acc.
    sources: BTreeMap<String, (usize, f64, f64)>,
    clusters: Vec<ClusterLine>,
    copies: CopiesTable,
    reliability: Verdict,
    diagnosis: Diagnosis,
}

#[derive(Debug, Clone)]
struct TopDoc {
    mem_acc: f64,
    se: Option<f64>,
    source: Option<String>,
    id: String,
    preview: String,
}

#[derive(Debug, Clone)]
struct ClusterLine {
    cluster: u32,
    size: u32,
    group_mem_acc: Option<f64>,
    member_mean: Option<f64>,
}

pub(crate) fn preview(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut cut: String = flat.chars().take(PREVIEW_CHARS).collect();
    if flat.chars().count() > PREVIEW_CHARS {
        cut.push('…');
    }
    cut
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

impl Summary {
    #[expect(clippy::too_many_arguments, reason = "one per part of the analysis the summary reports")]
    pub fn new(
        config: &RunConfig,
        corpus: &CorpusTable,
        scores: &ScoreTable,
        clusters: &ClusterTable,
        copies: &CopiesTable,
        logs: (usize, usize),
        reliability: Verdict,
        diagnosis: Diagnosis,
    ) -> Summary {
        let scored: Vec<usize> = (0..scores.doc.len()).filter(|&d| scores.mem_acc[d].is_some()).collect();
        let mut values: Vec<f64> = scored.iter().filter_map(|&d| scores.mem_acc[d]).collect();
        values.sort_by(f64::total_cmp);
        let quantiles =
            (!values.is_empty()).then(|| [0.0, 0.1, 0.5, 0.9, 1.0].map(|q| quantile(&values, q).expect("non-empty")));

        let mut ranked = scored.clone();
        ranked.sort_by(|&a, &b| scores.mem_acc[b].unwrap().total_cmp(&scores.mem_acc[a].unwrap()));
        let top = ranked
            .iter()
            .take(TOP)
            .map(|&d| TopDoc {
                mem_acc: scores.mem_acc[d].expect("scored"),
                se: scores.mem_acc_se[d],
                source: scores.source[d].clone(),
                id: scores.doc_id[d].clone(),
                preview: preview(&corpus.text[d]),
            })
            .collect();

        let mut by_source: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for &d in &scored {
            if let Some(source) = &scores.source[d] {
                by_source.entry(source.clone()).or_default().push(scores.mem_acc[d].expect("scored"));
            }
        }
        let sources = by_source
            .into_iter()
            .map(|(source, mut v)| {
                v.sort_by(f64::total_cmp);
                let median = quantile(&v, 0.5).expect("non-empty");
                (source, (v.len(), median, mean(&v).expect("non-empty")))
            })
            .collect();

        // One pass over the documents, not one per cluster.
        let mut members: HashMap<u32, Vec<f64>> = HashMap::new();
        for d in (0..scores.doc.len()).filter(|&d| scores.cluster_size[d] > 1) {
            if let Some(m) = scores.mem_acc[d] {
                members.entry(scores.cluster[d]).or_default().push(m);
            }
        }
        let clusters = (0..clusters.cluster.len())
            .map(|i| ClusterLine {
                cluster: clusters.cluster[i],
                size: clusters.cluster_size[i],
                group_mem_acc: clusters.group_mem_acc[i],
                member_mean: members.get(&clusters.cluster[i]).and_then(|m| mean(m)),
            })
            .collect();

        Summary {
            models: reliability.models(),
            documents: corpus.doc.len(),
            holdout: corpus.holdout.iter().filter(|&&h| h).count(),
            logs,
            capped: (config.tokens.capped, config.model.max_tokens_per_doc),
            quantiles,
            top,
            sources,
            clusters,
            copies: copies.clone(),
            reliability,
            diagnosis,
        }
    }

    pub fn diagnosis(&self) -> &Diagnosis {
        &self.diagnosis
    }

    /// `summary.json`: `models`, `documents`, `holdout`, `jobs_analyzed`, `jobs`,
    /// `mem_acc_quantiles` (`min`, `p10`, `median`, `p90`, `max`, or null), `sources`
    /// (`{source: {count, median, mean}}` of mem_acc) and `diagnosis` ([`Diagnosis`]).
    pub fn to_json(&self) -> serde_json::Value {
        let quantiles = self.quantiles.map(|[min, p10, median, p90, max]| {
            serde_json::json!({"min": min, "p10": p10, "median": median, "p90": p90, "max": max})
        });
        let sources: serde_json::Map<String, serde_json::Value> = self
            .sources
            .iter()
            .map(|(source, (count, median, mean))| {
                (source.clone(), serde_json::json!({"count": count, "median": median, "mean": mean}))
            })
            .collect();
        serde_json::json!({
            "models": self.models,
            "documents": self.documents,
            "holdout": self.holdout,
            "jobs_analyzed": self.logs.0,
            "jobs": self.logs.1,
            "mem_acc_quantiles": quantiles,
            "sources": sources,
            "diagnosis": self.diagnosis,
        })
    }
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:+.3}"))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} models, {} documents ({} held out), logs of {} of {} jobs",
            self.models, self.documents, self.holdout, self.logs.0, self.logs.1
        )?;
        if let (capped @ 1.., Some(cap)) = self.capped {
            writeln!(f, "{capped} documents were cut to model.max_tokens_per_doc = {cap} tokens")?;
        }
        if let Some([min, p10, median, p90, max]) = self.quantiles {
            writeln!(f, "mem_acc: min {min:+.3}  10% {p10:+.3}  median {median:+.3}  90% {p90:+.3}  max {max:+.3}")?;
        }
        writeln!(f, "{}", self.reliability)?;
        writeln!(f, "\nmost memorized (mem_acc ± se, source, id, text):")?;
        for (rank, doc) in self.top.iter().enumerate() {
            let se = doc.se.map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
            let source = doc.source.as_deref().unwrap_or("-");
            writeln!(f, "{:>3}. {:+.3} ± {se}  {source:<16} {:<20} {}", rank + 1, doc.mem_acc, doc.id, doc.preview)?;
        }
        if !self.sources.is_empty() {
            writeln!(f, "\nby source:        count   median     mean")?;
            for (source, (count, median, mean)) in &self.sources {
                writeln!(f, "  {source:<16} {count:>5}  {median:+.3}  {mean:+.3}")?;
            }
        }
        if !self.clusters.is_empty() {
            writeln!(f, "\nnear-duplicate clusters: {} (group mem_acc vs mean member mem_acc)", self.clusters.len())?;
            for line in self.clusters.iter().take(TOP) {
                writeln!(
                    f,
                    "  cluster {:<5} size {:<4} group {}  members {}",
                    line.cluster,
                    line.size,
                    opt(line.group_mem_acc),
                    opt(line.member_mean)
                )?;
            }
        }
        if !self.copies.copies.is_empty() {
            writeln!(f, "\ncopy sweep (canaries): copies  canaries  mem_acc ± se")?;
            for i in 0..self.copies.copies.len() {
                let se = self.copies.mem_acc_se[i].map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
                writeln!(
                    f,
                    "  {:>6}  {:>8}  {} ± {se}",
                    self.copies.copies[i],
                    self.copies.canaries[i],
                    opt(self.copies.mem_acc[i])
                )?;
            }
        }
        write!(f, "\n{}", self.diagnosis)
    }
}
