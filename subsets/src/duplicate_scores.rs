//! A run's duplicate scores, one definition per run: the engine's result as the run's
//! table (`analysis/duplicates.parquet`, [`DuplicateTable`]), and that table read back,
//! checked against the corpus. `plan` scores the documents once, with the settings in
//! `run.toml`'s `[design]`, on the bytes the models train and evaluate on; the analysis
//! reads the table instead of scoring again.
//!
//! How duplicates are found is the `duplicates` crate's business; this module only knows
//! the run's files.

use duplicates::{DupParams, Duplicates};

use crate::corpus::Document;
use crate::layout::RunDir;
use crate::schema::{self, DuplicateTable, Table};
use crate::{Error, Result};

/// Bytes that scoring `documents` holds at its peak: the engine's own
/// ([`duplicates::memory_estimate`]) and the documents read, each its id and text plus 64
/// bytes of `String` headers and allocator slack.
pub fn memory_needed(documents: &[Document], params: &DupParams) -> u64 {
    let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
    let read: usize = documents.iter().map(|d| d.text.len() + d.id.len() + 64).sum();
    duplicates::memory_estimate(&texts, params) + read as u64
}

/// The scores as a table, with `doc_ids[i]` the id of document i.
///
/// # Panics
///
/// If `doc_ids` does not have one id per document.
pub fn table(found: &Duplicates, doc_ids: &[String]) -> DuplicateTable {
    assert_eq!(doc_ids.len(), found.cluster.len(), "one doc id per document");
    DuplicateTable {
        doc: (0..doc_ids.len() as u32).collect(),
        doc_id: doc_ids.to_vec(),
        exact_dup_count: found.exact_dup_count.clone(),
        near_dup_count: found.near_dup_count.clone(),
        max_jaccard: found.max_jaccard.clone(),
        cluster: found.cluster.clone(),
        cluster_size: found.cluster_size.clone(),
        repeat_fraction: found.repeat_fraction.clone(),
        near_dup_capped: found.near_dup_capped.clone(),
    }
}

/// The scores `plan` stored in `run`, checked to cover the `documents` of `corpus.parquet`.
pub fn read(run: &RunDir, documents: usize) -> Result<DuplicateTable> {
    let path = run.duplicates();
    if !path.exists() {
        return Err(Error::file(
            &path,
            "missing; it is written by `cfmem plan` (plan this run again with this version)",
        ));
    }
    let table: DuplicateTable = schema::read(&path)?;
    if table.len() != documents || table.doc.iter().enumerate().any(|(i, &d)| d as usize != i) {
        return Err(Error::file(
            &path,
            format!("does not have one row per document of corpus.parquet ({documents}, in order)"),
        ));
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use duplicates::{Settings, find_duplicates};

    use super::*;

    #[test]
    fn the_table_holds_every_score_by_document() {
        let texts = ["one two three four five six", "One two  three four five six", "something else", ""];
        let found = find_duplicates(&texts, &Settings::default().params().unwrap());
        let ids: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
        let table = table(&found, &ids);
        assert_eq!(table.doc, [0, 1, 2, 3]);
        assert_eq!(table.doc_id, ids);
        assert_eq!(table.exact_dup_count, [1, 1, 0, 0]);
        assert_eq!(table.near_dup_count, [1, 1, 0, 0]);
        assert_eq!(table.cluster, [0, 0, 1, 2]);
        assert_eq!(table.cluster_size, [2, 2, 1, 1]);
        assert_eq!(table.max_jaccard, [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(table.repeat_fraction, [0.0, 0.0, 0.0, 0.0]);
        assert_eq!(table.near_dup_capped, [false; 4]);
    }

    #[test]
    fn a_missing_or_short_table_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let err = read(&run, 2).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "duplicates.parquet: missing; it is written by `cfmem plan` (plan this run again with this version)"
            ),
            "{err}"
        );
        std::fs::create_dir(run.analysis_dir()).unwrap();
        let found = find_duplicates(&["a", "b"], &Settings::default().params().unwrap());
        schema::write(&run.duplicates(), &table(&found, &["a".into(), "b".into()]), None).unwrap();
        assert_eq!(read(&run, 2).unwrap().doc_id, ["a", "b"]);
        let err = read(&run, 3).unwrap_err().to_string();
        assert!(
            err.ends_with("duplicates.parquet: does not have one row per document of corpus.parquet (3, in order)"),
            "{err}"
        );
    }
}
