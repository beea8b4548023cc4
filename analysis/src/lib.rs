//! Everything cfmem computes from a run's files: the memorization estimators and their
//! standard errors ([`estimate`], [`stats`]) for both scores, mem_loss and mem_acc, one of
//! which ranks ([`measure`]), the per-model matrices ([`per_model`]) that
//! the bootstrap intervals ([`bootstrap`]), the reliability measures ([`reliability`]) and
//! counterfactual influence ([`influence`]) multiply with one GEMM ([`gemm`]), the score
//! tables ([`scores`]) and their profile over training ([`profile`]), the memorization
//! spectrum ([`spectrum`]), the run's summary numbers ([`summary`]) and their two views, the
//! printed summary ([`printed_summary`]) with its numbers in `summary.json`
//! ([`summary_file`]) and the HTML report ([`html_report`]), and whether
//! the models generalize beyond a leave-one-out bigram baseline ([`diagnosis`]), and each
//! document's membership exposure ([`membership`]) and the membership inference attacks on the
//! run's own models ([`attacks`]). The settings of `cfmem analyze` ([`settings`]) are a module
//! of their own, which the estimators read rather than each other.
//! [`synthetic_run`] writes runs
//! with known answers for tests and benchmarks.
//!
//! It reads logs and the corpus only through `subsets::schema`, the duplicate scores `plan`
//! stored through `subsets::duplicate_scores`, and learns which logs are complete from the
//! job queue (`queue::verify`); it never depends on tch: it builds and
//! tests without libtorch.

pub mod attacks;
pub mod bootstrap;
pub mod diagnosis;
pub mod estimate;
pub mod gemm;
pub mod html_report;
pub mod influence;
pub mod measure;
pub mod membership;
pub mod per_model;
pub mod printed_summary;
pub mod profile;
pub mod reliability;
pub mod scores;
pub mod settings;
pub mod spectrum;
pub mod stats;
pub mod summary;
pub mod summary_file;
pub mod synthetic_run;

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Files(#[from] subsets::Error),
    #[error(transparent)]
    Queue(#[from] queue::Error),
    #[error("{}: no complete logs: run `cfmem run {}` first", run.display(), run.display())]
    NoCompleteLogs { run: PathBuf },
    #[error("model {model} has no rows in its job's log")]
    ModelWithoutRows { model: u32 },
    /// A log that does not hold what its job's models should have written.
    #[error("{}: model {model} {problem}", path.display())]
    BadLog { path: PathBuf, model: u32, problem: String },
    /// `corpus.parquet`'s units disagree with `units.parquet` or the stored clusters.
    #[error("{what} differ at doc {doc}")]
    UnitsDiffer { what: &'static str, doc: usize },
    /// A document of `what` (the corpus or the background) with a token id at or above BOS.
    #[error("{what} document {doc} has token id {token}, not below bos {bos}")]
    TokenBeyondVocabulary { what: String, doc: usize, token: u32, bos: u32 },
    #[error(
        "the run holds out no documents: plan with --holdout or --holdout-ids, or use --targets all or --targets ids FILE"
    )]
    NoHeldOutTargets,
    #[error("the target was evaluated on {evaluated} documents, the run has {documents}")]
    TargetDocuments { evaluated: usize, documents: usize },
    /// A run model asked to be left out of the shadows that is not one of them; worded to
    /// follow what named it (`--leave-out 9: …`).
    #[error("{model}: not one of the run's {models} scored models with a complete log")]
    NotAShadow { model: u32, models: usize },
    #[error(
        "{}: its {rows} rows do not match the {documents} documents of corpus.parquet: run `cfmem analyze {}` again",
        path.display(),
        run.display()
    )]
    StaleScores { path: PathBuf, rows: usize, documents: usize, run: PathBuf },
    /// `summary.json` without a part the report reads.
    #[error("{}: {problem}", path.display())]
    Summary { path: PathBuf, problem: String },
    /// The analysis a command reads is not there.
    #[error("{}: no analysis/scores.parquet: run `cfmem analyze {}` first", run.display(), run.display())]
    NotAnalyzed { run: PathBuf },
    /// Logs are missing or damaged and a partial analysis was not asked for.
    #[error(
        "{}: {what}; finish them with `cfmem run {}` or analyze what is there with --partial",
        run.display(),
        run.display()
    )]
    Incomplete { run: PathBuf, what: String },
    /// Logs are missing or damaged, and an attack's shadows are the run's models.
    #[error(
        "{}: {what}; the shadows are the run's models: finish them with `cfmem run {}`",
        run.display(),
        run.display()
    )]
    ShadowsIncomplete { run: PathBuf, what: String },
}
