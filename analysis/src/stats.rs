//! Running mean and variance (Welford), mergeable across threads (Chan et al.), the
//! difference of two means with its standard error, quantiles and rank correlation.

/// Count, mean and sum of squared deviations of the values seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: u32,
    mean: f64,
    m2: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / f64::from(self.n);
        self.m2 += delta * (x - self.mean);
    }

    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let n = f64::from(self.n + other.n);
        let delta = other.mean - self.mean;
        self.mean += delta * f64::from(other.n) / n;
        self.m2 += other.m2 + delta * delta * f64::from(self.n) * f64::from(other.n) / n;
        self.n += other.n;
    }

    /// The mean, or None before any value.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Sample variance (n − 1 in the denominator), or None below two values.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2 / f64::from(self.n - 1))
    }

    /// Standard error of the mean, or None below two values.
    pub fn standard_error(&self) -> Option<f64> {
        self.variance().map(|v| (v / f64::from(self.n)).sqrt())
    }
}

/// `first − second` of two independent means, and its standard error
/// sqrt(s₁²/n₁ + s₂²/n₂). The difference is None when a side is empty, the error when a
/// side has fewer than two values.
pub fn difference(first: &Moments, second: &Moments) -> (Option<f64>, Option<f64>) {
    let diff = first.mean().zip(second.mean()).map(|(a, b)| a - b);
    let se = first
        .variance()
        .zip(second.variance())
        .map(|(v1, v2)| (v1 / f64::from(first.n) + v2 / f64::from(second.n)).sqrt());
    (diff, se)
}

/// The q-quantile (0 ≤ q ≤ 1) of sorted values, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = q * last as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let weight = position - below as f64;
    Some(sorted[below] * (1.0 - weight) + sorted[above] * weight)
}

/// Ranks from 1, ties sharing the mean of their ranks.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let shared = (start + end + 1) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| ranks[i] = shared);
        start = end;
    }
    ranks
}

/// Spearman's rank correlation of the pairs (a\[i\], b\[i\]) where both are finite; None with
/// fewer than two such pairs or when either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let (a, b): (Vec<f64>, Vec<f64>) =
        a.iter().zip(b).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(x, y)| (*x, *y)).unzip();
    if a.len() < 2 {
        return None;
    }
    let (ra, rb) = (ranks(&a), ranks(&b));
    let mean = (a.len() + 1) as f64 / 2.0;
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        var_a += (x - mean) * (x - mean);
        var_b += (y - mean) * (y - mean);
    }
    (var_a > 0.0 && var_b > 0.0).then(|| cov / (var_a * var_b).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[f64]) -> Moments {
        let mut m = Moments::default();
        values.iter().for_each(|&v| m.push(v));
        m
    }

    #[test]
    fn mean_and_variance_match_hand_computation() {
        let m = of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m.mean(), Some(5.0));
        assert!((m.variance().unwrap() - 32.0 / 7.0).abs() < 1e-12);
        assert_eq!(of(&[3.0]).variance(), None);
        assert_eq!(Moments::default().mean(), None);
    }

    #[test]
    fn merging_equals_pushing_everything() {
        let values = [0.1, 0.7, 0.3, 0.9, 0.25, 0.5, 0.45];
        let mut merged = of(&values[..3]);
        merged.merge(&of(&values[3..]));
        merged.merge(&Moments::default());
        let whole = of(&values);
        assert_eq!(merged.n, whole.n);
        assert!((merged.mean().unwrap() - whole.mean().unwrap()).abs() < 1e-15);
        assert!((merged.variance().unwrap() - whole.variance().unwrap()).abs() < 1e-15);
    }

    #[test]
    fn difference_and_its_standard_error() {
        // IN: 0.8, 0.6 (mean 0.7, var 0.02); OUT: 0.2, 0.4, 0.3 (mean 0.3, var 0.01).
        let (diff, se) = difference(&of(&[0.8, 0.6]), &of(&[0.2, 0.4, 0.3]));
        assert!((diff.unwrap() - 0.4).abs() < 1e-12);
        assert!((se.unwrap() - (0.02f64 / 2.0 + 0.01 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(difference(&of(&[1.0]), &of(&[0.0, 1.0])), (Some(0.5), None));
        assert_eq!(difference(&Moments::default(), &of(&[1.0])), (None, None));
    }

    #[test]
    fn spearman_matches_hand_computation() {
        // Ranks 1 2 3 4 5 against 2 1 4 3 5: d² = 1+1+1+1+0, rho = 1 − 6·4/(5·24) = 0.8.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[20.0, 10.0, 40.0, 30.0, 50.0]).unwrap();
        assert!((rho - 0.8).abs() < 1e-12, "{rho}");
        // Monotone but not linear: 1; reversed: −1; non-finite pairs are left out.
        assert_eq!(spearman(&[1.0, 2.0, 3.0, f64::NAN], &[1.0, 8.0, 27.0, 0.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Ties share ranks: (1, 2.5, 2.5, 4) against (1, 2, 3, 4).
        let tied = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((tied - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12, "{tied}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
    }

    #[test]
    fn quantiles_interpolate() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&sorted, 0.0), Some(1.0));
        assert_eq!(quantile(&sorted, 0.5), Some(2.5));
        assert_eq!(quantile(&sorted, 1.0), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
