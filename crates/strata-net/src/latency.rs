//! Latency figures: a fixed histogram of round-trip times, filled from TCP handshakes that
//! conntrack sees (passive) and from the switch's own probes (active, `probe.rs`).
//!
//! Buckets are powers of two of microseconds: bucket `i` (0 ≤ i < [`BUCKETS`] − 1) holds
//! samples of at most `2^(i + 4)` µs (16 µs, 32 µs, ... 2^(BUCKETS + 2) µs ≈ 16.8 s); the
//! last one holds everything longer. A log scale keeps a relative error under 2× at any
//! magnitude with a few counters, which is what a latency figure needs (is the port at 50 µs
//! or at 5 ms?), and a quantile read from it is the upper bound of the bucket it falls in: a
//! figure never better than the truth.
//!
//! Invariants: `count` is the sum of the buckets; `sum_us` the sum of the samples (saturating);
//! no allocation, `Copy`, so it lives inside a port's counters.

use std::time::Duration;

/// Number of buckets (the last one is the overflow).
pub const BUCKETS: usize = 22;
/// log2 of the first bucket's bound in µs.
const FIRST_SHIFT: u32 = 4;

/// A histogram of round-trip times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RttHistogram {
    /// Samples per bucket.
    pub buckets: [u64; BUCKETS],
    /// Samples.
    pub count: u64,
    /// Sum of the samples, microseconds.
    pub sum_us: u64,
}

impl RttHistogram {
    /// Upper bound of bucket `i` in microseconds (`None` for the overflow bucket).
    pub fn bound_us(i: usize) -> Option<u64> {
        (i + 1 < BUCKETS).then(|| 1u64 << (i as u32 + FIRST_SHIFT))
    }

    /// The bucket a sample of `us` microseconds falls in.
    fn bucket_of(us: u64) -> usize {
        if us <= 1 << FIRST_SHIFT {
            return 0;
        }
        // Smallest i with us <= 2^(i + FIRST_SHIFT).
        let bits = 64 - (us - 1).leading_zeros();
        ((bits - FIRST_SHIFT) as usize).min(BUCKETS - 1)
    }

    /// Adds one sample.
    pub fn record(&mut self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket_of(us)] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// The upper bound, in microseconds, of the bucket holding quantile `q` (0 < q ≤ 1);
    /// `None` without samples. The overflow bucket answers `u64::MAX`.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::bound_us(i).unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    /// Mean in microseconds (`None` without samples).
    pub fn mean_us(&self) -> Option<u64> {
        (self.count > 0).then(|| self.sum_us / self.count)
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, o: &RttHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_have_power_of_two_bounds() {
        let mut h = RttHistogram::default();
        for us in [0, 16, 17, 32, 33, 1000, 1024, 1025] {
            h.record(Duration::from_micros(us));
        }
        // 0 and 16 in bucket 0 (≤16), 17 and 32 in bucket 1 (≤32), 33 in 2 (≤64),
        // 1000 and 1024 in 6 (≤1024), 1025 in 7 (≤2048).
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[1], 2);
        assert_eq!(h.buckets[2], 1);
        assert_eq!(h.buckets[6], 2);
        assert_eq!(h.buckets[7], 1);
        assert_eq!(h.count, 8);
        assert_eq!(h.sum_us, 16 + 17 + 32 + 33 + 1000 + 1024 + 1025);
        assert_eq!(h.quantile_us(0.5), Some(32), "the 4th of 8 is 32");
        assert_eq!(h.quantile_us(1.0), Some(2048));
        assert_eq!(RttHistogram::default().quantile_us(0.5), None);
    }

    #[test]
    fn very_long_samples_land_in_the_overflow_bucket() {
        let mut h = RttHistogram::default();
        h.record(Duration::from_secs(3600));
        assert_eq!(h.buckets[BUCKETS - 1], 1);
        assert_eq!(h.quantile_us(0.99), Some(u64::MAX));
        assert_eq!(RttHistogram::bound_us(BUCKETS - 1), None);
    }

    proptest! {
        /// Against a reference: the quantile is the bound of the smallest bucket whose
        /// cumulative count reaches the rank, and that bound is never below the true
        /// sample at that rank (the figure is never better than the truth).
        #[test]
        fn quantiles_bound_the_sorted_samples(
            mut us in proptest::collection::vec(0u64..20_000_000, 1..200),
            q in 0.01f64..1.0,
        ) {
            let mut h = RttHistogram::default();
            for &x in &us {
                h.record(Duration::from_micros(x));
            }
            prop_assert_eq!(h.count, us.len() as u64);
            prop_assert_eq!(h.buckets.iter().sum::<u64>(), h.count);
            us.sort_unstable();
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            let truth = us[rank - 1];
            let got = h.quantile_us(q).unwrap();
            prop_assert!(got >= truth, "q {q}: {got} < {truth}");
            // Within one bucket: less than twice the truth (or the first bucket's bound).
            prop_assert!(got <= (2 * truth).max(16) || got == u64::MAX, "{got} vs {truth}");
        }
    }
}
