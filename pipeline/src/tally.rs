//! One tally of outcomes, used by the pipeline's run statistics, the connector's periodic summary and
//! `fvision run`: counts, success rate, images/s and latency quantiles. Its memory is fixed: latencies go
//! into a log-bucketed histogram of [`LatencyHistogram::BUCKETS`] counters, so a process that runs for
//! months keeps the same few kilobytes however many images it sees.

use std::time::Duration;

use crate::item::Outcome;

/// End-to-end latencies in a fixed-size histogram with geometric buckets: every quantile it reports is
/// within [`LatencyHistogram::RELATIVE_ERROR`] of the exact one (between 1 µs and 1 h; values outside
/// are clamped to the smallest and largest value seen).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    total: u64,
    min: f64,
    max: f64,
}

/// Smallest latency with its own bucket, in ms.
const MIN_MS: f64 = 1e-3;
/// Ratio between consecutive bucket bounds.
const GROWTH: f64 = 1.02;

impl LatencyHistogram {
    /// Number of buckets: the histogram's whole memory, whatever it records.
    pub const BUCKETS: usize = 1 + 1112; // below 1 µs, then from 1 µs by factors of 1.02 up to past 1 h
    /// Largest relative error of a reported quantile: half a bucket, sqrt(1.02) - 1.
    pub const RELATIVE_ERROR: f64 = 0.01;

    fn bucket(ms: f64) -> usize {
        if ms.is_nan() || ms < MIN_MS {
            return 0;
        }
        let i = 1 + ((ms / MIN_MS).ln() / GROWTH.ln()).floor() as usize;
        i.min(Self::BUCKETS - 1)
    }

    /// The geometric middle of a bucket: within half a bucket of any value in it.
    fn representative(bucket: usize) -> f64 {
        if bucket == 0 {
            return MIN_MS;
        }
        MIN_MS * GROWTH.powf(bucket as f64 - 0.5)
    }

    /// Counts one latency, in ms.
    pub fn record(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        self.counts[Self::bucket(ms)] += 1;
        self.total += 1;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
    }

    /// Latencies recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (0..=1) in ms, the value of rank `round((n - 1) q)` in sorted order, within
    /// [`Self::RELATIVE_ERROR`]; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen > rank {
                return Self::representative(bucket).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Bytes the histogram occupies, inline and on the heap: the same from the first record to the last.
    pub fn footprint_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.counts)
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { counts: vec![0; Self::BUCKETS].into_boxed_slice(), total: 0, min: f64::INFINITY, max: 0.0 }
    }
}

/// What became of the outcomes of a run or an interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Images classified.
    pub classified: u64,
    /// Images rejected (any stage).
    pub rejected: u64,
    /// Predictions below the confidence threshold.
    pub below_threshold: u64,
    /// End-to-end latency of the predictions.
    pub latency: LatencyHistogram,
}

impl Tally {
    /// Counts one outcome.
    pub fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Classified { prediction, .. } => {
                self.classified += 1;
                self.below_threshold += u64::from(!prediction.above_threshold);
                self.latency.record(prediction.processing_time_ms);
            }
            Outcome::Rejected { .. } => self.rejected += 1,
        }
    }

    /// Images classified or rejected.
    pub fn total(&self) -> u64 {
        self.classified + self.rejected
    }

    /// Share of images classified, in percent (100 when there were none: nothing failed).
    pub fn success_percent(&self) -> f64 {
        match self.total() {
            0 => 100.0,
            total => 100.0 * self.classified as f64 / total as f64,
        }
    }

    /// Images (classified or rejected) per second over `elapsed`.
    pub fn images_per_sec(&self, elapsed: Duration) -> f64 {
        self.total() as f64 / elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile of the predictions (`q` in 0..=1), in ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency.quantile(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of latencies from 0.2 ms to about 20 s, in a scrambled order.
    fn sample(n: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (i * 7919) % n)
            .map(|k| 0.2 * (1e5f64).powf(k as f64 / n as f64) + (k % 13) as f64 * 1e-3)
            .collect()
    }

    #[test]
    fn quantiles_are_within_the_error_bound_of_the_exact_ones() {
        let values = sample(20_011);
        let mut histogram = LatencyHistogram::default();
        values.iter().for_each(|&v| histogram.record(v));
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0] {
            let exact = sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            let estimate = histogram.quantile(q);
            let error = (estimate - exact).abs() / exact;
            assert!(error <= LatencyHistogram::RELATIVE_ERROR, "q {q}: {estimate} vs exact {exact} ({error:.4})");
        }
        assert_eq!(histogram.len(), 20_011);
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0.0);
    }

    #[test]
    fn memory_stays_fixed_however_many_latencies_are_recorded() {
        let mut histogram = LatencyHistogram::default();
        let before = histogram.footprint_bytes();
        for v in sample(1_000_000) {
            histogram.record(v);
        }
        for odd in [f64::NAN, f64::INFINITY, -1.0, 1e12] {
            histogram.record(odd);
        }
        assert_eq!(histogram.footprint_bytes(), before);
        assert!(before < 16 * 1024, "{before} bytes");
        assert_eq!(histogram.len(), 1_000_004);
    }

    #[test]
    fn a_tally_counts_and_rates() {
        use fvision_records::{Prediction, RejectReason, RejectedImage, Stage};
        let classified = |ms: f64, above_threshold| Outcome::Classified {
            name: "x".into(),
            position: None,
            prediction: Box::new(Prediction { processing_time_ms: ms, above_threshold, ..Prediction::default() }),
        };
        let rejected = Outcome::Rejected {
            name: "y".into(),
            position: None,
            rejected: Box::new(RejectedImage::new(RejectReason::Truncated, "cut", Stage::Validate, b"")),
        };
        let mut tally = Tally::default();
        assert_eq!(tally.success_percent(), 100.0);
        for ms in [10.0, 20.0, 30.0] {
            tally.record(&classified(ms, ms > 10.0));
        }
        tally.record(&rejected);
        assert_eq!((tally.classified, tally.rejected, tally.below_threshold, tally.total()), (3, 1, 1, 4));
        assert!((tally.success_percent() - 75.0).abs() < 1e-9);
        assert!((tally.images_per_sec(Duration::from_secs(2)) - 2.0).abs() < 1e-9);
        assert!((tally.latency_ms(0.5) - 20.0).abs() <= 20.0 * LatencyHistogram::RELATIVE_ERROR);
    }
}
