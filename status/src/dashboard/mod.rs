//! The live status page: what the pipeline is doing, for people. The sink thread records every outcome
//! ([`Dashboard::record`]), the decode workers hand over thumbnails ([`ThumbnailSink`]), and the HTTP endpoint
//! ([`crate::serve`]) serves the page, its JSON ([`Dashboard::status`]) and the thumbnails.
//!
//! Memory is fixed whatever the run's length: the most recent [`RECENT`] predictions and [`DEAD_LETTERS`]
//! dead letters (each with a thumbnail of at most a few kilobytes), [`PENDING`] thumbnails waiting for their
//! outcome, five minutes of per-second chart points, a count per label of the model and per reason code. No
//! copy of an original image is kept.

mod series;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fvision_models::ThumbnailSink;
use fvision_records::EventMeta;
use serde::Serialize;

pub use series::{Point, Series};

use fvision_outputs::{OutputHealth, OutputReport};
use fvision_pipeline::metrics::FlowSnapshot;
use fvision_pipeline::{Outcome, Tally};

/// Predictions shown in the grid.
pub const RECENT: usize = 24;
/// Dead letters shown.
pub const DEAD_LETTERS: usize = 12;
/// Thumbnails made but whose outcome has not arrived yet (the pipeline's queues hold fewer images).
pub const PENDING: usize = 256;
/// Side of the thumbnails, in pixels.
pub const THUMBNAIL_SIDE: u32 = 96;
/// Largest thumbnail kept (a 96-pixel JPEG is a few kilobytes; anything bigger is not shown).
const MAX_THUMBNAIL_BYTES: usize = 32 * 1024;
/// Labels and reasons listed on the page.
const TOP: usize = 10;
/// Longest rejection detail shown.
const MAX_DETAIL: usize = 300;

/// Reports how the outputs are doing (the connector's `fvision_outputs::OutputSet::reports`).
pub type HealthSource = Arc<dyn Fn() -> Vec<OutputReport> + Send + Sync>;

/// The model, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// Session creation time, in ms.
    pub load_ms: f64,
    /// Whether the weights are real (the weight-free presets only measure throughput).
    pub real_weights: bool,
}

/// The status page's state; cheap to clone (shared).
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    mode: &'static str,
    /// Names this process's page in thumbnail URLs: outcome numbers restart at 1 with every process, and the
    /// browser keeps thumbnails as immutable, so a URL must never name another process's image.
    run: String,
    started: Instant,
    state: Mutex<State>,
    pending: Mutex<VecDeque<(String, Arc<[u8]>)>>,
    health: Mutex<Option<HealthSource>>,
}

#[derive(Default)]
struct State {
    model: Option<ModelInfo>,
    validation: Option<String>,
    tally: Tally,
    rejects: BTreeMap<&'static str, u64>,
    labels: HashMap<String, u64>,
    series: Series,
    seq: u64,
    recent: VecDeque<Recent>,
    dead_letters: VecDeque<DeadLetter>,
    partitions: BTreeMap<u32, Partition>,
}

/// One prediction of the grid.
#[derive(Debug, Clone, Serialize)]
struct Recent {
    seq: u64,
    name: String,
    image_id: String,
    label: String,
    confidence: f32,
    latency_ms: f64,
    below_threshold: bool,
    #[serde(skip)]
    thumbnail: Option<Arc<[u8]>>,
    has_thumbnail: bool,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
struct DeadLetter {
    seq: u64,
    name: String,
    image_id: String,
    reason: &'static str,
    stage: &'static str,
    detail: String,
    #[serde(skip)]
    thumbnail: Option<Arc<[u8]>>,
    has_thumbnail: bool,
}

/// What the connector knows of one partition of its input topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Partition {
    /// The partition.
    pub partition: u32,
    /// Offset of the last record whose outcome was delivered to the outputs.
    pub delivered: Option<i64>,
    /// The offset committed under the consumer id (the last record known delivered).
    pub committed: Option<i64>,
    /// The partition's end offset (the next offset to be written).
    pub end: Option<i64>,
    /// Records after the committed offset: what a restart would (re)read.
    pub lag: Option<i64>,
    /// Seconds since the Unix epoch when the committed offset was last seen to move.
    pub committed_at: Option<u64>,
}

/// The JSON the page polls.
#[derive(Debug, Serialize)]
pub struct Status {
    mode: &'static str,
    run: String,
    uptime_s: f64,
    now: u64,
    model: Option<ModelInfo>,
    validation: Option<String>,
    totals: Totals,
    rejects: Vec<Count>,
    labels: Vec<Count>,
    series: Vec<Point>,
    queues: Vec<Count>,
    in_flight: Option<f64>,
    batches: Batches,
    outputs: Vec<OutputStatus>,
    partitions: Vec<Partition>,
    recent: Vec<Recent>,
    dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Serialize)]
struct Totals {
    images: u64,
    classified: u64,
    rejected: u64,
    below_threshold: u64,
    success_percent: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Count {
    name: String,
    count: f64,
}

#[derive(Debug, Default, Serialize)]
struct Batches {
    count: f64,
    mean: Option<f64>,
    /// Cumulative counts per bucket bound (`le`), as the histogram exports them.
    buckets: Vec<Count>,
}

#[derive(Debug, Serialize)]
struct OutputStatus {
    name: String,
    healthy: bool,
    attempts: u32,
    failing_s: Option<f64>,
    last_error: Option<String>,
    /// Rows accepted and not yet stored.
    backlog: u64,
}

/// Records after the committed offset (the last record known delivered, as Fluvio stores it) up to the end
/// offset (the next to be written); `None` without an end offset.
pub fn lag(committed: Option<i64>, end: Option<i64>) -> Option<i64> {
    end.map(|end| (end - committed.map_or(0, |c| c + 1)).max(0))
}

/// A name for this page that no earlier or concurrent page on the host had: the start time in nanoseconds,
/// the process id and the page's number in the process.
fn run_id() -> String {
    static PAGES: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{nanos:x}.{:x}.{}", std::process::id(), PAGES.fetch_add(1, Ordering::Relaxed))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl Dashboard {
    /// An empty page for `mode` (`embedded` for `fvision run`, `connector` for the sink).
    pub fn new(mode: &'static str) -> Self {
        let inner = Inner {
            mode,
            run: run_id(),
            started: Instant::now(),
            state: Mutex::new(State::default()),
            pending: Mutex::new(VecDeque::with_capacity(PENDING)),
            health: Mutex::new(None),
        };
        Self { inner: Arc::new(inner) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still counts: keep showing them.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model the pipeline runs.
    pub fn set_model(&self, model: ModelInfo) {
        self.state().model = Some(model);
    }

    /// Where validation runs (shown beside the model).
    pub fn set_validation(&self, validation: impl Into<String>) {
        self.state().validation = Some(validation.into());
    }

    /// Where the outputs' health comes from.
    pub fn watch_outputs(&self, source: HealthSource) {
        *self.inner.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// What `fvision run` and the connector tell the page alike: the model `classifier` loaded, where
    /// validation runs, the health of `outputs`; and `classifier` hands it a thumbnail of every image.
    pub fn attach(
        &self,
        classifier: &mut fvision_models::Classifier,
        validation: impl Into<String>,
        outputs: Arc<fvision_outputs::OutputSet>,
    ) {
        let manifest = &classifier.spec().manifest;
        self.set_model(ModelInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            load_ms: classifier.load_time().as_secs_f64() * 1e3,
            real_weights: manifest.real_weights,
        });
        self.set_validation(validation);
        self.watch_outputs(Arc::new(move || outputs.reports()));
        classifier.send_thumbnails(THUMBNAIL_SIDE, Arc::new(self.clone()));
    }

    /// The committed and end offsets of a partition, as last read from the cluster.
    pub fn set_partition(&self, partition: u32, committed: Option<i64>, end: Option<i64>) {
        let mut state = self.state();
        let entry =
            state.partitions.entry(partition).or_insert_with(|| Partition { partition, ..Partition::default() });
        if entry.committed != committed {
            entry.committed_at = Some(unix_now());
        }
        entry.committed = committed;
        entry.end = end;
        entry.lag = lag(committed, end);
    }

    fn take_thumbnail(&self, image_id: &str) -> Option<Arc<[u8]>> {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        let index = pending.iter().position(|(id, _)| id == image_id)?;
        pending.remove(index).map(|(_, jpeg)| jpeg)
    }

    /// Counts one outcome and shows it; called on the thread that delivers outcomes.
    pub fn record(&self, outcome: &Outcome) {
        let now = unix_now();
        let thumbnail = match outcome {
            Outcome::Classified { prediction, .. } => self.take_thumbnail(&prediction.image_id),
            Outcome::Rejected { rejected, .. } => self.take_thumbnail(&rejected.event.id),
        };
        let mut state = self.state();
        state.tally.record(outcome);
        state.seq += 1;
        let seq = state.seq;
        if let Some(position) = outcome.position() {
            let entry = state
                .partitions
                .entry(position.partition)
                .or_insert_with(|| Partition { partition: position.partition, ..Partition::default() });
            entry.delivered = Some(entry.delivered.map_or(position.offset, |d| d.max(position.offset)));
        }
        let has_thumbnail = thumbnail.is_some();
        match outcome {
            Outcome::Classified { name, prediction, .. } => {
                state.series.record(now, Some(prediction.processing_time_ms));
                *state.labels.entry(prediction.label.clone()).or_default() += 1;
                if state.recent.len() == RECENT {
                    state.recent.pop_front();
                }
                state.recent.push_back(Recent {
                    seq,
                    name: name.clone(),
                    image_id: prediction.image_id.clone(),
                    label: prediction.label.clone(),
                    confidence: prediction.confidence,
                    latency_ms: prediction.processing_time_ms,
                    below_threshold: !prediction.above_threshold,
                    thumbnail,
                    has_thumbnail,
                });
            }
            Outcome::Rejected { name, rejected, .. } => {
                state.series.record(now, None);
                *state.rejects.entry(rejected.reason.as_str()).or_default() += 1;
                if state.dead_letters.len() == DEAD_LETTERS {
                    state.dead_letters.pop_front();
                }
                let mut detail = rejected.detail.clone();
                if detail.len() > MAX_DETAIL {
                    let cut = (0..=MAX_DETAIL).rev().find(|&i| detail.is_char_boundary(i)).unwrap_or(0);
                    detail.truncate(cut);
                    detail.push('…');
                }
                state.dead_letters.push_back(DeadLetter {
                    seq,
                    name: name.clone(),
                    image_id: rejected.event.id.clone(),
                    reason: rejected.reason.as_str(),
                    stage: rejected.stage.as_str(),
                    detail,
                    thumbnail,
                    has_thumbnail,
                });
            }
        }
    }

    /// The thumbnail at `name` (`RUN-SEQ`, as the page's JSON spells it), while it is still on the page;
    /// `None` for another process's run or an unknown outcome.
    pub fn thumbnail_jpeg(&self, name: &str) -> Option<Arc<[u8]>> {
        let (run, seq) = name.rsplit_once('-')?;
        if run != self.inner.run {
            return None;
        }
        let seq: u64 = seq.parse().ok()?;
        let state = self.state();
        let recent = state.recent.iter().find(|r| r.seq == seq).and_then(|r| r.thumbnail.clone());
        recent.or_else(|| state.dead_letters.iter().find(|d| d.seq == seq).and_then(|d| d.thumbnail.clone()))
    }

    /// Everything the page shows, newest predictions first; queue depths, in-flight records and batch sizes
    /// come from the pipeline's in-memory flow state, which the same calls keep as `/metrics`, so the page
    /// and `/metrics` agree.
    pub fn status(&self) -> Status {
        let now = unix_now();
        let outputs = self.outputs();
        let flow = fvision_pipeline::metrics::flow().snapshot();
        let mut state = self.state();
        state.series.advance(now);
        let tally = &state.tally;
        let totals = Totals {
            images: tally.total(),
            classified: tally.classified,
            rejected: tally.rejected,
            below_threshold: tally.below_threshold,
            success_percent: tally.success_percent(),
            p50_ms: tally.latency_ms(0.5),
            p99_ms: tally.latency_ms(0.99),
        };
        let mut labels: Vec<Count> =
            state.labels.iter().map(|(name, &count)| Count { name: name.clone(), count: count as f64 }).collect();
        labels.sort_by(|a, b| b.count.total_cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        labels.truncate(TOP);
        let mut rejects: Vec<Count> =
            state.rejects.iter().map(|(&name, &count)| Count { name: name.into(), count: count as f64 }).collect();
        rejects.sort_by(|a, b| b.count.total_cmp(&a.count));
        let (queues, in_flight, batches) = flow_status(flow);
        Status {
            mode: self.inner.mode,
            run: self.inner.run.clone(),
            uptime_s: self.inner.started.elapsed().as_secs_f64(),
            now,
            model: state.model.clone(),
            validation: state.validation.clone(),
            totals,
            rejects,
            labels,
            series: state.series.points().copied().collect(),
            queues,
            in_flight,
            batches,
            outputs,
            partitions: state.partitions.values().cloned().collect(),
            recent: state.recent.iter().rev().cloned().collect(),
            dead_letters: state.dead_letters.iter().rev().cloned().collect(),
        }
    }

    fn outputs(&self) -> Vec<OutputStatus> {
        let source = self.inner.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(source) = source else { return Vec::new() };
        source()
            .into_iter()
            .map(|OutputReport { name, health, backlog }| match health {
                OutputHealth::Healthy => {
                    OutputStatus { name, healthy: true, attempts: 0, failing_s: None, last_error: None, backlog }
                }
                OutputHealth::Retrying { since, attempts, last_error } => OutputStatus {
                    name,
                    healthy: false,
                    attempts,
                    failing_s: Some(since.elapsed().as_secs_f64()),
                    last_error: Some(last_error),
                    backlog,
                },
            })
            .collect()
    }
}

impl ThumbnailSink for Dashboard {
    fn thumbnail(&self, meta: &EventMeta, jpeg: Vec<u8>) {
        if jpeg.len() > MAX_THUMBNAIL_BYTES {
            return;
        }
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() == PENDING {
            pending.pop_front();
        }
        pending.push_back((meta.id.clone(), jpeg.into()));
    }
}

/// The page's queues, in-flight records and batches, from the pipeline's flow state.
fn flow_status(flow: FlowSnapshot) -> (Vec<Count>, Option<f64>, Batches) {
    let queues =
        flow.queues.into_iter().map(|(name, depth)| Count { name: name.into(), count: depth as f64 }).collect();
    let (count, sum) = (flow.batches as f64, flow.batch_images as f64);
    let buckets = flow.batch_buckets.into_iter().map(|(le, count)| Count { name: le, count: count as f64 }).collect();
    let batches = Batches { count, mean: (count > 0.0).then(|| sum / count), buckets };
    (queues, flow.in_flight.map(|n| n as f64), batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_pipeline::SourcePosition;
    use fvision_records::{Prediction, RejectReason, RejectedImage, Stage};

    fn classified(id: &str, label: &str, partition_offset: Option<(u32, i64)>) -> Outcome {
        Outcome::Classified {
            name: format!("file-{id}"),
            position: partition_offset.map(|(partition, offset)| SourcePosition { partition, offset }),
            prediction: Box::new(Prediction {
                image_id: id.into(),
                label: label.into(),
                confidence: 0.4,
                processing_time_ms: 12.0,
                above_threshold: label != "dog",
                ..Prediction::default()
            }),
        }
    }

    #[test]
    fn the_page_shows_each_outputs_health_and_backlog() {
        let dashboard = Dashboard::new("connector");
        let since = Instant::now() - std::time::Duration::from_secs(3);
        dashboard.watch_outputs(Arc::new(move || {
            vec![
                OutputReport { name: "fluvio".into(), health: OutputHealth::Healthy, backlog: 0 },
                OutputReport {
                    name: "bigquery".into(),
                    health: OutputHealth::Retrying { since, attempts: 4, last_error: "HTTP 503".into() },
                    backlog: 17,
                },
            ]
        }));
        let status = serde_json::to_value(dashboard.status()).unwrap();
        let outputs = &status["outputs"];
        assert_eq!((outputs[0]["healthy"].as_bool(), outputs[0]["backlog"].as_u64()), (Some(true), Some(0)));
        let bigquery = &outputs[1];
        assert_eq!((bigquery["name"].as_str(), bigquery["healthy"].as_bool()), (Some("bigquery"), Some(false)));
        assert_eq!((bigquery["backlog"].as_u64(), bigquery["attempts"].as_u64()), (Some(17), Some(4)));
        assert!(bigquery["failing_s"].as_f64().unwrap() >= 3.0);
        assert_eq!(bigquery["last_error"], "HTTP 503");
    }

    #[test]
    fn the_page_keeps_the_newest_outcomes_their_thumbnails_and_bounded_memory() {
        let dashboard = Dashboard::new("embedded");
        for i in 0..100 {
            let id = format!("img-{i}");
            let meta = EventMeta { id: id.clone(), ..EventMeta::default() };
            ThumbnailSink::thumbnail(&dashboard, &meta, vec![0xFF, 0xD8, 0xFF, i as u8]);
            let label = if i % 3 == 0 { "dog" } else { "cat" };
            dashboard.record(&classified(&id, label, Some((i % 2, i64::from(i)))));
        }
        let mut rejected = RejectedImage::new(RejectReason::Truncated, "é".repeat(400), Stage::Validate, b"xx");
        rejected.event.id = "bad".into();
        dashboard.record(&Outcome::Rejected { name: "bad.jpg".into(), position: None, rejected: Box::new(rejected) });

        let status = dashboard.status();
        assert_eq!((status.totals.classified, status.totals.rejected, status.totals.below_threshold), (100, 1, 34));
        assert_eq!(status.recent.len(), RECENT);
        assert_eq!(status.recent[0].image_id, "img-99", "newest first");
        assert!(status.recent.iter().all(|r| r.has_thumbnail));
        let name = |seq: u64| format!("{}-{seq}", status.run);
        assert_eq!(dashboard.thumbnail_jpeg(&name(status.recent[0].seq)).as_deref(), Some(&[0xFF, 0xD8, 0xFF, 99][..]));
        assert!(dashboard.thumbnail_jpeg(&name(1)).is_none(), "the oldest left the grid with its thumbnail");
        // A restarted process numbers its outcomes from 1 again: the browser's cached thumbnail of this run's
        // newest outcome must not be what the next run's URL for the same number names.
        let next = Dashboard::new("embedded");
        assert_ne!(next.status().run, status.run, "every process's page has its own run name");
        assert!(next.thumbnail_jpeg(&name(status.recent[0].seq)).is_none(), "another run's URL is not served");
        assert!(dashboard.thumbnail_jpeg("x").is_none() && dashboard.thumbnail_jpeg(&name(0)).is_none());
        assert!(dashboard.inner.pending.lock().unwrap().is_empty(), "every thumbnail found its outcome");
        assert_eq!((status.labels[0].name.as_str(), status.labels[0].count), ("cat", 66.0));
        assert_eq!((status.rejects[0].name.as_str(), status.dead_letters[0].reason), ("truncated", "truncated"));
        assert!(status.dead_letters[0].detail.chars().count() <= MAX_DETAIL + 1);
        let delivered: Vec<_> = status.partitions.iter().map(|p| (p.partition, p.delivered)).collect();
        assert_eq!(delivered, vec![(0, Some(98)), (1, Some(99))]);

        // Thumbnails whose outcome never comes are bounded too.
        for i in 0..(PENDING + 50) {
            let meta = EventMeta { id: format!("lost-{i}"), ..EventMeta::default() };
            ThumbnailSink::thumbnail(&dashboard, &meta, vec![1; 10]);
        }
        assert_eq!(dashboard.inner.pending.lock().unwrap().len(), PENDING);
    }

    #[test]
    fn lag_counts_records_after_the_commit() {
        let dashboard = Dashboard::new("connector");
        dashboard.set_partition(0, Some(9), Some(15));
        dashboard.set_partition(1, None, Some(4));
        let status = dashboard.status();
        let lags: Vec<_> = status.partitions.iter().map(|p| (p.partition, p.lag)).collect();
        assert_eq!(lags, vec![(0, Some(5)), (1, Some(4))]);
        assert!(status.partitions[0].committed_at.is_some());
        assert_eq!((lag(Some(14), Some(15)), lag(Some(3), None)), (Some(0), None));
    }

    #[test]
    fn gauges_and_histograms_are_read_from_the_flow_state() {
        let flow = fvision_pipeline::metrics::Flow::new();
        flow.queue_moved("decode", 3);
        flow.queue_moved("batch", 1);
        flow.queue_moved("batch", -1);
        flow.set_in_flight(7, 0);
        for size in [1, 1, 3, 4, 5] {
            flow.batch(size);
        }
        let (queues, in_flight, b) = flow_status(flow.snapshot());
        let queues: Vec<(&str, f64)> = queues.iter().map(|c| (c.name.as_str(), c.count)).collect();
        assert_eq!(queues, vec![("consumed", 0.0), ("decode", 3.0), ("batch", 0.0)]);
        assert_eq!(in_flight, Some(7.0));
        assert_eq!((b.count, b.mean, b.buckets.len()), (5.0, Some(2.8), 10));
        assert_eq!((b.buckets[0].name.as_str(), b.buckets[0].count), ("1", 2.0));
        assert_eq!((b.buckets[9].name.as_str(), b.buckets[9].count), ("+Inf", 5.0));
    }
}
