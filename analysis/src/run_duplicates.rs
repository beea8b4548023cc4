//! A run's duplicate scores: one definition per run. The near-duplicate settings are part of
//! the run's configuration (`[design]` in `run.toml`); `plan` scores the documents once, on
//! the bytes the models train and evaluate on, and writes `analysis/duplicates.parquet`,
//! which the analysis reads back instead of scoring again.
//!
//! This module only translates between the configuration and [`dups`]; how duplicates are
//! found is [`dups`]'s business.

use subsets::config::DesignConfig;
use subsets::layout::RunDir;
use subsets::schema::{self, DuplicateTable, Table};

use crate::dups::{self, DupParams, Shingling};
use crate::{Error, Result};

/// `words:N` or `chars:N`, as written on the command line and in `run.toml`.
pub fn parse_shingles(text: &str) -> Result<Shingling, String> {
    let (kind, n) = text.split_once(':').ok_or_else(|| format!("expected words:N or chars:N, got {text:?}"))?;
    let n: usize = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
    if n == 0 {
        return Err("the shingle length must be at least 1".into());
    }
    match kind {
        "words" => Ok(Shingling::Words(n)),
        "chars" => Ok(Shingling::Chars(n)),
        _ => Err(format!("expected words:N or chars:N, got {text:?}")),
    }
}

/// The inverse of [`parse_shingles`].
pub fn shingles_name(shingling: Shingling) -> String {
    match shingling {
        Shingling::Words(n) => format!("words:{n}"),
        Shingling::Chars(n) => format!("chars:{n}"),
    }
}

/// The near-duplicate parameters a run was planned with.
pub fn params(design: &DesignConfig) -> Result<DupParams> {
    let shingling = parse_shingles(&design.shingles).map_err(|e| Error::Message(format!("design.shingles: {e}")))?;
    let params = DupParams {
        shingling,
        threshold: design.threshold,
        min_repeat_bytes: design.min_repeat as usize,
        ..DupParams::default()
    };
    params.validate().map_err(|e| Error::Message(format!("run.toml [design]: {e}")))?;
    Ok(params)
}

/// The duplicate scores of `texts` (one per document, `ids[i]` the id of document i).
pub fn score(ids: &[String], texts: &[&str], params: &DupParams) -> DuplicateTable {
    dups::find_duplicates(texts, params).to_table(ids)
}

/// The scores `plan` stored, checked to cover the `documents` of `corpus.parquet`.
pub fn read(run: &RunDir, documents: usize) -> Result<DuplicateTable> {
    let path = run.duplicates();
    if !path.exists() {
        return Err(Error::Message(format!(
            "{}: missing; it is written by `cfmem plan` (plan this run again with this version)",
            path.display()
        )));
    }
    let table: DuplicateTable = schema::read(&path)?;
    if table.len() != documents || table.doc.iter().enumerate().any(|(i, &d)| d as usize != i) {
        return Err(Error::Message(format!(
            "{}: does not have one row per document of corpus.parquet ({documents}, in order)",
            path.display()
        )));
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shingles_round_trip_and_bad_ones_are_named() {
        for shingling in [Shingling::Words(5), Shingling::Chars(12)] {
            assert_eq!(parse_shingles(&shingles_name(shingling)), Ok(shingling));
        }
        assert_eq!(parse_shingles("lines:3").unwrap_err(), "expected words:N or chars:N, got \"lines:3\"");
        assert_eq!(parse_shingles("words:0").unwrap_err(), "the shingle length must be at least 1");
    }

    #[test]
    fn default_shingles_are_the_plan_default() {
        assert_eq!(shingles_name(DupParams::default().shingling), subsets::config::NEAR_DUP_SHINGLES);
    }
}
