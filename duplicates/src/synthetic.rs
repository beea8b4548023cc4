//! Seeded corpora of random-word documents with planted duplicate structure, and the
//! planted truth, for tests and benchmarks of near-duplicate detection.
//!
//! A near-duplicate group is a base document and copies of it with one word replaced
//! each: with 5-word shingles a substitution in a ~70-word document changes at most 5 of
//! ~67 shingles, so a copy has Jaccard ≈ 0.86 with its base (two copies may fall below
//! 0.8 with each other, but the group stays one connected cluster). An exact-duplicate
//! group is a document and copies differing only in letter case and whitespace. Web-shaped
//! corpora add a boilerplate group (one text copied verbatim many times, like a footer)
//! and a templated family (one text with the word at one fixed position filled by a
//! different token in each member, like generated pages), whose members are all
//! near-duplicates of each other. Every other document is unique, and the order of all
//! documents is shuffled.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub docs: usize,
    pub near_groups: usize,
    /// Documents per near-duplicate group, the base included (at least 2).
    pub near_group_size: usize,
    pub exact_groups: usize,
    /// Documents per exact-duplicate group (at least 2).
    pub exact_group_size: usize,
    /// Verbatim copies of one boilerplate text (0: none; else at least 2), listed last in
    /// [`Corpus::exact_groups`].
    pub boilerplate_copies: usize,
    /// Members of one templated family (0: none; else at least 2), listed last in
    /// [`Corpus::near_groups`].
    pub template_family: usize,
    /// Distinct random words documents draw from.
    pub vocabulary: usize,
    /// Each document's length: words are added until it has at least this many bytes.
    pub doc_chars: usize,
    pub seed: u64,
}

impl Spec {
    /// `docs` documents of ~500 bytes from 3,000 words, 10% of them in near-duplicate
    /// groups of 4 and 3% in exact-duplicate groups of 3.
    pub fn with_docs(docs: usize, seed: u64) -> Spec {
        Spec {
            docs,
            near_groups: docs / 40,
            near_group_size: 4,
            exact_groups: docs / 100,
            exact_group_size: 3,
            boilerplate_copies: 0,
            template_family: 0,
            vocabulary: 3000,
            doc_chars: 500,
            seed,
        }
    }
}

/// A generated corpus and its planted structure. Groups list document indices in
/// increasing order and are ordered by their first document, except that the templated
/// family comes last in `near_groups` and the boilerplate group last in `exact_groups`.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub texts: Vec<String>,
    pub near_groups: Vec<Vec<u32>>,
    pub exact_groups: Vec<Vec<u32>>,
}

impl Corpus {
    pub fn texts(&self) -> Vec<&str> {
        self.texts.iter().map(String::as_str).collect()
    }
}

#[derive(Clone, Copy)]
enum Planted {
    Near(usize),
    Exact(usize),
    Boilerplate,
    Template,
    Unique,
}

/// Generates the corpus `spec` describes; the same spec gives the same corpus.
///
/// # Panics
///
/// If the planted groups need more than `spec.docs` documents, a group size is below 2,
/// or the vocabulary is empty.
pub fn generate(spec: &Spec) -> Corpus {
    let planted = spec.near_groups * spec.near_group_size
        + spec.exact_groups * spec.exact_group_size
        + spec.boilerplate_copies
        + spec.template_family;
    assert!(planted <= spec.docs, "{planted} planted documents do not fit in {}", spec.docs);
    assert!(spec.near_group_size >= 2 && spec.exact_group_size >= 2, "groups need at least 2 documents");
    assert!(spec.boilerplate_copies != 1 && spec.template_family != 1, "groups need at least 2 documents");
    assert!(spec.vocabulary >= 2, "the vocabulary needs at least 2 words");
    assert!(spec.template_family <= spec.vocabulary * spec.vocabulary, "too few distinct template tokens");

    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let vocabulary = vocabulary(&mut rng, spec.vocabulary);
    let mut docs: Vec<(String, Planted)> = Vec::with_capacity(spec.docs);
    for group in 0..spec.near_groups {
        let base = document(&mut rng, &vocabulary, spec.doc_chars);
        for _ in 1..spec.near_group_size {
            docs.push((substitute_one_word(&mut rng, &vocabulary, &base), Planted::Near(group)));
        }
        docs.push((base.join(" "), Planted::Near(group)));
    }
    for group in 0..spec.exact_groups {
        let base = document(&mut rng, &vocabulary, spec.doc_chars);
        for _ in 1..spec.exact_group_size {
            docs.push((restyle(&mut rng, &base), Planted::Exact(group)));
        }
        docs.push((base.join(" "), Planted::Exact(group)));
    }
    if spec.boilerplate_copies > 0 {
        let footer = document(&mut rng, &vocabulary, spec.doc_chars).join(" ");
        docs.extend(std::iter::repeat_n((footer, Planted::Boilerplate), spec.boilerplate_copies));
    }
    if spec.template_family > 0 {
        let template = document(&mut rng, &vocabulary, spec.doc_chars);
        let slot = template.len() / 2;
        for member in 0..spec.template_family {
            // Token `member` in base V: two vocabulary words run together, distinct for
            // every member and never a vocabulary word itself.
            let token = format!(
                "{}{}",
                vocabulary[member % spec.vocabulary],
                vocabulary[member / spec.vocabulary % spec.vocabulary]
            );
            let mut words = template.clone();
            words[slot] = &token;
            docs.push((words.join(" "), Planted::Template));
        }
    }
    while docs.len() < spec.docs {
        docs.push((document(&mut rng, &vocabulary, spec.doc_chars).join(" "), Planted::Unique));
    }
    docs.shuffle(&mut rng);

    let mut near_groups = vec![Vec::new(); spec.near_groups];
    let mut exact_groups = vec![Vec::new(); spec.exact_groups];
    let (mut boilerplate, mut family) = (Vec::new(), Vec::new());
    for (index, (_, planted)) in docs.iter().enumerate() {
        match *planted {
            Planted::Near(group) => near_groups[group].push(index as u32),
            Planted::Exact(group) => exact_groups[group].push(index as u32),
            Planted::Boilerplate => boilerplate.push(index as u32),
            Planted::Template => family.push(index as u32),
            Planted::Unique => {}
        }
    }
    near_groups.sort();
    exact_groups.sort();
    near_groups.extend((!family.is_empty()).then_some(family));
    exact_groups.extend((!boilerplate.is_empty()).then_some(boilerplate));
    Corpus { texts: docs.into_iter().map(|(text, _)| text).collect(), near_groups, exact_groups }
}

/// `size` distinct lowercase words of 3 to 9 letters.
pub fn vocabulary(rng: &mut ChaCha8Rng, size: usize) -> Vec<String> {
    let mut seen = HashSet::with_capacity(size);
    let mut words = Vec::with_capacity(size);
    while words.len() < size {
        let len = rng.random_range(3..=9);
        let word: String = (0..len).map(|_| char::from(rng.random_range(b'a'..=b'z'))).collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Random words whose text, joined by spaces, has at least `chars` bytes.
fn document<'a>(rng: &mut ChaCha8Rng, vocabulary: &'a [String], chars: usize) -> Vec<&'a str> {
    let mut words = Vec::new();
    let mut len = 0;
    while len < chars {
        let word = vocabulary[rng.random_range(0..vocabulary.len())].as_str();
        len += word.len() + usize::from(!words.is_empty());
        words.push(word);
    }
    words
}

/// `base` with one word, at a random position, replaced by a different word.
fn substitute_one_word(rng: &mut ChaCha8Rng, vocabulary: &[String], base: &[&str]) -> String {
    let mut words = base.to_vec();
    let position = rng.random_range(0..words.len());
    loop {
        let replacement = vocabulary[rng.random_range(0..vocabulary.len())].as_str();
        if replacement != words[position] {
            words[position] = replacement;
            return words.join(" ");
        }
    }
}

/// `base` with some words uppercased and some spaces replaced by other whitespace: a
/// different text with the same normalized form.
fn restyle(rng: &mut ChaCha8Rng, base: &[&str]) -> String {
    let mut text = String::new();
    for (i, word) in base.iter().enumerate() {
        if i > 0 {
            text.push_str(["  ", "\n", "\t ", " "][rng.random_range(0..4)]);
        }
        if rng.random_bool(0.2) {
            text.push_str(&word.to_uppercase());
        } else {
            text.push_str(word);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize;

    #[test]
    fn generation_is_deterministic_and_planted_as_specified() {
        let spec = Spec::with_docs(400, 3);
        let corpus = generate(&spec);
        assert_eq!(corpus.texts, generate(&spec).texts);
        assert_ne!(corpus.texts, generate(&Spec { seed: 4, ..spec.clone() }).texts);
        assert_eq!(corpus.texts.len(), 400);
        assert_eq!(corpus.near_groups.len(), 10);
        assert!(corpus.near_groups.iter().all(|g| g.len() == 4));
        assert_eq!(corpus.exact_groups.len(), 4);
        for group in &corpus.exact_groups {
            let texts: Vec<&String> = group.iter().map(|&i| &corpus.texts[i as usize]).collect();
            assert!(texts.iter().all(|t| normalize(t) == normalize(texts[0])));
            assert!(texts.iter().any(|t| *t != texts[0]), "copies differ before normalization");
        }
        for group in &corpus.near_groups {
            let words: Vec<Vec<&str>> = group.iter().map(|&i| corpus.texts[i as usize].split(' ').collect()).collect();
            let differing = |a: &[&str], b: &[&str]| a.iter().zip(b).filter(|(x, y)| x != y).count();
            let is_base = |base: &Vec<&str>| words.iter().all(|w| w == base || differing(w, base) == 1);
            assert_eq!(words.iter().filter(|w| is_base(w)).count(), 1, "one base, one edit per copy");
        }
    }
}
