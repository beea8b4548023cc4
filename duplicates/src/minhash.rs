//! MinHash signatures and LSH banding: which pairs of documents are worth comparing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// LSH banding of a MinHash signature: `bands` bands of `rows` values each; two documents
/// become a candidate pair when they agree on every value of some band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banding {
    pub bands: usize,
    pub rows: usize,
}

impl Banding {
    /// Signature values this banding uses.
    pub fn signature_len(&self) -> usize {
        self.bands * self.rows
    }

    /// Probability that a pair with Jaccard similarity `jaccard` agrees on all rows of at
    /// least one band, i.e. becomes a candidate: 1 - (1 - J^rows)^bands.
    pub fn catch_probability(&self, jaccard: f64) -> f64 {
        1.0 - (1.0 - jaccard.powi(self.rows as i32)).powi(self.bands as i32)
    }

    /// The key of each band of `signature` (at least [`Self::signature_len`] values).
    pub fn keys(&self, signature: &[u32]) -> Vec<u64> {
        signature.chunks_exact(self.rows).take(self.bands).map(band_key).collect()
    }

    /// The banding with the most rows per band (fewest false candidates) whose catch
    /// probability at `threshold` is at least `min_recall`, using at most `num_perm`
    /// signature values; when none reaches it, one row per band, the highest catch
    /// probability `num_perm` allows.
    pub fn choose(threshold: f64, num_perm: usize, min_recall: f64) -> Banding {
        let num_perm = num_perm.max(1);
        (1..=num_perm)
            .rev()
            .map(|rows| Banding { bands: num_perm / rows, rows })
            .find(|banding| banding.catch_probability(threshold) >= min_recall)
            .unwrap_or(Banding { bands: num_perm, rows: 1 })
    }
}

/// The MinHash hash functions, from the multiply-shift family: value i of shingle hash h
/// is the high 32 bits of `a_i * h + b_i` (wrapping), with `a_i` odd. The shingle hashes
/// are already well mixed, so this cheap family serves as random permutations (the
/// recall test against brute force checks it), at one multiply-add per value.
pub struct Permutations {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl Permutations {
    /// `len` functions drawn from `seed`.
    pub fn new(len: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (a, b) = (0..len).map(|_| (rng.next_u64() | 1, rng.next_u64())).unzip();
        Permutations { a, b }
    }

    /// The MinHash signature of a non-empty shingle-hash set.
    pub fn signature(&self, hashes: &[u64]) -> Vec<u32> {
        let mut signature = vec![u32::MAX; self.a.len()];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.fold_avx2(hashes, &mut signature) };
            return signature;
        }
        self.fold(hashes, &mut signature);
        signature
    }

    /// Lowers `signature` to the minimum over `hashes` of each hash function; this loop is
    /// most of the cost of finding near-duplicates.
    #[inline(always)]
    fn fold(&self, hashes: &[u64], signature: &mut [u32]) {
        for &h in hashes {
            for ((min, &a), &b) in signature.iter_mut().zip(&self.a).zip(&self.b) {
                *min = (*min).min((a.wrapping_mul(h).wrapping_add(b) >> 32) as u32);
            }
        }
    }

    /// [`Self::fold`] compiled for AVX2: its 64-bit multiplies and unsigned minimums
    /// vectorize there, making signatures nearly 3 times faster than with the SSE2
    /// baseline of x86-64.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fold_avx2(&self, hashes: &[u64], signature: &mut [u32]) {
        self.fold(hashes, signature);
    }
}

/// Hash of one band of a signature; a collision only adds a candidate, which exact
/// verification then rejects.
fn band_key(values: &[u32]) -> u64 {
    values
        .iter()
        .fold(0x9e37_79b9_7f4a_7c15, |key, &v| (key ^ u64::from(v)).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29))
}

/// The buckets of one band that hold two or more documents: documents whose signatures
/// agree on every row of the band (or whose band keys collide, which only adds candidates
/// that verification rejects).
pub struct BandBuckets {
    /// Band keys, increasing.
    keys: Vec<u64>,
    /// Bucket k holds `members[starts[k]..starts[k + 1]]`, increasing.
    starts: Vec<usize>,
    members: Vec<u32>,
}

impl BandBuckets {
    /// The buckets of band `band`, where `band_keys[d]` are the band keys of document d
    /// (empty for a document without a signature).
    pub fn new(band_keys: &[Vec<u64>], band: usize) -> BandBuckets {
        let mut keyed: Vec<(u64, u32)> =
            band_keys.iter().enumerate().filter_map(|(doc, keys)| Some((*keys.get(band)?, doc as u32))).collect();
        keyed.sort_unstable();
        let mut buckets = BandBuckets { keys: Vec::new(), starts: vec![0], members: Vec::new() };
        for bucket in keyed.chunk_by(|x, y| x.0 == y.0).filter(|bucket| bucket.len() > 1) {
            buckets.keys.push(bucket[0].0);
            buckets.members.extend(bucket.iter().map(|&(_, doc)| doc));
            buckets.starts.push(buckets.members.len());
        }
        buckets
    }

    /// The documents of the bucket with `key`, none when it holds fewer than two.
    pub fn members(&self, key: u64) -> &[u32] {
        match self.keys.binary_search(&key) {
            Ok(k) => &self.members[self.starts[k]..self.starts[k + 1]],
            Err(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banding_reaches_recall_at_threshold_with_most_rows() {
        let banding = Banding::choose(0.8, 128, 0.99);
        assert!(banding.signature_len() <= 128);
        let caught = 1.0 - (1.0 - 0.8f64.powi(banding.rows as i32)).powi(banding.bands as i32);
        assert!(caught >= 0.99, "{caught}");
        assert_eq!((banding.bands, banding.rows), (21, 6));
        // One more row per band, with as many bands as fit, misses the target.
        let longer = Banding { bands: 128 / 7, rows: 7 };
        assert!(longer.catch_probability(0.8) < 0.99);
        // A banding that balances false positives against false negatives instead, such
        // as 9 bands of 13 rows, catches under half of the pairs at the threshold.
        assert!(Banding { bands: 9, rows: 13 }.catch_probability(0.8) < 0.5);
    }

    #[test]
    fn banding_falls_back_to_single_rows_when_recall_is_out_of_reach() {
        let banding = Banding::choose(0.1, 4, 0.99);
        assert_eq!((banding.bands, banding.rows), (4, 1));
        let exact = Banding::choose(1.0, 128, 0.99);
        assert_eq!((exact.bands, exact.rows), (1, 128));
    }

    #[test]
    fn identical_sets_share_signatures_and_disjoint_sets_rarely_agree() {
        let permutations = Permutations::new(64, 7);
        let a: Vec<u64> = (0..100).map(|i| xxhash_rust::xxh3::xxh3_64(&[i])).collect();
        let b: Vec<u64> = (100..200).map(|i| xxhash_rust::xxh3::xxh3_64(&[i])).collect();
        assert_eq!(permutations.signature(&a), permutations.signature(&a));
        let agree =
            permutations.signature(&a).iter().zip(permutations.signature(&b)).filter(|(x, y)| **x == *y).count();
        assert_eq!(agree, 0);
    }

    #[test]
    fn buckets_hold_documents_sharing_a_band() {
        let banding = Banding { bands: 2, rows: 2 };
        let signatures = [vec![1, 2, 3, 4], vec![1, 2, 9, 9], vec![5, 5, 3, 4], vec![7, 7, 7, 7]];
        let mut keys: Vec<Vec<u64>> = signatures.iter().map(|s| banding.keys(s)).collect();
        keys.push(Vec::new());
        let first = BandBuckets::new(&keys, 0);
        assert_eq!(first.members(keys[0][0]), &[0, 1]);
        assert_eq!(first.members(keys[2][0]), &[] as &[u32], "a bucket of one is no bucket");
        let second = BandBuckets::new(&keys, 1);
        assert_eq!(second.members(keys[2][1]), &[0, 2]);
        assert_eq!(second.members(keys[3][1]), &[] as &[u32]);
    }
}
