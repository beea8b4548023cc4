//! The copy sweep's canaries: documents of random identifiers, which nothing but
//! memorization predicts, generated from the run seed or chosen among the corpus's own
//! (`design.canary_ids`), each planted with one of `design.copies` copy counts.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt};

use crate::config::DesignConfig;
use crate::corpus::Document;
use crate::{Error, Result, seeds};

/// Source of generated canaries in `corpus.parquet`.
pub const CANARY_SOURCE: &str = "canary";

/// A document of random 8-digit hex identifiers, about `bytes` long.
pub fn random_ids(rng: &mut impl Rng, bytes: usize) -> String {
    let ids: Vec<String> = (0..bytes.div_ceil(9).max(1)).map(|_| format!("{:08x}", rng.random::<u32>())).collect();
    format!("ids: {}", ids.join(" "))
}

/// Every document's copy count and whether it is a canary of the copy sweep.
pub struct Planted {
    pub copies: Vec<u16>,
    pub canary: Vec<bool>,
}

/// Appends generated canaries: canaries get the planted copy counts, spread evenly over
/// them in a seeded order; everything else gets 1.
pub fn plant(documents: &mut Vec<Document>, design: &DesignConfig, seed: u64) -> Result<Planted> {
    if design.copies.is_empty() {
        return Ok(Planted { copies: vec![1; documents.len()], canary: vec![false; documents.len()] });
    }
    let mut canaries = Vec::new();
    for id in &design.canary_ids {
        let index = documents
            .iter()
            .position(|d| &d.id == id)
            .ok_or_else(|| Error::setting("design.canary_ids", format!("no document has id {id:?}")))?;
        canaries.push(index);
    }
    let mut rng = seeds::rng(seed, "canaries", 0);
    for i in 0..design.canaries {
        let id = format!("canary-{i:04}");
        if documents.iter().any(|d| d.id == id) {
            return Err(Error::Invalid(format!(
                "the corpus already has a document with id {id:?}, the id of a generated canary"
            )));
        }
        canaries.push(documents.len());
        documents.push(Document { id, text: random_ids(&mut rng, 100), source: Some(CANARY_SOURCE.to_string()) });
    }
    canaries.shuffle(&mut rng);
    let mut copies = vec![1; documents.len()];
    let mut canary = vec![false; documents.len()];
    for (i, &doc) in canaries.iter().enumerate() {
        copies[doc] = design.copies[i % design.copies.len()];
        canary[doc] = true;
    }
    Ok(Planted { copies, canary })
}
