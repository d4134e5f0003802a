//! A small seeded PRNG and the distributions the workloads need.
//!
//! Our own generator (xoshiro256** seeded through SplitMix64) rather than a crate,
//! so a seed reproduces the same numbers across dependency upgrades: published
//! benchmark results must stay reproducible from the command line alone.

/// xoshiro256** — fast, good statistical quality, deterministic for a seed.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Rng { s }
    }

    /// An independent stream derived from this seed and a label, so adding a
    /// consumer of randomness does not shift the numbers every other consumer sees.
    pub fn derive(seed: u64, label: &str) -> Self {
        let mut h = seed ^ 0x51_7C_C1_B7_27_22_0A_95;
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        Rng::new(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n); `n` must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Exponential with the given rate (mean 1/rate).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.f64()).ln() / rate
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given parameters of the underlying normal.
    pub fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }
}

/// Draws indices with probability proportional to fixed weights (e.g. Zipf
/// adapter popularity).
#[derive(Clone, Debug)]
pub struct WeightedIndex {
    cumulative: Vec<f64>,
}

impl WeightedIndex {
    pub fn new(weights: &[f64]) -> Self {
        assert!(
            !weights.is_empty(),
            "WeightedIndex needs at least one weight"
        );
        let mut total = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                assert!(
                    *w >= 0.0 && w.is_finite(),
                    "weights must be finite and >= 0"
                );
                total += w;
                total
            })
            .collect::<Vec<_>>();
        assert!(total > 0.0, "weights must not all be zero");
        WeightedIndex { cumulative }
    }

    /// Zipf popularity over `n` items with exponent `s`: item k has weight 1/(k+1)^s.
    pub fn zipf(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (0..n).map(|k| 1.0 / ((k + 1) as f64).powf(s)).collect();
        WeightedIndex::new(&weights)
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("non-empty");
        let x = rng.f64() * total;
        self.cumulative
            .partition_point(|c| *c <= x)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_labels_diverge() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            Rng::derive(7, "x").next_u64(),
            Rng::derive(7, "y").next_u64()
        );
    }

    #[test]
    fn distributions_have_their_means() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let exp_mean = (0..n).map(|_| r.exponential(4.0)).sum::<f64>() / n as f64;
        assert!((exp_mean - 0.25).abs() < 0.005, "{exp_mean}");
        let ln_mean = (0..n).map(|_| r.lognormal(1.0, 0.5)).sum::<f64>() / n as f64;
        let expected = (1.0f64 + 0.125).exp();
        assert!((ln_mean - expected).abs() / expected < 0.01, "{ln_mean}");
        let below_max = (0..n).map(|_| r.below(10)).max().unwrap();
        assert_eq!(below_max, 9);
    }

    #[test]
    fn zipf_prefers_the_head() {
        let mut r = Rng::new(3);
        let z = WeightedIndex::zipf(8, 1.0);
        let mut counts = [0usize; 8];
        for _ in 0..80_000 {
            counts[z.sample(&mut r)] += 1;
        }
        // weight of item 0 is 1/H_8 ~ 0.368, item 7 ~ 0.046
        assert!(
            (counts[0] as f64 / 80_000.0 - 0.368).abs() < 0.01,
            "{counts:?}"
        );
        assert!(counts.windows(2).all(|w| w[0] > w[1]), "{counts:?}");
    }
}
