//! Repeated substrings across documents (the ExactSubstr idea of Lee et al. 2021), with a
//! suffix array over the whole corpus.

use libsais::SuffixArrayConstruction;
use rayon::prelude::*;

/// Separates documents in the concatenated corpus. It never occurs in UTF-8 text, so no
/// common prefix of two suffixes starting inside documents extends past the end of the
/// shorter document's text.
const SEPARATOR: u8 = 0xff;

/// Marks suffixes that start on a separator: they belong to no document.
const NO_DOC: u32 = u32::MAX;

/// For each document, the fraction of its bytes covered by a substring of at least
/// `min_len` bytes that also occurs in another document; 0 for empty documents.
///
/// # Panics
///
/// If the corpus plus one separator per document exceeds `i32::MAX` bytes, the suffix
/// array's index limit.
pub fn repeat_fractions(texts: &[&str], min_len: usize) -> Vec<f64> {
    let min_len = min_len.max(1);
    let total = texts.iter().map(|t| t.len() + 1).sum::<usize>();
    assert!(total <= i32::MAX as usize, "corpus of {total} bytes is too large for the suffix array");
    let mut text = Vec::with_capacity(total);
    let mut starts = Vec::with_capacity(texts.len());
    for t in texts {
        starts.push(text.len() as u32);
        text.extend_from_slice(t.as_bytes());
        text.push(SEPARATOR);
    }

    let (suffixes, lcp) = suffixes_and_lcp(&text);
    let mut doc_at = Vec::with_capacity(total);
    for (doc, t) in texts.iter().enumerate() {
        doc_at.extend(std::iter::repeat_n(doc as u32, t.len()));
        doc_at.push(NO_DOC);
    }
    let doc_of_rank: Vec<u32> = suffixes.par_iter().map(|&p| doc_at[p as usize]).collect();
    drop(doc_at);

    // longest[r]: the longest common prefix of suffix r with any suffix of another
    // document. Ranks adjacent to r give it, and scanning away from r the first rank of a
    // different document is the best (LCP over a rank range is the minimum of the lcp
    // array), so one pass downward and one upward carry it.
    let n = suffixes.len();
    let mut longest = vec![0u32; n];
    let mut carried = 0;
    for r in (0..n.saturating_sub(1)).rev() {
        carried = if doc_of_rank[r + 1] != doc_of_rank[r] { lcp[r + 1] } else { carried.min(lcp[r + 1]) };
        longest[r] = carried;
    }
    carried = 0;
    for r in 1..n {
        carried = if doc_of_rank[r - 1] != doc_of_rank[r] { lcp[r] } else { carried.min(lcp[r]) };
        longest[r] = longest[r].max(carried);
    }
    drop((lcp, doc_of_rank));
    let mut longest_at = vec![0u32; n];
    for (r, &p) in suffixes.iter().enumerate() {
        longest_at[p as usize] = longest[r];
    }

    texts
        .par_iter()
        .zip(starts)
        .map(|(t, start)| {
            let start = start as usize;
            let len = t.len();
            let mut covered = 0;
            let mut reach = 0;
            for i in 0..len {
                let repeat = (longest_at[start + i] as usize).min(len - i);
                if repeat >= min_len {
                    reach = reach.max(i + repeat);
                }
                if i < reach {
                    covered += 1;
                }
            }
            if len == 0 { 0.0 } else { covered as f64 / len as f64 }
        })
        .collect()
}

/// The suffix array of `text` (start positions of its suffixes in lexicographic order)
/// and its LCP array (`lcp[r]`: the longest common prefix of the suffixes of rank r - 1
/// and r; `lcp[0]` = 0), built by libsais. `text` is at most `i32::MAX` bytes.
///
/// # Panics
///
/// If libsais runs out of memory.
fn suffixes_and_lcp(text: &[u8]) -> (Vec<u32>, Vec<u32>) {
    // libsais fails only on invalid input, which the types rule out, or without memory.
    const FAILED: &str = "libsais ran out of memory for the suffix array";
    let suffixes = SuffixArrayConstruction::for_text(text).in_owned_buffer32().single_threaded().run().expect(FAILED);
    let with_lcp = suffixes
        .plcp_construction()
        .single_threaded()
        .run()
        .expect(FAILED)
        .lcp_construction()
        .single_threaded()
        .run()
        .expect(FAILED);
    let (suffixes, lcp, _, _) = with_lcp.into_parts();
    let unsigned = |values: Vec<i32>| values.into_iter().map(|v| v as u32).collect();
    (unsigned(suffixes), unsigned(lcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcp_of_banana() {
        // a, ana, anana, banana, na, nana
        let (suffixes, lcp) = suffixes_and_lcp(b"banana");
        assert_eq!(suffixes, vec![5, 3, 1, 0, 4, 2]);
        assert_eq!(lcp, vec![0, 1, 3, 0, 0, 2]);
    }

    #[test]
    fn repeat_fraction_counts_only_substrings_shared_with_another_document() {
        // "abcd" (4 bytes) occurs in documents 0 and 1; document 2 repeats "wxyz" only
        // within itself, which does not count; document 3 is empty.
        let texts = ["abcdXY", "QabcdQ", "wxyzwxyz", ""];
        let fractions = repeat_fractions(&texts, 4);
        assert_eq!(fractions, vec![4.0 / 6.0, 4.0 / 6.0, 0.0, 0.0]);
        // With L = 5 the shared 4-byte substring is too short.
        assert_eq!(repeat_fractions(&texts, 5), vec![0.0; 4]);
    }

    #[test]
    fn repeat_fraction_takes_the_union_of_overlapping_matches() {
        // Document 0 shares "hello" with 1 and "llo wo" with 2: bytes 0..8 of "hello world"
        // are covered (union of [0, 5) and [2, 8)), 8 of 11.
        let texts = ["hello world", "say hello", "all llo wo"];
        let fractions = repeat_fractions(&texts, 4);
        assert_eq!(fractions[0], 8.0 / 11.0);
        assert_eq!(fractions[1], 5.0 / 9.0);
        assert_eq!(fractions[2], 6.0 / 10.0);
        // A whole document repeated elsewhere is fully covered.
        assert_eq!(repeat_fractions(&["same text", "same text", "x"], 3), vec![1.0, 1.0, 0.0]);
    }
}
