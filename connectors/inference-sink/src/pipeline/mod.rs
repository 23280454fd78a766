//! The concurrent inference pipeline: validate -> decode+preprocess (N workers) -> micro-batcher ->
//! inference (one shared model) -> outputs. Stages are threads connected by bounded queues, so a slow
//! stage (or a slow sink) slows everything before it and memory stays bounded by the queue sizes.
//! Every input yields exactly one [`Outcome`]: a prediction, or a rejection carrying its original bytes.

mod batcher;

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fvision_models::{Classifier, PreparedBatch};
use fvision_records::{EventMeta, Prediction, RejectReason, RejectedImage, Stage, ValidationRecord};

use crate::events;
use crate::outputs::SourcePosition;
use crate::tally::Tally;

pub use batcher::next_batch;

/// One record value to classify, with a name for reports.
#[derive(Debug, Clone)]
pub struct Item {
    /// A display name (file path, topic/offset).
    pub name: String,
    /// The record value as it arrived.
    pub value: Vec<u8>,
    /// Where it was read from, when it came from a Fluvio topic (outputs name objects or de-duplicate by it).
    pub position: Option<SourcePosition>,
}

impl Item {
    /// A record without a source position (a file, a line of stdin).
    pub fn new(name: impl Into<String>, value: Vec<u8>) -> Self {
        Self { name: name.into(), value, position: None }
    }
}

/// What became of one input.
#[derive(Debug)]
pub enum Outcome {
    /// Classified.
    Classified {
        /// The input's name.
        name: String,
        /// Where the input was read from, when it came from a Fluvio topic.
        position: Option<SourcePosition>,
        /// The prediction.
        prediction: Box<Prediction>,
    },
    /// Rejected at some stage; belongs on the dead-letter topic.
    Rejected {
        /// The input's name.
        name: String,
        /// Where the input was read from, when it came from a Fluvio topic.
        position: Option<SourcePosition>,
        /// The rejection, with the original record value.
        rejected: Box<RejectedImage>,
    },
}

impl Outcome {
    /// The input's name (file path, `topic/partition@offset`).
    pub fn name(&self) -> &str {
        match self {
            Self::Classified { name, .. } | Self::Rejected { name, .. } => name,
        }
    }

    /// Where the input was read from, when it came from a Fluvio topic.
    pub fn position(&self) -> Option<SourcePosition> {
        match self {
            Self::Classified { position, .. } | Self::Rejected { position, .. } => *position,
        }
    }
}

/// The validation stage: one verdict per value (`None` where the validator dropped it).
pub trait Validate: Send {
    /// Validates a batch of record values.
    fn validate(&mut self, values: &[&[u8]]) -> Vec<Option<ValidationRecord>>;
}

impl<F: FnMut(&[&[u8]]) -> Vec<Option<ValidationRecord>> + Send> Validate for F {
    fn validate(&mut self, values: &[&[u8]]) -> Vec<Option<ValidationRecord>> {
        self(values)
    }
}

/// Sizes and timings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Decode/preprocess worker threads.
    pub workers: usize,
    /// Largest inference batch (capped by the model's `max_batch`).
    pub max_batch: usize,
    /// How long the first image of a batch waits for more.
    pub max_wait: Duration,
    /// Capacity of each queue between stages.
    pub queue: usize,
    /// Records per call into the validator.
    pub validate_batch: usize,
    /// Classes reported per prediction.
    pub top_k: usize,
    /// Confidence threshold; predictions below it are flagged, not dropped.
    pub threshold: f32,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            max_batch: 4,
            max_wait: Duration::from_millis(5),
            queue: 32,
            validate_batch: 4,
            top_k: 5,
            threshold: 0.0,
        }
    }
}

impl PipelineSettings {
    /// The settings users choose (flags or the connector YAML); the rest keeps its defaults, and
    /// `workers: None` means one per core.
    pub fn new(max_batch: usize, max_wait: Duration, threshold: f32, workers: Option<usize>) -> Self {
        let defaults = Self::default();
        Self { max_batch, max_wait, threshold, workers: workers.unwrap_or(defaults.workers), ..defaults }
    }
}

/// What a run did, for the summary line and the benchmarks.
#[derive(Debug, Clone, Default)]
pub struct PipelineStats {
    /// Inputs read.
    pub inputs: u64,
    /// Inputs the validator dropped (`on_invalid=drop`).
    pub dropped: u64,
    /// Inference batches run.
    pub batches: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Outcomes: counts and latency quantiles, in fixed memory.
    pub tally: Tally,
}

impl PipelineStats {
    /// Inputs per second over the run.
    pub fn images_per_sec(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile of the predictions (`q` in 0..=1), in ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.tally.latency_ms(q)
    }
}

/// Why the pipeline stopped before every input had its outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The sink refused an outcome.
    #[error("the output failed")]
    Output(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An accepted image on its way to a worker.
struct Task {
    name: String,
    position: Option<SourcePosition>,
    value: Vec<u8>,
    meta: EventMeta,
    data: String,
}

/// What the stages send to the calling thread.
enum Message {
    /// One input's outcome.
    Outcome(Outcome),
    /// An inference batch of this size ran.
    Batch(usize),
}

/// A preprocessed image on its way to the batcher.
struct Ready {
    name: String,
    position: Option<SourcePosition>,
    value: Vec<u8>,
    batch: PreparedBatch,
}

/// Runs `inputs` through the pipeline, handing each outcome to `sink` on the calling thread.
pub fn run_pipeline<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    inputs: impl Iterator<Item = Item> + Send,
    mut validator: impl Validate,
    classifier: &Classifier,
    config: &PipelineSettings,
    mut sink: impl FnMut(Outcome) -> Result<(), E>,
) -> Result<PipelineStats, PipelineError> {
    let started = Instant::now();
    let queue = config.queue.max(1);
    let max_batch = config.max_batch.clamp(1, classifier.spec().manifest.max_batch);
    let (task_tx, task_rx) = sync_channel::<Task>(queue);
    let (ready_tx, ready_rx) = sync_channel::<Ready>(queue);
    let (out_tx, out_rx) = sync_channel::<Message>(queue);
    let task_rx = Arc::new(Mutex::new(task_rx));
    let mut stats = PipelineStats::default();
    let counts = Arc::new(Mutex::new((0u64, 0u64))); // inputs, dropped

    let result = std::thread::scope(|scope| {
        let out = out_tx.clone();
        let validate_counts = Arc::clone(&counts);
        scope.spawn(move || {
            validate_stage(inputs, &mut validator, config.validate_batch, task_tx, out, &validate_counts)
        });
        for _ in 0..config.workers.max(1) {
            let (rx, ready, out) = (Arc::clone(&task_rx), ready_tx.clone(), out_tx.clone());
            scope.spawn(move || decode_stage(classifier, &rx, ready, out));
        }
        // Only the stages may hold channel ends: when the sink stops, every end must go away with the
        // stage that owns it, or a stage blocked on a full queue would wait forever.
        drop(task_rx);
        drop(ready_tx);
        let out = out_tx.clone();
        scope.spawn(move || inference_stage(classifier, config, max_batch, &ready_rx, out));
        drop(out_tx);
        // The calling thread is the sink. Returning early drops the receiver, which unblocks every stage.
        // Telemetry is recorded here too, so one recorder on this thread sees all of it.
        for message in out_rx {
            events::queue_moved("output", -1.0);
            let outcome = match message {
                Message::Batch(size) => {
                    stats.batches += 1;
                    events::batch_run(size);
                    continue;
                }
                Message::Outcome(outcome) => outcome,
            };
            stats.tally.record(&outcome);
            match &outcome {
                Outcome::Classified { prediction, .. } => events::image_classified(prediction),
                Outcome::Rejected { rejected, .. } => events::image_rejected(rejected),
            }
            sink(outcome).map_err(|e| PipelineError::Output(e.into()))?;
        }
        Ok(())
    });
    result?;
    let (inputs, dropped) = counts.lock().map(|c| *c).unwrap_or_default();
    stats.inputs = inputs;
    stats.dropped = dropped;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

fn validate_stage(
    inputs: impl Iterator<Item = Item>,
    validator: &mut impl Validate,
    chunk: usize,
    tasks: SyncSender<Task>,
    out: SyncSender<Message>,
    counts: &Mutex<(u64, u64)>,
) {
    let mut inputs = inputs.peekable();
    while inputs.peek().is_some() {
        let batch: Vec<Item> = inputs.by_ref().take(chunk.max(1)).collect();
        let values: Vec<&[u8]> = batch.iter().map(|i| i.value.as_slice()).collect();
        let verdicts = validator.validate(&values);
        if let Ok(mut c) = counts.lock() {
            c.0 += batch.len() as u64;
            c.1 += verdicts.iter().filter(|v| v.is_none()).count() as u64;
        }
        for (item, verdict) in batch.into_iter().zip(verdicts) {
            let sent = match verdict {
                Some(ValidationRecord::Ok(ok)) => send_counted(
                    &tasks,
                    "decode",
                    Task {
                        name: item.name,
                        position: item.position,
                        value: item.value,
                        meta: ok.event.meta,
                        data: ok.event.data,
                    },
                ),
                Some(ValidationRecord::Rejected(rejected)) => send_counted(
                    &out,
                    "output",
                    Message::Outcome(Outcome::Rejected {
                        name: item.name,
                        position: item.position,
                        rejected: Box::new(rejected),
                    }),
                ),
                None => true,
            };
            if !sent {
                return; // the sink stopped
            }
        }
    }
}

fn decode_stage(
    classifier: &Classifier,
    tasks: &Mutex<Receiver<Task>>,
    ready: SyncSender<Ready>,
    out: SyncSender<Message>,
) {
    let pre = classifier.preprocessor();
    loop {
        let task = match tasks.lock().map(|rx| rx.recv()) {
            Ok(Ok(task)) => task,
            _ => return,
        };
        events::queue_moved("decode", -1.0);
        let reject = |reason, detail: String, stage| {
            let rejected = RejectedImage::new(reason, detail, stage, &task.value).with_event(task.meta.clone());
            Message::Outcome(Outcome::Rejected {
                name: task.name.clone(),
                position: task.position,
                rejected: Box::new(rejected),
            })
        };
        let image = match base64::engine::general_purpose::STANDARD.decode(&task.data) {
            Ok(image) => image,
            Err(e) => {
                let sent = send_counted(
                    &out,
                    "output",
                    reject(RejectReason::InvalidBase64, format!("validated data is not base64: {e}"), Stage::Decode),
                );
                if !sent {
                    return;
                }
                continue;
            }
        };
        let mut batch = PreparedBatch::with_capacity(pre, 1);
        let sent = match batch.push(pre, &image, task.meta.clone()) {
            Ok(()) => send_counted(
                &ready,
                "batch",
                Ready { name: task.name, position: task.position, value: task.value, batch },
            ),
            Err(e) => {
                let stage = if e.reason == RejectReason::PreprocessError { Stage::Preprocess } else { Stage::Decode };
                send_counted(&out, "output", reject(e.reason, e.detail, stage))
            }
        };
        if !sent {
            return;
        }
    }
}

fn inference_stage(
    classifier: &Classifier,
    config: &PipelineSettings,
    max_batch: usize,
    ready: &Receiver<Ready>,
    out: SyncSender<Message>,
) {
    while let Some(items) = next_batch(ready, max_batch, config.max_wait) {
        events::queue_moved("batch", -(items.len() as f64));
        let mut batch = PreparedBatch::with_capacity(classifier.preprocessor(), items.len());
        for item in &items {
            batch.append(&item.batch);
        }
        if !send_counted(&out, "output", Message::Batch(items.len())) {
            return;
        }
        let outcomes: Vec<Outcome> = match classifier.classify_batch(&batch, config.top_k, config.threshold) {
            Ok(predictions) => items
                .into_iter()
                .zip(predictions)
                .map(|(item, p)| Outcome::Classified {
                    name: item.name,
                    position: item.position,
                    prediction: Box::new(p),
                })
                .collect(),
            Err(e) => items
                .into_iter()
                .map(|item| {
                    let meta = item.batch.images().first().map(|i| i.meta.clone()).unwrap_or_default();
                    let rejected = RejectedImage::new(
                        RejectReason::InferenceError,
                        with_causes(&e),
                        Stage::Inference,
                        &item.value,
                    )
                    .with_event(meta);
                    Outcome::Rejected { name: item.name, position: item.position, rejected: Box::new(rejected) }
                })
                .collect(),
        };
        for outcome in outcomes {
            if !send_counted(&out, "output", Message::Outcome(outcome)) {
                return;
            }
        }
    }
}

/// An error's message followed by its causes, for the detail of a rejected record.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Sends into a stage's queue, keeping its depth gauge; `false` when the receiving side has stopped.
fn send_counted<T>(queue: &SyncSender<T>, name: &'static str, item: T) -> bool {
    events::queue_moved(name, 1.0);
    let sent = queue.send(item).is_ok();
    if !sent {
        events::queue_moved(name, -1.0);
    }
    sent
}
