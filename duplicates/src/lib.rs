//! Near-duplicate and repeated-substring detection: for each document of a corpus, how
//! many copies of it the corpus holds, exactly or nearly, and how much of its text also
//! appears elsewhere. These scores let the analysis tell memorization from duplication.
//!
//! This crate is the duplicate engine: it owns the per-document duplicate scores
//! ([`Duplicates`], from [`find_duplicates`]), the near-duplicate clusters that can serve
//! as sampling units, and the settings that define them ([`Settings`], each default written
//! once, and the engine's [`DupParams`] built from them by [`Settings::params`]). It knows
//! texts, not runs: where a corpus comes from, how the scores are stored (`subsets` turns
//! them into a run's `analysis/duplicates.parquet`) and which flags set the settings are
//! its callers' business, and it depends on no other crate of the workspace.
//!
//! ```
//! use duplicates::{Settings, find_duplicates};
//!
//! let texts = ["one two three four five six", "One two  three four five six", "something else"];
//! let params = Settings::default().params().expect("the defaults are valid");
//! let found = find_duplicates(&texts, &params);
//! assert_eq!(found.exact_dup_count, [1, 1, 0]);
//! assert_eq!(found.cluster, [0, 0, 1]);
//! ```
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
//!   at least `min_repeat` bytes (default 50) that also occurs in another document:
//!   the ExactSubstr measure of Lee et al. 2021 (who used 50 tokens), on the raw texts,
//!   from suffix arrays over shards of the corpus (see [`repeat_fractions`]). Repeats
//!   within one document alone do not count; empty documents score 0.
//! - `passages` (only with [`DupParams::passages`]; see [`Passages`]): two documents are
//!   joined when they share a substring of at least `min_repeat` bytes, the repeats that
//!   count in `repeat_fraction`, and passage groups are the connected components of these
//!   joins, numbered like clusters, with their sizes. Copies of one text are joined when
//!   they have at least `min_repeat` bytes (their `repeat_fraction` is then 1), not when
//!   shorter; an empty document or one sharing nothing is its own group. Unlike a cluster,
//!   a group need not be similar documents: one footer joins every page that carries it,
//!   and a chain of shared quotes joins documents that share nothing with each other.
//!   Each document's `longest_shared` is its longest run of covered bytes, as a byte
//!   range on char boundaries. They come from the same pass over the suffix arrays as
//!   `repeat_fraction`, and depend neither on the shards nor on the threads.
//! - `near_dup_capped`: whether `near_dup_count` and `max_jaccard` are lower bounds,
//!   below.
//!
//! # Finding near-duplicates
//!
//! Exact duplicates collapse first: documents with the same normalized text (equal
//! SHA-256) are one *representative*, the first of them, with a multiplicity, and
//! everything after exact matching works on representatives, so k copies of a footer
//! cost O(k), not O(k²). A copy's `near_dup_count` still counts its k − 1 twins, which
//! are at Jaccard 1.
//!
//! Each shingle is hashed once to 64 bits; a representative is the sorted set of its
//! hashes. MinHash signatures and LSH banding propose candidates: the banding is chosen so
//! that a pair with J exactly t becomes a candidate with probability at least
//! `min_recall` (default 0.99; more similar pairs are caught more often). With the
//! default 128 values that is 21 bands of 6 rows, catching 99.8% of pairs at J = 0.8,
//! where a banding that balances false positives against misses, like 9 bands of 13
//! rows, catches about 40%. Every candidate is verified by exact Jaccard on the hash
//! sets, so reported pairs have precision 1 (up to 64-bit hash collisions between
//! distinct shingles). Results depend only on the texts and the parameters, not on the
//! number of threads.
//!
//! # Large near-duplicate families
//!
//! Each representative examines at most `max_candidates` distinct candidates (default
//! 1,000), taken band by band and, within a band, in document order. A templated family
//! of 10,000 pages, all near-duplicates of each other, thus costs 10,000 × 1,000
//! verifications instead of 50 million. Where a representative has more candidates than
//! that, its documents get `near_dup_capped = true` and then `near_dup_count` and
//! `max_jaccard` are lower bounds (the near-duplicates among the examined candidates)
//! and links of the cluster may be missing; every document of the family still links to
//! the family's first documents, so the family stays one cluster. Where the flag is
//! false, every score is exact (up to LSH recall).
//!
//! # Pairs
//!
//! [`Duplicates::rep_pairs`] lists verified near-duplicate pairs between representatives
//! and [`Duplicates::representative`] each document's representative: every document
//! pair is the product of two groups (or two members of one group, at J = 1), which
//! [`Duplicates::near_pairs`] expands, and [`Duplicates::pair_count`] counts without
//! expanding.
//!
//! # Topics
//!
//! [`topics`] groups documents into K topics by their content (TF-IDF over words and word
//! pairs, a randomized truncated SVD, spherical k-means), where near-duplicates and passage
//! groups join documents only by the text they share.
//!
//! # Memory
//!
//! The near-duplicate stage holds about 8 bytes per word of shingle hashes and 600 bytes
//! per document; the repeated-substring stage, which runs after it, holds a copy of the
//! distinct texts, 4 bytes of suffix array per byte and libsais's work space (see
//! [`repeat_fractions`]); passage groups add 4 bytes per distinct text to it, for the
//! union-find of the merge, and 16 bytes per document to the results.
//! [`memory_estimate`] gives their peak before anything is allocated.

mod minhash;
mod params;
mod shingle;
mod substr;
pub mod synthetic;
pub mod topics;

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

pub use minhash::Banding;
use minhash::{BandBuckets, Permutations};
pub use params::{DupParams, InvalidParams, Param, Settings, Shingling, ShinglingError};
pub use shingle::normalize;
use shingle::{jaccard, jaccard_at_least, shingle_hashes};
pub use substr::{Passages, repeat_fractions};

/// Duplicate scores of a corpus, one entry per document in input order (see the crate
/// documentation for what each means).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Duplicates {
    pub exact_dup_count: Vec<u32>,
    pub near_dup_count: Vec<u32>,
    pub max_jaccard: Vec<f64>,
    pub cluster: Vec<u32>,
    pub cluster_size: Vec<u32>,
    pub repeat_fraction: Vec<f64>,
    /// Whether the document's representative had more than `max_candidates` candidates, so
    /// that its `near_dup_count` and `max_jaccard` are lower bounds.
    pub near_dup_capped: Vec<bool>,
    /// The first document with the same normalized text; an empty document (which has no
    /// near-duplicates) is its own.
    pub representative: Vec<u32>,
    /// Verified near-duplicate pairs of representatives (i, j, J), i < j, J >= t, sorted.
    pub rep_pairs: Vec<(u32, u32, f64)>,
    /// Passage groups: Some exactly when [`DupParams::passages`] (and never from
    /// [`near_duplicates`]).
    pub passages: Option<Passages>,
}

impl std::fmt::Display for Duplicates {
    /// The counts `cfmem dups` prints: documents, near-duplicate pairs, documents in
    /// clusters of two or more, with exact duplicates, and with capped candidates.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_clusters = self.cluster_size.iter().filter(|&&s| s > 1).count();
        let exact = self.exact_dup_count.iter().filter(|&&c| c > 0).count();
        let capped = self.near_dup_capped.iter().filter(|&&c| c).count();
        write!(
            f,
            "{} documents: {} near-duplicate pairs, {in_clusters} documents in clusters of two or more, {exact} with \
             exact duplicates, {capped} with near_dup_capped",
            self.cluster.len(),
            self.pair_count()
        )
    }
}

impl Duplicates {
    /// Documents per representative (0 for documents that are not one).
    fn group_sizes(&self) -> Vec<u64> {
        let mut sizes = vec![0u64; self.representative.len()];
        for &rep in &self.representative {
            sizes[rep as usize] += 1;
        }
        sizes
    }

    /// How many document pairs are near-duplicates: the length of [`Self::near_pairs`],
    /// without listing them.
    pub fn pair_count(&self) -> u64 {
        let sizes = self.group_sizes();
        let within: u64 = sizes.iter().map(|&k| k * k.saturating_sub(1) / 2).sum();
        let across: u64 = self.rep_pairs.iter().map(|&(i, j, _)| sizes[i as usize] * sizes[j as usize]).sum();
        within + across
    }

    /// Every near-duplicate document pair (i, j, J), i < j, sorted: the members of each
    /// group of exact duplicates paired at J = 1, and the members of the groups of every
    /// pair in [`Self::rep_pairs`]. Quadratic in group sizes: see [`Self::pair_count`]
    /// first.
    pub fn near_pairs(&self) -> Vec<(u32, u32, f64)> {
        let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
        for (doc, &rep) in self.representative.iter().enumerate() {
            members.entry(rep).or_default().push(doc as u32);
        }
        let mut pairs = Vec::new();
        for group in members.values() {
            for (k, &i) in group.iter().enumerate() {
                pairs.extend(group[k + 1..].iter().map(|&j| (i, j, 1.0)));
            }
        }
        for &(a, b, similarity) in &self.rep_pairs {
            for &i in &members[&a] {
                pairs.extend(members[&b].iter().map(|&j| (i.min(j), i.max(j), similarity)));
            }
        }
        pairs.sort_unstable_by_key(|&(i, j, _)| (i, j));
        pairs
    }
}

/// Bytes [`find_duplicates`] allocates at its peak on `texts` with `params`, roughly:
/// the larger of its two stages (see the crate documentation), so that a caller can
/// refuse a corpus too large for the memory at hand before allocating.
pub fn memory_estimate(texts: &[&str], params: &DupParams) -> u64 {
    let bytes: u64 = texts.iter().map(|t| t.len() as u64 + 1).sum();
    let docs = texts.len() as u64;
    let shingles_per_byte = match params.settings.shingles {
        // Words average over 4 bytes with their space.
        Shingling::Words(_) => 2,
        Shingling::Chars(_) => 8,
    };
    let near = bytes * shingles_per_byte + docs * (400 + 8 * params.banding().bands as u64);
    // Distinct-text copy (1), suffix arrays (4), libsais's work space for its recursion
    // (up to 2); per document: the near-duplicate scores, hashes and indices. Checked
    // against the peak measured by the benchmark (`benches/dups.rs`).
    let substr = bytes * 7 + docs * 150;
    near.max(substr)
}

/// Duplicate scores of `texts`. `params` should pass [`DupParams::validate`]: other
/// values do not panic, but give scores of no use.
///
/// # Panics
///
/// If the corpus has more than `u32::MAX` documents or one document exceeds `i32::MAX`
/// bytes (the suffix array's limit).
pub fn find_duplicates(texts: &[&str], params: &DupParams) -> Duplicates {
    // One stage after the other, so that their peaks of memory do not add up; each uses
    // every thread.
    let mut duplicates = near_duplicates(texts, params);
    (duplicates.repeat_fraction, duplicates.passages) =
        substr::repeats(texts, params.settings.min_repeat as usize, params.shard_bytes, params.passages);
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
    let shingles = shingle_all(texts, params.settings.shingles);
    (0..shingles.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let shingles = &shingles;
            (i + 1..shingles.len()).filter_map(move |j| {
                jaccard_at_least(&shingles[i], &shingles[j], params.settings.threshold)
                    .map(|similarity| (i as u32, j as u32, similarity))
            })
        })
        .collect()
}

/// For each document of `sample`, every other document (j, J) with exact Jaccard
/// J >= t, by comparing it with all documents: the reference for recall on a corpus too
/// large for all pairs.
pub fn brute_force_near_duplicates_of(texts: &[&str], params: &DupParams, sample: &[u32]) -> Vec<Vec<(u32, f64)>> {
    assert_document_count(texts);
    let shingles = shingle_all(texts, params.settings.shingles);
    sample
        .par_iter()
        .map(|&i| {
            (0..shingles.len() as u32)
                .filter(|&j| j != i)
                .filter_map(|j| {
                    jaccard_at_least(&shingles[i as usize], &shingles[j as usize], params.settings.threshold)
                        .map(|similarity| (j, similarity))
                })
                .collect()
        })
        .collect()
}

fn assert_document_count(texts: &[&str]) {
    assert!(u32::try_from(texts.len()).is_ok(), "more than u32::MAX documents");
}

fn shingle_all(texts: &[&str], shingling: Shingling) -> Vec<Vec<u64>> {
    texts.par_iter().map(|text| shingle_hashes(&normalize(text), shingling)).collect()
}

/// What the examination of one representative's candidates found.
#[derive(Default)]
struct Examined {
    /// Documents (with multiplicity) of the verified near-duplicate representatives.
    near_docs: u32,
    max_jaccard: f64,
    capped: bool,
    /// Verified near-duplicate pairs (a, b, J), a < b, of representative indices.
    pairs: Vec<(u32, u32, f64)>,
}

/// Every score of [`find_duplicates`] but `repeat_fraction`, which is left empty, and
/// `passages`, left None: the MinHash part alone, without the suffix array.
///
/// # Panics
///
/// If the corpus has more than `u32::MAX` documents.
pub fn near_duplicates(texts: &[&str], params: &DupParams) -> Duplicates {
    assert_document_count(texts);
    let n = texts.len();
    let banding = params.banding();
    let permutations = Permutations::new(banding.signature_len(), params.seed);

    // Exact matching: representative r (an index into `first_doc`) stands for the
    // documents with its normalized text.
    let (digests, mut doc_shingles): (Vec<[u8; 32]>, Vec<Vec<u64>>) = texts
        .par_iter()
        .map(|text| {
            let normalized = normalize(text);
            let digest: [u8; 32] = Sha256::digest(normalized.as_bytes()).into();
            (digest, shingle_hashes(&normalized, params.settings.shingles))
        })
        .unzip();
    let mut rep_of_digest: HashMap<[u8; 32], u32> = HashMap::with_capacity(n);
    let (mut first_doc, mut multiplicity, mut rep_of_doc) = (Vec::new(), Vec::<u32>::new(), Vec::with_capacity(n));
    for (doc, digest) in digests.into_iter().enumerate() {
        let rep = *rep_of_digest.entry(digest).or_insert_with(|| {
            first_doc.push(doc as u32);
            multiplicity.push(0);
            first_doc.len() as u32 - 1
        });
        multiplicity[rep as usize] += 1;
        rep_of_doc.push(rep);
    }
    drop(rep_of_digest);
    let shingles: Vec<Vec<u64>> =
        first_doc.iter().map(|&doc| std::mem::take(&mut doc_shingles[doc as usize])).collect();
    drop(doc_shingles);

    // Candidates: representatives sharing an LSH band; the empty text has no signature.
    let band_keys: Vec<Vec<u64>> = shingles
        .par_iter()
        .map(|set| if set.is_empty() { Vec::new() } else { banding.keys(&permutations.signature(set)) })
        .collect();
    let buckets: Vec<BandBuckets> =
        (0..banding.bands).into_par_iter().map(|band| BandBuckets::new(&band_keys, band)).collect();

    let reps = shingles.len();
    let examined: Vec<Examined> = (0..reps as u32)
        .into_par_iter()
        .map(|r| {
            let mut found = Examined::default();
            let mut seen = HashSet::new();
            for (band, buckets) in buckets.iter().enumerate() {
                let Some(&key) = band_keys[r as usize].get(band) else { break };
                for &m in buckets.members(key) {
                    if m == r || seen.contains(&m) {
                        continue;
                    }
                    if seen.len() == params.settings.max_candidates as usize {
                        found.capped = true;
                        return found;
                    }
                    seen.insert(m);
                    let similarity = jaccard(&shingles[r as usize], &shingles[m as usize]);
                    found.max_jaccard = found.max_jaccard.max(similarity);
                    if similarity >= params.settings.threshold {
                        found.near_docs += multiplicity[m as usize];
                        found.pairs.push((r.min(m), r.max(m), similarity));
                    }
                }
            }
            found
        })
        .collect();

    let mut rep_pairs: Vec<(u32, u32, f64)> = examined.iter().flat_map(|e| e.pairs.iter().copied()).collect();
    rep_pairs.par_sort_unstable_by_key(|&(a, b, _)| (a, b));
    // A pair found from both of its ends is listed twice.
    rep_pairs.dedup_by_key(|&mut (a, b, _)| (a, b));
    let mut clusters = UnionFind::new(reps);
    for &(a, b, _) in &rep_pairs {
        clusters.union(a as usize, b as usize);
    }
    let (rep_cluster, rep_cluster_docs) = clusters.sets(&multiplicity);

    let mut duplicates = Duplicates::default();
    let mut cluster_id = vec![u32::MAX; reps];
    let mut clusters = 0;
    let mut new_cluster = || {
        clusters += 1;
        clusters - 1
    };
    for (doc, &rep) in rep_of_doc.iter().enumerate() {
        let r = rep as usize;
        let copies = multiplicity[r];
        duplicates.exact_dup_count.push(copies - 1);
        duplicates.near_dup_capped.push(examined[r].capped);
        if shingles[r].is_empty() {
            duplicates.near_dup_count.push(0);
            duplicates.max_jaccard.push(0.0);
            duplicates.representative.push(doc as u32);
            duplicates.cluster.push(new_cluster());
            duplicates.cluster_size.push(1);
            continue;
        }
        duplicates.near_dup_count.push(copies - 1 + examined[r].near_docs);
        duplicates.max_jaccard.push(if copies > 1 { 1.0 } else { examined[r].max_jaccard });
        duplicates.representative.push(first_doc[r]);
        let root = rep_cluster[r] as usize;
        if cluster_id[root] == u32::MAX {
            cluster_id[root] = new_cluster();
        }
        duplicates.cluster.push(cluster_id[root]);
        duplicates.cluster_size.push(rep_cluster_docs[root]);
    }
    duplicates.rep_pairs = rep_pairs
        .into_iter()
        .map(|(a, b, similarity)| (first_doc[a as usize], first_doc[b as usize], similarity))
        .collect();
    duplicates
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

    /// Each element's set, named by its root, and for each root the total weight of its
    /// set (unused entries for other elements).
    fn sets(mut self, weights: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let n = self.parent.len();
        let roots: Vec<u32> = (0..n).map(|x| self.find(x) as u32).collect();
        let mut totals = vec![0u32; n];
        for (x, &root) in roots.iter().enumerate() {
            totals[root as usize] += weights[x];
        }
        (roots, totals)
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::synthetic::{Spec, generate};
    use super::*;

    fn with(settings: Settings) -> DupParams {
        DupParams { settings, ..DupParams::default() }
    }

    fn words_params(n: usize) -> DupParams {
        with(Settings { shingles: Shingling::Words(n), ..Settings::default() })
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
        let params = with(Settings { min_repeat: 10, ..Settings::default() });
        let dups = find_duplicates(&texts, &params);
        assert_eq!(dups.exact_dup_count, vec![2, 0, 2, 1, 2, 0, 0, 1]);
        assert_eq!(dups.near_dup_count, vec![2, 0, 2, 0, 2, 1, 1, 0]);
        assert_eq!(dups.cluster, vec![0, 1, 0, 2, 0, 3, 3, 4]);
        assert_eq!(dups.cluster_size, vec![3, 1, 3, 1, 3, 2, 2, 1]);
        assert_eq!(dups.max_jaccard[0], 1.0);
        assert_eq!(dups.max_jaccard[5], 6.0 / 7.0);
        assert_eq!(dups.max_jaccard[3], 0.0);
        assert_eq!(dups.near_pairs(), vec![(0, 2, 1.0), (0, 4, 1.0), (2, 4, 1.0), (5, 6, 6.0 / 7.0)]);
        assert_eq!(dups.repeat_fraction[0], 1.0);
        assert_eq!(dups.repeat_fraction[1], 0.0);
        assert_eq!(dups.repeat_fraction[3], 0.0);
    }

    #[test]
    fn short_and_empty_texts() {
        // Fewer words than the shingle length: the whole text is one shingle, so only an
        // identical normalized text is a near-duplicate.
        let texts = ["two words", "Two  Words", "two words more", "", ""];
        let dups = find_duplicates(&texts, &words_params(5));
        assert_eq!(dups.near_dup_count, vec![1, 1, 0, 0, 0]);
        assert_eq!(dups.near_pairs(), vec![(0, 1, 1.0)]);
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
        assert_eq!(find_duplicates(&texts, &params).near_pairs(), expected);
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
            pool.install(|| find_duplicates(&texts, &DupParams { passages: true, ..DupParams::default() }))
        };
        assert_eq!(run(1), run(3));
    }

    /// Per-document scores from all-pairs comparison: near_dup_count, and the clusters as
    /// sets of documents.
    fn brute_force_scores(texts: &[&str], params: &DupParams) -> (Vec<u32>, Vec<Vec<u32>>) {
        let mut counts = vec![0u32; texts.len()];
        let mut clusters = UnionFind::new(texts.len());
        for (i, j, _) in brute_force_pairs(texts, params) {
            counts[i as usize] += 1;
            counts[j as usize] += 1;
            clusters.union(i as usize, j as usize);
        }
        (counts, clusters_as_sets(&clusters.sets(&vec![1; texts.len()]).0))
    }

    fn clusters_as_sets(cluster: &[u32]) -> Vec<Vec<u32>> {
        let mut sets: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (doc, &c) in cluster.iter().enumerate() {
            sets.entry(c).or_default().push(doc as u32);
        }
        let mut sets: Vec<Vec<u32>> = sets.into_values().collect();
        sets.sort();
        sets
    }

    #[test]
    fn exact_groups_with_near_duplicates_of_their_text_count_as_brute_force() {
        // Three exact groups (restyled copies), near-duplicates of each group's text and of
        // each other, and unrelated documents; one exact group of the empty text.
        let mut spec = Spec::with_docs(300, 31);
        (spec.near_groups, spec.exact_groups) = (0, 0);
        let unrelated = generate(&spec).texts;
        let mut texts: Vec<String> = Vec::new();
        for (g, base) in unrelated[..3].iter().enumerate() {
            let words: Vec<&str> = base.split(' ').collect();
            for copy in 0..4 + g {
                texts.push(if copy % 2 == 0 { base.clone() } else { base.to_uppercase().replace(' ', "\n ") });
            }
            for edit in 0..3 {
                let mut edited = words.clone();
                edited[10 + 7 * edit] = "zzz";
                texts.push(edited.join(" "));
            }
        }
        texts.extend(["", " ", "\t"].map(String::from));
        texts.extend(unrelated[3..].iter().cloned());
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let params = DupParams::default();
        let dups = find_duplicates(&texts, &params);
        let (counts, clusters) = brute_force_scores(&texts, &params);
        assert_eq!(dups.near_dup_count, counts);
        assert_eq!(clusters_as_sets(&dups.cluster), clusters);
        assert_eq!(dups.near_pairs(), brute_force_pairs(&texts, &params));
        assert_eq!(dups.pair_count(), dups.near_pairs().len() as u64);
        assert!(dups.near_dup_capped.iter().all(|&c| !c));
        // The first group: 4 copies and 3 edits of its text.
        assert_eq!(dups.exact_dup_count[..7], [3, 3, 3, 3, 0, 0, 0]);
        assert_eq!(dups.near_dup_count[0], 6);
        assert_eq!(dups.representative[..7], [0, 0, 0, 0, 4, 5, 6]);
        // Empty texts are exact duplicates of each other, never near-duplicates.
        let empty = texts.iter().position(|t| t.is_empty()).expect("an empty text");
        assert_eq!(dups.exact_dup_count[empty..empty + 3], [2, 2, 2]);
        assert_eq!(dups.near_dup_count[empty..empty + 3], [0, 0, 0]);
        assert_eq!(dups.cluster_size[empty..empty + 3], [1, 1, 1]);
    }

    #[test]
    fn boilerplate_copies_collapse_to_one_representative() {
        let spec = Spec { near_groups: 0, exact_groups: 0, boilerplate_copies: 2000, ..Spec::with_docs(2500, 32) };
        let corpus = generate(&spec);
        let texts = corpus.texts();
        let dups = find_duplicates(&texts, &DupParams::default());
        let footer = corpus.exact_groups.last().expect("the boilerplate group");
        assert_eq!(footer.len(), 2000);
        for &doc in footer {
            let doc = doc as usize;
            assert_eq!(
                (dups.exact_dup_count[doc], dups.near_dup_count[doc], dups.cluster_size[doc]),
                (1999, 1999, 2000)
            );
            assert_eq!((dups.max_jaccard[doc], dups.repeat_fraction[doc]), (1.0, 1.0));
            assert_eq!(dups.representative[doc], footer[0]);
        }
        assert!(dups.rep_pairs.is_empty());
        assert_eq!(dups.pair_count(), 2000 * 1999 / 2);
    }

    #[test]
    fn a_templated_family_is_capped_and_flagged_never_silently_truncated() {
        let spec = Spec { near_groups: 0, exact_groups: 0, template_family: 600, ..Spec::with_docs(800, 33) };
        let corpus = generate(&spec);
        let texts = corpus.texts();
        let family = corpus.near_groups.last().expect("the family");
        let (counts, clusters) = brute_force_scores(&texts, &DupParams::default());
        assert!(family.iter().all(|&d| counts[d as usize] == 599), "the family is a clique");

        // Enough candidates: unflagged, and exact up to LSH recall (each family pair, at
        // J = 70/80, is missed with probability 4e-6: one of the 179,700 is).
        let uncapped = find_duplicates(&texts, &DupParams::default());
        assert!(uncapped.near_dup_capped.iter().all(|&c| !c));
        let missed: u32 = counts.iter().zip(&uncapped.near_dup_count).map(|(&truth, &found)| truth - found).sum();
        assert!(missed <= 2 * 2, "{missed} pair ends missed");

        // Fewer candidates than the family has members: lower bounds, flagged, one cluster.
        let params = with(Settings { max_candidates: 50, ..Settings::default() });
        let capped = find_duplicates(&texts, &params);
        for (doc, &truth) in counts.iter().enumerate() {
            let in_family = family.binary_search(&(doc as u32)).is_ok();
            assert_eq!(capped.near_dup_capped[doc], in_family, "document {doc}");
            assert!(capped.near_dup_count[doc] <= truth);
            if in_family {
                assert!(capped.near_dup_count[doc] >= 50);
                assert_eq!(capped.cluster_size[doc], 600);
            } else {
                assert_eq!(capped.near_dup_count[doc], truth);
            }
        }
        assert_eq!(clusters_as_sets(&capped.cluster), clusters);
        assert!(capped.pair_count() < uncapped.pair_count());
    }

    #[test]
    fn shard_size_changes_nothing() {
        let corpus = generate(&Spec::with_docs(300, 34));
        let texts = corpus.texts();
        let params = |shard_bytes| DupParams { shard_bytes, passages: true, ..DupParams::default() };
        let whole = find_duplicates(&texts, &params(Some(usize::MAX)));
        for shard_bytes in [None, Some(1), Some(5000)] {
            let sharded = find_duplicates(&texts, &params(shard_bytes));
            assert_eq!(sharded.repeat_fraction, whole.repeat_fraction, "{shard_bytes:?}");
            assert_eq!(sharded.passages, whole.passages, "{shard_bytes:?}");
        }
        // The 7 planted near-duplicate groups of 4 share nearly all their text.
        assert!(whole.repeat_fraction.iter().filter(|&&f| f > 0.9).count() >= 28);
    }

    /// Passage groups as sets, from a map of each `len`-byte window to the first document
    /// that holds it: the reference on corpora too large for comparing all pairs.
    fn passage_sets_from_windows(texts: &[&str], len: usize) -> Vec<Vec<u32>> {
        let mut first_holder: HashMap<&[u8], usize> = HashMap::new();
        let mut sets = UnionFind::new(texts.len());
        for (doc, text) in texts.iter().enumerate() {
            for window in text.as_bytes().windows(len) {
                let first = *first_holder.entry(window).or_insert(doc);
                sets.union(first, doc);
            }
        }
        clusters_as_sets(&sets.sets(&vec![1; texts.len()]).0)
    }

    #[test]
    fn a_footer_shared_by_thousands_of_documents_is_one_passage_group() {
        // 3,000 documents "<random words> <number> <footer>", numbered 0000 to 2999, and,
        // every 16th, 200 of random words alone.
        const FOOTER: &str = "-- sent from the shared mailing list; to leave it, mail leave@lists.example.org.";
        assert_eq!(FOOTER.len(), 80);
        let mut rng = ChaCha8Rng::seed_from_u64(35);
        let mut words = |count: usize| -> String {
            let word = |rng: &mut ChaCha8Rng| -> String {
                (0..rng.random_range(3..=9)).map(|_| char::from(rng.random_range(b'a'..=b'z'))).collect()
            };
            (0..count).map(|_| word(&mut rng)).collect::<Vec<_>>().join(" ")
        };
        let (mut texts, mut footed, mut prefix) = (Vec::new(), Vec::new(), Vec::new());
        for doc in 0..3200 {
            if doc % 16 == 5 {
                texts.push(words(12));
            } else {
                let body = words(8);
                // The last three digits of the number are shared with two other documents,
                // all four with none: the shared run starts at the second digit.
                prefix.push(body.len() + 2);
                texts.push(format!("{body} {:04} {FOOTER}", footed.len()));
                footed.push(doc);
            }
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let params = DupParams { passages: true, ..DupParams::default() };
        let found = find_duplicates(&texts, &params);
        let passages = found.passages.as_ref().expect("asked for");

        let mut expected: Vec<Vec<u32>> = (0..3200).filter(|doc| doc % 16 == 5).map(|doc| vec![doc]).collect();
        expected.push(footed.iter().map(|&doc| doc as u32).collect());
        expected.sort();
        assert_eq!(passage_sets_from_windows(&texts, params.settings.min_repeat as usize), expected);
        assert_eq!(clusters_as_sets(&passages.group), expected);
        // Groups are numbered in order of their first document: the footer's is 0.
        let (mut loners, mut footer_docs) = (0, 0);
        for (doc, text) in texts.iter().enumerate() {
            if doc % 16 == 5 {
                loners += 1;
                assert_eq!((passages.group[doc], passages.group_size[doc]), (loners, 1));
                assert_eq!((passages.longest_shared[doc], found.repeat_fraction[doc]), ((0, 0), 0.0));
            } else {
                assert_eq!((passages.group[doc], passages.group_size[doc]), (0, 3000));
                let start = prefix[footer_docs];
                assert_eq!(passages.longest_shared[doc], (start as u32, text.len() as u32));
                assert_eq!(found.repeat_fraction[doc], (text.len() - start) as f64 / text.len() as f64);
                footer_docs += 1;
            }
        }
        // The same groups from one thread or many, in one suffix array or many.
        for (threads, shard_bytes) in [(1, None), (2, Some(4096)), (16, Some(1 << 30))] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
            let params = DupParams { shard_bytes, ..params.clone() };
            let again = pool.install(|| find_duplicates(&texts, &params));
            assert_eq!(again.passages.as_ref(), Some(passages), "{threads} threads, shards {shard_bytes:?}");
        }
        assert_eq!(near_duplicates(&texts, &params).passages, None);
        assert_eq!(find_duplicates(&texts[..100], &DupParams::default()).passages, None);
    }

    #[test]
    fn memory_estimate_is_the_larger_stage() {
        // 1,000 texts of 19 bytes (20 with the separator), 21 bands: shingles 2 x 20,000
        // bytes plus 1,000 x (400 + 8 x 21), against 7 x 20,000 + 150 x 1,000.
        let texts = ["a few words of text"; 1000];
        assert_eq!(memory_estimate(&texts, &DupParams::default()), 40_000 + 568_000);
        let long = ["a few words of text ".repeat(100)];
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(memory_estimate(&long, &DupParams::default()), 2001 * 7 + 150);
    }
}
