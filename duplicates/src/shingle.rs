//! Normalization, shingling and exact Jaccard similarity on shingle sets.

use xxhash_rust::xxh3::xxh3_64;

use crate::Shingling;

/// Lowercases `text` (Unicode-aware) and collapses every run of whitespace to one space,
/// trimming both ends: the text that shingles are cut from.
///
/// ```
/// assert_eq!(duplicates::normalize("  The CAT\n\tsat  "), "the cat sat");
/// assert_eq!(duplicates::normalize("ÄPFEL und Birnen"), "äpfel und birnen");
/// ```
pub fn normalize(text: &str) -> String {
    if text.is_ascii() { normalize_ascii(text) } else { normalize_unicode(text) }
}

/// [`normalize`] for ASCII text, in one pass over bytes.
fn normalize_ascii(text: &str) -> String {
    // The ASCII characters with the Unicode White_Space property, which split_whitespace
    // splits on (u8::is_ascii_whitespace leaves out the vertical tab).
    let is_space = |byte: &u8| matches!(byte, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
    let mut out = Vec::with_capacity(text.len());
    for word in text.as_bytes().split(is_space).filter(|word| !word.is_empty()) {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend(word.iter().map(u8::to_ascii_lowercase));
    }
    String::from_utf8(out).expect("ASCII is UTF-8")
}

fn normalize_unicode(text: &str) -> String {
    let lower = text.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    for word in lower.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The sorted, deduplicated 64-bit hashes of the shingles of `normalized` (the output of
/// [`normalize`]).
///
/// Because normalized text separates words by exactly one space, every word or character
/// n-gram is a contiguous slice of it, so each shingle is hashed in place without
/// building a string. A text shorter than one shingle is one shingle; an empty text has
/// none. A shingle length of 0 counts as 1.
pub fn shingle_hashes(normalized: &str, shingling: Shingling) -> Vec<u64> {
    if normalized.is_empty() {
        return Vec::new();
    }
    // Byte offsets where each unit (word or char) starts, then one past the text's end
    // as if another unit started after a separator of `gap` bytes.
    let (n, mut starts, gap) = match shingling {
        Shingling::Words(n) => {
            let starts: Vec<usize> =
                std::iter::once(0).chain(normalized.match_indices(' ').map(|(i, _)| i + 1)).collect();
            (n, starts, 1)
        }
        Shingling::Chars(n) => (n, normalized.char_indices().map(|(i, _)| i).collect(), 0),
    };
    let n = n.max(1);
    let units = starts.len();
    starts.push(normalized.len() + gap);
    let bytes = normalized.as_bytes();
    let mut hashes: Vec<u64> = if units <= n {
        vec![xxh3_64(bytes)]
    } else {
        (0..=units - n).map(|i| xxh3_64(&bytes[starts[i]..starts[i + n] - gap])).collect()
    };
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// Size of the intersection of two sorted, deduplicated slices.
fn intersection(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut common) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common
}

/// Exact Jaccard similarity of two sorted, deduplicated shingle-hash sets; 0 when either is
/// empty.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let common = intersection(a, b);
    common as f64 / (a.len() + b.len() - common) as f64
}

/// [`jaccard`] when it is at least `threshold`, else None; gives up on a pair as soon as
/// the shingles left to compare cannot lift it to the threshold, which makes all-pairs
/// comparison of mostly unrelated documents much cheaper without changing its answer.
pub fn jaccard_at_least(a: &[u64], b: &[u64], threshold: f64) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (small, large) = if a.len() <= b.len() { (a.len(), b.len()) } else { (b.len(), a.len()) };
    // J <= |small| / |large|: sizes alone can rule a pair out.
    if (small as f64 / large as f64) < threshold {
        return None;
    }
    // J = I / (|a| + |b| - I) >= t  <=>  I >= t (|a| + |b|) / (1 + t); the slack absorbs
    // rounding so that no pair the exact test accepts is abandoned.
    let needed = threshold * (a.len() + b.len()) as f64 / (1.0 + threshold) - 1e-9;
    let (mut i, mut j, mut common) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if ((common + (a.len() - i).min(b.len() - j)) as f64) < needed {
            return None;
        }
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let similarity = common as f64 / (a.len() + b.len() - common) as f64;
    (similarity >= threshold).then_some(similarity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_unicode_and_collapses_whitespace() {
        assert_eq!(normalize("  Hello\tWORLD\n\nagain  "), "hello world again");
        assert_eq!(normalize("ÉCOLE Straße ΣΟΦΙΑ"), "école straße σοφια");
        assert_eq!(normalize("a\u{a0}\u{2003}b"), "a b");
        assert_eq!(normalize(" \t\n "), "");
    }

    #[test]
    fn ascii_fast_path_matches_the_unicode_path() {
        for text in ["", "  ", "A", " Hello,\tWORLD!\r\n\x0b\x0c end ", "x\x0by", "a  b\n\nc\t", "\x00Z\x1f"] {
            assert_eq!(normalize_ascii(text), normalize_unicode(text), "{text:?}");
        }
    }

    #[test]
    fn short_text_is_one_shingle_and_empty_text_has_none() {
        let words = Shingling::Words(5);
        assert_eq!(shingle_hashes("only four words here", words), vec![xxh3_64(b"only four words here")]);
        assert_eq!(shingle_hashes("abc", Shingling::Chars(5)), vec![xxh3_64(b"abc")]);
        assert!(shingle_hashes("", words).is_empty());
    }

    #[test]
    fn shingles_are_the_contiguous_ngrams() {
        let mut expected = vec![xxh3_64(b"a b c"), xxh3_64(b"b c d"), xxh3_64(b"c d a")];
        expected.sort_unstable();
        assert_eq!(shingle_hashes("a b c d a", Shingling::Words(3)), expected);

        // "abab" has char bigrams {ab, ba, ab}: two distinct shingles.
        let mut expected = vec![xxh3_64(b"ab"), xxh3_64(b"ba")];
        expected.sort_unstable();
        assert_eq!(shingle_hashes("abab", Shingling::Chars(2)), expected);
        // Multi-byte chars are whole units.
        assert_eq!(shingle_hashes("éé", Shingling::Chars(1)), vec![xxh3_64("é".as_bytes())]);
    }

    #[test]
    fn jaccard_matches_hand_computation() {
        // Word bigrams: "a b c d" -> {ab, bc, cd}; "a b c e" -> {ab, bc, ce};
        // intersection 2, union 4.
        let words = Shingling::Words(2);
        let x = shingle_hashes("a b c d", words);
        let y = shingle_hashes("a b c e", words);
        assert_eq!(jaccard(&x, &y), 0.5);
        assert_eq!(jaccard(&x, &x), 1.0);
        assert_eq!(jaccard(&x, &[]), 0.0);
        assert_eq!(jaccard_at_least(&x, &y, 0.5), Some(0.5));
        assert_eq!(jaccard_at_least(&x, &y, 0.51), None);
    }

    #[test]
    fn jaccard_at_least_agrees_with_jaccard() {
        let sets: Vec<Vec<u64>> = (0..40u64)
            .map(|k| (0..20 + k % 7).map(|v| (v * (k % 3 + 1)) ^ (k % 5)).collect::<Vec<_>>())
            .map(|mut v| {
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        for a in &sets {
            for b in &sets {
                for t in [0.3, 0.5, 0.8, 1.0] {
                    let j = jaccard(a, b);
                    assert_eq!(jaccard_at_least(a, b, t), (j >= t).then_some(j));
                }
            }
        }
    }
}
