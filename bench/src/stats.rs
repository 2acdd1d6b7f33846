//! Latency percentiles from the benchmark's own client timings: every sample is kept and
//! sorted (nearest-rank percentiles), so nothing is binned or estimated.

use std::time::Duration;

/// Sorted latency samples.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Latencies {
        samples.sort_unstable();
        Latencies { sorted: samples }
    }

    /// How many samples.
    pub fn count(&self) -> usize {
        self.sorted.len()
    }

    /// The `q`-th percentile (nearest rank) in milliseconds; 0 without samples.
    pub fn ms(&self, q: f64) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q / 100.0) * n as f64).ceil() as usize;
        self.sorted[rank.clamp(1, n) - 1].as_secs_f64() * 1000.0
    }

    /// The largest sample in milliseconds; 0 without samples.
    pub fn max_ms(&self) -> f64 {
        self.sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(l.count(), 100);
        assert!((l.ms(50.0) - 50.0).abs() < 1e-9);
        assert!((l.ms(99.0) - 99.0).abs() < 1e-9);
        assert!((l.ms(100.0) - 100.0).abs() < 1e-9);
        assert!((l.max_ms() - 100.0).abs() < 1e-9);
        assert!(Latencies::default().ms(99.0).abs() < 1e-9);
    }
}
