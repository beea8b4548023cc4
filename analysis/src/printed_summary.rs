//! The printed view of a run's [`Summary`]: the short text `cfmem analyze` prints, and its
//! numbers as `summary.json`. Every number in it is one of the summary's, the reliability
//! verdict's or the diagnosis's; this module only chooses what to show and formats it. The
//! HTML report ([`crate::html_report`]) is the other view of the same numbers.

use std::collections::BTreeMap;
use std::fmt;

use subsets::config::RunConfig;
use subsets::schema::{CorpusTable, ScoreTable};

use crate::attacks::AttackSummary;
use crate::diagnosis::Diagnosis;
use crate::measure::{ByMeasure, Measure};
use crate::membership::MembershipSummary;
use crate::profile::{ProfileSummary, percent};
use crate::reliability::Verdict;
use crate::spectrum::SpectrumSummary;
use crate::summary::{Quantiles, Summary, preview, shared_words, source_label};
use crate::summary_file::{
    CoarserOnlyDocument, MedianAndMean, ScoreQuantiles, SourceScores, Spectrum, SpectrumLevel, SummaryFile,
};

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
    /// The verdict on each score's ranking, the ranking score's first.
    reliability: Vec<Verdict>,
    diagnosis: Diagnosis,
    /// The spectrum's numbers and each level's reliability verdicts, if the run has levels
    /// beyond the document.
    spectrum: Option<(SpectrumSummary, Vec<(String, Verdict)>)>,
    /// Memorization over training, if the models were evaluated at more than one checkpoint.
    profile: Option<ProfileSummary>,
    /// The documents' membership exposure and the attacks on the run's models (unless
    /// skipped).
    membership: Option<(MembershipSummary, Option<AttackSummary>)>,
}

/// A line of the most memorized documents: the ranking score with its standard error,
/// then the other score.
#[derive(Debug, Clone)]
struct TopDoc {
    value: f64,
    se: Option<f64>,
    other: Option<f64>,
    source: Option<String>,
    id: String,
    preview: String,
}

/// The sources the printed table and `summary.json` list: those with a name and a scored
/// document. Documents without a source have no row here, as a JSON key could not tell
/// them from a source named like the label the views give them.
fn named_sources(numbers: &Summary) -> impl Iterator<Item = (&str, &crate::summary::SourceRow)> {
    numbers.sources.iter().filter_map(|row| Some((row.source.as_deref()?, row)).filter(|_| row.scored() > 0))
}

impl PrintedSummary {
    /// The summary of an analysis: `numbers` of its tables (ranked by `numbers.rank_by`),
    /// with the most memorized documents' lines read from `scores` and `corpus`, and the
    /// verdicts on both scores' rankings (`reliability`, the ranking score's first).
    pub fn new(
        config: &RunConfig,
        corpus: &CorpusTable,
        scores: &ScoreTable,
        numbers: Summary,
        logs: (usize, usize),
        reliability: Vec<Verdict>,
        diagnosis: Diagnosis,
    ) -> PrintedSummary {
        let lead = numbers.rank_by.columns(scores);
        let other = numbers.rank_by.other().columns(scores);
        let top = numbers
            .most_memorized(TOP)
            .map(|d| TopDoc {
                value: lead.value[d].expect("ranked documents are scored"),
                se: lead.se[d],
                other: other.value[d],
                source: scores.source[d].clone(),
                id: scores.doc_id[d].clone(),
                preview: preview(&corpus.text[d], PREVIEW_CHARS),
            })
            .collect();
        PrintedSummary {
            models: reliability.first().map_or(0, Verdict::models),
            logs,
            capped: (config.tokens.capped, config.model.max_tokens_per_doc),
            numbers,
            top,
            reliability,
            diagnosis,
            spectrum: None,
            profile: None,
            membership: None,
        }
    }

    /// The summary with the documents' membership exposure and the attacks.
    pub fn with_membership(self, membership: MembershipSummary, attacks: Option<AttackSummary>) -> PrintedSummary {
        PrintedSummary { membership: Some((membership, attacks)), ..self }
    }

    /// The summary with memorization over training.
    pub fn with_profile(self, profile: ProfileSummary) -> PrintedSummary {
        PrintedSummary { profile: Some(profile), ..self }
    }

    /// The summary with a spectrum's numbers and each level's reliability verdicts.
    pub fn with_spectrum(self, spectrum: SpectrumSummary, verdicts: Vec<(String, Verdict)>) -> PrintedSummary {
        PrintedSummary { spectrum: Some((spectrum, verdicts)), ..self }
    }

    fn rank_by(&self) -> Measure {
        self.numbers.rank_by
    }

    /// The summary's numbers as `summary.json` holds them.
    pub fn file(&self) -> SummaryFile {
        let quantiles = |m: Measure| {
            self.numbers.quantiles.of(m).map(|q| ScoreQuantiles {
                max: q.max,
                median: q.median,
                min: q.min,
                p10: q.p10,
                p90: q.p90,
            })
        };
        let sources = named_sources(&self.numbers)
            .map(|(source, row)| {
                let of = |m: Measure| MedianAndMean { mean: row.mean(m), median: row.median(m) };
                let scores =
                    SourceScores { count: row.scored(), mem_acc: of(Measure::Accuracy), mem_loss: of(Measure::Loss) };
                (source.to_string(), scores)
            })
            .collect();
        let (membership, attacks) = match &self.membership {
            Some((membership, attacks)) => (Some(membership.clone()), attacks.as_ref().map(AttackSummary::file)),
            None => (None, None),
        };
        SummaryFile {
            attacks,
            diagnosis: self.diagnosis.clone(),
            documents: self.numbers.documents,
            holdout: self.numbers.held_out,
            jobs: self.logs.1,
            jobs_analyzed: self.logs.0,
            mem_acc_quantiles: quantiles(Measure::Accuracy),
            mem_loss_quantiles: quantiles(Measure::Loss),
            membership,
            models: self.models,
            profile: self.profile.clone(),
            rank_by: self.rank_by(),
            reliability: self.reliability.iter().map(|v| (v.measure().score().to_string(), v.file())).collect(),
            sources,
            spectrum: self.spectrum.as_ref().map(|(spectrum, _)| spectrum_file(spectrum)),
        }
    }
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:+.3}"))
}

fn se(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |s| format!("{s:.3}"))
}

impl fmt::Display for PrintedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [lead, other] = self.rank_by().leading();
        writeln!(
            f,
            "{} models, {} documents ({} held out), logs of {} of {} jobs",
            self.models, self.numbers.documents, self.numbers.held_out, self.logs.0, self.logs.1
        )?;
        if let (capped @ 1.., Some(cap)) = self.capped {
            writeln!(f, "{capped} documents were cut to model.max_tokens_per_doc = {cap} tokens")?;
        }
        writeln!(f, "ranked by {lead} ({}; `--rank-by {}` ranks by {other})", lead.unit(), other.name())?;
        for m in [lead, other] {
            if let Some(Quantiles { min, p10, median, p90, max }) = self.numbers.quantiles.of(m) {
                writeln!(
                    f,
                    "{:<9} min {min:+.3}  10% {p10:+.3}  median {median:+.3}  90% {p90:+.3}  max {max:+.3}",
                    format!("{m}:")
                )?;
            }
        }
        for verdict in &self.reliability {
            writeln!(f, "{verdict}")?;
        }
        writeln!(f, "\nmost memorized by {lead} ({lead} ± se, {other}, source, id, text):")?;
        for (rank, doc) in self.top.iter().enumerate() {
            let source = source_label(doc.source.as_deref());
            writeln!(
                f,
                "{:>3}. {:+.3} ± {}  {:>6}  {source:<16} {:<20} {}",
                rank + 1,
                doc.value,
                se(doc.se),
                opt(doc.other),
                doc.id,
                doc.preview
            )?;
        }
        let mut sources = named_sources(&self.numbers).peekable();
        if sources.peek().is_some() {
            let median = |m: Measure| format!("{m} median");
            writeln!(
                f,
                "\nby source:        count  {:>15}  {:>7}  {:>15}  {:>7}",
                median(lead),
                "mean",
                median(other),
                "mean"
            )?;
            for (source, row) in sources {
                writeln!(
                    f,
                    "  {source:<16} {:>5}  {:>15}  {:>7}  {:>15}  {:>7}",
                    row.scored(),
                    opt(row.median(lead)),
                    opt(row.mean(lead)),
                    opt(row.median(other)),
                    opt(row.mean(other))
                )?;
            }
        }
        let clusters = &self.numbers.clusters;
        if !clusters.is_empty() {
            writeln!(
                f,
                "\nnear-duplicate clusters: {} (group score vs mean member score, {lead} then {other})",
                clusters.len()
            )?;
            for line in clusters.iter().take(TOP) {
                let pair =
                    |m: Measure| format!("group {}  members {}", opt(*line.group.of(m)), opt(*line.member_mean.of(m)));
                writeln!(f, "  cluster {:<5} size {:<4} {}  |  {}", line.cluster, line.size, pair(lead), pair(other))?;
            }
        }
        if !self.numbers.copies.is_empty() {
            writeln!(f, "\ncopy sweep (canaries): copies  canaries  {lead} ± se  {other} ± se")?;
            for row in &self.numbers.copies {
                let scores = ByMeasure {
                    mem_loss: format!("{} ± {}", opt(row.mem_loss), se(row.mem_loss_se)),
                    mem_acc: format!("{} ± {}", opt(row.mem_acc), se(row.mem_acc_se)),
                };
                writeln!(f, "  {:>6}  {:>8}  {}  {}", row.copies, row.canaries, scores.of(lead), scores.of(other))?;
            }
        }
        if let Some((spectrum, verdicts)) = &self.spectrum {
            write_spectrum(f, spectrum, verdicts, lead)?;
        }
        if let Some(profile) = &self.profile {
            write_profile(f, profile, lead)?;
        }
        if let Some((membership, attacks)) = &self.membership {
            write!(f, "\n{membership}")?;
            if let Some(attacks) = attacks {
                write!(f, "{attacks}")?;
            }
        }
        write!(f, "\n{}", self.diagnosis)
    }
}

/// `summary.json`'s `spectrum`: the medians of named sources only, the documents memorized
/// only at a coarser level cut to their previews.
fn spectrum_file(spectrum: &SpectrumSummary) -> Spectrum {
    let levels = spectrum
        .levels
        .iter()
        .enumerate()
        .map(|(i, (level, models))| SpectrumLevel {
            fallen_back: spectrum.fallen_back[i],
            level: level.clone(),
            models: *models,
            reliability: spectrum.reliability[i],
            removal_largest: spectrum.removal[i].largest,
            removal_mean: spectrum.removal[i].mean,
        })
        .collect();
    let sources = spectrum
        .sources
        .iter()
        .filter_map(|row| {
            let by_level = spectrum
                .levels
                .iter()
                .enumerate()
                .map(|(l, (level, _))| (level.clone(), ByMeasure::from_fn(|m| row.quartiles.of(m)[l].map(|q| q[1]))))
                .collect();
            Some((row.source.clone()?, by_level))
        })
        .collect();
    let coarser_only = spectrum
        .coarser_only
        .iter()
        .map(|c| CoarserOnlyDocument {
            finest: c.finest,
            hi: c.hi,
            id: c.id.clone(),
            level: c.level.clone(),
            lo: c.lo,
            mem_acc: c.mem_acc,
            preview: preview(&c.text, PREVIEW_CHARS),
            shared: shared_words(&c.shared, c.unit_size, PREVIEW_CHARS),
            source: c.source.clone(),
            unit_size: c.unit_size,
        })
        .collect();
    let places = spectrum
        .places
        .iter()
        .map(|row| {
            let mut shares: BTreeMap<String, usize> =
                spectrum.levels.iter().zip(&row.counts).map(|((level, _), &count)| (level.clone(), count)).collect();
            shares.insert("none".into(), row.unplaced);
            (source_label(row.source.as_deref()).to_string(), shares)
        })
        .collect();
    Spectrum { coarser_only, levels, places, sources }
}

fn write_spectrum(
    f: &mut fmt::Formatter<'_>,
    spectrum: &SpectrumSummary,
    verdicts: &[(String, Verdict)],
    lead: Measure,
) -> fmt::Result {
    let models: Vec<String> = spectrum.levels.iter().map(|(level, m)| format!("{level} {m}")).collect();
    writeln!(f, "\nspectrum: median {lead} by source and level (models per level: {})", models.join(", "))?;
    write!(f, "  {:<16}", "source")?;
    for (level, _) in &spectrum.levels {
        write!(f, " {level:>10}")?;
    }
    writeln!(f)?;
    for row in &spectrum.sources {
        write!(f, "  {:<16}", source_label(row.source.as_deref()))?;
        for q in row.quartiles.of(lead) {
            write!(f, " {:>10}", opt(q.map(|q| q[1])))?;
        }
        writeln!(f)?;
    }
    writeln!(
        f,
        "  place on the spectrum (the finest level whose {lead} reaches {}% of the document's largest, when that \
         is significant), share of each source's documents:",
        100.0 * crate::spectrum::PLACE_SHARE
    )?;
    write!(f, "  {:<16}", "source")?;
    for (level, _) in &spectrum.levels {
        write!(f, " {level:>10}")?;
    }
    writeln!(f, " {:>10}", "none")?;
    for row in &spectrum.places {
        write!(f, "  {:<16}", source_label(row.source.as_deref()))?;
        let total = row.documents().max(1) as f64;
        for &count in row.counts.iter().chain([&row.unplaced]) {
            write!(f, " {:>9.0}%", 100.0 * count as f64 / total)?;
        }
        writeln!(f)?;
    }
    let removed: Vec<String> = spectrum
        .levels
        .iter()
        .zip(&spectrum.removal)
        .map(|((level, _), r)| format!("{level} {:.1} (largest {})", r.mean, r.largest))
        .collect();
    writeln!(f, "  documents one unit OUT removes from a model's training set, mean: {}", removed.join(", "))?;
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
                shared_words(&c.shared, c.unit_size, PREVIEW_CHARS)
            )?;
            writeln!(f, "      {}", preview(&c.text, PREVIEW_CHARS))?;
        }
    }
    Ok(())
}

fn write_profile(f: &mut fmt::Formatter<'_>, profile: &ProfileSummary, lead: Measure) -> fmt::Result {
    let steps: Vec<String> = profile.checkpoints.iter().map(|c| c.step.to_string()).collect();
    let leading = profile.of(lead);
    writeln!(
        f,
        "\nmemorization over training: mean {} by source at each checkpoint (steps {})",
        leading.measure,
        steps.join(", ")
    )?;
    write!(f, "  {:<16}", "source")?;
    for c in &profile.checkpoints {
        write!(f, " {:>7}", percent(c.checkpoint))?;
    }
    writeln!(f)?;
    for row in &leading.sources {
        write!(f, "  {:<16}", source_label(row.source.as_deref()))?;
        for m in &row.mean {
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
    for score in &profile.scores {
        write!(f, "  {:<16}", format!("{} w/ end", score.measure))?;
        for rho in &score.spearman_with_final {
            write!(f, " {:>7}", rho.map_or_else(|| "-".into(), |r| format!("{r:.2}")))?;
        }
        writeln!(f, "  (Spearman)")?;
    }
    for score in &profile.scores {
        writeln!(f, "ranking over training ({}): {}", score.measure, profile.ranking_answer(score))?;
    }
    Ok(())
}
