//! The pipeline's telemetry: one function per event, each counting with bounded labels (status, reason,
//! stage, model, version), named per Prometheus conventions. With no recorder installed these cost nothing.
//! The recorder and its buckets are `fvision-status`'s; whoever feeds the pipeline (the connector) sets
//! [`IN_FLIGHT`]. As Triton does, every per-image, stage and batch series carries the `model` and `version`
//! of the model that produced it, so two models (or two versions during a roll-out) chart apart.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use fvision_records::{Prediction, RejectedImage};

/// Images out of the pipeline, by status (`classified`, `rejected`), reason, stage, model and version.
pub const IMAGES_TOTAL: &str = "fvision_images_total";
/// Per-stage time of classified images, by stage (`decode`, `preprocess`, `queue`, `inference`), model and
/// version.
pub const STAGE_SECONDS: &str = "fvision_stage_seconds";
/// End-to-end time of classified images, by model and version.
pub const PROCESSING_SECONDS: &str = "fvision_processing_seconds";
/// Images per inference batch, by model and version.
pub const BATCH_SIZE: &str = "fvision_batch_size";
/// Predictions below the confidence threshold.
pub const BELOW_THRESHOLD_TOTAL: &str = "fvision_below_threshold_total";
/// Time to load the model, by model and version.
pub const MODEL_LOAD_SECONDS: &str = "fvision_model_load_seconds";

/// A prediction left the pipeline.
pub fn image_classified(prediction: &Prediction) {
    let (model, version) = (prediction.model_name.clone(), prediction.model_version.clone());
    metrics::counter!(
        IMAGES_TOTAL,
        "status" => "classified",
        "reason" => "",
        "stage" => "",
        "model" => model.clone(),
        "version" => version.clone()
    )
    .increment(1);
    let t = &prediction.timings;
    for (stage, ms) in
        [("decode", t.decode_ms), ("preprocess", t.preprocess_ms), ("queue", t.queue_ms), ("inference", t.inference_ms)]
    {
        metrics::histogram!(STAGE_SECONDS, "stage" => stage, "model" => model.clone(), "version" => version.clone())
            .record(ms / 1e3);
    }
    metrics::histogram!(PROCESSING_SECONDS, "model" => model, "version" => version)
        .record(prediction.processing_time_ms / 1e3);
    if !prediction.above_threshold {
        metrics::counter!(BELOW_THRESHOLD_TOTAL).increment(1);
    }
}

/// An image was rejected (it belongs on the dead-letter topic).
pub fn image_rejected(rejected: &RejectedImage) {
    metrics::counter!(
        IMAGES_TOTAL,
        "status" => "rejected",
        "reason" => rejected.reason.as_str(),
        "stage" => rejected.stage.as_str(),
        "model" => "",
        "version" => ""
    )
    .increment(1);
}

/// An inference batch of `model` at `version` ran.
pub fn batch_run(size: usize, model: &str, version: &str) {
    metrics::histogram!(BATCH_SIZE, "model" => model.to_string(), "version" => version.to_string()).record(size as f64);
    FLOW.batch(size);
}

/// The model was loaded.
pub fn model_loaded(model: &str, version: &str, seconds: f64) {
    metrics::gauge!(MODEL_LOAD_SECONDS, "model" => model.to_string(), "version" => version.to_string()).set(seconds);
}

/// Records read but not yet delivered.
pub const IN_FLIGHT: &str = "fvision_in_flight";
/// Items waiting in a queue between stages, by queue (`consumed`, `decode`, `batch`, `output`).
pub const QUEUE_DEPTH: &str = "fvision_queue_depth";

/// Records read but not delivered, and the depth of the queue from the consumer into the pipeline.
pub fn in_flight(records: u64, consumed_queue: usize) {
    metrics::gauge!(IN_FLIGHT).set(records as f64);
    metrics::gauge!(QUEUE_DEPTH, "queue" => "consumed").set(consumed_queue as f64);
    FLOW.set_in_flight(records, consumed_queue);
}

/// An item entered (`+1`) or left (`-1`) the queue in front of a pipeline stage.
pub fn queue_moved(queue: &'static str, delta: f64) {
    metrics::gauge!(QUEUE_DEPTH, "queue" => queue).increment(delta);
    FLOW.queue_moved(queue, delta as i64);
}

/// Starts the series without labels at 0, so a dashboard's `rate()` has them from the first scrape (the
/// labelled ones start with their first label set), and gives every metric of this module its `# HELP`
/// line. Called once the recorder is installed.
pub fn register() {
    metrics::counter!(BELOW_THRESHOLD_TOTAL).increment(0);
    for (name, help) in [
        (IMAGES_TOTAL, "Images out of the pipeline, by status (classified, rejected), stable reason code and stage."),
        (BELOW_THRESHOLD_TOTAL, "Predictions below the confidence threshold."),
    ] {
        metrics::describe_counter!(name, help);
    }
    for (name, help) in [
        (
            STAGE_SECONDS,
            "Per-stage time of classified images: decode, preprocess, queue (waiting in the micro-batcher), inference.",
        ),
        (PROCESSING_SECONDS, "End-to-end time per classified image."),
        (BATCH_SIZE, "Images per inference batch."),
    ] {
        metrics::describe_histogram!(name, help);
    }
    for (name, help) in [
        (MODEL_LOAD_SECONDS, "Time to create the model's ONNX Runtime session, in seconds."),
        (IN_FLIGHT, "Records read but not yet delivered (connector)."),
        (QUEUE_DEPTH, "Items waiting in front of each stage: consumed, decode, batch, output."),
    ] {
        metrics::describe_gauge!(name, help);
    }
}

/// Bucket bounds of the [`BATCH_SIZE`] histogram, in the recorder and in [`Flow`].
pub const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The queues of [`QUEUE_DEPTH`], in the order an image passes them.
pub const QUEUES: [&str; 4] = ["consumed", "decode", "batch", "output"];

/// What the status page shows of the flow (queue depths, records in flight, batch sizes), kept in memory
/// next to the recorder's copy, so the page reads it here instead of parsing the process's own `/metrics`.
/// Every field is an atomic: the stages update it without a lock.
#[derive(Debug)]
pub struct Flow {
    queues: [AtomicI64; QUEUES.len()],
    /// Whether each queue was used yet (the page lists only those, as the exposition does).
    used: [AtomicBool; QUEUES.len()],
    in_flight: AtomicU64,
    /// Whether anyone feeds in-flight records (the connector; `fvision run` does not).
    in_flight_set: AtomicBool,
    batches: AtomicU64,
    batch_images: AtomicU64,
    /// Batches per bucket of [`BATCH_BUCKETS`] (not cumulative), and above the last bound.
    batch_buckets: [AtomicU64; BATCH_BUCKETS.len() + 1],
}

impl Default for Flow {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of [`Flow`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSnapshot {
    /// The depth of each queue used so far, in [`QUEUES`] order.
    pub queues: Vec<(&'static str, i64)>,
    /// Records read and not delivered, when the run reads a topic.
    pub in_flight: Option<u64>,
    /// Inference batches run.
    pub batches: u64,
    /// Images in those batches.
    pub batch_images: u64,
    /// Cumulative batch counts per bucket bound (`le`), the last one `+Inf`, as the histogram exports them.
    pub batch_buckets: Vec<(String, u64)>,
}

/// The process's flow state, which the functions of this module keep.
static FLOW: Flow = Flow::new();

/// The process's flow state (one per process, like the metrics recorder).
pub fn flow() -> &'static Flow {
    &FLOW
}

impl Flow {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            queues: [const { AtomicI64::new(0) }; QUEUES.len()],
            used: [const { AtomicBool::new(false) }; QUEUES.len()],
            in_flight: AtomicU64::new(0),
            in_flight_set: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            batch_images: AtomicU64::new(0),
            batch_buckets: [const { AtomicU64::new(0) }; BATCH_BUCKETS.len() + 1],
        }
    }

    /// An item entered (`delta` > 0) or left the queue `queue`.
    pub fn queue_moved(&self, queue: &str, delta: i64) {
        if let Some(i) = QUEUES.iter().position(|q| *q == queue) {
            self.used[i].store(true, Ordering::Relaxed);
            self.queues[i].fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Records read and not delivered, and the depth of the queue from the consumer.
    pub fn set_in_flight(&self, records: u64, consumed_queue: usize) {
        self.in_flight.store(records, Ordering::Relaxed);
        self.in_flight_set.store(true, Ordering::Relaxed);
        self.used[0].store(true, Ordering::Relaxed);
        self.queues[0].store(consumed_queue as i64, Ordering::Relaxed);
    }

    /// A batch of `size` images ran.
    pub fn batch(&self, size: usize) {
        let bucket = BATCH_BUCKETS.iter().position(|bound| size as f64 <= *bound).unwrap_or(BATCH_BUCKETS.len());
        self.batch_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.batch_images.fetch_add(size as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// The state now.
    pub fn snapshot(&self) -> FlowSnapshot {
        let queues = QUEUES
            .iter()
            .zip(self.queues.iter().zip(&self.used))
            .filter(|(_, (_, used))| used.load(Ordering::Relaxed))
            .map(|(name, (depth, _))| (*name, depth.load(Ordering::Relaxed)))
            .collect();
        let in_flight = self.in_flight_set.load(Ordering::Relaxed).then(|| self.in_flight.load(Ordering::Relaxed));
        let bounds = BATCH_BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]);
        let mut cumulative = 0;
        let batch_buckets = bounds
            .zip(&self.batch_buckets)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        FlowSnapshot {
            queues,
            in_flight,
            batches: self.batches.load(Ordering::Relaxed),
            batch_images: self.batch_images.load(Ordering::Relaxed),
            batch_buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_keeps_what_the_status_page_shows() {
        let flow = Flow::new();
        assert_eq!(flow.snapshot().queues, vec![]);
        assert_eq!(flow.snapshot().in_flight, None);
        flow.queue_moved("decode", 3);
        flow.queue_moved("batch", 1);
        flow.queue_moved("batch", -1);
        flow.queue_moved("not-a-queue", 5);
        for size in [1, 1, 3, 4, 300] {
            flow.batch(size);
        }
        let snapshot = flow.snapshot();
        assert_eq!(snapshot.queues, vec![("decode", 3), ("batch", 0)]);
        assert_eq!((snapshot.batches, snapshot.batch_images), (5, 309));
        let buckets: Vec<(&str, u64)> = snapshot.batch_buckets.iter().map(|(b, c)| (b.as_str(), *c)).collect();
        assert_eq!(&buckets[..3], &[("1", 2), ("2", 2), ("4", 4)]);
        assert_eq!(buckets.last(), Some(&("+Inf", 5)));
        flow.set_in_flight(7, 2);
        let snapshot = flow.snapshot();
        assert_eq!((snapshot.in_flight, snapshot.queues[0]), (Some(7), ("consumed", 2)));
    }
}
