//! Everything cfmem computes from a run's files: the memorization estimators and their
//! standard errors ([`estimate`], [`stats`]), near-duplicate and repeated-substring
//! detection ([`dups`]) and a run's stored duplicate scores ([`run_duplicates`]), the
//! per-model matrices ([`per_model`]) that the bootstrap intervals ([`bootstrap`]), the
//! reliability measures ([`reliability`]) and counterfactual influence ([`influence`])
//! multiply with one GEMM ([`gemm`]), the score tables ([`scores`]) and the printed
//! summary ([`report`]), the HTML report ([`html`]), and whether the models generalize
//! beyond a leave-one-out bigram baseline ([`diagnosis`]). [`synthetic_run`] writes runs
//! with known answers for tests and benchmarks.
//!
//! It reads logs and the corpus only through `subsets::schema`, learns which logs are
//! complete from the job queue (`queue::verify`), and never depends on tch: it builds and
//! tests without libtorch.

pub mod bootstrap;
pub mod diagnosis;
pub mod dups;
pub mod estimate;
pub mod gemm;
pub mod html;
pub mod influence;
pub mod per_model;
pub mod reliability;
pub mod report;
pub mod run_duplicates;
pub mod scores;
pub mod stats;
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
}
