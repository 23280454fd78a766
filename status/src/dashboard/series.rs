//! The status page's charts: images/s and p50/p99 latency per second over the last minutes, in fixed
//! memory (one point per second, at most [`Series::SECONDS`] of them; the second being filled keeps at most
//! [`Series::SAMPLES`] latencies).

use std::collections::VecDeque;

use serde::Serialize;

/// One second of the charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the Unix epoch at the start of this second.
    pub t: u64,
    /// Images out of the pipeline in that second (classified or rejected).
    pub images: u32,
    /// Of which rejected.
    pub rejected: u32,
    /// Median latency of the predictions of that second, in ms (`None` without predictions).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of that second, in ms.
    pub p99_ms: Option<f64>,
}

/// Per-second points over a sliding window of [`Series::SECONDS`].
#[derive(Debug, Default)]
pub struct Series {
    closed: VecDeque<Point>,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    t: u64,
    images: u32,
    rejected: u32,
    latencies: Vec<f64>,
    seen: u64,
}

impl Series {
    /// Seconds kept: five minutes.
    pub const SECONDS: usize = 300;
    /// Latencies kept for the second being filled; beyond it, new ones replace earlier ones in turn.
    pub const SAMPLES: usize = 1024;

    /// Counts one outcome at Unix second `t` (a latency for a prediction, `None` for a rejection).
    pub fn record(&mut self, t: u64, latency_ms: Option<f64>) {
        self.advance(t);
        let open = self.open.get_or_insert_with(|| Open::new(t));
        open.images = open.images.saturating_add(1);
        match latency_ms {
            Some(ms) => {
                if open.latencies.len() < Self::SAMPLES {
                    open.latencies.push(ms);
                } else {
                    let slot = (open.seen % Self::SAMPLES as u64) as usize;
                    open.latencies[slot] = ms;
                }
                open.seen += 1;
            }
            None => open.rejected = open.rejected.saturating_add(1),
        }
    }

    /// Closes every second before `now` (seconds without outcomes become points of 0 images).
    pub fn advance(&mut self, now: u64) {
        if let Some(open) = self.open.as_ref().filter(|o| o.t < now) {
            let from = open.t;
            if let Some(open) = self.open.take() {
                self.push(open.close());
            }
            // Empty seconds between the last outcome and now, at most a window's worth.
            let first_empty = (from + 1).max(now.saturating_sub(Self::SECONDS as u64));
            for t in first_empty..now {
                self.push(Point { t, images: 0, rejected: 0, p50_ms: None, p99_ms: None });
            }
        }
        if self.open.is_none() {
            self.open = Some(Open::new(now));
        }
    }

    fn push(&mut self, point: Point) {
        if self.closed.len() == Self::SECONDS {
            self.closed.pop_front();
        }
        self.closed.push_back(point);
    }

    /// The closed seconds, oldest first (the one being filled is left out: its rate is not known yet).
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.closed.iter()
    }
}

impl Open {
    fn new(t: u64) -> Self {
        Self { t, images: 0, rejected: 0, latencies: Vec::new(), seen: 0 }
    }

    fn close(mut self) -> Point {
        self.latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            let n = self.latencies.len();
            (n > 0).then(|| self.latencies[((n - 1) as f64 * q).round() as usize])
        };
        Point { t: self.t, images: self.images, rejected: self.rejected, p50_ms: quantile(0.5), p99_ms: quantile(0.99) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_second_with_quantiles_and_gaps_filled() {
        let mut series = Series::default();
        for ms in 1..=100 {
            series.record(1000, Some(f64::from(ms)));
        }
        series.record(1000, None);
        series.record(1003, Some(7.0));
        series.advance(1004);
        let points: Vec<Point> = series.points().copied().collect();
        assert_eq!(points.iter().map(|p| p.t).collect::<Vec<_>>(), vec![1000, 1001, 1002, 1003]);
        assert_eq!((points[0].images, points[0].rejected), (101, 1));
        assert_eq!((points[0].p50_ms, points[0].p99_ms), (Some(51.0), Some(99.0)));
        assert_eq!((points[1].images, points[1].p50_ms), (0, None));
        assert_eq!(points[3].p99_ms, Some(7.0));
    }

    #[test]
    fn memory_is_bounded_by_the_window_and_the_samples() {
        let mut series = Series::default();
        for i in 0..5_000u64 {
            series.record(10_000 + i / 10, Some(i as f64));
        }
        for _ in 0..10_000 {
            series.record(20_000, Some(1.0));
        }
        assert!(series.open.as_ref().is_some_and(|o| o.latencies.len() == Series::SAMPLES));
        // A long silence is at most one window of empty points.
        series.advance(1_000_000);
        assert_eq!(series.points().count(), Series::SECONDS);
        assert!(series.points().all(|p| p.images == 0));
        assert_eq!(series.points().last().map(|p| p.t), Some(999_999));
    }
}
