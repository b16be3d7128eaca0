//! A small deterministic PRNG (splitmix64) and the samplers the workloads draw from.
//!
//! Hand-written on purpose: a workload's digest is a wire format (pinned in tests and compared
//! across runs and machines), so the byte stream a seed yields must never change with a
//! dependency upgrade, as it could with `rand`'s algorithms or its sampling code.
//! splitmix64 is 64 bits of state, one add and three xor-shift-multiplies per output, and passes
//! BigCrush: plenty for generating text and timelines.

/// splitmix64 (Steele, Lea, Flood 2014), seeded with any `u64`.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = crate::mix::splitmix64(self.state);
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        out
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n`; 0 when `n` is 0. Multiply-high (Lemire) without the rejection step:
    /// the bias is below `n / 2^64`, far under anything a workload could show.
    pub fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        // The high half is < n, so it fits the usize `n` came from.
        (wide >> 64) as usize
    }

    /// Uniform in `lo..=hi` (integers); `lo` when `hi <= lo`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi.saturating_sub(lo);
        let wide = u128::from(self.next_u64()) * (u128::from(span) + 1);
        lo + (wide >> 64) as u64
    }

    /// Uniform in `[a, b)`.
    pub fn range_f64(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.next_f64()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A uniformly chosen element; `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    /// Fisher–Yates, from the last element down.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Zipf over `n` items (rank 0 is the most likely): `P(k) ∝ 1 / (k + 1)^s`, sampled by inverse
/// CDF over weights computed once. O(n) to build, O(log n) per sample.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Cumulative probabilities, the last one exactly 1.0.
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w;
                acc / total
            })
            .collect();
        // Rounding can leave the sum a hair under 1.0; a draw there must still land on an item.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Self { cdf }
    }

    /// A rank in `0..n`; 0 when `n` is 0.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_outputs_for_seed_zero() {
        // The published splitmix64 sequence from state 0.
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn derived_samplers_are_pinned() {
        let mut rng = Rng::new(42);
        let below: Vec<usize> = (0..6).map(|_| rng.below(100)).collect();
        let between: Vec<u64> = (0..4).map(|_| rng.between(5, 9)).collect();
        let f = rng.range_f64(1.0, 2.0);
        let picked = rng.pick(&["a", "b", "c", "d"]).copied();
        let mut deck = [0, 1, 2, 3, 4, 5, 6, 7];
        rng.shuffle(&mut deck);
        let zipf = Zipf::new(200, 1.1);
        let ranks: Vec<usize> = (0..8).map(|_| zipf.sample(&mut rng)).collect();
        assert_eq!(below, [74, 15, 27, 34, 3, 86]);
        assert_eq!(between, [6, 9, 6, 8]);
        assert_eq!(f, 1.204_901_831_798_775_6);
        assert_eq!(picked, Some("b"));
        assert_eq!(deck, [2, 5, 7, 0, 1, 6, 3, 4]);
        assert_eq!(ranks, [21, 142, 0, 12, 13, 0, 1, 30]);
    }

    #[test]
    fn samplers_stay_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            assert!(rng.below(3) < 3);
            assert!((5..=9).contains(&rng.between(5, 9)));
            let f = rng.range_f64(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&f));
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.between(4, 4), 4);
        assert_eq!(rng.pick::<u8>(&[]), None);
    }

    #[test]
    fn zipf_favours_low_ranks_and_covers_the_range() {
        let zipf = Zipf::new(200, 1.1);
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 200];
        for _ in 0..20_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[150]);
        // P(rank 0) = 1 / H(200, 1.1) ≈ 0.23.
        let share = counts[0] as f64 / 20_000.0;
        assert!((0.21..0.25).contains(&share), "{share}");
        assert_eq!(Zipf::new(0, 1.1).sample(&mut rng), 0);
    }
}
