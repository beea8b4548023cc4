//! The printed view of a run's [`Summary`]: the short text `cfmem analyze` prints, and its
//! numbers as `summary.json`. Every number in it is one of the summary's, the reliability
//! verdict's or the diagnosis's; this module only chooses what to show and formats it. The
//! HTML report ([`crate::html_report`]) is the other view of the same numbers.

use std::fmt;

use subsets::config::RunConfig;
use subsets::schema::{CorpusTable, ScoreTable};

use crate::diagnosis::Diagnosis;
use crate::reliability::Verdict;
use crate::summary::{Quantiles, Summary, preview, source_label};

/// How many of the most memorized documents, and of the clusters, are listed.
const TOP: usize = 10;
/// Characters of a document's text shown on its line.
pub const PREVIEW_CHARS: usize = 60;

#[derive(Debug, Clone)]
pub struct PrintedSummary {
    models: usize,
    logs: (usize, usize),
    /// Documents cut to `max_tokens_per_doc`, and the cap.
    capped: (u32, Option<u32>),
    numbers: Summary,
    top: Vec<TopDoc>,
    reliability: Verdict,
    diagnosis: Diagnosis,
}

/// A line of the most memorized documents.
#[derive(Debug, Clone)]
struct TopDoc {
    mem_acc: f64,
    se: Option<f64>,
    source: Option<String>,
    id: String,
    preview: String,
}

/// The sources the printed table and `summary.json` list: those with a name and a scored
/// document. Documents without a source have no row here, as a JSON key could not tell
/// them from a source named like the label the views give them.
fn named_sources(numbers: &Summary) -> impl Iterator<Item = (&str, usize, f64, f64)> {
    numbers.sources.iter().filter_map(|row| {
        let source = row.source.as_deref()?;
        Some((source, row.mem_acc.len(), row.median?, row.mean?))
    })
}

impl PrintedSummary {
    /// The summary of an analysis: `numbers` of its tables, with the most memorized
    /// documents' lines read from `scores` and `corpus`.
    pub fn new(
        config: &RunConfig,
        corpus: &CorpusTable,
        scores: &ScoreTable,
        numbers: Summary,
        logs: (usize, usize),
        reliability: Verdict,
        diagnosis: Diagnosis,
    ) -> PrintedSummary {
        let top = numbers
            .most_memorized(TOP)
            .map(|d| TopDoc {
                mem_acc: scores.mem_acc[d].expect("ranked documents are scored"),
                se: scores.mem_acc_se[d],
                source: scores.source[d].clone(),
                id: scores.doc_id[d].clone(),
                preview: preview(&corpus.text[d], PREVIEW_CHARS),
            })
            .collect();
        PrintedSummary {
            models: reliability.models(),
            logs,
            capped: (config.tokens.capped, config.model.max_tokens_per_doc),
            numbers,
            top,
            reliability,
            diagnosis,
        }
    }

    /// `summary.json`: `models`, `documents`, `holdout`, `jobs_analyzed`, `jobs`,
    /// `mem_acc_quantiles` (`min`, `p10`, `median`, `p90`, `max`, or null), `sources`
    /// (`{source: {count, median, mean}}` of mem_acc over the scored documents of each
    /// named source) and `diagnosis` ([`Diagnosis`]).
    pub fn to_json(&self) -> serde_json::Value {
        let quantiles = self
            .numbers
            .quantiles
            .map(|q| serde_json::json!({"min": q.min, "p10": q.p10, "median": q.median, "p90": q.p90, "max": q.max}));
        let sources: serde_json::Map<String, serde_json::Value> = named_sources(&self.numbers)
            .map(|(source, count, median, mean)| {
                (source.to_string(), serde_json::json!({"count": count, "median": median, "mean": mean}))
            })
            .collect();
        serde_json::json!({
            "models": self.models,
            "documents": self.numbers.documents,
            "holdout": self.numbers.held_out,
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

impl fmt::Display for PrintedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} models, {} documents ({} held out), logs of {} of {} jobs",
            self.models, self.numbers.documents, self.numbers.held_out, self.logs.0, self.logs.1
        )?;
        if let (capped @ 1.., Some(cap)) = self.capped {
            writeln!(f, "{capped} documents were cut to model.max_tokens_per_doc = {cap} tokens")?;
        }
        if let Some(Quantiles { min, p10, median, p90, max }) = self.numbers.quantiles {
            writeln!(f, "mem_acc: min {min:+.3}  10% {p10:+.3}  median {median:+.3}  90% {p90:+.3}  max {max:+.3}")?;
        }
        writeln!(f, "{}", self.reliability)?;
        writeln!(f, "\nmost memorized (mem_acc ± se, source, id, text):")?;
        for (rank, doc) in self.top.iter().enumerate() {
            let se = doc.se.map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
            let source = source_label(doc.source.as_deref());
            writeln!(f, "{:>3}. {:+.3} ± {se}  {source:<16} {:<20} {}", rank + 1, doc.mem_acc, doc.id, doc.preview)?;
        }
        let mut sources = named_sources(&self.numbers).peekable();
        if sources.peek().is_some() {
            writeln!(f, "\nby source:        count   median     mean")?;
            for (source, count, median, mean) in sources {
                writeln!(f, "  {source:<16} {count:>5}  {median:+.3}  {mean:+.3}")?;
            }
        }
        let clusters = &self.numbers.clusters;
        if !clusters.is_empty() {
            writeln!(f, "\nnear-duplicate clusters: {} (group mem_acc vs mean member mem_acc)", clusters.len())?;
            for line in clusters.iter().take(TOP) {
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
        if !self.numbers.copies.is_empty() {
            writeln!(f, "\ncopy sweep (canaries): copies  canaries  mem_acc ± se")?;
            for row in &self.numbers.copies {
                let se = row.mem_acc_se.map_or_else(|| "-".to_string(), |s| format!("{s:.3}"));
                writeln!(f, "  {:>6}  {:>8}  {} ± {se}", row.copies, row.canaries, opt(row.mem_acc))?;
            }
        }
        write!(f, "\n{}", self.diagnosis)
    }
}
