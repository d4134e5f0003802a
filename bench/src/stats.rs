//! Percentiles over samples, the way latency reports usually define them.

/// The q-quantile (0 <= q <= 1) of `sorted` by linear interpolation between
/// closest ranks (the "type 7" definition of R and numpy's default).
/// `None` for empty input. `sorted` must be ascending.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    assert!((0.0..=1.0).contains(&q), "quantile {q} outside [0, 1]");
    match sorted.len() {
        0 => None,
        1 => Some(sorted[0]),
        n => {
            let rank = q * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            let frac = rank - lo as f64;
            Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
        }
    }
}

/// Sorts a copy of `samples` once and answers several quantiles from it.
#[derive(Clone, Debug, Default)]
pub struct Distribution {
    sorted: Vec<f64>,
}

impl Distribution {
    pub fn new(mut samples: Vec<f64>) -> Self {
        assert!(samples.iter().all(|x| !x.is_nan()), "NaN sample");
        samples.sort_by(f64::total_cmp);
        Distribution { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The q-quantile, or NaN when there are no samples (renders as "-").
    pub fn quantile(&self, q: f64) -> f64 {
        percentile_sorted(&self.sorted, q).unwrap_or(f64::NAN)
    }

    pub fn mean(&self) -> f64 {
        if self.sorted.is_empty() {
            f64::NAN
        } else {
            self.sorted.iter().sum::<f64>() / self.sorted.len() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_on_known_data() {
        let one_to_hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&one_to_hundred, 0.0), Some(1.0));
        assert_eq!(percentile_sorted(&one_to_hundred, 1.0), Some(100.0));
        // numpy.percentile(range(1, 101), [50, 90, 99]) = 50.5, 90.1, 99.01
        let p50 = percentile_sorted(&one_to_hundred, 0.5).unwrap();
        let p90 = percentile_sorted(&one_to_hundred, 0.9).unwrap();
        let p99 = percentile_sorted(&one_to_hundred, 0.99).unwrap();
        assert!((p50 - 50.5).abs() < 1e-9, "{p50}");
        assert!((p90 - 90.1).abs() < 1e-9, "{p90}");
        assert!((p99 - 99.01).abs() < 1e-9, "{p99}");
        assert_eq!(percentile_sorted(&[], 0.5), None);
        assert_eq!(percentile_sorted(&[4.0], 0.9), Some(4.0));
    }

    #[test]
    fn distribution_sorts_its_input() {
        let d = Distribution::new(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(d.quantile(0.5), 3.0);
        assert_eq!(d.quantile(0.25), 2.0);
        assert_eq!(d.mean(), 3.0);
        assert!(Distribution::new(vec![]).quantile(0.5).is_nan());
    }
}
