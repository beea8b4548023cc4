//! The sampling units of each level of a run: what a document is IN or OUT of a model's
//! training set together with, at the granularity of the level (`units.parquet`).
//!
//! A level's *unit* is what the level says belongs together: the document itself, its
//! near-duplicate cluster, its passage group (documents sharing a substring of at least
//! `min_repeat` bytes, joined transitively) or its value of a group field. A unit of more
//! documents than the size limit (`design.max_unit_fraction` of the corpus) is not sampled
//! as one, since removing a large part of the corpus measures generalization, not
//! memorization: its documents fall back to the next finer level ([`Unit::finer`]), split
//! by their sampled units of that level within the large unit, and are not scored at this
//! level. Intersecting keeps every level a partition of the documents even where a finer
//! unit is not nested in the coarser one.
//!
//! How clusters and passages are found is the `duplicates` crate's business; this module
//! only turns them into units.

use std::collections::{BTreeMap, HashMap};

use crate::config::Unit;
use crate::schema::{Table, UnitTable};
use crate::{Error, Result};

/// What the levels are built from, one entry per document.
pub struct Groupings<'a> {
    /// Near-duplicate cluster ids.
    pub cluster: &'a [u32],
    /// Passage groups, when a level needs them.
    pub passage: Option<Passages<'a>>,
    /// Group fields by name (`source` among them when a level names it).
    pub fields: &'a BTreeMap<String, Vec<Option<String>>>,
    /// Topic ids by K, for the `topic:K` levels.
    pub topics: &'a BTreeMap<u32, Vec<u32>>,
}

/// Each document's passage group and longest shared byte range.
#[derive(Debug, Clone, Copy)]
pub struct Passages<'a> {
    pub group: &'a [u32],
    pub shared: &'a [(u32, u32)],
}

/// One level's units of every document.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelUnits {
    pub level: Unit,
    /// The level's unit, dense ids in order of first document.
    pub unit: Vec<u32>,
    pub unit_size: Vec<u32>,
    /// What the document was sampled by: `unit`, or within a unit over the limit, its
    /// sampled unit of the next finer level (dense ids of their own).
    pub sampled: Vec<u32>,
    /// The document's unit is over the limit.
    pub fallback: Vec<bool>,
}

impl LevelUnits {
    /// Units sampled as one, counted once each, and documents that fell back.
    pub fn oversized(&self) -> Oversized {
        let mut units: HashMap<u32, (u32, usize)> = HashMap::new();
        for doc in (0..self.unit.len()).filter(|&d| self.fallback[d]) {
            units.entry(self.unit[doc]).or_insert((self.unit_size[doc], doc));
        }
        let largest = units.values().copied().max_by_key(|&(size, doc)| (size, std::cmp::Reverse(doc)));
        Oversized { units: units.len(), documents: self.fallback.iter().filter(|&&f| f).count(), largest }
    }
}

/// Units of a level over the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    pub units: usize,
    pub documents: usize,
    /// The largest one's size and first document.
    pub largest: Option<(u32, usize)>,
}

/// The units of `level`, with units of more than `max_size` documents falling back to the
/// next finer level.
pub fn level_units(level: &Unit, groupings: &Groupings<'_>, max_size: u32) -> Result<LevelUnits> {
    let unit = natural_units(level, groupings)?;
    let sizes = sizes_of(&unit);
    let unit_size: Vec<u32> = unit.iter().map(|&u| sizes[u as usize]).collect();
    let fallback: Vec<bool> = unit_size.iter().map(|&size| size > max_size).collect();
    let sampled = match level.finer() {
        Some(finer) if fallback.iter().any(|&f| f) => {
            let finer = level_units(&finer, groupings, max_size)?;
            let keys: Vec<(u32, u32, bool)> = (0..unit.len())
                .map(|d| if fallback[d] { (unit[d], finer.sampled[d], true) } else { (unit[d], 0, false) })
                .collect();
            dense(&keys)
        }
        _ => unit.clone(),
    };
    Ok(LevelUnits { level: level.clone(), unit, unit_size, sampled, fallback })
}

/// Each document's unit of `level`, before any size limit.
fn natural_units(level: &Unit, groupings: &Groupings<'_>) -> Result<Vec<u32>> {
    let documents = groupings.cluster.len();
    Ok(match level {
        Unit::Document => (0..documents as u32).collect(),
        Unit::Cluster => dense(groupings.cluster),
        Unit::Passage => {
            let passages =
                groupings.passage.ok_or_else(|| Error::Invalid("passage groups were not computed".into()))?;
            dense(passages.group)
        }
        Unit::Topic(k) => {
            let topics =
                groupings.topics.get(k).ok_or_else(|| Error::Invalid(format!("the {k} topics were not computed")))?;
            dense(topics)
        }
        Unit::Field(name) => {
            let values = groupings
                .fields
                .get(name)
                .ok_or_else(|| Error::Invalid(format!("field `{name}` was not read from the corpus")))?;
            // A document without a value is its own unit.
            let keys: Vec<(Option<&str>, u32)> = values
                .iter()
                .enumerate()
                .map(|(doc, value)| match value {
                    Some(value) => (Some(value.as_str()), 0),
                    None => (None, doc as u32),
                })
                .collect();
            dense(&keys)
        }
    })
}

/// Renumbers labels densely in order of first appearance.
pub fn dense<T: std::hash::Hash + Eq + Clone>(labels: &[T]) -> Vec<u32> {
    let mut ids = HashMap::new();
    labels
        .iter()
        .map(|label| {
            let next = ids.len() as u32;
            *ids.entry(label.clone()).or_insert(next)
        })
        .collect()
}

/// Documents per unit id.
pub fn sizes_of(unit: &[u32]) -> Vec<u32> {
    let mut sizes = vec![0; unit.iter().max().map_or(0, |&u| u as usize + 1)];
    unit.iter().for_each(|&u| sizes[u as usize] += 1);
    sizes
}

/// `units.parquet` of the levels, level by level.
pub fn table(levels: &[LevelUnits], groupings: &Groupings<'_>) -> UnitTable {
    let mut table = UnitTable::default();
    for level in levels {
        for doc in 0..level.unit.len() {
            let shared = match (&level.level, groupings.passage) {
                (Unit::Passage, Some(passages)) => passages.shared[doc],
                _ => (0, 0),
            };
            table.level.push(level.level.to_string());
            table.doc.push(doc as u32);
            table.unit.push(level.unit[doc]);
            table.unit_size.push(level.unit_size[doc]);
            table.sampled_unit.push(level.sampled[doc]);
            table.fallback.push(level.fallback[doc]);
            table.shared_start.push(shared.0);
            table.shared_end.push(shared.1);
        }
    }
    table
}

/// The stored units of `level` from `units.parquet`'s `table`, checked to cover `documents`.
pub fn of_level(table: &UnitTable, level: &Unit, documents: usize) -> Result<LevelUnits> {
    let name = level.to_string();
    let rows: Vec<usize> = (0..table.len()).filter(|&i| table.level[i] == name).collect();
    if rows.len() != documents || rows.iter().enumerate().any(|(d, &i)| table.doc[i] as usize != d) {
        return Err(Error::Invalid(format!(
            "units.parquet does not have one row per document ({documents}, in order) for level {name}"
        )));
    }
    Ok(LevelUnits {
        level: level.clone(),
        unit: rows.iter().map(|&i| table.unit[i]).collect(),
        unit_size: rows.iter().map(|&i| table.unit_size[i]).collect(),
        sampled: rows.iter().map(|&i| table.sampled_unit[i]).collect(),
        fallback: rows.iter().map(|&i| table.fallback[i]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groupings<'a>(
        cluster: &'a [u32],
        passage: &'a [u32],
        shared: &'a [(u32, u32)],
        fields: &'a BTreeMap<String, Vec<Option<String>>>,
    ) -> Groupings<'a> {
        static NO_TOPICS: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        Groupings { cluster, passage: Some(Passages { group: passage, shared }), fields, topics: &NO_TOPICS }
    }

    #[test]
    fn units_of_each_level_and_documents_without_a_field_value_alone() {
        let fields = BTreeMap::from([(
            "site".to_string(),
            vec![Some("a".to_string()), None, Some("a".to_string()), None, Some("b".to_string()), Some("b".into())],
        )]);
        let shared = [(0, 0); 6];
        let g = groupings(&[5, 5, 7, 8, 8, 9], &[3, 3, 3, 1, 1, 2], &shared, &fields);
        let of = |level: Unit| level_units(&level, &g, 6).unwrap();
        assert_eq!(of(Unit::Document).unit, [0, 1, 2, 3, 4, 5]);
        assert_eq!(of(Unit::Cluster).unit, [0, 0, 1, 2, 2, 3]);
        assert_eq!(of(Unit::Passage).unit, [0, 0, 0, 1, 1, 2]);
        let site = of(Unit::Field("site".into()));
        assert_eq!(site.unit, [0, 1, 0, 2, 3, 3]);
        assert_eq!(site.unit_size, [2, 1, 2, 1, 2, 2]);
        assert_eq!(site.sampled, site.unit);
        assert!(site.fallback.iter().all(|&f| !f));
    }

    #[test]
    fn a_unit_over_the_limit_falls_back_to_the_finer_level_within_it() {
        // Passage group 0 holds documents 0 to 4 (clusters {0, 1}, {2}, {3, 4}, and
        // cluster 9 reaches document 5 outside the group); the limit is 3 documents.
        let fields = BTreeMap::new();
        let shared = [(0, 0); 7];
        let g = groupings(&[1, 1, 2, 9, 9, 9, 4], &[0, 0, 0, 0, 0, 1, 2], &shared, &fields);
        let passage = level_units(&Unit::Passage, &g, 3).unwrap();
        assert_eq!(passage.unit_size, [5, 5, 5, 5, 5, 1, 1]);
        assert_eq!(passage.fallback, [true, true, true, true, true, false, false]);
        // Within the group, by cluster; cluster 9 is cut at the group's edge (document 5
        // keeps its own passage unit). The cluster of three is within the limit.
        assert_eq!(passage.sampled, [0, 0, 1, 2, 2, 3, 4]);
        let over = passage.oversized();
        assert_eq!(over, Oversized { units: 1, documents: 5, largest: Some((5, 0)) });
        // With a limit of one document, clusters fall back to documents too.
        let passage = level_units(&Unit::Passage, &g, 1).unwrap();
        assert_eq!(passage.sampled, [0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn the_table_round_trips_level_by_level() {
        let fields = BTreeMap::new();
        let shared = [(2, 9), (0, 7), (0, 0)];
        let g = groupings(&[0, 0, 1], &[0, 0, 1], &shared, &fields);
        let levels: Vec<LevelUnits> =
            [Unit::Document, Unit::Passage].iter().map(|l| level_units(l, &g, 3).unwrap()).collect();
        let table = table(&levels, &g);
        assert_eq!(table.level, ["document", "document", "document", "passage", "passage", "passage"]);
        assert_eq!((table.shared_start[3], table.shared_end[3]), (2, 9));
        assert_eq!(table.shared_end[0], 0);
        assert_eq!(of_level(&table, &Unit::Passage, 3).unwrap(), levels[1]);
        let err = of_level(&table, &Unit::Cluster, 3).unwrap_err().to_string();
        assert!(err.contains("for level cluster"), "{err}");
    }
}
