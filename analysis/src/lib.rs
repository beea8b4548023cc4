//! Everything cfmem computes from a run's files: the memorization estimators and their
//! standard errors ([`estimate`], [`stats`]), near-duplicate and repeated-substring
//! detection ([`dups`]), the score tables ([`scores`]), the printed summary ([`report`]) and
//! the HTML report ([`html`]).
//!
//! It reads logs and the corpus only through `subsets::schema` and never depends on tch:
//! it builds and tests without libtorch.

pub mod dups;
pub mod estimate;
pub mod html;
pub mod report;
pub mod scores;
pub mod stats;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Files(#[from] subsets::Error),
    #[error("{0}")]
    Message(String),
}
