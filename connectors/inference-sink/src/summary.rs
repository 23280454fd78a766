//! The connector's periodic one-line summary: what the last interval did (images/s, success rate,
//! latency percentiles), the live view operators of the replaced job watched.

use std::time::{Duration, Instant};

use crate::pipeline::Outcome;

/// Outcomes seen since the last summary line.
#[derive(Debug)]
pub struct SummaryWindow {
    interval: Duration,
    started: Instant,
    classified: u64,
    rejected: u64,
    below_threshold: u64,
    latencies_ms: Vec<f64>,
}

/// One interval's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// How long the interval lasted.
    pub elapsed: Duration,
    /// Images classified.
    pub classified: u64,
    /// Images rejected (any stage).
    pub rejected: u64,
    /// Predictions below the confidence threshold.
    pub below_threshold: u64,
    /// Median end-to-end latency of the predictions, in ms.
    pub p50_ms: f64,
    /// 99th percentile latency, in ms.
    pub p99_ms: f64,
}

impl Summary {
    /// Images (classified or rejected) per second.
    pub fn images_per_sec(&self) -> f64 {
        (self.classified + self.rejected) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Share of images classified, in percent (100 when there were none).
    pub fn success_percent(&self) -> f64 {
        let total = self.classified + self.rejected;
        if total == 0 {
            100.0
        } else {
            100.0 * self.classified as f64 / total as f64
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} images/s over {:.0} s: {} classified ({:.1}% success), {} rejected, {} below threshold; \
             latency p50 {:.1} ms, p99 {:.1} ms",
            self.images_per_sec(),
            self.elapsed.as_secs_f64(),
            self.classified,
            self.success_percent(),
            self.rejected,
            self.below_threshold,
            self.p50_ms,
            self.p99_ms,
        )
    }
}

impl SummaryWindow {
    /// A window that closes every `interval`, starting at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self { interval, started: now, classified: 0, rejected: 0, below_threshold: 0, latencies_ms: Vec::new() }
    }

    /// Counts one outcome.
    pub fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Classified { prediction, .. } => {
                self.classified += 1;
                self.below_threshold += u64::from(!prediction.above_threshold);
                self.latencies_ms.push(prediction.processing_time_ms);
            }
            Outcome::Rejected { .. } => self.rejected += 1,
        }
    }

    /// The summary of the interval if it is over at `now` (and something happened), starting the next one.
    pub fn close_if_due(&mut self, now: Instant) -> Option<Summary> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.interval {
            return None;
        }
        let idle = self.classified + self.rejected == 0;
        let mut latencies = std::mem::take(&mut self.latencies_ms);
        latencies.sort_by(f64::total_cmp);
        let percentile = |q: f64| match latencies.len() {
            0 => 0.0,
            n => latencies[((n as f64 - 1.0) * q).round() as usize],
        };
        let summary = Summary {
            elapsed,
            classified: self.classified,
            rejected: self.rejected,
            below_threshold: self.below_threshold,
            p50_ms: percentile(0.5),
            p99_ms: percentile(0.99),
        };
        *self = Self::new(self.interval, now);
        (!idle).then_some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_records::{Prediction, RejectReason, RejectedImage, Stage};

    fn classified(latency_ms: f64, above_threshold: bool) -> Outcome {
        let prediction = Prediction { processing_time_ms: latency_ms, above_threshold, ..Prediction::default() };
        Outcome::Classified { name: "x".into(), prediction: Box::new(prediction) }
    }

    fn rejected() -> Outcome {
        let rejected = RejectedImage::new(RejectReason::Truncated, "cut", Stage::Validate, b"abc");
        Outcome::Rejected { name: "y".into(), rejected: Box::new(rejected) }
    }

    #[test]
    fn a_window_reports_once_per_interval_and_starts_over() {
        let t0 = Instant::now();
        let mut window = SummaryWindow::new(Duration::from_secs(10), t0);
        for latency in 1..=99 {
            window.record(&classified(f64::from(latency), latency > 9));
        }
        window.record(&rejected());
        assert_eq!(window.close_if_due(t0 + Duration::from_secs(9)), None);
        let summary = window.close_if_due(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!((summary.classified, summary.rejected, summary.below_threshold), (99, 1, 9));
        assert_eq!((summary.p50_ms, summary.p99_ms), (50.0, 98.0));
        assert!((summary.images_per_sec() - 10.0).abs() < 1e-9);
        assert!((summary.success_percent() - 99.0).abs() < 1e-9);
        let line = summary.to_string();
        assert!(line.starts_with("10.0 images/s over 10 s: 99 classified (99.0% success), 1 rejected"), "{line}");
        // The next interval starts empty; an idle interval prints nothing.
        assert_eq!(window.close_if_due(t0 + Duration::from_secs(20)), None);
    }
}
