//! What the report reads from a run directory ([`ReportData`]): `run.toml`, the corpus's
//! texts, the completion records of the logs, the analysis's Parquet files and the numbers of
//! `summary.json` that no table holds, refused with the command to run where the analysis
//! is missing or stale.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::Deserialize;
use subsets::base::{BaseDir, PretrainingRecord};
use subsets::config::RunConfig;
use subsets::layout::RunDir;
use subsets::schema::{
    self, ClusterTable, CopiesTable, CorpusTable, InfluenceTable, JobTable, ReliabilityTable, ScoreTable, Table,
};

use crate::diagnosis::Diagnosis;
use crate::measure::{ByMeasure, Measure};
use crate::profile::ProfileSummary;
use crate::spectrum::SpectrumSummary;
use crate::summary_file::SummaryFile;
use crate::{Error, Result};

/// Everything the report shows, read from a run directory.
pub struct ReportData {
    /// The run directory's name.
    pub name: String,
    pub config: RunConfig,
    /// Document texts, by `doc`.
    pub texts: Vec<String>,
    pub scores: ScoreTable,
    pub clusters: ClusterTable,
    pub copies: CopiesTable,
    pub influence: Option<InfluenceTable>,
    pub reliability: Option<ReliabilityTable>,
    /// The diagnosis of `analysis/summary.json`, when the analysis wrote one.
    pub diagnosis: Option<Diagnosis>,
    /// The memorization spectrum, for runs with levels beyond the document.
    pub spectrum: Option<SpectrumSummary>,
    /// Memorization over training, for runs evaluated at more than one checkpoint.
    pub profile: Option<ProfileSummary>,
    /// Membership exposure and the attacks, for runs analyzed since cfmem measures them.
    pub membership: Option<super::membership::MembershipReport>,
    /// Per score, `summary.json`'s command that grows the run to a stable ranking by it,
    /// with the models it plans, when that ranking is not stable.
    pub growth: ByMeasure<Option<(String, u64)>>,
    /// The score that orders the lists and leads each section.
    pub rank_by: Measure,
    /// For a run from a base: how `cfmem pretrain` made it, when it did (a base from
    /// elsewhere, or one moved away since planning, has no record here).
    pub pretraining: Option<PretrainingRecord>,
    /// Jobs with a completion record, of all jobs.
    pub jobs_complete: (usize, usize),
    pub planned: Option<SystemTime>,
    pub last_log: Option<SystemTime>,
    pub analyzed: Option<SystemTime>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReportData {
    /// Reads an analyzed run, ranked by `rank_by`, or else as its analysis ranked (by
    /// mem_loss for a run analyzed before that was recorded); a run that was not analyzed,
    /// or whose scores no longer match its corpus, is refused with the command to run.
    pub fn load(run: &RunDir, rank_by: Option<Measure>) -> Result<ReportData> {
        let root = run.root().display();
        if !run.config().exists() {
            return Err(queue::Error::NotPlanned(run.root().to_path_buf()).into());
        }
        if !run.scores().exists() {
            return Err(Error::NotAnalyzed { run: run.root().to_path_buf() });
        }
        let config = RunConfig::from_file(&run.config())?;
        let corpus: CorpusTable = schema::read(&run.corpus())?;
        let scores: ScoreTable = schema::read(&run.scores())?;
        if scores.doc.len() != corpus.len() || scores.doc.iter().enumerate().any(|(row, &doc)| doc as usize != row) {
            return Err(Error::StaleScores {
                path: run.scores(),
                rows: scores.doc.len(),
                documents: corpus.len(),
                run: run.root().to_path_buf(),
            });
        }
        let spectrum = SpectrumSummary::load(run, &corpus)?;
        let jobs: JobTable = schema::read(&run.jobs())?;
        let mut job_ids = jobs.job;
        job_ids.sort_unstable();
        job_ids.dedup();
        let records: Vec<SystemTime> = job_ids.iter().filter_map(|&job| modified(&run.log_done(job))).collect();
        let SummaryParts { diagnosis, profile, growth, rank_by: analyzed_by } = read_summary(&run.summary())?;
        let name = std::fs::canonicalize(run.root())
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| root.to_string());
        Ok(ReportData {
            name,
            texts: corpus.text,
            clusters: schema::read(&run.clusters())?,
            copies: schema::read(&run.copies())?,
            influence: schema::read_if_present(&run.influence())?,
            reliability: schema::read_if_present(&run.reliability())?,
            diagnosis,
            profile,
            membership: super::membership::MembershipReport::load(run)?,
            growth,
            rank_by: rank_by.or(analyzed_by).unwrap_or_default(),
            pretraining: match config.train.base() {
                Some(dir) => PretrainingRecord::read(&BaseDir::new(dir))?,
                None => None,
            },
            spectrum,
            jobs_complete: (records.len(), job_ids.len()),
            planned: modified(&run.config()),
            last_log: records.iter().max().copied(),
            analyzed: modified(&run.scores()),
            config,
            scores,
        })
    }
}

/// What the report shows of `summary.json`, all None where there is none.
#[derive(Debug, Default)]
pub(super) struct SummaryParts {
    pub(super) diagnosis: Option<Diagnosis>,
    /// None also for a run evaluated only at the end, or analyzed by an older cfmem.
    pub(super) profile: Option<ProfileSummary>,
    /// Per score, the command that grows the run to a stable ranking by it and the models
    /// it plans, when that ranking is not stable.
    pub(super) growth: ByMeasure<Option<(String, u64)>>,
    /// The score the analysis ranked by, when it recorded one.
    pub(super) rank_by: Option<Measure>,
}

/// Reads `summary.json` once for the parts the report shows; the diagnosis must be there.
pub(super) fn read_summary(path: &Path) -> Result<SummaryParts> {
    if !path.exists() {
        return Ok(SummaryParts::default());
    }
    let text = std::fs::read_to_string(path).map_err(subsets::Error::io(path))?;
    // A file that is not of this cfmem's layout keeps being read for what the report shows.
    let Ok(file) = serde_json::from_str::<SummaryFile>(&text) else { return read_earlier(path, &text) };
    let growth = ByMeasure::from_fn(|m| {
        let verdict = file.reliability.get(m.score())?;
        verdict.command.clone().zip(verdict.extend_to)
    });
    Ok(SummaryParts { diagnosis: Some(file.diagnosis), profile: file.profile, growth, rank_by: Some(file.rank_by) })
}

/// The parts of `summary.json` the report shows, in any layout a cfmem wrote: read where the
/// file is not a [`SummaryFile`], as before cfmem ranked by either score (no `rank_by`, a
/// profile and a verdict of mem_acc alone) or before the spectrum's `places`.
#[derive(Deserialize)]
struct EarlierSummary {
    diagnosis: Diagnosis,
    /// As [`ProfileSummary::from_json`] reads it.
    #[serde(default)]
    profile: serde_json::Value,
    #[serde(default)]
    rank_by: Option<String>,
    #[serde(default)]
    reliability: Option<EarlierReliability>,
}

/// `summary.json`'s `reliability`: an entry per score, or mem_acc's alone where written
/// before both scores had one.
#[derive(Deserialize)]
#[serde(untagged)]
enum EarlierReliability {
    PerScore(BTreeMap<String, GrowthCommand>),
    Accuracy(GrowthCommand),
}

/// What the report takes of a verdict: the command that grows the run and its models.
#[derive(Deserialize)]
struct GrowthCommand {
    command: Option<String>,
    extend_to: Option<u64>,
}

fn read_earlier(path: &Path, text: &str) -> Result<SummaryParts> {
    let summary: EarlierSummary = serde_json::from_str(text)
        .map_err(|e| Error::Summary { path: path.to_path_buf(), problem: format!("no diagnosis in it: {e}") })?;
    let profile = match summary.profile {
        serde_json::Value::Null => None,
        part => Some(
            ProfileSummary::from_json(part)
                .map_err(|e| Error::Summary { path: path.to_path_buf(), problem: format!("`profile`: {e}") })?,
        ),
    };
    let growth = ByMeasure::from_fn(|m| {
        let verdict = match &summary.reliability {
            Some(EarlierReliability::PerScore(verdicts)) => verdicts.get(m.score())?,
            Some(EarlierReliability::Accuracy(verdict)) if m == Measure::Accuracy => verdict,
            _ => return None,
        };
        verdict.command.clone().zip(verdict.extend_to)
    });
    let rank_by = summary.rank_by.and_then(|name| name.parse().ok());
    Ok(SummaryParts { diagnosis: Some(summary.diagnosis), profile, growth, rank_by })
}
