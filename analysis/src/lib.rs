//! Everything cfmem computes from a run's files: the memorization estimators and their
//! standard errors ([`estimate`], [`stats`]) for both scores, mem_loss and mem_acc, one of
//! which ranks ([`measure`]), the per-model matrices ([`per_model`]) that
//! the bootstrap intervals ([`bootstrap`]), the reliability measures ([`reliability`]) and
//! counterfactual influence ([`influence`]) multiply with one GEMM ([`gemm`]), the score
//! tables ([`scores`]) and their profile over training ([`profile`]), the memorization
//! spectrum ([`spectrum`]), the run's summary numbers ([`summary`]) and their two views, the
//! printed summary ([`printed_summary`]) and the HTML report ([`html_report`]), and whether
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
pub mod synthetic_run;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Files(#[from] subsets::Error),
    #[error(transparent)]
    Queue(#[from] queue::Error),
    #[error("{0}")]
    Message(String),
    /// The analysis a command reads is not there.
    #[error("{}: no analysis/scores.parquet: run `cfmem analyze {}` first", run.display(), run.display())]
    NotAnalyzed { run: std::path::PathBuf },
    /// Logs are missing or damaged and a partial analysis was not asked for.
    #[error(
        "{}: {what}; finish them with `cfmem run {}` or analyze what is there with --partial",
        run.display(),
        run.display()
    )]
    Incomplete { run: std::path::PathBuf, what: String },
}
