//! The built-in demo corpus, generated from a seed (nothing is downloaded), with planted
//! structure whose memorization the theory predicts, each kind named as its `source`:
//!
//! - `sentence`: ordinary sentences from a small grammar; generic, so low memorization.
//! - `random-id`: lists of random hex identifiers; nothing but memorization predicts them.
//! - `repetitive`: low-entropy text ("the the the …"); any model predicts it, near zero.
//! - `near-duplicate`: one sentence document in many copies, each with one word changed;
//!   each copy scores low on its own because its twins stay in training.
//! - `exact-duplicate`: a few documents each present several times under different ids.

use rand::{Rng, RngExt};

use crate::corpus::Document;
use crate::seeds;

const ADJECTIVES: &[&str] = &["small", "old", "green", "quiet", "busy", "bright", "cold", "large"];
const NOUNS: &[&str] = &["cat", "farmer", "river", "teacher", "market", "garden", "train", "child"];
const VERBS: &[&str] = &["sees", "finds", "follows", "visits", "paints", "leaves", "helps", "likes"];
const PLACES: &[&str] = &["bridge", "school", "station", "harbor", "forest", "village"];
const REPEATED: &[&str] = &["the ", "la ", "ab", "0", "ho ", "- "];

/// Counts of each kind of demo document.
#[derive(Debug, Clone)]
pub struct DemoSizes {
    pub sentences: usize,
    pub random_ids: usize,
    pub repetitive: usize,
    pub near_duplicates: usize,
    pub exact_groups: usize,
    pub exact_copies: usize,
}

impl Default for DemoSizes {
    fn default() -> Self {
        DemoSizes {
            sentences: 64,
            random_ids: 24,
            repetitive: 12,
            near_duplicates: 12,
            exact_groups: 4,
            exact_copies: 4,
        }
    }
}

fn pick<'a>(rng: &mut impl Rng, words: &[&'a str]) -> &'a str {
    words[rng.random_range(0..words.len())]
}

fn sentence(rng: &mut impl Rng) -> String {
    format!(
        "The {} {} {} the {} near the {}.",
        pick(rng, ADJECTIVES),
        pick(rng, NOUNS),
        pick(rng, VERBS),
        pick(rng, NOUNS),
        pick(rng, PLACES)
    )
}

fn sentences(rng: &mut impl Rng, count: usize) -> String {
    (0..count).map(|_| sentence(rng)).collect::<Vec<_>>().join(" ")
}

/// A document of random 8-digit hex identifiers, about `bytes` long.
pub fn random_ids(rng: &mut impl Rng, bytes: usize) -> String {
    let ids: Vec<String> = (0..bytes.div_ceil(9).max(1))
        .map(|_| format!("{:08x}", rng.random::<u32>()))
        .collect();
    format!("ids: {}", ids.join(" "))
}

/// The demo corpus for `seed`.
pub fn corpus(seed: u64, sizes: &DemoSizes) -> Vec<Document> {
    let mut rng = seeds::rng(seed, "demo-corpus", 0);
    let mut docs = Vec::new();
    let mut push = |kind: &str, index: usize, text: String| {
        docs.push(Document {
            id: format!("{kind}-{index:03}"),
            text,
            source: Some(kind.to_string()),
        })
    };
    for i in 0..sizes.sentences {
        push("sentence", i, sentences(&mut rng, 3));
    }
    for i in 0..sizes.random_ids {
        push("random-id", i, random_ids(&mut rng, 100));
    }
    for i in 0..sizes.repetitive {
        let unit = REPEATED[i % REPEATED.len()];
        push("repetitive", i, unit.repeat(110 / unit.len()).trim_end().to_string());
    }
    let base = sentences(&mut rng, 3);
    let words: Vec<&str> = base.split(' ').collect();
    for i in 0..sizes.near_duplicates {
        let mut changed = words.clone();
        let at = i % words.len();
        changed[at] = pick(&mut rng, NOUNS);
        push("near-duplicate", i, changed.join(" "));
    }
    for group in 0..sizes.exact_groups {
        let text = sentences(&mut rng, 3);
        for copy in 0..sizes.exact_copies {
            push("exact-duplicate", group * sizes.exact_copies + copy, text.clone());
        }
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_corpus_is_reproducible_with_unique_ids_and_planted_kinds() {
        let sizes = DemoSizes::default();
        let docs = corpus(1, &sizes);
        assert_eq!(docs, corpus(1, &sizes));
        assert_ne!(docs, corpus(2, &sizes));
        let mut ids: Vec<_> = docs.iter().map(|d| &d.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), docs.len());
        let of = |kind: &str| docs.iter().filter(|d| d.source.as_deref() == Some(kind)).collect::<Vec<_>>();
        assert_eq!(of("random-id").len(), sizes.random_ids);
        let exact = of("exact-duplicate");
        assert!(exact.chunks(sizes.exact_copies).all(|g| g.iter().all(|d| d.text == g[0].text)));
        let near = of("near-duplicate");
        let base: Vec<&str> = near[0].text.split(' ').collect();
        for doc in &near {
            let differing = doc.text.split(' ').zip(&base).filter(|(a, b)| a != *b).count();
            assert!(differing <= 2, "{}", doc.text);
        }
    }
}
