//! Near-duplicate and repeated-substring detection: for each document of a corpus, how
//! many copies of it the corpus holds, exactly or nearly, and how much of its text also
//! appears elsewhere. These scores let the analysis tell memorization from duplication.
//!
//! This module owns the per-document duplicate scores (the rows of
//! [`subsets::schema::DuplicateTable`]) and the near-duplicate clusters that can serve as
//! sampling units.
//!
//! # Scores
//!
//! Texts are first [normalized](normalize): lowercased (Unicode-aware) with runs of
//! whitespace collapsed to one space and both ends trimmed.
//!
//! - `exact_dup_count`: how many *other* documents have the same normalized text (equal
//!   SHA-256). Empty documents count as exact duplicates of each other.
//! - `near_dup_count`: how many other documents have Jaccard similarity at least the
//!   threshold t (default 0.8) with this one, on sets of shingles of the normalized text.
//!   The default shingles are word 5-grams with t = 0.8, the NearDup setup of Lee et al.
//!   2021 ("Deduplicating Training Data Makes Language Models Better", as in their
//!   deduplicate-text-datasets MinHash): in a ~500-byte document (~80 words) one edited
//!   word changes at most 5 of ~76 shingles, J ≈ 0.88, so light edits stay above 0.8,
//!   while unrelated texts share almost no 5-grams. A text with fewer than n words (or
//!   chars) is one shingle, itself; an empty text has no shingles, J = 0 with
//!   everything, and no near-duplicates.
//! - `max_jaccard`: the largest exact Jaccard similarity with any other document that
//!   LSH made a candidate, 0 when there is none. At or above t it is the true maximum
//!   (up to LSH recall); below t it is only a lower bound, since documents that were not
//!   candidates are never compared.
//! - `cluster`, `cluster_size`: connected components of the near-duplicate graph (edges:
//!   verified pairs with J >= t). Ids are dense, 0..C, numbered in order of each
//!   component's smallest document index; a document without near-duplicates is its own
//!   cluster of size 1.
//! - `repeat_fraction`: the fraction of the document's bytes covered by a substring of
//!   at least `min_repeat_bytes` bytes (default 50) that also occurs in another document:
//!   the ExactSubstr measure of Lee et al. 2021 (who used 50 tokens), on the raw texts,
//!   from a suffix array of the whole corpus. Repeats within one document alone do not
//!   count; empty documents score 0.
//!
//! # Finding near-duplicates
//!
//! Each shingle is hashed once to 64 bits; a document is the sorted set of its hashes.
//! MinHash signatures and LSH banding propose candidate pairs: the banding is chosen so
//! that a pair with J exactly t becomes a candidate with probability at least
//! `min_recall` (default 0.99; more similar pairs are caught more often). With the
//! default 128 values that is 21 bands of 6 rows, catching 99.8% of pairs at J = 0.8,
//! where a banding that balances false positives against misses, like 9 bands of 13
//! rows, catches about 40%. Every candidate is verified by exact Jaccard on the hash
//! sets, so reported pairs have precision 1 (up to 64-bit hash collisions between
//! distinct shingles). Results depend only on the texts and the parameters, not on the
//! number of threads.
//!
//! A band shared by k documents costs k² / 2 candidate pairs, so a corpus with thousands
//! of copies of one text spends quadratic time (and `pairs` quadratic space) on them.

mod minhash;
mod shingle;
mod substr;
pub mod synthetic;

use std::collections::HashMap;

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use subsets::schema::DuplicateTable;

pub use minhash::Banding;
use minhash::{Permutations, candidate_pairs};
pub use shingle::normalize;
use shingle::{jaccard, jaccard_at_least, shingle_hashes};
pub use substr::repeat_fractions;

/// What a shingle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shingling {
    /// n consecutive words.
    Words(usize),
    /// n consecutive characters (Unicode scalar values).
    Chars(usize),
}

impl Default for Shingling {
    fn default() -> Self {
        Shingling::Words(5)
    }
}

/// Parameters of [`find_duplicates`].
#[derive(Debug, Clone, PartialEq)]
pub struct DupParams {
    pub shingling: Shingling,
    /// Jaccard threshold t of a near-duplicate pair.
    pub threshold: f64,
    /// MinHash signature length available to LSH banding.
    pub num_perm: usize,
    /// Required probability that LSH proposes a pair with Jaccard exactly t.
    pub min_recall: f64,
    /// Shortest shared substring, in bytes, that counts toward `repeat_fraction`.
    pub min_repeat_bytes: usize,
    /// Seed of the MinHash hash functions.
    pub seed: u64,
}

impl Default for DupParams {
    fn default() -> Self {
        DupParams {
            shingling: Shingling::default(),
            threshold: 0.8,
            num_perm: 128,
            min_recall: 0.99,
            min_repeat_bytes: 50,
            seed: 0,
        }
    }
}

impl DupParams {
    /// The banding with the most rows per band, within `num_perm` values, that catches a
    /// pair at J = t with probability at least `min_recall`.
    pub fn banding(&self) -> Banding {
        Banding::choose(self.threshold, self.num_perm, self.min_recall)
    }

    /// Checks the parameters; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let n = match self.shingling {
            Shingling::Words(n) | Shingling::Chars(n) => n,
        };
        if n == 0 {
            return Err("shingling: the shingle length must be at least 1".into());
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!("threshold: must be in (0, 1], got {}", self.threshold));
        }
        if self.num_perm == 0 {
            return Err("num_perm: must be at least 1".into());
        }
        if !(self.min_recall > 0.0 && self.min_recall <= 1.0) {
            return Err(format!("min_recall: must be in (0, 1], got {}", self.min_recall));
        }
        if self.min_repeat_bytes == 0 {
            return Err("min_repeat_bytes: must be at least 1".into());
        }
        let banding = self.banding();
        if banding.catch_probability(self.threshold) < self.min_recall {
            return Err(format!(
                "num_perm: {} signature values cannot catch pairs at J = {} with probability {} \
                 (at most {:.4}); raise num_perm or lower min_recall",
                self.num_perm,
                self.threshold,
                self.min_recall,
                banding.catch_probability(self.threshold)
            ));
        }
        Ok(())
    }
}

/// Duplicate scores of a corpus, one entry per document in input order (see the module
/// documentation for what each means).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Duplicates {
    pub exact_dup_count: Vec<u32>,
    pub near_dup_count: Vec<u32>,
    pub max_jaccard: Vec<f64>,
    pub cluster: Vec<u32>,
    pub cluster_size: Vec<u32>,
    pub repeat_fraction: Vec<f64>,
    /// Verified near-duplicate pairs (i, j, J), i < j, J >= t, sorted.
    pub pairs: Vec<(u32, u32, f64)>,
}

impl Duplicates {
    /// The scores as a table, with `doc_ids[i]` the id of document i.
    ///
    /// # Panics
    ///
    /// If `doc_ids` does not have one id per document.
    pub fn to_table(&self, doc_ids: &[String]) -> DuplicateTable {
        assert_eq!(doc_ids.len(), self.cluster.len(), "one doc id per document");
        DuplicateTable {
            doc: (0..doc_ids.len() as u32).collect(),
            doc_id: doc_ids.to_vec(),
            exact_dup_count: self.exact_dup_count.clone(),
            near_dup_count: self.near_dup_count.clone(),
            max_jaccard: self.max_jaccard.clone(),
            cluster: self.cluster.clone(),
            cluster_size: self.cluster_size.clone(),
            repeat_fraction: self.repeat_fraction.clone(),
        }
    }
}

/// Duplicate scores of `texts`. `params` should pass [`DupParams::validate`]: other
/// values do not panic, but give scores of no use.
///
/// # Panics
///
/// If the corpus has more than `u32::MAX` documents or, with one separator per document,
/// more than `i32::MAX` bytes (the suffix array's limit).
pub fn find_duplicates(texts: &[&str], params: &DupParams) -> Duplicates {
    // The suffix array is built on one thread, so it runs beside the parallel MinHash work.
    let (mut duplicates, repeat_fraction) =
        rayon::join(|| near_duplicates(texts, params), || repeat_fractions(texts, params.min_repeat_bytes));
    duplicates.repeat_fraction = repeat_fraction;
    duplicates
}

/// Every pair (i, j, J), i < j, with exact Jaccard J >= t, by comparing all pairs: the
/// reference that LSH recall is measured against.
///
/// # Panics
///
/// If the corpus has more than `u32::MAX` documents.
pub fn brute_force_pairs(texts: &[&str], params: &DupParams) -> Vec<(u32, u32, f64)> {
    assert_document_count(texts);
    let shingles = shingle_all(texts, params.shingling);
    (0..shingles.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let shingles = &shingles;
            (i + 1..shingles.len()).filter_map(move |j| {
                jaccard_at_least(&shingles[i], &shingles[j], params.threshold)
                    .map(|similarity| (i as u32, j as u32, similarity))
            })
        })
        .collect()
}

fn assert_document_count(texts: &[&str]) {
    assert!(u32::try_from(texts.len()).is_ok(), "more than u32::MAX documents");
}

fn shingle_all(texts: &[&str], shingling: Shingling) -> Vec<Vec<u64>> {
    texts.par_iter().map(|text| shingle_hashes(&normalize(text), shingling)).collect()
}

/// Every score of [`find_duplicates`] but `repeat_fraction`, which is left empty: the
/// MinHash part alone, without the suffix array.
///
/// # Panics
///
/// If the corpus has more than `u32::MAX` documents.
pub fn near_duplicates(texts: &[&str], params: &DupParams) -> Duplicates {
    assert_document_count(texts);
    let n = texts.len();
    let banding = params.banding();
    let permutations = Permutations::new(banding.signature_len(), params.seed);
    let (digests, shingles): (Vec<[u8; 32]>, Vec<Vec<u64>>) = texts
        .par_iter()
        .map(|text| {
            let normalized = normalize(text);
            let digest: [u8; 32] = Sha256::digest(normalized.as_bytes()).into();
            (digest, shingle_hashes(&normalized, params.shingling))
        })
        .unzip();

    let docs: Vec<u32> = (0..n as u32).filter(|&i| !shingles[i as usize].is_empty()).collect();
    let signatures: Vec<Vec<u32>> = docs.par_iter().map(|&i| permutations.signature(&shingles[i as usize])).collect();
    let verified: Vec<(u32, u32, f64)> = candidate_pairs(&docs, &signatures, &banding)
        .into_par_iter()
        .map(|(i, j)| (i, j, jaccard(&shingles[i as usize], &shingles[j as usize])))
        .collect();

    let mut max_jaccard = vec![0.0f64; n];
    let mut near_dup_count = vec![0u32; n];
    let mut clusters = UnionFind::new(n);
    for &(i, j, similarity) in &verified {
        for doc in [i as usize, j as usize] {
            max_jaccard[doc] = max_jaccard[doc].max(similarity);
        }
        if similarity >= params.threshold {
            near_dup_count[i as usize] += 1;
            near_dup_count[j as usize] += 1;
            clusters.union(i as usize, j as usize);
        }
    }
    let (cluster, cluster_size) = clusters.dense_ids();
    Duplicates {
        exact_dup_count: exact_dup_counts(&digests),
        near_dup_count,
        max_jaccard,
        cluster,
        cluster_size,
        repeat_fraction: Vec::new(),
        pairs: verified.into_iter().filter(|&(_, _, similarity)| similarity >= params.threshold).collect(),
    }
}

fn exact_dup_counts(digests: &[[u8; 32]]) -> Vec<u32> {
    let mut counts: HashMap<&[u8; 32], u32> = HashMap::with_capacity(digests.len());
    for digest in digests {
        *counts.entry(digest).or_default() += 1;
    }
    digests.iter().map(|digest| counts[digest] - 1).collect()
}

/// Disjoint sets of 0..n with path halving and union by size.
struct UnionFind {
    parent: Vec<usize>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind { parent: (0..n).collect(), size: vec![1; n] }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }

    /// Each element's set id, dense and numbered in order of the sets' smallest elements,
    /// and its set's size.
    fn dense_ids(mut self) -> (Vec<u32>, Vec<u32>) {
        let n = self.parent.len();
        let mut id_of_root = vec![u32::MAX; n];
        let mut next = 0;
        let (mut ids, mut sizes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for x in 0..n {
            let root = self.find(x);
            if id_of_root[root] == u32::MAX {
                id_of_root[root] = next;
                next += 1;
            }
            ids.push(id_of_root[root]);
            sizes.push(self.size[root]);
        }
        (ids, sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::{Spec, generate};
    use super::*;

    fn words_params(n: usize) -> DupParams {
        DupParams { shingling: Shingling::Words(n), ..DupParams::default() }
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert_eq!(DupParams::default().validate(), Ok(()));
        let bad = |params: DupParams, field: &str| {
            let message = params.validate().expect_err(field);
            assert!(message.starts_with(field), "{message}");
        };
        bad(DupParams { threshold: 0.0, ..DupParams::default() }, "threshold");
        bad(DupParams { threshold: 1.5, ..DupParams::default() }, "threshold");
        bad(DupParams { threshold: f64::NAN, ..DupParams::default() }, "threshold");
        bad(DupParams { num_perm: 0, ..DupParams::default() }, "num_perm");
        bad(DupParams { num_perm: 4, threshold: 0.2, ..DupParams::default() }, "num_perm");
        bad(DupParams { min_recall: 0.0, ..DupParams::default() }, "min_recall");
        bad(DupParams { min_repeat_bytes: 0, ..DupParams::default() }, "min_repeat_bytes");
        bad(DupParams { shingling: Shingling::Chars(0), ..DupParams::default() }, "shingling");
    }

    #[test]
    fn exact_duplicates_and_clusters_on_a_hand_made_corpus() {
        let texts = [
            "the quick brown fox jumps over the lazy dog",   // 0: cluster with 2 and 4
            "a completely different sentence about cats",    // 1: alone
            "The  QUICK brown fox\njumps over the lazy dog", // 2: exact copy of 0
            "",                                              // 3: empty
            "the quick brown fox jumps over the lazy dog",   // 4: exact copy of 0
            "a b c d e f g h i j",                           // 5: near 6
            "a b c d e f g h i j k",                         // 6: 6 of 7 shingles shared
            "   ",                                           // 7: empty too
        ];
        let params = DupParams { min_repeat_bytes: 10, ..DupParams::default() };
        let dups = find_duplicates(&texts, &params);
        assert_eq!(dups.exact_dup_count, vec![2, 0, 2, 1, 2, 0, 0, 1]);
        assert_eq!(dups.near_dup_count, vec![2, 0, 2, 0, 2, 1, 1, 0]);
        assert_eq!(dups.cluster, vec![0, 1, 0, 2, 0, 3, 3, 4]);
        assert_eq!(dups.cluster_size, vec![3, 1, 3, 1, 3, 2, 2, 1]);
        assert_eq!(dups.max_jaccard[0], 1.0);
        assert_eq!(dups.max_jaccard[5], 6.0 / 7.0);
        assert_eq!(dups.max_jaccard[3], 0.0);
        assert_eq!(dups.pairs, vec![(0, 2, 1.0), (0, 4, 1.0), (2, 4, 1.0), (5, 6, 6.0 / 7.0)]);
        assert_eq!(dups.repeat_fraction[0], 1.0);
        assert_eq!(dups.repeat_fraction[1], 0.0);
        assert_eq!(dups.repeat_fraction[3], 0.0);

        let table = dups.to_table(&(0..8).map(|i| format!("d{i}")).collect::<Vec<_>>());
        assert_eq!(table.doc, (0..8).collect::<Vec<u32>>());
        assert_eq!(table.doc_id[7], "d7");
        assert_eq!(table.cluster, dups.cluster);
    }

    #[test]
    fn short_and_empty_texts() {
        // Fewer words than the shingle length: the whole text is one shingle, so only an
        // identical normalized text is a near-duplicate.
        let texts = ["two words", "Two  Words", "two words more", "", ""];
        let dups = find_duplicates(&texts, &words_params(5));
        assert_eq!(dups.near_dup_count, vec![1, 1, 0, 0, 0]);
        assert_eq!(dups.pairs, vec![(0, 1, 1.0)]);
        assert_eq!(dups.cluster, vec![0, 0, 1, 2, 3]);
        assert_eq!(dups.max_jaccard[3], 0.0);
        assert_eq!(brute_force_pairs(&texts, &words_params(5)), vec![(0, 1, 1.0)]);
    }

    #[test]
    fn lsh_finds_exactly_the_brute_force_pairs() {
        let corpus = generate(&Spec::with_docs(2000, 11));
        let texts = corpus.texts();
        let params = DupParams { seed: 5, ..DupParams::default() };
        let expected = brute_force_pairs(&texts, &params);
        assert!(expected.len() > 200, "the corpus has planted pairs: {}", expected.len());
        assert_eq!(find_duplicates(&texts, &params).pairs, expected);
    }

    #[test]
    fn finds_exactly_the_planted_structure() {
        let corpus = generate(&Spec::with_docs(2000, 12));
        let texts = corpus.texts();
        let dups = find_duplicates(&texts, &DupParams::default());

        let mut planted: Vec<&Vec<u32>> = corpus.near_groups.iter().chain(&corpus.exact_groups).collect();
        planted.sort();
        let clusters = dups.cluster.iter().max().map_or(0, |&c| c as usize + 1);
        let mut found: Vec<Vec<u32>> = vec![Vec::new(); clusters];
        for (doc, &cluster) in dups.cluster.iter().enumerate() {
            found[cluster as usize].push(doc as u32);
        }
        let (groups, singletons): (Vec<Vec<u32>>, Vec<Vec<u32>>) = found.into_iter().partition(|c| c.len() > 1);
        assert_eq!(groups.iter().collect::<Vec<_>>(), planted);
        for singleton in &singletons {
            let doc = singleton[0] as usize;
            assert_eq!((dups.near_dup_count[doc], dups.exact_dup_count[doc], dups.cluster_size[doc]), (0, 0, 1));
        }
        for group in &corpus.exact_groups {
            for &doc in group {
                assert_eq!(dups.exact_dup_count[doc as usize] as usize, group.len() - 1);
                assert_eq!(dups.near_dup_count[doc as usize] as usize, group.len() - 1);
            }
        }
        for group in &corpus.near_groups {
            for &doc in group {
                assert_eq!(dups.exact_dup_count[doc as usize], 0);
                assert!(dups.max_jaccard[doc as usize] >= 0.8);
                assert!(dups.repeat_fraction[doc as usize] > 0.9);
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let corpus = generate(&Spec::with_docs(500, 13));
        let texts = corpus.texts();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
            pool.install(|| find_duplicates(&texts, &DupParams::default()))
        };
        assert_eq!(run(1), run(3));
    }
}
