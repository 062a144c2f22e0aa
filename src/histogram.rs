//! Latency histograms for `/metrics`: fixed buckets, plain counts, cheap to copy into a
//! snapshot. (hdrhistogram measures the benchmarks; Prometheus wants cumulative counts
//! per fixed bound, which is this.)

use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from half a millisecond (an admin read from
/// memory) to ten seconds (a commit to a slow etcd). A last `+Inf` bucket is implied.
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Observations of a duration, by bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Observations at or under each bound and over the one before.
    counts: [u64; BOUNDS.len()],
    /// Observations over the last bound.
    over: u64,
    /// The sum of every observation, in nanoseconds.
    sum_nanos: u128,
}

impl Latency {
    /// Records one observation.
    pub fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        self.sum_nanos += took.as_nanos();
        match BOUNDS.iter().position(|&bound| secs <= bound) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.over
    }

    /// The sum of every observation, in seconds.
    pub fn sum(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(bound, observations in the bucket)` for each bound and a last `+Inf`
    /// (`f64::INFINITY`): not cumulative, as the OpenMetrics encoder takes them (it adds
    /// them up, as the exposition shows them).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS
            .iter()
            .copied()
            .zip(self.counts)
            .chain(std::iter::once((f64::INFINITY, self.over)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_their_bucket_and_buckets_accumulate() {
        let mut h = Latency::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 4);
        let buckets = h.buckets();
        assert_eq!(buckets[0], (0.0005, 2));
        assert_eq!(buckets[5], (0.025, 0));
        assert_eq!(buckets[6], (0.05, 1));
        assert_eq!(buckets[BOUNDS.len()], (f64::INFINITY, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 4);
        assert!((h.sum() - 60.0306).abs() < 1e-9, "{}", h.sum());
    }
}
