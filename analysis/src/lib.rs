//! Everything cfmem computes from a run's files: the memorization estimators and their
//! standard errors, near-duplicate detection, and the printed summary.
//!
//! It reads logs and the corpus only through `subsets::schema` and never depends on tch:
//! it builds and tests without libtorch.

pub mod dups;
