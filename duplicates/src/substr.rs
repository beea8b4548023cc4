//! Repeated substrings across documents (the ExactSubstr idea of Lee et al. 2021), with
//! suffix arrays over shards of the corpus.
//!
//! # Method
//!
//! With L = `min_repeat_bytes`, a byte of a document is covered when some substring of at
//! least L bytes containing it also occurs in another document. Every such substring
//! starts a run of L-byte windows that all occur elsewhere too, so the covered bytes are
//! exactly the union of the L-byte windows `[p, p + L)` of the document that occur in
//! another document. Only windows, never longer matches, need to be found: in a suffix
//! array the suffixes that begin with one window are adjacent, so one pass over the
//! ranks groups them, and a group that holds two documents marks all of its positions.
//!
//! Identical raw texts are one entry of the suffix array, with a multiplicity: a text
//! that occurs twice or more is covered wholly when it has at least L bytes.
//!
//! # Shards
//!
//! The distinct texts are cut, whole, into shards of at most `shard_bytes` bytes (by
//! default the corpus split evenly over the rayon threads, and never more than
//! `i32::MAX`), and each shard gets its own 32-bit suffix array, built on its own thread
//! by libsais: 4 bytes of index per corpus byte at any corpus size, and both cores busy.
//! Repeats that cross shards are not lost: every shard's suffix array lists its windows
//! in the same (lexicographic) order, so one merge of all shards, split into independent
//! key ranges that run in parallel, meets each window once with its occurrences in every
//! shard. The scores are therefore the same for any shard size.
//!
//! # Passage groups
//!
//! The same merge, where asked, joins the distinct texts that share a window in a
//! union-find that every range of the merge updates without locks ([`SharedSets`]):
//! passage groups ([`Passages`]) are its components, like the marked bytes independent of
//! the shards and of the order in which ranges run.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libsais::SuffixArrayConstruction;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

/// Separates documents in the concatenated corpus. It never occurs in UTF-8 text, so a
/// window without it lies inside one document.
const SEPARATOR: u8 = 0xff;

/// Key ranges per thread in the merge of the shards, for load balance.
const RANGES_PER_THREAD: usize = 8;

/// Documents joined when they share a repeat: a substring of at least L bytes that makes
/// bytes of both count in their repeat fraction. One entry per document in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Passages {
    /// Each document's passage group: dense ids 0..G numbered in order of each group's
    /// first document (like `cluster`).
    pub group: Vec<u32>,
    /// Each document's group size.
    pub group_size: Vec<u32>,
    /// Each document's longest run of shared bytes (bytes covered by windows of at least L
    /// bytes that also occur in another document) as a byte range [start, end) of its
    /// text, shrunk inward to UTF-8 char boundaries; of runs equally long after shrinking,
    /// the first. (0, 0) when it has none.
    pub longest_shared: Vec<(u32, u32)>,
}

/// For each document, the fraction of its bytes covered by a substring of at least
/// `min_len` bytes that also occurs in another document; 0 for empty documents.
/// `shard_bytes` bounds the text of one suffix array (None: automatic, see the module
/// documentation); it changes the memory and time, never the result.
///
/// # Panics
///
/// If one document plus its separator exceeds `i32::MAX` bytes.
pub fn repeat_fractions(texts: &[&str], min_len: usize, shard_bytes: Option<usize>) -> Vec<f64> {
    repeats(texts, min_len, shard_bytes, false).0
}

/// [`repeat_fractions`] and, when `passages`, the passage groups of the same repeats, from
/// one pass over the suffix arrays.
///
/// # Panics
///
/// If one document plus its separator exceeds `i32::MAX` bytes.
pub(crate) fn repeats(
    texts: &[&str],
    min_len: usize,
    shard_bytes: Option<usize>,
    passages: bool,
) -> (Vec<f64>, Option<Passages>) {
    let min_len = min_len.max(1);
    let (distinct, copies, distinct_of_doc) = distinct_texts(texts);
    let corpus = Corpus::new(&distinct);
    let shard_bytes = shard_bytes.unwrap_or_else(|| corpus.text.len().div_ceil(rayon::current_num_threads()));
    let shards = corpus.shards(shard_bytes.clamp(1, i32::MAX as usize));
    let suffixes: Vec<Vec<i32>> = shards.par_iter().map(|shard| suffix_array(&corpus.text[shard.clone()])).collect();
    let sets = passages.then(|| SharedSets::new(distinct.len()));
    let marked = corpus.shared_windows(&shards, &suffixes, min_len, sets.as_ref());
    drop(suffixes);

    let coverage: Vec<(f64, (u32, u32))> = (0..distinct.len())
        .into_par_iter()
        .map(|t| {
            let (text, start) = (distinct[t], corpus.starts[t]);
            if copies[t] > 1 {
                // Every byte of the text occurs in another document: its copy.
                return if text.len() >= min_len { (1.0, (0, text.len() as u32)) } else { (0.0, (0, 0)) };
            }
            covered_runs(text, |i| marked.get(start + i), min_len)
        })
        .collect();
    let fractions = distinct_of_doc.iter().map(|&t| coverage[t as usize].0).collect();
    let passages = sets.map(|sets| {
        let longest: Vec<(u32, u32)> = coverage.iter().map(|&(_, longest)| longest).collect();
        Passages::new(&sets, &distinct, &distinct_of_doc, &longest, min_len)
    });
    (fractions, passages)
}

/// The fraction of `text` covered by the `len`-byte windows that start at marked
/// positions, and its longest covered run shrunk inward to char boundaries ((0, 0) for
/// none); 0 for the empty text.
fn covered_runs(text: &str, marked: impl Fn(usize) -> bool, len: usize) -> (f64, (u32, u32)) {
    if text.is_empty() {
        return (0.0, (0, 0));
    }
    let (mut covered, mut longest) = (0, (0, 0));
    // The run being covered: [run_start, reach), where reach is the end of its last window.
    let (mut run_start, mut reach) = (0, 0);
    for i in 0..text.len() {
        if marked(i) {
            // A window starting where the run ends continues it.
            if i > reach {
                longest = longer(text, longest, run_start..reach);
                run_start = i;
            }
            reach = i + len;
        }
        covered += usize::from(i < reach);
    }
    longest = longer(text, longest, run_start..reach);
    (covered as f64 / text.len() as f64, longest)
}

/// The longer of `longest` and `run` shrunk inward to char boundaries of `text`;
/// `longest` when they are equally long.
fn longer(text: &str, longest: (u32, u32), run: Range<usize>) -> (u32, u32) {
    let (start, end) = (text.ceil_char_boundary(run.start), text.floor_char_boundary(run.end));
    if end > start && end - start > (longest.1 - longest.0) as usize { (start as u32, end as u32) } else { longest }
}

impl Passages {
    /// The groups of the documents from the joined sets of their distinct texts, and each
    /// document's longest shared run from its text's. Copies of one text are in its set
    /// already; that joins them only when they have L bytes, as they count as repeats only
    /// then.
    fn new(
        sets: &SharedSets,
        distinct: &[&str],
        distinct_of_doc: &[u32],
        longest: &[(u32, u32)],
        min_len: usize,
    ) -> Passages {
        let mut group_of_root = vec![u32::MAX; distinct.len()];
        let mut sizes: Vec<u32> = Vec::new();
        let group: Vec<u32> = distinct_of_doc
            .iter()
            .map(|&t| {
                let root = sets.find(t) as usize;
                let group = if distinct[t as usize].len() < min_len {
                    sizes.len() as u32
                } else {
                    if group_of_root[root] == u32::MAX {
                        group_of_root[root] = sizes.len() as u32;
                    }
                    group_of_root[root]
                };
                if group as usize == sizes.len() {
                    sizes.push(0);
                }
                sizes[group as usize] += 1;
                group
            })
            .collect();
        Passages {
            group_size: group.iter().map(|&g| sizes[g as usize]).collect(),
            group,
            longest_shared: distinct_of_doc.iter().map(|&t| longest[t as usize]).collect(),
        }
    }
}

/// Disjoint sets of 0..n, joined from many threads without locks. A root is only ever
/// linked under a smaller root, by one compare-and-swap that fails when another thread
/// linked it first, so parents only decrease, no cycle can form, and the sets at the end
/// are the components of all the unions in whatever order they ran. Relaxed ordering
/// suffices: a stale parent is still an ancestor, and the swap that links a root sees its
/// latest parent.
struct SharedSets(Vec<AtomicU32>);

impl SharedSets {
    fn new(n: usize) -> SharedSets {
        SharedSets((0..n as u32).map(AtomicU32::new).collect())
    }

    /// The root of `x`'s set, halving the path on the way.
    fn find(&self, mut x: u32) -> u32 {
        loop {
            let parent = self.0[x as usize].load(Ordering::Relaxed);
            if parent == x {
                return x;
            }
            let grandparent = self.0[parent as usize].load(Ordering::Relaxed);
            if grandparent != parent {
                // Losing the race to another thread's shortcut only leaves the path longer.
                let _ =
                    self.0[x as usize].compare_exchange_weak(parent, grandparent, Ordering::Relaxed, Ordering::Relaxed);
            }
            x = grandparent;
        }
    }

    fn union(&self, a: u32, b: u32) {
        let (mut a, mut b) = (a, b);
        loop {
            (a, b) = (self.find(a), self.find(b));
            if a == b {
                return;
            }
            let (low, high) = (a.min(b), a.max(b));
            if self.0[high as usize].compare_exchange(high, low, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }
}

/// The distinct texts in order of first occurrence, how many documents have each, and
/// each document's distinct text.
fn distinct_texts<'a>(texts: &[&'a str]) -> (Vec<&'a str>, Vec<u32>, Vec<u32>) {
    let hashes: Vec<u128> = texts.par_iter().map(|t| xxh3_128(t.as_bytes())).collect();
    let mut index: HashMap<u128, u32> = HashMap::with_capacity(texts.len());
    let (mut distinct, mut copies, mut distinct_of_doc) = (Vec::new(), Vec::new(), Vec::with_capacity(texts.len()));
    for (text, hash) in texts.iter().zip(hashes) {
        let t = *index.entry(hash).or_insert(distinct.len() as u32);
        // A hash collision between different texts keeps the second one apart.
        let t = if (t as usize) < distinct.len() && distinct[t as usize] == *text {
            t
        } else {
            distinct.push(*text);
            copies.push(0);
            distinct.len() as u32 - 1
        };
        copies[t as usize] += 1;
        distinct_of_doc.push(t);
    }
    (distinct, copies, distinct_of_doc)
}

/// The distinct texts concatenated, each followed by a separator.
struct Corpus {
    text: Vec<u8>,
    /// Where each text starts in `text`, and one past the last separator.
    starts: Vec<usize>,
    /// For each block of `1 << BLOCK_BITS` bytes of `text`, the text holding its first
    /// byte: [`Corpus::doc_at`] searches only the texts of one block.
    block_docs: Vec<u32>,
}

/// Blocks of 1 KiB: a block holds a few texts of web length, and its index costs 1/256 of
/// the text.
const BLOCK_BITS: u32 = 10;

impl Corpus {
    fn new(texts: &[&str]) -> Corpus {
        let total = texts.iter().map(|t| t.len() + 1).sum::<usize>();
        let mut text = Vec::with_capacity(total);
        advise_huge_pages(&mut text);
        let mut starts = Vec::with_capacity(texts.len() + 1);
        for t in texts {
            starts.push(text.len());
            text.extend_from_slice(t.as_bytes());
            text.push(SEPARATOR);
        }
        starts.push(text.len());
        let mut doc = 0;
        let block_docs = (0..text.len().div_ceil(1 << BLOCK_BITS))
            .map(|block| {
                while starts[doc + 1] <= block << BLOCK_BITS {
                    doc += 1;
                }
                doc as u32
            })
            .collect();
        Corpus { text, starts, block_docs }
    }

    /// Byte ranges of `text` holding whole documents, each at most `max_bytes` long unless
    /// one document alone is longer.
    ///
    /// # Panics
    ///
    /// If one document with its separator exceeds `i32::MAX` bytes.
    fn shards(&self, max_bytes: usize) -> Vec<Range<usize>> {
        let mut shards = Vec::new();
        let mut start = 0;
        for window in self.starts.windows(2) {
            let (doc_start, doc_end) = (window[0], window[1]);
            assert!(
                doc_end - doc_start <= i32::MAX as usize,
                "a document of {} bytes is too long for a suffix array",
                doc_end - doc_start - 1
            );
            if doc_end - start > max_bytes && doc_start > start {
                shards.push(start..doc_start);
                start = doc_start;
            }
        }
        if start < self.text.len() {
            shards.push(start..self.text.len());
        }
        shards
    }

    /// The positions (of `text`) whose `len`-byte window lies inside one document and
    /// also occurs in another document, and, into `sets` where given, the union of the
    /// documents of each such window. `suffixes[s]` is the suffix array of `shards[s]`.
    fn shared_windows(
        &self,
        shards: &[Range<usize>],
        suffixes: &[Vec<i32>],
        len: usize,
        sets: Option<&SharedSets>,
    ) -> Bitmap {
        let marked = Bitmap::new(self.text.len());
        // A shard's suffix array ends where the shard does, so its windows must too: read
        // past the shard's end, they would not be in the suffix array's order.
        let window = |shard: usize, suffix: i32| {
            Window::at(&self.text[..shards[shard].end], shards[shard].start + suffix as usize, len)
        };
        // Splitters: windows at even ranks of the largest shard. Suffixes are compared
        // on their first `len` bytes only, so all suffixes of one window fall on one side.
        let largest = (0..shards.len()).max_by_key(|&s| suffixes[s].len()).unwrap_or(0);
        let ranges = rayon::current_num_threads() * RANGES_PER_THREAD;
        let splitters: Vec<Window> = match suffixes.get(largest) {
            Some(ranked) if shards.len() > 1 || ranges > 1 => {
                (1..ranges).map(|k| window(largest, ranked[k * ranked.len() / ranges])).collect()
            }
            _ => Vec::new(),
        };
        let bounds: Vec<Vec<usize>> = (0..shards.len())
            .map(|s| {
                let ranked = &suffixes[s];
                std::iter::once(0)
                    .chain(splitters.iter().map(|&splitter| ranked.partition_point(|&p| window(s, p) < splitter)))
                    .chain(std::iter::once(ranked.len()))
                    .collect()
            })
            .collect();
        (0..=splitters.len()).into_par_iter().for_each(|range| {
            let mut cursors: Vec<Windows> = (0..shards.len())
                .map(|s| Windows {
                    text: &self.text[..shards[s].end],
                    offset: shards[s].start,
                    suffixes: &suffixes[s][bounds[s][range]..bounds[s][range + 1]],
                    next: 0,
                    len,
                    heads: Vec::new(),
                    heads_start: 0,
                })
                .collect();
            let mut heads: Vec<Option<(Window, &[i32])>> = cursors.iter_mut().map(Windows::next).collect();
            let mut holders = Vec::with_capacity(heads.len());
            loop {
                // The least window among the heads and the shards that hold it.
                holders.clear();
                let mut least: Option<Window> = None;
                for (s, head) in heads.iter().enumerate() {
                    let Some((window, _)) = *head else { continue };
                    match least.map(|least| window.cmp(&least)) {
                        Some(std::cmp::Ordering::Greater) => continue,
                        Some(std::cmp::Ordering::Equal) => {}
                        _ => {
                            least = Some(window);
                            holders.clear();
                        }
                    }
                    holders.push(s);
                }
                let Some(least) = least else { break };
                let group = heads[holders[0]].expect("a holder").1;
                // Most windows occur once: those need neither the whole-window test nor
                // documents. Documents never span shards, so a whole window in two shards
                // is in two documents.
                let shared = (holders.len() > 1 || group.len() > 1)
                    && least.is_whole(len)
                    && (holders.len() > 1 || {
                        let doc = self.doc_at(shards[holders[0]].start + group[0] as usize);
                        group[1..].iter().any(|&p| self.doc_at(shards[holders[0]].start + p as usize) != doc)
                    });
                // The first document of the window and the last one joined to it.
                let mut joined: Option<(u32, u32)> = None;
                for &s in &holders {
                    if shared {
                        for &p in heads[s].expect("a holder").1 {
                            let position = shards[s].start + p as usize;
                            marked.set(position);
                            let Some(sets) = sets else { continue };
                            let doc = self.doc_at(position) as u32;
                            match joined {
                                None => joined = Some((doc, doc)),
                                // A document met again right after itself is joined
                                // already.
                                Some((first, last)) if doc != last => {
                                    sets.union(first, doc);
                                    joined = Some((first, doc));
                                }
                                Some(_) => {}
                            }
                        }
                    }
                    heads[s] = cursors[s].next();
                }
            }
        });
        marked
    }

    /// The document holding byte `position` of `text`. It is called for every position of
    /// a shared window, so it searches only the texts of the position's block: those from
    /// the one holding the block's first byte to the one holding the next block's.
    fn doc_at(&self, position: usize) -> usize {
        let block = position >> BLOCK_BITS;
        let first = self.block_docs[block] as usize;
        let last = self.block_docs.get(block + 1).map_or(self.starts.len() - 2, |&doc| doc as usize);
        first + self.starts[first..=last].partition_point(|&start| start <= position) - 1
    }
}

/// Walks a run of a suffix array window by window: each step gives one window (the
/// first `len` bytes of a suffix, fewer at the end of the text) and the suffixes (shard
/// offsets) that start with it.
struct Windows<'a> {
    text: &'a [u8],
    offset: usize,
    suffixes: &'a [i32],
    next: usize,
    len: usize,
    /// The heads of the windows of `suffixes[heads_start..]`, read a batch at a time.
    heads: Vec<u128>,
    heads_start: usize,
}

impl<'a> Windows<'a> {
    /// Windows whose heads are read together. Suffixes in lexicographic order start at
    /// random places of the text, so every head is a cache miss; read in a loop of
    /// independent loads, the misses of a batch overlap instead of following each other.
    const BATCH: usize = 256;

    /// The window of `suffixes[index]`.
    fn window(&mut self, index: usize) -> Window<'a> {
        if index >= self.heads_start + self.heads.len() {
            let batch = &self.suffixes[index..(index + Self::BATCH).min(self.suffixes.len())];
            self.heads.clear();
            self.heads.extend(batch.iter().map(|&suffix| head(self.text, self.offset + suffix as usize, self.len)));
            self.heads_start = index;
        }
        let start = self.offset + self.suffixes[index] as usize;
        Window {
            head: self.heads[index - self.heads_start],
            bytes: &self.text[start..(start + self.len).min(self.text.len())],
        }
    }

    fn next(&mut self) -> Option<(Window<'a>, &'a [i32])> {
        let first = self.next;
        if first >= self.suffixes.len() {
            return None;
        }
        let window = self.window(first);
        self.next += 1;
        while self.next < self.suffixes.len() && self.window(self.next) == window {
            self.next += 1;
        }
        Some((window, &self.suffixes[first..self.next]))
    }
}

/// The first 16 bytes of the window of `len` bytes at `start` (fewer at the end of the
/// text), as a big-endian number padded with zeros.
fn head(text: &[u8], start: usize, len: usize) -> u128 {
    let bytes = &text[start..(start + len.min(16)).min(text.len())];
    match bytes.first_chunk::<16>() {
        Some(first) => u128::from_be_bytes(*first),
        None => {
            let mut head = [0u8; 16];
            head[..bytes.len()].copy_from_slice(bytes);
            u128::from_be_bytes(head)
        }
    }
}

/// The bytes of a window, compared first by their first 16 bytes as one number, which
/// settles most comparisons without a call to memcmp.
#[derive(Clone, Copy)]
struct Window<'a> {
    head: u128,
    bytes: &'a [u8],
}

impl<'a> Window<'a> {
    /// The up to `len` bytes of `text` from `start`.
    fn at(text: &'a [u8], start: usize, len: usize) -> Window<'a> {
        Window { head: head(text, start, len), bytes: &text[start..(start + len).min(text.len())] }
    }

    /// Whether the window has all `len` bytes and lies inside one document.
    fn is_whole(&self, len: usize) -> bool {
        self.bytes.len() == len && !self.bytes.contains(&SEPARATOR)
    }
}

impl PartialEq for Window<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.bytes == other.bytes
    }
}

impl Eq for Window<'_> {}

impl PartialOrd for Window<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Window<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Zero padding sorts a short head before any longer one it prefixes, as bytes do.
        self.head.cmp(&other.head).then_with(|| self.bytes.cmp(other.bytes))
    }
}

/// One bit per position, set from many threads.
struct Bitmap(Vec<AtomicU64>);

impl Bitmap {
    fn new(len: usize) -> Bitmap {
        let mut words = Vec::with_capacity(len.div_ceil(64));
        advise_huge_pages(&mut words);
        words.extend((0..len.div_ceil(64)).map(|_| AtomicU64::new(0)));
        Bitmap(words)
    }

    fn set(&self, position: usize) {
        self.0[position / 64].fetch_or(1 << (position % 64), Ordering::Relaxed);
    }

    fn get(&self, position: usize) -> bool {
        self.0[position / 64].load(Ordering::Relaxed) & (1 << (position % 64)) != 0
    }
}

/// The suffix array of `text` (start positions of its suffixes in lexicographic order),
/// built by libsais on the calling thread. `text` is at most `i32::MAX` bytes.
///
/// # Panics
///
/// If libsais runs out of memory.
fn suffix_array(text: &[u8]) -> Vec<i32> {
    let mut suffixes = Vec::with_capacity(text.len());
    advise_huge_pages(&mut suffixes);
    suffixes.resize(text.len(), 0);
    // libsais fails only on invalid input, which the types rule out, or without memory.
    SuffixArrayConstruction::for_text(text)
        .in_borrowed_buffer(&mut suffixes)
        .single_threaded()
        .run()
        .expect("libsais ran out of memory for the suffix array");
    suffixes
}

/// Asks the kernel to back the (still unused) capacity of `buffer` with 2 MiB pages. The
/// text, the suffix arrays and the bitmap are read in random order, and with 4 KiB pages
/// nearly every such read also misses the TLB, which costs more than the read.
fn advise_huge_pages<T>(buffer: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buffer.as_mut_ptr() as usize;
        let end = start + buffer.capacity() * size_of::<T>();
        let aligned = start.next_multiple_of(PAGE);
        if end > aligned + PAGE {
            // SAFETY: the range lies inside the vector's allocation, and the advice changes
            // how its pages are backed, never their contents. It may fail (for example
            // where transparent huge pages are off); that only loses the speed-up.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, end - aligned, libc::MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_array_of_banana() {
        // a, ana, anana, banana, na, nana
        assert_eq!(suffix_array(b"banana"), vec![5, 3, 1, 0, 4, 2]);
    }

    #[test]
    fn repeat_fraction_counts_only_substrings_shared_with_another_document() {
        // "abcd" (4 bytes) occurs in documents 0 and 1; document 2 repeats "wxyz" only
        // within itself, which does not count; document 3 is empty.
        let texts = ["abcdXY", "QabcdQ", "wxyzwxyz", ""];
        let fractions = repeat_fractions(&texts, 4, None);
        assert_eq!(fractions, vec![4.0 / 6.0, 4.0 / 6.0, 0.0, 0.0]);
        // With L = 5 the shared 4-byte substring is too short.
        assert_eq!(repeat_fractions(&texts, 5, None), vec![0.0; 4]);
    }

    #[test]
    fn repeat_fraction_takes_the_union_of_overlapping_matches() {
        // Document 0 shares "hello" with 1 and "llo wo" with 2: bytes 0..8 of "hello world"
        // are covered (union of [0, 5) and [2, 8)), 8 of 11.
        let texts = ["hello world", "say hello", "all llo wo"];
        let fractions = repeat_fractions(&texts, 4, None);
        assert_eq!(fractions[0], 8.0 / 11.0);
        assert_eq!(fractions[1], 5.0 / 9.0);
        assert_eq!(fractions[2], 6.0 / 10.0);
        // A whole document repeated elsewhere is fully covered, unless shorter than L.
        assert_eq!(repeat_fractions(&["same text", "same text", "x"], 3, None), vec![1.0, 1.0, 0.0]);
        assert_eq!(repeat_fractions(&["same", "same"], 5, None), vec![0.0, 0.0]);
    }

    /// Whether each byte of each document is covered, by comparing every window with every
    /// other document.
    fn brute_force_covered(texts: &[&str], len: usize) -> Vec<Vec<bool>> {
        texts
            .iter()
            .enumerate()
            .map(|(d, text)| {
                let bytes = text.as_bytes();
                let mut covered = vec![false; bytes.len()];
                for p in 0..bytes.len().saturating_sub(len - 1) {
                    let window = &bytes[p..p + len];
                    let elsewhere = texts
                        .iter()
                        .enumerate()
                        .any(|(e, other)| e != d && other.as_bytes().windows(len).any(|w| w == window));
                    if elsewhere {
                        covered[p..p + len].iter_mut().for_each(|c| *c = true);
                    }
                }
                covered
            })
            .collect()
    }

    fn brute_force(texts: &[&str], len: usize) -> Vec<f64> {
        brute_force_covered(texts, len)
            .iter()
            .map(|covered| {
                if covered.is_empty() {
                    0.0
                } else {
                    covered.iter().filter(|&&c| c).count() as f64 / covered.len() as f64
                }
            })
            .collect()
    }

    /// Passage groups (numbered in order of first document) by joining documents i and j
    /// when a `len`-byte window of i occurs in j.
    fn brute_force_groups(texts: &[&str], len: usize) -> Vec<u32> {
        let mut sets = crate::UnionFind::new(texts.len());
        for (i, text) in texts.iter().enumerate() {
            for (j, other) in texts.iter().enumerate() {
                if i != j && text.as_bytes().windows(len).any(|w| other.as_bytes().windows(len).any(|o| o == w)) {
                    sets.union(i, j);
                }
            }
        }
        dense(&sets.sets(&vec![1; texts.len()]).0)
    }

    /// Set names renumbered 0, 1, … in order of first appearance.
    fn dense(names: &[u32]) -> Vec<u32> {
        let mut ids = HashMap::new();
        names
            .iter()
            .map(|&name| {
                let next = ids.len() as u32;
                *ids.entry(name).or_insert(next)
            })
            .collect()
    }

    /// The longest run of covered bytes, shrunk inward to char boundaries (the first of
    /// equally long ones), from each byte's coverage.
    fn longest_run(text: &str, covered: &[bool]) -> (u32, u32) {
        let mut longest = (0, 0);
        let mut start = 0;
        while start < covered.len() {
            let end = (start..covered.len()).find(|&i| !covered[i]).unwrap_or(covered.len());
            let (run_start, run_end) = (text.ceil_char_boundary(start), text.floor_char_boundary(end));
            if run_end > run_start && run_end - run_start > longest.1 - longest.0 {
                longest = (run_start, run_end);
            }
            start = end + 1;
        }
        (longest.0 as u32, longest.1 as u32)
    }

    fn sizes(group: &[u32]) -> Vec<u32> {
        group.iter().map(|&g| group.iter().filter(|&&h| h == g).count() as u32).collect()
    }

    #[test]
    fn repeats_across_shards_count_the_same_as_within_one() {
        // Shared pieces land in different shards once shards hold one or two documents.
        let texts = [
            "the cat sat on the mat",
            "a dog sat on the mat too",
            "cat sat on",
            "",
            "nothing in common here!",
            "the cat sat on the mat",
            "mat too, said the dog",
            "zz the mat zz",
        ];
        // Many threads mean many splitters of the merge, each compared with windows near
        // the end of a shard (a 16-core machine once failed here, 2 cores did not).
        for threads in [1, 2, 16] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for len in [1, 3, 6, 10, 30] {
                let expected = brute_force(&texts, len);
                for shard_bytes in [None, Some(1), Some(16), Some(40), Some(1 << 20)] {
                    let got = pool.install(|| repeat_fractions(&texts, len, shard_bytes));
                    assert_eq!(got, expected, "L = {len}, shards {shard_bytes:?}, {threads} threads");
                }
            }
        }
        let corpus = Corpus::new(&texts);
        assert_eq!(corpus.shards(1).len(), texts.len(), "a tiny shard size gives one document per shard");
        assert_eq!(corpus.shards(40).len(), 5);
    }

    #[test]
    fn doc_at_finds_the_text_of_every_position() {
        // Texts shorter and longer than a block of 1,024 bytes, empty ones, and the first
        // filling the first block with its separator.
        let long = ["x".repeat(1023), "y".repeat(3000), "z".repeat(700)];
        let texts = [&long[0], "ab", "", "", &long[1], "c", &long[2], "", "d"];
        let corpus = Corpus::new(&texts);
        for position in 0..corpus.text.len() {
            let doc = corpus.starts.partition_point(|&start| start <= position) - 1;
            assert_eq!(corpus.doc_at(position), doc, "position {position}");
        }
    }

    #[test]
    fn passage_groups_are_the_brute_force_components_for_any_shards_and_threads() {
        let texts = [
            "the cat sat on the mat",
            "a dog sat on the mat too",
            "cat sat on",
            "",
            "nothing in common here!",
            "the cat sat on the mat",
            "mat too, said the dog",
            "zz the mat zz",
            // A chain at L = 5: "gamma" joins the first two, "epsilon" the last two.
            "alpha beta gamma",
            "gamma delta epsilon",
            "epsilon zeta",
            // Identical, shorter than L or not.
            "tiny",
            "tiny",
            "naïve café — über straße",
            "un café — über alles",
            "straße ∑∑ naïve",
        ];
        for threads in [1, 2, 16] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for len in [1, 3, 5, 6, 10, 30] {
                let covered = brute_force_covered(&texts, len);
                let group = brute_force_groups(&texts, len);
                let longest: Vec<(u32, u32)> = texts.iter().zip(&covered).map(|(t, c)| longest_run(t, c)).collect();
                for shard_bytes in [None, Some(1), Some(16), Some(40), Some(1 << 20)] {
                    let case = format!("L = {len}, shards {shard_bytes:?}, {threads} threads");
                    let (fractions, passages) = pool.install(|| repeats(&texts, len, shard_bytes, true));
                    let passages = passages.expect("asked for");
                    assert_eq!(fractions, brute_force(&texts, len), "{case}");
                    assert_eq!(passages.group, group, "{case}");
                    assert_eq!(passages.group_size, sizes(&group), "{case}");
                    assert_eq!(passages.longest_shared, longest, "{case}");
                    assert!(pool.install(|| repeats(&texts, len, shard_bytes, false)).1.is_none());
                }
            }
        }
        let group = repeats(&texts, 5, None, true).1.expect("asked for").group;
        // The chain is one group, though its ends share nothing.
        assert_eq!((group[8], group[9]), (group[10], group[10]));
        assert_eq!(brute_force_groups(&[texts[8], texts[10]], 5), [0, 1]);
        // Copies shorter than L stay apart, the empty text too.
        assert_ne!(group[11], group[12]);
        assert_eq!(sizes(&group)[3], 1);
    }

    #[test]
    fn longest_shared_is_the_longest_run_shrunk_to_char_boundaries() {
        // Document 0 shares "first run" (bytes 3..12) with 1 and "the longer second run"
        // (16..37) with 2; 3 shares "abcd" with 4 and "efgh" with 5, runs that touch.
        let texts = [
            "xx first run yy the longer second run zz",
            "first run",
            "the longer second run",
            "abcdefgh",
            "abcd",
            "efgh",
        ];
        let passages = repeats(&texts, 4, None, true).1.expect("asked for");
        assert_eq!(passages.longest_shared, [(16, 37), (0, 9), (0, 21), (0, 8), (0, 4), (0, 4)]);
        assert_eq!(passages.group, [0, 0, 0, 1, 1, 1]);
        assert_eq!(passages.group_size, [3; 6]);

        // "é" is C3 A9 and "ɩ" C9 A9: the shared bytes "\xA9 shared tail" start inside a
        // character, at byte 2, and the range after it.
        let passages = repeats(&["aé shared tail", "bɩ shared tail"], 5, None, true).1.expect("asked for");
        assert_eq!(passages.longest_shared, [(3, 15), (3, 15)]);
        // "é" and "è" (C3 A8): the shared "head shared \xC3" ends inside one, at byte 13.
        let passages = repeats(&["head shared é x", "head shared è y"], 5, None, true).1.expect("asked for");
        assert_eq!(passages.longest_shared, [(0, 12), (0, 12)]);
        // Nothing shared, or a text copied but shorter than L: no range, no group.
        let passages = repeats(&["abc", "abc", "", "xyz"], 5, None, true).1.expect("asked for");
        assert_eq!(passages.longest_shared, [(0, 0); 4]);
        assert_eq!(passages.group, [0, 1, 2, 3]);
        let passages = repeats(&["abcde", "abcde"], 5, None, true).1.expect("asked for");
        assert_eq!((passages.longest_shared, passages.group), (vec![(0, 5); 2], vec![0, 0]));
    }
}
