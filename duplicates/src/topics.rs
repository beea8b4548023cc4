//! Topics: groups the documents of a corpus into K topics by their content, so that
//! documents on one subject can be told apart from documents that merely share text.
//!
//! This module owns the text embedding (TF-IDF over word unigrams and bigrams, reduced by
//! a randomized truncated SVD, [`text_embeddings`]), the clustering of embeddings
//! (spherical k-means, [`spherical_kmeans`]), the two together ([`text_topics`]), and the
//! adjusted Rand index that measures a grouping against another ([`adjusted_rand`]). Like
//! the rest of the crate it knows texts, not runs: what the topics are used for (sampling
//! units, designs), where the texts come from and how the labels are stored are its
//! callers' business.
//!
//! ```
//! use duplicates::topics::{TopicSettings, text_topics};
//!
//! let texts = [
//!     "the striker scored a goal",
//!     "a late goal won the match",
//!     "bake the bread in the oven",
//!     "the oven bakes fresh bread",
//! ];
//! let topics = text_topics(&texts, 2, &TopicSettings::default(), 7).expect("a vocabulary and K <= documents");
//! assert_eq!(topics, [0, 0, 1, 1]);
//! ```
//!
//! # Embedding
//!
//! Texts are lowercased and split into words, the maximal runs of alphanumeric chars
//! (Unicode [`char::is_alphanumeric`]); a document's terms are its words and its pairs of
//! adjacent words (joined by a space). A term is kept when its document frequency df is at
//! least `min_df` and below the number of documents n (a term in every document tells
//! none apart), the `max_features` most frequent of them (ties by term text). Weights are
//! `(1 + ln tf) × (ln((1 + n) / (1 + df)) + 1)` (sublinear term frequency, smooth inverse
//! document frequency: the weights of scikit-learn's `TfidfVectorizer(sublinear_tf=True)`),
//! each document's row L2-normalized. Terms are identified by 64-bit hashes of their text, so
//! two distinct terms with equal hashes (improbable) count as one.
//!
//! The sparse n × terms matrix A is reduced to `dims` dimensions by the randomized range
//! finder of Halko, Martinsson and Tropp (2011, Algorithm 4.4): a Gaussian test matrix of
//! `dims + 10` columns, `power_iterations` passes through A Aᵀ with the basis
//! re-orthonormalized after every product, then the SVD of the small projected matrix.
//! A document's embedding is its row of U Σ (equivalently A V), L2-normalized; a document
//! with no kept term has a zero row. The n × (dims + 10) basis stays in f32, orthonormalized
//! by SVQB (Stathopoulos & Wu 2002: from the eigendecomposition of its Gram matrix, in
//! f64) applied twice, as Cholesky-QR2 is; unlike Cholesky, SVQB drops the directions a
//! rank-deficient corpus lacks (repeated documents) instead of failing.
//!
//! # Clustering
//!
//! Spherical k-means on cosine similarity: greedy k-means++ seeding (as scikit-learn's,
//! with the dissimilarity `1 − cos`, half the squared distance between unit vectors, in
//! the role of the squared distance), then Lloyd iterations that assign each document to
//! the centroid of largest dot product and move each centroid to the normalized mean of
//! its documents, until no assignment changes. A cluster left empty takes the document
//! farthest from its centroid.
//!
//! # Determinism and cost
//!
//! Every floating-point sum is taken in a fixed order (per row, or over fixed blocks of
//! rows added in order), so embeddings and topics depend on the texts, the settings and
//! the seed, not on the number of threads. Counting document frequencies holds 8 bytes per
//! distinct term of each document; the TF-IDF matrix 8 bytes per kept term of each
//! document; the range finder 4 × (dims + 10) bytes per document and per kept term; the
//! embedding 4 × dims bytes per document. On 10⁶ documents of 30 to 60 words (6.5 × 10⁷
//! entries in the matrix), 2 cores take about 35 s and 1.6 GB, the texts included (see
//! `benches/topics.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nalgebra::{DMatrix, DMatrixView, SymmetricEigen};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Settings of the text embedding: TF-IDF over word unigrams and bigrams, reduced by
/// truncated SVD, and the cap on k-means iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Dimensions of the embedding (fewer when the corpus has fewer kept terms or documents).
    pub dims: usize,
    /// Fewest documents a term must appear in to be kept.
    pub min_df: u32,
    /// Most terms kept, the most frequent by document frequency.
    pub max_features: usize,
    /// Passes through A Aᵀ of the randomized range finder; more sharpen the top directions
    /// when the singular values decay slowly.
    pub power_iterations: usize,
    /// Most Lloyd iterations of spherical k-means.
    pub kmeans_iterations: usize,
}

impl Default for TopicSettings {
    /// 100 dimensions, terms in at least 2 documents, at most 2¹⁸ of them, 4 power
    /// iterations, at most 100 k-means iterations.
    fn default() -> Self {
        TopicSettings { dims: 100, min_df: 2, max_features: 1 << 18, power_iterations: 4, kmeans_iterations: 100 }
    }
}

/// Row-major `rows` × `dims` f32 matrix, one row per document, each row L2-normalized
/// (a zero row for a document without any kept term).
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub rows: usize,
    pub dims: usize,
    pub values: Vec<f32>,
}

impl Embeddings {
    /// The embedding of document `row`.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.values[row * self.dims..(row + 1) * self.dims]
    }
}

/// Why a corpus cannot be grouped into topics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error(
        "no word appears in at least min_df = {min_df} documents (and not in all): the corpus has no \
         vocabulary to group by topic"
    )]
    NoVocabulary { min_df: u32 },
    #[error("K must be at least 1")]
    NoTopics,
    #[error("K = {topics} topics for {documents} documents: at most one topic per document")]
    MoreTopicsThanDocuments { topics: usize, documents: usize },
    #[error("{setting} must be at least 1")]
    ZeroSetting { setting: &'static str },
}

/// Each document's embedding (see the module documentation), from `seed`.
///
/// # Panics
///
/// If the corpus has more than `u32::MAX` documents.
pub fn text_embeddings(texts: &[&str], settings: &TopicSettings, seed: u64) -> Result<Embeddings, TopicError> {
    for (setting, value) in [("dims", settings.dims), ("max_features", settings.max_features)] {
        if value == 0 {
            return Err(TopicError::ZeroSetting { setting });
        }
    }
    assert!(u32::try_from(texts.len()).is_ok(), "{} documents: at most u32::MAX", texts.len());
    let vocabulary = Vocabulary::new(texts, settings)?;
    let matrix = tfidf_matrix(texts, &vocabulary);
    drop(vocabulary);
    Ok(svd_embedding(matrix, settings.dims, settings.power_iterations, seed))
}

/// Groups the rows of `embeddings` into `k` clusters by spherical k-means (see the module
/// documentation) from `seed`, with at most `iterations` Lloyd iterations. Every cluster
/// has a row; labels are dense, 0..k, numbered in order of each cluster's first row.
pub fn spherical_kmeans(
    embeddings: &Embeddings,
    k: usize,
    iterations: usize,
    seed: u64,
) -> Result<Vec<u32>, TopicError> {
    check_topic_count(k, embeddings.rows)?;
    let mut centroids = kmeans_plus_plus(embeddings, k, seed);
    let mut labels = nearest_centroids(embeddings, &centroids);
    for _ in 0..iterations {
        fill_empty_clusters(embeddings, &mut centroids, &mut labels);
        centroids = mean_directions(embeddings, &labels, k);
        let next = nearest_centroids(embeddings, &centroids);
        if next == labels {
            break;
        }
        labels = next;
    }
    // The last assignment may have emptied a cluster when the iterations ran out.
    fill_empty_clusters(embeddings, &mut centroids, &mut labels);
    Ok(numbered_by_first_row(&labels))
}

/// [`text_embeddings`] then [`spherical_kmeans`]: each document's topic, dense 0..k,
/// numbered in order of each topic's first document.
pub fn text_topics(texts: &[&str], k: usize, settings: &TopicSettings, seed: u64) -> Result<Vec<u32>, TopicError> {
    // Refused before the embedding, which is the expensive part.
    check_topic_count(k, texts.len())?;
    let embeddings = text_embeddings(texts, settings, seed)?;
    spherical_kmeans(&embeddings, k, settings.kmeans_iterations, seed)
}

/// The adjusted Rand index of two labelings of the same items (Hubert & Arabie 1985): 1
/// for the same partition (whatever the label names), about 0 for independent ones,
/// negative for less agreement than chance.
///
/// # Panics
///
/// If the labelings have different lengths.
pub fn adjusted_rand(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len(), "two labelings of the same items");
    let pairs = |count: u64| count * count.saturating_sub(1) / 2;
    let mut joint: HashMap<(u32, u32), u64> = HashMap::new();
    let mut in_a: HashMap<u32, u64> = HashMap::new();
    let mut in_b: HashMap<u32, u64> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *joint.entry((x, y)).or_default() += 1;
        *in_a.entry(x).or_default() += 1;
        *in_b.entry(y).or_default() += 1;
    }
    let together: u64 = joint.values().map(|&count| pairs(count)).sum();
    let together_a: u64 = in_a.values().map(|&count| pairs(count)).sum();
    let together_b: u64 = in_b.values().map(|&count| pairs(count)).sum();
    let all = pairs(a.len() as u64);
    // Both one cluster, or both singletons (or fewer than two items): the same partition,
    // where the index is 0 / 0.
    if together_a == together_b && (together_a == 0 || together_a == all) {
        return 1.0;
    }
    let expected = together_a as f64 * together_b as f64 / all as f64;
    let most = (together_a + together_b) as f64 / 2.0;
    (together as f64 - expected) / (most - expected)
}

fn check_topic_count(k: usize, documents: usize) -> Result<(), TopicError> {
    if k == 0 {
        return Err(TopicError::NoTopics);
    }
    if k > documents {
        return Err(TopicError::MoreTopicsThanDocuments { topics: k, documents });
    }
    Ok(())
}

/// Hashes a term's 64-bit hash to itself: the keys of [`TermMap`] are already xxh3 hashes.
#[derive(Default)]
struct TermHasher(u64);

impl Hasher for TermHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("term maps are keyed by u64 hashes")
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// A map keyed by the hash of a term's text.
type TermMap<V> = HashMap<u64, V, BuildHasherDefault<TermHasher>>;

/// Buffers of [`visit_terms`], reused from one document to the next.
#[derive(Default)]
struct TermBuffers {
    word: String,
    previous: String,
    bigram: String,
}

/// Calls `visit` with the hash and the text of each term of `text`, repeats included: each
/// word (a maximal run of alphanumeric chars, lowercased), then the pair it ends.
fn visit_terms(text: &str, buffers: &mut TermBuffers, mut visit: impl FnMut(u64, &str)) {
    let TermBuffers { word, previous, bigram } = buffers;
    previous.clear();
    for run in text.split(|c: char| !c.is_alphanumeric()).filter(|run| !run.is_empty()) {
        word.clear();
        if run.is_ascii() {
            word.push_str(run);
            word.make_ascii_lowercase();
        } else {
            word.extend(run.chars().flat_map(char::to_lowercase));
        }
        visit(xxh3_64(word.as_bytes()), word);
        if !previous.is_empty() {
            bigram.clear();
            bigram.push_str(previous);
            bigram.push(' ');
            bigram.push_str(word);
            visit(xxh3_64(bigram.as_bytes()), bigram);
        }
        std::mem::swap(word, previous);
    }
}

/// The kept terms of a corpus: the columns of its TF-IDF matrix.
struct Vocabulary {
    /// Kept terms by decreasing document frequency, ties by text.
    terms: Vec<String>,
    /// Smooth inverse document frequency of each term.
    idf: Vec<f32>,
    /// Each kept term's column, by the hash of its text.
    column: TermMap<u32>,
}

impl Vocabulary {
    fn new(texts: &[&str], settings: &TopicSettings) -> Result<Vocabulary, TopicError> {
        let documents = texts.len();
        let mut candidates = document_frequencies(texts, |df| df >= settings.min_df && (df as usize) < documents);
        if candidates.is_empty() {
            return Err(TopicError::NoVocabulary { min_df: settings.min_df });
        }
        candidates.par_sort_unstable_by_key(|&(hash, df)| (std::cmp::Reverse(df), hash));
        // Past the cap only the terms tied with the last one kept need their text, to break
        // the tie.
        if candidates.len() > settings.max_features {
            let lowest_kept = candidates[settings.max_features - 1].1;
            candidates.retain(|&(_, df)| df >= lowest_kept);
        }
        let mut terms = term_texts(texts, &candidates);
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        let df = |i: usize| candidates[i].1;
        order.par_sort_unstable_by(|&i, &j| df(j).cmp(&df(i)).then_with(|| terms[i].cmp(&terms[j])));
        order.truncate(settings.max_features);

        let smooth_idf = |df: u32| (((1 + documents) as f64 / (1 + df as u64) as f64).ln() + 1.0) as f32;
        let mut vocabulary =
            Vocabulary { terms: Vec::with_capacity(order.len()), idf: Vec::new(), column: TermMap::default() };
        for (column, &i) in order.iter().enumerate() {
            vocabulary.column.insert(candidates[i].0, column as u32);
            vocabulary.idf.push(smooth_idf(df(i)));
            vocabulary.terms.push(std::mem::take(&mut terms[i]));
        }
        Ok(vocabulary)
    }
}

/// Parts of the hash space that [`document_frequencies`] counts one at a time, each small
/// enough to sort in the cache.
const HASH_PARTS: usize = 256;

/// The terms (hash, document frequency) whose document frequency passes `keep`.
///
/// A hash map of every distinct term of a large corpus (tens of millions of word pairs,
/// most in one document) would miss the cache at every insertion. Instead each block of
/// documents lists its documents' distinct terms, sorted, so that each part of the hash
/// space (by the top bits) is a slice of every block; each part, gathered from all blocks,
/// is then counted in the cache. This holds 8 bytes per distinct term of each document.
fn document_frequencies(texts: &[&str], keep: impl Fn(u32) -> bool + Sync) -> Vec<(u64, u32)> {
    let blocks: Vec<Vec<u64>> = texts
        .par_chunks(BLOCK_DOCUMENTS)
        .map(|block| {
            let (mut buffers, mut document_terms, mut block_terms) = (TermBuffers::default(), Vec::new(), Vec::new());
            for text in block {
                document_terms.clear();
                visit_terms(text, &mut buffers, |hash, _| document_terms.push(hash));
                document_terms.sort_unstable();
                document_terms.dedup();
                block_terms.extend_from_slice(&document_terms);
            }
            block_terms.sort_unstable();
            block_terms
        })
        .collect();
    let part_of = |hash: u64| (hash >> (64 - HASH_PARTS.trailing_zeros())) as usize;
    (0..HASH_PARTS)
        .into_par_iter()
        .flat_map_iter(|part| {
            let mut hashes: Vec<u64> = blocks
                .iter()
                .flat_map(|block| {
                    let start = block.partition_point(|&hash| part_of(hash) < part);
                    let end = start + block[start..].partition_point(|&hash| part_of(hash) == part);
                    &block[start..end]
                })
                .copied()
                .collect();
            // Sorted runs, one per block, which the stable sort merges.
            hashes.sort();
            let counts: Vec<(u64, u32)> = hashes
                .chunk_by(|a, b| a == b)
                .map(|copies| (copies[0], copies.len() as u32))
                .filter(|&(_, df)| keep(df))
                .collect();
            counts
        })
        .collect()
}

/// The text of each of `terms` (by hash), in their order. Every occurrence of a term has
/// the same text, so whichever thread finds one first names it.
fn term_texts(texts: &[&str], terms: &[(u64, u32)]) -> Vec<String> {
    let index: TermMap<usize> = terms.iter().enumerate().map(|(i, &(hash, _))| (hash, i)).collect();
    let named: Vec<AtomicBool> = terms.iter().map(|_| AtomicBool::new(false)).collect();
    let unnamed = AtomicUsize::new(terms.len());
    let found: Vec<Vec<(usize, String)>> = texts
        .par_iter()
        .with_min_len(256)
        .map_init(TermBuffers::default, |buffers, text| {
            let mut found = Vec::new();
            // Once every term is named (often early: kept terms are frequent), the rest of
            // the corpus is skipped.
            if unnamed.load(Ordering::Relaxed) > 0 {
                visit_terms(text, buffers, |hash, term| {
                    if let Some(&i) = index.get(&hash)
                        && !named[i].load(Ordering::Relaxed)
                        && !named[i].swap(true, Ordering::Relaxed)
                    {
                        found.push((i, term.to_owned()));
                        unnamed.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
            found
        })
        .collect();
    let mut names = vec![String::new(); terms.len()];
    for (i, name) in found.into_iter().flatten() {
        names[i] = name;
    }
    names
}

/// A sparse f32 matrix by rows (compressed sparse row form).
struct SparseRows {
    /// Row i's entries are at `starts[i]..starts[i + 1]` of `columns` and `values`.
    starts: Vec<usize>,
    /// Column of each entry, increasing within a row.
    columns: Vec<u32>,
    values: Vec<f32>,
    column_count: usize,
}

impl SparseRows {
    fn row_count(&self) -> usize {
        self.starts.len() - 1
    }

    fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let entries = self.starts[row]..self.starts[row + 1];
        (&self.columns[entries.clone()], &self.values[entries])
    }

    /// `selfᵀ × dense` into `out` (`column_count` rows), both dense matrices row-major with
    /// `width` columns. Each task owns a range of `out`'s rows (of this matrix's columns,
    /// about [`TRANSPOSED_TASKS`]'s share of the entries) and reads `dense` in row order:
    /// the large matrix streams through the cache while the task's rows stay in it. Every
    /// row of `out` is summed in the same order, whatever the ranges.
    fn multiply_transposed(&self, dense: &[f32], width: usize, out: &mut [f32]) {
        let mut column_entries = vec![0usize; self.column_count];
        for &column in &self.columns {
            column_entries[column as usize] += 1;
        }
        let tasks = TRANSPOSED_TASKS.max(4 * rayon::current_num_threads());
        let share = self.columns.len().div_ceil(tasks).max(1);
        let mut parts = Vec::with_capacity(tasks);
        let (mut rest, mut first, mut entries) = (out, 0, 0);
        for (column, &count) in column_entries.iter().enumerate() {
            entries += count;
            if entries >= share || column + 1 == self.column_count {
                let (part, tail) = rest.split_at_mut((column + 1 - first) * width);
                parts.push((first as u32..column as u32 + 1, part));
                (rest, first, entries) = (tail, column + 1, 0);
            }
        }
        parts.into_par_iter().for_each(|(range, part)| {
            part.fill(0.0);
            for row in 0..self.row_count() {
                let (columns, values) = self.row(row);
                let from = columns.partition_point(|&column| column < range.start);
                let to = from + columns[from..].partition_point(|&column| column < range.end);
                let dense_row = &dense[row * width..][..width];
                for (&column, &value) in columns[from..to].iter().zip(&values[from..to]) {
                    let out_row = &mut part[(column - range.start) as usize * width..][..width];
                    for (out, &x) in out_row.iter_mut().zip(dense_row) {
                        *out += value * x;
                    }
                }
            }
        });
    }

    /// `self × dense` into `out`, both dense matrices row-major with `width` columns.
    fn multiply(&self, dense: &[f32], width: usize, out: &mut [f32]) {
        out.par_chunks_mut(width).enumerate().for_each(|(row, out_row)| {
            out_row.fill(0.0);
            let (columns, values) = self.row(row);
            for (entry, (&column, &value)) in columns.iter().zip(values).enumerate() {
                if let Some(&ahead) = columns.get(entry + PREFETCH_AHEAD) {
                    prefetch(&dense[ahead as usize * width..][..width]);
                }
                let dense_row = &dense[column as usize * width..][..width];
                for (out, &x) in out_row.iter_mut().zip(dense_row) {
                    *out += value * x;
                }
            }
        });
    }
}

/// Least number of tasks of [`SparseRows::multiply_transposed`].
const TRANSPOSED_TASKS: usize = 16;

/// Entries ahead whose dense row [`SparseRows::multiply`] asks the cache for: the rows
/// are scattered, so that the hardware prefetcher cannot guess them.
const PREFETCH_AHEAD: usize = 8;

/// Asks for `data` in the cache ahead of its use.
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: SSE is in every x86_64 CPU, and a prefetch never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
}

/// Documents per block of the TF-IDF matrix's construction.
const BLOCK_DOCUMENTS: usize = 4096;

/// The L2-normalized TF-IDF rows of `texts` over `vocabulary`.
fn tfidf_matrix(texts: &[&str], vocabulary: &Vocabulary) -> SparseRows {
    let blocks: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)> = texts
        .par_chunks(BLOCK_DOCUMENTS)
        .map(|block| {
            let (mut lengths, mut columns, mut values) = (Vec::new(), Vec::new(), Vec::new());
            let mut buffers = TermBuffers::default();
            let mut term_columns = Vec::new();
            for text in block {
                term_columns.clear();
                visit_terms(text, &mut buffers, |hash, _| term_columns.extend(vocabulary.column.get(&hash)));
                term_columns.sort_unstable();
                let start = columns.len();
                for repeats in term_columns.chunk_by(|a, b| a == b) {
                    let column = repeats[0];
                    columns.push(column);
                    values.push((1.0 + (repeats.len() as f32).ln()) * vocabulary.idf[column as usize]);
                }
                let row = &mut values[start..];
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|v| *v /= norm);
                }
                lengths.push(columns.len() - start);
            }
            (lengths, columns, values)
        })
        .collect();
    let entries = blocks.iter().map(|(_, columns, _)| columns.len()).sum();
    let mut matrix = SparseRows {
        starts: Vec::with_capacity(texts.len() + 1),
        columns: Vec::with_capacity(entries),
        values: Vec::with_capacity(entries),
        column_count: vocabulary.terms.len(),
    };
    matrix.starts.push(0);
    // Block by block, each freed once copied, so that the blocks and the matrix are not
    // both held whole.
    for (lengths, columns, values) in blocks {
        for length in lengths {
            matrix.starts.push(matrix.starts.last().expect("starts at 0") + length);
        }
        matrix.columns.extend(columns);
        matrix.values.extend(values);
    }
    matrix
}

/// Columns of the range finder's test matrix beyond the dimensions kept (Halko et al.'s
/// oversampling p, whose error bound is close to optimal from p = 5 to 10).
const OVERSAMPLING: usize = 10;

/// Rows per block of the dense products: enough that each is one good-sized GEMM.
const BLOCK_ROWS: usize = 4096;

/// Eigenvalues of a Gram matrix below this fraction of the largest are taken for zero:
/// singular values below 10⁻⁵ of the largest, where f32 rounding (6 × 10⁻⁸) already
/// weighs.
const RANK_TOLERANCE: f64 = 1e-10;

/// The rows of U Σ of the truncated SVD of `matrix` (documents × terms), L2-normalized
/// (see the module documentation).
fn svd_embedding(matrix: SparseRows, dims: usize, power_iterations: usize, seed: u64) -> Embeddings {
    let (documents, terms) = (matrix.row_count(), matrix.column_count);
    let dims = dims.min(documents).min(terms);
    let width = (dims + OVERSAMPLING).min(documents).min(terms);

    // `range` (documents × width) ends as an orthonormal basis Q of the range of A;
    // `term_block` (terms × width) holds first the test matrix, then Aᵀ Q.
    let mut term_block = gaussian_matrix(terms, width, seed);
    let mut range = vec![0.0; documents * width];
    matrix.multiply(&term_block, width, &mut range);
    orthonormalize(&mut range, width);
    for _ in 0..power_iterations {
        matrix.multiply_transposed(&range, width, &mut term_block);
        orthonormalize(&mut term_block, width);
        matrix.multiply(&term_block, width, &mut range);
        orthonormalize(&mut range, width);
    }
    matrix.multiply_transposed(&range, width, &mut term_block);
    drop(matrix);

    // With B = Qᵀ A = term_blockᵀ, B Bᵀ = Ũ Σ² Ũᵀ and U Σ = Q Ũ Σ.
    let eigen = SymmetricEigen::new(gram(&term_block, width));
    let mut by_value: Vec<usize> = (0..width).collect();
    by_value.sort_by(|&i, &j| eigen.eigenvalues[j].total_cmp(&eigen.eigenvalues[i]));
    let projection = DMatrix::from_fn(width, dims, |row, column| {
        let direction = by_value[column];
        eigen.eigenvectors[(row, direction)] * eigen.eigenvalues[direction].max(0.0).sqrt()
    });
    let mut values = rows_times(&range, width, &projection);
    values.par_chunks_mut(dims).for_each(normalize);
    Embeddings { rows: documents, dims, values }
}

/// A `rows` × `columns` row-major matrix of independent standard normal values (by the
/// Box–Muller transform) drawn from `seed`.
fn gaussian_matrix(rows: usize, columns: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(rows * columns + 1);
    while values.len() < rows * columns {
        // 1 − u lies in (0, 1], where the logarithm is finite.
        let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
        let angle = std::f64::consts::TAU * rng.random::<f64>();
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(rows * columns);
    values
}

/// The rows of a row-major block with `width` columns as the columns of an f64 matrix:
/// the block's transpose, in nalgebra's column-major order.
fn transposed_block(block: &[f32], width: usize) -> DMatrix<f64> {
    DMatrix::from_iterator(width, block.len() / width, block.iter().map(|&v| f64::from(v)))
}

/// Mᵀ M of a row-major matrix M with `width` columns, in f64, summed over fixed blocks of
/// rows in order.
fn gram(matrix: &[f32], width: usize) -> DMatrix<f64> {
    let blocks: Vec<DMatrix<f64>> = matrix
        .par_chunks(width * BLOCK_ROWS)
        .map(|block| {
            let transposed = transposed_block(block, width);
            &transposed * transposed.transpose()
        })
        .collect();
    blocks.into_iter().fold(DMatrix::zeros(width, width), |sum, block| sum + block)
}

/// M P of a row-major matrix M (`width` = P's rows), row-major with P's columns, in f32.
fn rows_times(matrix: &[f32], width: usize, p: &DMatrix<f64>) -> Vec<f32> {
    let p_transposed: DMatrix<f32> = p.transpose().cast();
    let mut out = vec![0.0; matrix.len() / width * p.ncols()];
    out.par_chunks_mut(p.ncols() * BLOCK_ROWS).zip(matrix.par_chunks(width * BLOCK_ROWS)).for_each(|(out, block)| {
        let block = DMatrixView::from_slice(block, width, block.len() / width);
        out.copy_from_slice((&p_transposed * block).as_slice());
    });
    out
}

/// Replaces each row r of a row-major matrix by r W (W square, `width` × `width`), in f32.
fn transform_rows(matrix: &mut [f32], width: usize, w: &DMatrix<f64>) {
    let w_transposed: DMatrix<f32> = w.transpose().cast();
    matrix.par_chunks_mut(width * BLOCK_ROWS).for_each(|block| {
        let product = &w_transposed * DMatrixView::from_slice(block, width, block.len() / width);
        block.copy_from_slice(product.as_slice());
    });
}

/// Replaces the columns of a row-major matrix with `width` columns by an orthonormal
/// basis of their span, in place, by SVQB (Stathopoulos & Wu 2002): with
/// Mᵀ M = V Λ Vᵀ, the columns of M V Λ^(-1/2) are orthonormal. Directions with eigenvalue
/// below [`RANK_TOLERANCE`] of the largest, which the span lacks (as when documents
/// repeat), become zero columns. Applied twice, like Cholesky-QR2: the second pass
/// restores the orthogonality that rounding costs the first. Unlike a QR of the whole
/// matrix, it keeps the matrix in f32 and only its Gram matrix in f64.
fn orthonormalize(matrix: &mut [f32], width: usize) {
    for _ in 0..2 {
        let eigen = SymmetricEigen::new(gram(matrix, width));
        let floor = RANK_TOLERANCE * eigen.eigenvalues.max().max(0.0);
        let mut w = eigen.eigenvectors;
        for (column, &value) in eigen.eigenvalues.iter().enumerate() {
            let scale = if value > floor { value.sqrt().recip() } else { 0.0 };
            w.column_mut(column).scale_mut(scale);
        }
        transform_rows(matrix, width, &w);
    }
}

/// Scales `row` to unit L2 norm; a zero row stays zero.
fn normalize(row: &mut [f32]) {
    let norm = dot(row, row).sqrt();
    if norm > 0.0 {
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

/// The dot product, summed in eight interleaved lanes so that it vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, a_rest) = a.as_chunks::<8>();
    let (b_chunks, b_rest) = b.as_chunks::<8>();
    for (a, b) in a_chunks.iter().zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += a[lane] * b[lane];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + rest
}

/// `k` initial centroids by greedy k-means++ (as scikit-learn's) on the dissimilarity
/// 1 − dot: the first a uniformly drawn nonzero row; each next, of 2 + ⌊ln k⌋ rows drawn
/// with probability proportional to their dissimilarity to the nearest centroid so far,
/// the one that leaves the smallest sum of those dissimilarities. When no row is left at
/// a positive dissimilarity (fewer distinct directions than k), the first row not yet
/// drawn.
fn kmeans_plus_plus(embeddings: &Embeddings, k: usize, seed: u64) -> Vec<Vec<f32>> {
    let rows = embeddings.rows;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let trials = 2 + (k as f64).ln() as usize;
    let nonzero: Vec<bool> = (0..rows).map(|row| embeddings.row(row).iter().any(|&v| v != 0.0)).collect();
    let mut drawn = vec![false; rows];
    // A row's weight: its dissimilarity to the nearest centroid, none for a zero row or a
    // drawn one.
    let weight = |drawn: &[bool], row: usize, similarity: f32| {
        if nonzero[row] && !drawn[row] { f64::from(1.0 - similarity).max(0.0) } else { 0.0 }
    };
    // Dot product with the nearest centroid; 0 before any, where every nonzero row weighs 1
    // and the first draw is uniform.
    let mut nearest = vec![0.0f32; rows];
    let mut centroids: Vec<Vec<f32>> = Vec::with_capacity(k);
    for center in 0..k {
        let mut cumulative = Vec::with_capacity(rows);
        let mut total = 0.0;
        for (row, &similarity) in nearest.iter().enumerate() {
            total += weight(&drawn, row, similarity);
            cumulative.push(total);
        }
        let candidates: Vec<usize> = if total > 0.0 {
            (0..if center == 0 { 1 } else { trials })
                .map(|_| {
                    let target = rng.random::<f64>() * total;
                    cumulative.partition_point(|&sum| sum <= target).min(rows - 1)
                })
                .collect()
        } else {
            vec![drawn.iter().position(|&drawn| !drawn).expect("k <= rows")]
        };
        let mut candidate_rows: Vec<Vec<f32>> = candidates.iter().map(|&row| embeddings.row(row).to_vec()).collect();
        // Row-major, one similarity per candidate.
        let similarities = similarities_by_block(embeddings, &candidate_rows, <[f32]>::to_vec).concat();
        let similarity = |row: usize, candidate: usize| similarities[row * candidates.len() + candidate];
        // The weight each candidate would leave; the least wins, the first of ties.
        let potential: Vec<f64> = (0..candidates.len())
            .map(|candidate| {
                (0..rows).map(|row| weight(&drawn, row, nearest[row].max(similarity(row, candidate)))).sum()
            })
            .collect();
        let best = (0..candidates.len())
            .reduce(|best, candidate| if potential[candidate] < potential[best] { candidate } else { best })
            .expect("at least one candidate");
        for (row, nearest) in nearest.iter_mut().enumerate() {
            *nearest = nearest.max(similarity(row, best));
        }
        drawn[candidates[best]] = true;
        centroids.push(candidate_rows.swap_remove(best));
    }
    centroids
}

/// The dot products of every row with every one of `centroids`, by fixed blocks of rows,
/// one matrix product each: `visit` gets a block's similarities, row-major (one per
/// centroid), and its results come back in block order.
fn similarities_by_block<T: Send>(
    embeddings: &Embeddings,
    centroids: &[Vec<f32>],
    visit: impl Fn(&[f32]) -> T + Sync,
) -> Vec<T> {
    let dims = embeddings.dims;
    let stacked = DMatrix::from_fn(centroids.len(), dims, |centroid, dim| centroids[centroid][dim]);
    (0..embeddings.rows.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .map(|block| {
            let first = block * BLOCK_ROWS;
            let rows = BLOCK_ROWS.min(embeddings.rows - first);
            let values = &embeddings.values[first * dims..(first + rows) * dims];
            // nalgebra multiplies matrices of 5 rows or fewer entry by entry, slower than dot
            // products.
            if centroids.len() <= 5 {
                let similarities: Vec<f32> = (first..first + rows)
                    .flat_map(|row| centroids.iter().map(move |centroid| dot(embeddings.row(row), centroid)))
                    .collect();
                return visit(&similarities);
            }
            // Column-major, the block's rows are the columns of a dims × rows matrix.
            visit((&stacked * DMatrixView::from_slice(values, dims, rows)).as_slice())
        })
        .collect()
}

/// Each row's centroid of largest dot product, the first of ties.
fn nearest_centroids(embeddings: &Embeddings, centroids: &[Vec<f32>]) -> Vec<u32> {
    let blocks = similarities_by_block(embeddings, centroids, |similarities| {
        let nearest = |row: &[f32]| (0..row.len()).reduce(|best, c| if row[c] > row[best] { c } else { best });
        similarities.chunks(centroids.len()).map(|row| nearest(row).expect("k >= 1") as u32).collect::<Vec<u32>>()
    });
    blocks.concat()
}

/// The normalized mean of each cluster's rows, summed in f64 over fixed blocks of rows
/// in order.
fn mean_directions(embeddings: &Embeddings, labels: &[u32], k: usize) -> Vec<Vec<f32>> {
    let dims = embeddings.dims;
    let blocks: Vec<Vec<f64>> = labels
        .par_chunks(BLOCK_ROWS)
        .enumerate()
        .map(|(block, labels)| {
            let mut sums = vec![0.0f64; k * dims];
            for (offset, &label) in labels.iter().enumerate() {
                let sum = &mut sums[label as usize * dims..][..dims];
                for (sum, &v) in sum.iter_mut().zip(embeddings.row(block * BLOCK_ROWS + offset)) {
                    *sum += f64::from(v);
                }
            }
            sums
        })
        .collect();
    let mut sums = vec![0.0f64; k * dims];
    for block in blocks {
        sums.iter_mut().zip(block).for_each(|(sum, v)| *sum += v);
    }
    (0..k)
        .map(|cluster| {
            let mut centroid: Vec<f32> = sums[cluster * dims..][..dims].iter().map(|&v| v as f32).collect();
            normalize(&mut centroid);
            centroid
        })
        .collect()
}

/// Gives each empty cluster the row farthest from its centroid (the first of ties) among
/// rows whose cluster has others, and makes that row the cluster's centroid.
fn fill_empty_clusters(embeddings: &Embeddings, centroids: &mut [Vec<f32>], labels: &mut [u32]) {
    let mut sizes = vec![0usize; centroids.len()];
    for &label in labels.iter() {
        sizes[label as usize] += 1;
    }
    if !sizes.contains(&0) {
        return;
    }
    let mut dissimilarity: Vec<f32> = labels
        .par_iter()
        .enumerate()
        .map(|(row, &label)| 1.0 - dot(embeddings.row(row), &centroids[label as usize]))
        .collect();
    for cluster in 0..centroids.len() {
        if sizes[cluster] > 0 {
            continue;
        }
        // With k <= rows, some cluster holds two rows while one is empty.
        let farthest = (0..labels.len())
            .filter(|&row| sizes[labels[row] as usize] > 1)
            .reduce(|best, row| if dissimilarity[row] > dissimilarity[best] { row } else { best })
            .expect("k <= rows");
        sizes[labels[farthest] as usize] -= 1;
        sizes[cluster] = 1;
        labels[farthest] = cluster as u32;
        centroids[cluster] = embeddings.row(farthest).to_vec();
        dissimilarity[farthest] = f32::NEG_INFINITY;
    }
}

/// The same partition with labels renumbered 0, 1, ... in order of first appearance.
fn numbered_by_first_row(labels: &[u32]) -> Vec<u32> {
    let mut number: HashMap<u32, u32> = HashMap::new();
    labels
        .iter()
        .map(|&label| {
            let next = number.len() as u32;
            *number.entry(label).or_insert(next)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::seq::IndexedRandom;

    use super::*;

    /// Three topics, each written with its own 30 words, plus a few words common to all:
    /// 60 documents of 20 to 40 words, topic by topic, shuffled by a fixed stride.
    fn planted_corpus(seed: u64) -> (Vec<String>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let topic_words: Vec<Vec<String>> =
            (0..3).map(|topic| (0..30).map(|word| format!("t{topic}w{word}")).collect()).collect();
        let common = ["the", "of", "and", "a", "in"];
        let (mut texts, mut planted) = (Vec::new(), Vec::new());
        for doc in 0..60 {
            let topic = (doc * 7) % 3;
            let length = rng.random_range(20..=40);
            let words: Vec<&str> = (0..length)
                .map(|_| {
                    if rng.random_range(0..4) == 0 {
                        *common.choose(&mut rng).expect("common words")
                    } else {
                        topic_words[topic].choose(&mut rng).expect("topic words").as_str()
                    }
                })
                .collect();
            texts.push(words.join(" "));
            planted.push(topic as u32);
        }
        (texts, planted)
    }

    fn as_strs(texts: &[String]) -> Vec<&str> {
        texts.iter().map(String::as_str).collect()
    }

    #[test]
    fn planted_topics_are_found() {
        let (texts, planted) = planted_corpus(1);
        let topics = text_topics(&as_strs(&texts), 3, &TopicSettings::default(), 11).expect("topics");
        let agreement = adjusted_rand(&topics, &planted);
        assert!(agreement >= 0.9, "adjusted Rand {agreement}");
        assert_eq!(topics[0], 0, "numbered in order of first document");
    }

    #[test]
    fn the_same_seed_gives_the_same_topics_on_any_thread_count() {
        let (texts, _) = planted_corpus(2);
        let texts = as_strs(&texts);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
            pool.install(|| {
                let settings = TopicSettings::default();
                (text_embeddings(&texts, &settings, 5).expect("embeddings"), text_topics(&texts, 3, &settings, 5))
            })
        };
        let once = run(1);
        assert_eq!(once, run(1));
        assert_eq!(once, run(3));
    }

    #[test]
    fn refusals_say_why() {
        let (texts, _) = planted_corpus(3);
        let texts = as_strs(&texts);
        let settings = TopicSettings::default();
        let message = |result: Result<Vec<u32>, TopicError>| result.expect_err("refused").to_string();
        assert_eq!(message(text_topics(&texts, 0, &settings, 0)), "K must be at least 1");
        assert_eq!(
            message(text_topics(&texts[..4], 5, &settings, 0)),
            "K = 5 topics for 4 documents: at most one topic per document"
        );
        let embeddings = text_embeddings(&texts, &settings, 0).expect("embeddings");
        assert_eq!(
            message(spherical_kmeans(&embeddings, 61, 10, 0)),
            "K = 61 topics for 60 documents: at most one topic per document"
        );
        // Every word in one document only, or in every document.
        let unshared = ["alpha beta", "gamma delta", "", "common", "epsilon common"];
        let no_vocabulary = "no word appears in at least min_df = 2 documents (and not in all): the corpus \
                             has no vocabulary to group by topic";
        assert_eq!(message(text_topics(&unshared[..4], 2, &settings, 0)), no_vocabulary);
        assert_eq!(message(text_topics(&["same words", "same words"], 1, &settings, 0)), no_vocabulary);
        assert_eq!(message(text_topics(&["", "", ""], 1, &settings, 0)), no_vocabulary);
        assert_eq!(
            message(text_topics(&texts, 2, &TopicSettings { dims: 0, ..settings.clone() }, 0)),
            "dims must be at least 1"
        );
        // "common" is in two of five documents: a vocabulary of one term, one dimension
        // (whose sign is arbitrary).
        let embeddings = text_embeddings(&unshared, &settings, 0).expect("one term");
        assert_eq!(embeddings.dims, 1);
        assert_eq!(embeddings.values.iter().map(|v| v.abs()).collect::<Vec<_>>(), [0.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn adjusted_rand_by_hand() {
        assert_eq!(adjusted_rand(&[0, 0, 1, 1, 2], &[0, 0, 1, 1, 2]), 1.0);
        assert_eq!(adjusted_rand(&[0, 0, 1, 1], &[5, 5, 3, 3]), 1.0);
        // [0 0 1 1] against [0 0 1 2]: pairs together in both 1 (the first two), in the
        // first 2, in the second 1, of C(4, 2) = 6: expected 2 × 1 / 6 = 1/3, most
        // (2 + 1) / 2, index (1 − 1/3) / (3/2 − 1/3) = 4/7.
        assert!((adjusted_rand(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 4.0 / 7.0).abs() < 1e-12);
        // [0 0 1 1] against [0 1 0 1]: no pair together in both, 2 in each: expected 2/3,
        // most 2, index (0 − 2/3) / (2 − 2/3) = −1/2.
        assert!((adjusted_rand(&[0, 0, 1, 1], &[0, 1, 0, 1]) + 0.5).abs() < 1e-12);
        assert_eq!(adjusted_rand(&[0, 0, 0], &[1, 1, 1]), 1.0);
        assert_eq!(adjusted_rand(&[0, 1, 2], &[0, 1, 2]), 1.0);
        assert_eq!(adjusted_rand(&[0, 0, 0], &[0, 1, 2]), 0.0);
        assert_eq!(adjusted_rand(&[4], &[2]), 1.0);
        assert_eq!(adjusted_rand(&[], &[]), 1.0);
    }

    #[test]
    fn tfidf_weights_by_hand() {
        // n = 4. Document frequencies: "apple" 3; "apple banana", "banana", "banana date",
        // "cherry", "cherry date" 2; "apple apple", "banana apple", "apple cherry", "cherry
        // cherry" 1 (dropped by min_df = 2); "date" 4 (in every document: dropped).
        let texts = ["Apple, apple banana date", "banana apple-banana DATE", "cherry date", "apple cherry cherry date"];
        let settings = TopicSettings::default();
        let vocabulary = Vocabulary::new(&texts, &settings).expect("a vocabulary");
        assert_eq!(vocabulary.terms, ["apple", "apple banana", "banana", "banana date", "cherry", "cherry date"]);
        let idf = |df: f64| ((1.0 + 4.0) / (1.0 + df)).ln() + 1.0;
        let tf = |count: f64| 1.0 + f64::ln(count);
        let expected_rows = [
            // "apple" twice, the others once.
            vec![(0, tf(2.0) * idf(3.0)), (1, idf(2.0)), (2, idf(2.0)), (3, idf(2.0))],
            // "banana" twice, the others once.
            vec![(0, idf(3.0)), (1, idf(2.0)), (2, tf(2.0) * idf(2.0)), (3, idf(2.0))],
            vec![(4, idf(2.0)), (5, idf(2.0))],
            // "cherry" twice, the others once.
            vec![(0, idf(3.0)), (4, tf(2.0) * idf(2.0)), (5, idf(2.0))],
        ];
        let matrix = tfidf_matrix(&texts, &vocabulary);
        assert_eq!(matrix.row_count(), 4);
        for (doc, expected) in expected_rows.iter().enumerate() {
            let norm = expected.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
            let (columns, values) = matrix.row(doc);
            assert_eq!(columns, expected.iter().map(|&(c, _)| c).collect::<Vec<u32>>(), "document {doc}");
            for (&value, &(_, weight)) in values.iter().zip(expected) {
                assert!(
                    (f64::from(value) - weight / norm).abs() < 1e-6,
                    "document {doc}: {value} against {}",
                    weight / norm
                );
            }
        }
    }

    #[test]
    fn max_features_keeps_the_most_frequent_ties_by_text() {
        let texts = ["b a", "a b", "c d", "c d", "e"];
        let settings = TopicSettings { max_features: 3, ..TopicSettings::default() };
        let vocabulary = Vocabulary::new(&texts, &settings).expect("a vocabulary");
        // df 2: "a", "b", "c", "d", "c d"; by text the first three.
        assert_eq!(vocabulary.terms, ["a", "b", "c"]);
    }

    #[test]
    fn words_are_lowercased_alphanumeric_runs() {
        let mut terms = Vec::new();
        visit_terms("Ünïcode's  ΣΟΦΙΑ—x2!", &mut TermBuffers::default(), |hash, term| {
            assert_eq!(hash, xxh3_64(term.as_bytes()));
            terms.push(term.to_owned());
        });
        assert_eq!(terms, ["ünïcode", "s", "ünïcode s", "σοφια", "s σοφια", "x2", "σοφια x2"]);
    }

    /// A `rows` × `columns` matrix with about half its entries zero, row-major, and the same
    /// as a sparse one.
    fn random_sparse(rows: usize, columns: usize, seed: u64) -> (Vec<f32>, SparseRows) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dense: Vec<f32> =
            (0..rows * columns).map(|_| if rng.random::<bool>() { rng.random_range(0.1..1.0) } else { 0.0 }).collect();
        let mut sparse = SparseRows { starts: vec![0], columns: Vec::new(), values: Vec::new(), column_count: columns };
        for row in dense.chunks(columns) {
            for (column, &value) in row.iter().enumerate().filter(|&(_, &value)| value != 0.0) {
                sparse.columns.push(column as u32);
                sparse.values.push(value);
            }
            sparse.starts.push(sparse.columns.len());
        }
        (dense, sparse)
    }

    #[test]
    fn sparse_products_equal_dense_ones() {
        let (rows, columns, width) = (300, 70, 9);
        let (dense, sparse) = random_sparse(rows, columns, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let right: Vec<f32> = (0..columns * width).map(|_| rng.random_range(-1.0..1.0)).collect();
        let left: Vec<f32> = (0..rows * width).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut product = vec![0.0; rows * width];
        sparse.multiply(&right, width, &mut product);
        let mut transposed_product = vec![f32::NAN; columns * width];
        sparse.multiply_transposed(&left, width, &mut transposed_product);
        for (i, j) in (0..rows).flat_map(|i| (0..width).map(move |j| (i, j))) {
            let expected: f32 = (0..columns).map(|c| dense[i * columns + c] * right[c * width + j]).sum();
            assert!((product[i * width + j] - expected).abs() < 1e-4, "({i}, {j})");
        }
        for (c, j) in (0..columns).flat_map(|c| (0..width).map(move |j| (c, j))) {
            let expected: f32 = (0..rows).map(|i| dense[i * columns + c] * left[i * width + j]).sum();
            assert!((transposed_product[c * width + j] - expected).abs() < 1e-4, "({c}, {j})");
        }
    }

    #[test]
    fn orthonormalize_keeps_the_span_and_drops_missing_directions() {
        // 500 rows, 6 columns, the last two combinations of the first two: rank 4.
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let width = 6;
        let mut matrix = Vec::new();
        for _ in 0..500 {
            let row: Vec<f32> = (0..4).map(|_| rng.random_range(-1.0..1.0)).collect();
            matrix.extend(&row);
            matrix.extend([row[0] + row[1], 2.0 * row[0] - row[1]]);
        }
        let original = matrix.clone();
        orthonormalize(&mut matrix, width);
        let gram = gram(&matrix, width);
        let kept: Vec<usize> = (0..width).filter(|&c| gram[(c, c)] > 0.5).collect();
        assert_eq!(kept.len(), 4, "{gram}");
        for i in 0..width {
            for j in 0..width {
                let identity = if i == j && kept.contains(&i) { 1.0 } else { 0.0 };
                assert!((gram[(i, j)] - identity).abs() < 1e-5, "({i}, {j}): {gram}");
            }
        }
        // Each original column is its own projection on the new basis.
        let q = DMatrix::from_row_slice(500, width, &matrix.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        let m = DMatrix::from_row_slice(500, width, &original.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        let residual = &m - &q * (q.transpose() * &m);
        assert!(residual.amax() < 1e-4, "{}", residual.amax());
    }

    #[test]
    fn the_embedding_is_the_exact_svd_when_the_basis_spans_every_term() {
        // 12 terms: dims + 10 columns cover them all, so the range finder is exact.
        let (documents, terms, dims) = (40, 12, 3);
        let (dense, sparse) = random_sparse(documents, terms, 7);
        let embeddings = svd_embedding(sparse, dims, 2, 8);
        let exact = DMatrix::from_row_slice(documents, terms, &dense.iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
            .svd(true, false);
        let u = exact.u.expect("asked for");
        let mut expected: Vec<f32> = (0..documents)
            .flat_map(|row| (0..dims).map(|c| (u[(row, c)] * exact.singular_values[c]) as f32).collect::<Vec<_>>())
            .collect();
        expected.chunks_mut(dims).for_each(normalize);
        // Singular vectors are defined up to sign.
        for c in 0..dims {
            let agreement: f32 =
                (0..documents).map(|row| embeddings.values[row * dims + c] * expected[row * dims + c]).sum();
            for row in 0..documents {
                let found = embeddings.values[row * dims + c] * agreement.signum();
                assert!((found - expected[row * dims + c]).abs() < 1e-4, "row {row}, dimension {c}");
            }
        }
    }

    #[test]
    fn kmeans_fills_every_cluster_even_with_repeated_rows() {
        // Four copies of one direction and a zero row, in three clusters.
        let embeddings =
            Embeddings { rows: 5, dims: 2, values: vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0] };
        let labels = spherical_kmeans(&embeddings, 3, 10, 0).expect("k <= rows");
        let mut sizes = [0; 3];
        labels.iter().for_each(|&label| sizes[label as usize] += 1);
        assert!(sizes.iter().all(|&size| size > 0), "{labels:?}");
        assert_eq!(labels[0], 0);
    }
}
