//! Seeds for every random choice of a run, derived from the run seed and what they are for,
//! never from time, so that a run is reproducible from its seed alone.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A 64-bit seed for `purpose` (e.g. "model-init") and `id` (e.g. the model id).
pub fn derive(run_seed: u64, purpose: &str, id: u64) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(run_seed.to_le_bytes());
    hasher.update(purpose.as_bytes());
    hasher.update(id.to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

/// A generator seeded by [`derive()`].
pub fn rng(run_seed: u64, purpose: &str, id: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(run_seed, purpose, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_by_every_input_and_repeats_exactly() {
        let a = derive(1, "model-init", 0);
        assert_eq!(a, derive(1, "model-init", 0));
        assert_ne!(a, derive(2, "model-init", 0));
        assert_ne!(a, derive(1, "model-data", 0));
        assert_ne!(a, derive(1, "model-init", 1));
    }
}
