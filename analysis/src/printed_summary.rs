//! The printed view of a run's [`Summary`]: the short text `cfmem analyze` prints, and its
//! numbers as `summary.json`. Every number in it is one of the summary's, the reliability
//! verdict's or the diagnosis's; this module only chooses what to show and formats it. The
//! HTML report ([`crate::html_report`]) is the other view of the same numbers.

use std::fmt;

use subsets::config::RunConfig;
use subsets::schema::{CorpusTable, ScoreTable};

use crate::diagnosis::Diagnosis;
use crate::profile::{ProfileSummary, percent};
use crate::reliability::Verdict;
use crate::spectrum::SpectrumSummary;
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
    /// The spectrum's numbers and each level's reliability verdict, if the run has levels
    /// beyond the document.
    spectrum: Option<(SpectrumSummary, Vec<(String, Verdict)>)>,
    /// Memorization over training, if the models were evaluated at more than one checkpoint.
    profile: Option<ProfileSummary>,
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
            spectrum: None,
            profile: None,
        }
    }

    /// The summary with memorization over training.
    pub fn with_profile(self, profile: ProfileSummary) -> PrintedSummary {
        PrintedSummary { profile: Some(profile), ..self }
    }

    /// The summary with a spectrum's numbers and each level's reliability verdict.
    pub fn with_spectrum(self, spectrum: SpectrumSummary, verdicts: Vec<(String, Verdict)>) -> PrintedSummary {
        PrintedSummary { spectrum: Some((spectrum, verdicts)), ..self }
    }

    /// `summary.json`: `models`, `documents`, `holdout`, `jobs_analyzed`, `jobs`,
    /// `mem_acc_quantiles` (`min`, `p10`, `median`, `p90`, `max`, or null), `sources`
    /// (`{source: {count, median, mean}}` of mem_acc over the scored documents of each
    /// named source), `reliability` ([`Verdict::to_json`]), `diagnosis` ([`Diagnosis`]),
    /// `spectrum` and `profile` ([`ProfileSummary`]), the last two null where the run has none.
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
            "reliability": self.reliability.to_json(),
            "diagnosis": self.diagnosis,
            "spectrum": self.spectrum.as_ref().map(|(spectrum, _)| spectrum_json(spectrum)),
            "profile": self.profile,
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
        if let Some((spectrum, verdicts)) = &self.spectrum {
            write_spectrum(f, spectrum, verdicts)?;
        }
        if let Some(profile) = &self.profile {
            write_profile(f, profile)?;
        }
        write!(f, "\n{}", self.diagnosis)
    }
}

/// `summary.json`'s `spectrum`: `levels` (`[{level, models, reliability, fallen_back}]`),
/// `sources` (`{source: {level: median mem_acc}}`, named sources only) and `coarser_only`
/// (`[{id, source, finest, level, mem_acc, lo, hi, unit_size, shared, preview}]`).
fn spectrum_json(spectrum: &SpectrumSummary) -> serde_json::Value {
    let levels: Vec<serde_json::Value> = spectrum
        .levels
        .iter()
        .enumerate()
        .map(|(i, (level, models))| {
            serde_json::json!({
                "level": level,
                "models": models,
                "reliability": spectrum.reliability[i],
                "fallen_back": spectrum.fallen_back[i],
            })
        })
        .collect();
    let sources: serde_json::Map<String, serde_json::Value> = spectrum
        .sources
        .iter()
        .filter_map(|row| {
            let by_level: serde_json::Map<String, serde_json::Value> = spectrum
                .levels
                .iter()
                .zip(&row.quartiles)
                .map(|((level, _), q)| (level.clone(), serde_json::json!(q.map(|q| q[1]))))
                .collect();
            Some((row.source.clone()?, serde_json::Value::Object(by_level)))
        })
        .collect();
    let findings: Vec<serde_json::Value> = spectrum
        .coarser_only
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id, "source": c.source, "finest": c.finest, "level": c.level, "mem_acc": c.mem_acc,
                "lo": c.lo, "hi": c.hi, "unit_size": c.unit_size, "shared": c.shared, "preview": c.preview,
            })
        })
        .collect();
    serde_json::json!({"levels": levels, "sources": sources, "coarser_only": findings})
}

fn write_spectrum(
    f: &mut fmt::Formatter<'_>,
    spectrum: &SpectrumSummary,
    verdicts: &[(String, Verdict)],
) -> fmt::Result {
    let models: Vec<String> = spectrum.levels.iter().map(|(level, m)| format!("{level} {m}")).collect();
    writeln!(f, "\nspectrum: median mem_acc by source and level (models per level: {})", models.join(", "))?;
    write!(f, "  {:<16}", "source")?;
    for (level, _) in &spectrum.levels {
        write!(f, " {level:>10}")?;
    }
    writeln!(f)?;
    for row in &spectrum.sources {
        write!(f, "  {:<16}", source_label(row.source.as_deref()))?;
        for q in &row.quartiles {
            write!(f, " {:>10}", opt(q.map(|q| q[1])))?;
        }
        writeln!(f)?;
    }
    for (i, (level, _)) in spectrum.levels.iter().enumerate() {
        if spectrum.fallen_back[i] > 0 {
            writeln!(
                f,
                "  {level}: {} documents are in units over the size limit and have no {level} score (see plan's message)",
                spectrum.fallen_back[i]
            )?;
        }
    }
    for (level, verdict) in verdicts {
        writeln!(f, "  {level}: {verdict}")?;
    }
    if !spectrum.coarser_only.is_empty() {
        writeln!(
            f,
            "\nmemorized only at a coarser level (mem_acc at {} → at the coarser level [95% interval]):",
            spectrum.levels[0].0
        )?;
        for c in &spectrum.coarser_only {
            writeln!(
                f,
                "  {:<20} {:<16} {:+.3} → {} {:+.3} [{:+.3}, {:+.3}]  {}",
                c.id,
                source_label(c.source.as_deref()),
                c.finest,
                c.level,
                c.mem_acc,
                c.lo,
                c.hi,
                c.shared
            )?;
            writeln!(f, "      {}", c.preview)?;
        }
    }
    Ok(())
}

fn write_profile(f: &mut fmt::Formatter<'_>, profile: &ProfileSummary) -> fmt::Result {
    let steps: Vec<String> = profile.checkpoints.iter().map(|c| c.step.to_string()).collect();
    writeln!(
        f,
        "\nmemorization over training: mean mem_acc by source at each checkpoint (steps {})",
        steps.join(", ")
    )?;
    write!(f, "  {:<16}", "source")?;
    for c in &profile.checkpoints {
        write!(f, " {:>7}", percent(c.checkpoint))?;
    }
    writeln!(f)?;
    for row in &profile.sources {
        write!(f, "  {:<16}", source_label(row.source.as_deref()))?;
        for m in &row.mem_acc {
            write!(f, " {:>7}", opt(*m))?;
        }
        writeln!(f)?;
    }
    write!(f, "  {:<16}", "OUT − bigram")?;
    for c in &profile.checkpoints {
        write!(f, " {:>7}", opt(c.regime.generalization_gap))?;
    }
    let memorizing: Vec<String> =
        profile.checkpoints.iter().filter(|c| c.regime.memorizing).map(|c| percent(c.checkpoint)).collect();
    match memorizing.is_empty() {
        true => writeln!(f, "  (memorizing regime at no checkpoint)")?,
        false => writeln!(f, "  (memorizing regime at {})", memorizing.join(", "))?,
    }
    write!(f, "  {:<16}", "Spearman w/ end")?;
    for c in &profile.checkpoints {
        write!(f, " {:>7}", c.spearman_with_final.map_or_else(|| "-".into(), |r| format!("{r:.2}")))?;
    }
    writeln!(f)?;
    writeln!(f, "ranking over training: {}", profile.ranking_answer())
}
