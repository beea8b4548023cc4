//! Dense single-precision matrix products, the one place that calls the GEMM crate
//! (`matrixmultiply`: packed AVX-512/AVX2 kernels). Each call runs on the calling thread;
//! callers parallelize over blocks with rayon.

/// `c = a · b` for row-major `a` (m × k), `b` (k × n) and `c` (m × n).
///
/// # Panics
///
/// If a slice's length does not match its dimensions.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k, "a is m × k");
    assert_eq!(b.len(), k * n, "b is k × n");
    assert_eq!(c.len(), m * n, "c is m × n");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index within the slices, the strides are those of
    // dense row-major matrices, and `c` is borrowed mutably, so it aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_product() {
        // [1 2 3; 4 5 6] · [1 0; 0 1; 2 -1] = [7 -1; 16 -1]
        let mut c = vec![f32::NAN; 4];
        matmul(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1.0, 0.0, 0.0, 1.0, 2.0, -1.0], &mut c, 2, 3, 2);
        assert_eq!(c, [7.0, -1.0, 16.0, -1.0]);
    }
}
