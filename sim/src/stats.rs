//! Percentiles over latency samples (a sorted vector: exact, and small enough at our sizes).

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest sample, ms.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `samples_us` (microseconds); sorts the slice in place.
    pub fn from_micros(samples_us: &mut [u32]) -> Self {
        samples_us.sort_unstable();
        let count = samples_us.len();
        let at = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((q * count as f64).ceil() as usize).clamp(1, count);
            f64::from(samples_us[rank - 1]) / 1000.0
        };
        Self {
            count,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=100).rev().map(|i| i * 1000).collect();
        let p = Percentiles::from_micros(&mut v);
        assert_eq!(
            (p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::from_micros(&mut []), Percentiles::default());
    }
}
