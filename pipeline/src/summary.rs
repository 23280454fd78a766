//! The connector's periodic one-line summary: what the last interval did (images/s, success rate,
//! latency percentiles), the live view operators of the replaced job watched.

use std::time::{Duration, Instant};

use crate::item::Outcome;
use crate::tally::Tally;

/// Outcomes seen since the last summary line.
#[derive(Debug)]
pub struct SummaryWindow {
    interval: Duration,
    started: Instant,
    tally: Tally,
}

/// One interval's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// How long the interval lasted.
    pub elapsed: Duration,
    /// What the interval's outcomes were.
    pub tally: Tally,
}

impl Summary {
    /// Images (classified or rejected) per second.
    pub fn images_per_sec(&self) -> f64 {
        self.tally.images_per_sec(self.elapsed)
    }

    /// Share of images classified, in percent (100 when there were none).
    pub fn success_percent(&self) -> f64 {
        self.tally.success_percent()
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
            self.tally.classified,
            self.success_percent(),
            self.tally.rejected,
            self.tally.below_threshold,
            self.tally.latency_ms(0.5),
            self.tally.latency_ms(0.99),
        )
    }
}

impl SummaryWindow {
    /// A window that closes every `interval`, starting at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self { interval, started: now, tally: Tally::default() }
    }

    /// Counts one outcome.
    pub fn record(&mut self, outcome: &Outcome) {
        self.tally.record(outcome);
    }

    /// The summary of the interval if it is over at `now` (and something happened), starting the next one.
    pub fn close_if_due(&mut self, now: Instant) -> Option<Summary> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.interval {
            return None;
        }
        self.started = now;
        let tally = std::mem::take(&mut self.tally);
        (tally.total() > 0).then_some(Summary { elapsed, tally })
    }

    /// The summary of the interval so far (if something happened), for the last line of a stopping run,
    /// so even a run shorter than one interval says what it did.
    pub fn finish(self, now: Instant) -> Option<Summary> {
        let elapsed = now.saturating_duration_since(self.started);
        (self.tally.total() > 0).then_some(Summary { elapsed, tally: self.tally })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::LatencyHistogram;
    use fvision_records::{Prediction, RejectReason, RejectedImage, Stage};

    fn classified(latency_ms: f64, above_threshold: bool) -> Outcome {
        let prediction = Prediction { processing_time_ms: latency_ms, above_threshold, ..Prediction::default() };
        Outcome::Classified { name: "x".into(), position: None, prediction: Box::new(prediction) }
    }

    fn rejected() -> Outcome {
        let rejected = RejectedImage::new(RejectReason::Truncated, "cut", Stage::Validate, b"abc");
        Outcome::Rejected { name: "y".into(), position: None, rejected: Box::new(rejected) }
    }

    #[test]
    fn a_stopping_run_reports_its_partial_window() {
        let t0 = Instant::now();
        let mut window = SummaryWindow::new(Duration::from_secs(10), t0);
        assert!(SummaryWindow::new(Duration::from_secs(10), t0).finish(t0).is_none(), "nothing happened");
        window.record(&rejected());
        assert!(window.close_if_due(t0 + Duration::from_secs(1)).is_none(), "the interval is not over");
        let last = window.finish(t0 + Duration::from_secs(2)).expect("the partial window");
        assert_eq!((last.tally.total(), last.elapsed), (1, Duration::from_secs(2)));
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
        let tally = &summary.tally;
        assert_eq!((tally.classified, tally.rejected, tally.below_threshold), (99, 1, 9));
        let near = |value: f64, exact: f64| (value - exact).abs() <= exact * LatencyHistogram::RELATIVE_ERROR;
        assert!(near(tally.latency_ms(0.5), 50.0) && near(tally.latency_ms(0.99), 98.0), "{summary}");
        assert!((summary.images_per_sec() - 10.0).abs() < 1e-9);
        assert!((summary.success_percent() - 99.0).abs() < 1e-9);
        let line = summary.to_string();
        assert!(line.starts_with("10.0 images/s over 10 s: 99 classified (99.0% success), 1 rejected"), "{line}");
        // The next interval starts empty; an idle interval prints nothing.
        assert_eq!(window.close_if_due(t0 + Duration::from_secs(20)), None);
    }
}
