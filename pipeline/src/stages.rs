//! The concurrent inference pipeline: validate -> decode+preprocess (N workers) -> micro-batcher ->
//! inference (one shared model) -> outputs. Stages are threads connected by bounded queues, so a slow
//! stage (or a slow sink) slows everything before it and memory stays bounded by the queue sizes.
//! Every input yields exactly one [`Outcome`]: a prediction, or a rejection carrying its original bytes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fvision_models::{Classifier, PreparedBatch};
use fvision_records::{
    CappedPayload, EventMeta, PayloadCap, Prediction, RejectReason, RejectedImage, Stage, ValidationRecord,
};

use crate::batcher::next_batch;
use crate::item::{Item, Outcome, SourcePosition};
use crate::metrics as events;
use crate::tally::Tally;

/// The validation stage: one verdict per value (`None` where the validator dropped it).
pub trait Validate: Send {
    /// Validates a batch of record values.
    fn validate(&mut self, values: &[&[u8]]) -> Vec<Option<ValidationRecord>>;

    /// Whether the values are the records as produced (validation runs here) rather than the validator's
    /// output (it ran on the SPU); in the latter case a later stage's dead letter rebuilds the record as
    /// produced from the validated record's `original`.
    fn sees_originals(&self) -> bool {
        true
    }
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
    /// How long the first image of a batch waits for more, and only while more are being decoded: an image
    /// reaching an idle inference stage runs at once.
    pub max_wait: Duration,
    /// Capacity of each queue between stages (raised to twice the batch size). Each queued image holds its
    /// record, decoded tensor or both: 32 held about 26 MiB more at peak than 8, with no throughput gained.
    pub queue: usize,
    /// Records per call into the validator.
    pub validate_batch: usize,
    /// Classes reported per prediction.
    pub top_k: usize,
    /// Confidence threshold; predictions below it are flagged, not dropped.
    pub threshold: f32,
    /// Largest serialised payload a dead letter of this pipeline carries.
    pub dead_letter_payload_cap: PayloadCap,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            max_batch: 4,
            max_wait: Duration::from_millis(5),
            queue: 8,
            validate_batch: 4,
            top_k: 5,
            threshold: 0.0,
            dead_letter_payload_cap: PayloadCap::default(),
        }
    }
}

impl PipelineSettings {
    /// The settings users choose (flags or the connector YAML); the rest keeps its defaults, and
    /// `workers: None` means one per core.
    pub fn new(max_batch: usize, max_wait: Duration, threshold: f32, workers: Option<usize>) -> Self {
        let defaults = Self::default();
        let queue = defaults.queue.max(2 * max_batch);
        Self { max_batch, max_wait, threshold, queue, workers: workers.unwrap_or(defaults.workers), ..defaults }
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
    original: Original,
    meta: EventMeta,
    data: String,
}

/// The record as produced, for the dead letter of a later stage: the consumed value itself, or (validation
/// ran on the SPU) as the validated record let it be rebuilt.
enum Original {
    /// The record value as produced.
    Value(Vec<u8>),
    /// Already capped.
    Capped(CappedPayload),
}

impl Original {
    fn rejected(&self, reason: RejectReason, detail: String, stage: Stage, cap: PayloadCap) -> RejectedImage {
        match self {
            Self::Value(value) => RejectedImage::capped(reason, detail, stage, value, cap),
            Self::Capped(capped) => RejectedImage::with_payload(reason, detail, stage, capped.clone()),
        }
    }
}

/// A stage failed on one image or one batch: the reason and detail of its dead letters.
struct StageFailure {
    reason: RejectReason,
    detail: String,
}

/// Runs `work`, turning a panic into a [`StageFailure`] with reason `internal_error`: a decoder or model bug on a
/// crafted input costs that input, not the worker (whose loss would leave the commit barrier waiting forever).
fn guarded<T>(stage: Stage, work: impl FnOnce() -> Result<T, StageFailure>) -> Result<T, StageFailure> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic_message(&*panic);
        tracing::error!(stage = stage.as_str(), panic = %message, "a stage panicked; the image goes to the dead letters");
        Err(StageFailure { reason: RejectReason::InternalError, detail: format!("{} panicked: {message}", stage.as_str()) })
    })
}

/// The message of a panic payload (`panic!` with a string or a format), for the dead letter or the error
/// that reports it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
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
    original: Original,
    batch: PreparedBatch,
}

impl Ready {
    fn rejected(self, failure: &StageFailure, cap: PayloadCap) -> Outcome {
        let meta = self.batch.images().first().map(|i| i.meta.clone()).unwrap_or_default();
        let rejected = self.original.rejected(failure.reason, failure.detail.clone(), Stage::Inference, cap);
        Outcome::Rejected {
            rejected: Box::new(rejected.with_event(meta).at_record(&self.name)),
            name: self.name,
            position: self.position,
        }
    }
}

/// Runs `inputs` through the pipeline, handing each outcome to `sink` on the calling thread. The inputs are
/// read on their own thread, so validation takes what has arrived instead of waiting for a full validator
/// batch.
pub fn run_pipeline<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    inputs: impl Iterator<Item = Item> + Send,
    validator: impl Validate,
    classifier: &Classifier,
    config: &PipelineSettings,
    sink: impl FnMut(Outcome) -> Result<(), E>,
) -> Result<PipelineStats, PipelineError> {
    let (input_tx, input_rx) = async_channel::bounded::<Item>(config.validate_batch.max(1));
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for item in inputs {
                if input_tx.send_blocking(item).is_err() {
                    return; // the pipeline stopped
                }
            }
        });
        run_pipeline_from(input_rx, validator, classifier, config, sink)
    })
}

/// [`run_pipeline`] on a channel a producer already fills (the connector's consumer): validation reads it
/// directly. The pipeline drops `inputs` when it stops, so the producer sees the channel closed.
pub fn run_pipeline_from<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    input_rx: async_channel::Receiver<Item>,
    mut validator: impl Validate,
    classifier: &Classifier,
    config: &PipelineSettings,
    mut sink: impl FnMut(Outcome) -> Result<(), E>,
) -> Result<PipelineStats, PipelineError> {
    let started = Instant::now();
    let queue = config.queue.max(1);
    let max_batch = config.max_batch.clamp(1, classifier.spec().manifest.max_batch);
    let (model_name, model_version) = (classifier.spec().name(), classifier.spec().manifest.version.as_str());
    let (task_tx, task_rx) = sync_channel::<Task>(queue);
    let (ready_tx, ready_rx) = sync_channel::<Ready>(queue);
    let (out_tx, out_rx) = sync_channel::<Message>(queue);
    let task_rx = Arc::new(Mutex::new(task_rx));
    let mut stats = PipelineStats::default();
    let counts = Arc::new(Mutex::new((0u64, 0u64))); // inputs, dropped
    let decoding = AtomicUsize::new(0); // images a decode worker holds right now

    let result = std::thread::scope(|scope| {
        let out = out_tx.clone();
        let validate_counts = Arc::clone(&counts);
        scope.spawn(move || validate_stage(&input_rx, &mut validator, config, task_tx, out, &validate_counts));
        for _ in 0..config.workers.max(1) {
            let (rx, ready, out) = (Arc::clone(&task_rx), ready_tx.clone(), out_tx.clone());
            let decoding = &decoding;
            scope.spawn(move || decode_stage(classifier, config.dead_letter_payload_cap, &rx, ready, out, decoding));
        }
        // Only the stages may hold channel ends: when the sink stops, every end must go away with the
        // stage that owns it, or a stage blocked on a full queue would wait forever.
        drop(task_rx);
        drop(ready_tx);
        let out = out_tx.clone();
        let decoding = &decoding;
        scope.spawn(move || inference_stage(classifier, config, max_batch, &ready_rx, out, decoding));
        drop(out_tx);
        // The calling thread is the sink. Returning early drops the receiver, which unblocks every stage.
        // Telemetry is recorded here too, so one recorder on this thread sees all of it.
        for message in out_rx {
            events::queue_moved("output", -1.0);
            let outcome = match message {
                Message::Batch(size) => {
                    stats.batches += 1;
                    events::batch_run(size, model_name, model_version);
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

/// Blocks for one item, then takes those already queued, up to `max` (never waits for more).
fn take_arrived<T>(rx: &async_channel::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut batch = vec![rx.recv_blocking().ok()?];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn validate_stage(
    inputs: &async_channel::Receiver<Item>,
    validator: &mut impl Validate,
    config: &PipelineSettings,
    tasks: SyncSender<Task>,
    out: SyncSender<Message>,
    counts: &Mutex<(u64, u64)>,
) {
    let cap = config.dead_letter_payload_cap;
    let originals = validator.sees_originals();
    while let Some(batch) = take_arrived(inputs, config.validate_batch.max(1)) {
        let values: Vec<&[u8]> = batch.iter().map(|i| i.value.as_slice()).collect();
        let verdicts = validator.validate(&values);
        if let Ok(mut c) = counts.lock() {
            c.0 += batch.len() as u64;
            c.1 += verdicts.iter().filter(|v| v.is_none()).count() as u64;
        }
        for (item, verdict) in batch.into_iter().zip(verdicts) {
            let sent = match verdict {
                Some(ValidationRecord::Ok(ok)) => {
                    let rebuilt = match (&ok.original, originals) {
                        (Some(form), false) => form.rebuild(&item.value, &ok.event, cap),
                        _ => None,
                    };
                    let original = rebuilt.map_or(Original::Value(item.value), Original::Capped);
                    let task = Task {
                        name: item.name,
                        position: item.position,
                        original,
                        meta: ok.event.meta,
                        data: ok.event.data,
                    };
                    send_counted(&tasks, "decode", task)
                }
                Some(ValidationRecord::Rejected(rejected)) => {
                    let rejected = Box::new(rejected.at_record(&item.name));
                    let outcome = Outcome::Rejected { name: item.name, position: item.position, rejected };
                    send_counted(&out, "output", Message::Outcome(outcome))
                }
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
    cap: PayloadCap,
    tasks: &Mutex<Receiver<Task>>,
    ready: SyncSender<Ready>,
    out: SyncSender<Message>,
    decoding: &AtomicUsize,
) {
    let pre = classifier.preprocessor();
    loop {
        let task = match tasks.lock().map(|rx| rx.recv()) {
            Ok(Ok(task)) => task,
            _ => return,
        };
        decoding.fetch_add(1, Ordering::AcqRel);
        events::queue_moved("decode", -1.0);
        let prepared = guarded(Stage::Decode, || {
            #[cfg(test)]
            fault::inject("decode", &task.meta.id);
            let image = base64::engine::general_purpose::STANDARD.decode(&task.data).map_err(|e| StageFailure {
                reason: RejectReason::InvalidBase64,
                detail: format!("validated data is not base64: {e}"),
            })?;
            let mut batch = PreparedBatch::with_capacity(pre, 1);
            batch
                .push(pre, &image, task.meta.clone())
                .map_err(|e| StageFailure { reason: e.reason, detail: e.detail })?;
            Ok(batch)
        });
        let sent = match prepared {
            Ok(batch) => {
                let ready_item = Ready { name: task.name, position: task.position, original: task.original, batch };
                send_counted(&ready, "batch", ready_item)
            }
            Err(failure) => {
                let stage = match failure.reason {
                    RejectReason::PreprocessError => Stage::Preprocess,
                    _ => Stage::Decode,
                };
                let rejected = task.original.rejected(failure.reason, failure.detail, stage, cap);
                let rejected = Box::new(rejected.with_event(task.meta).at_record(&task.name));
                let outcome = Outcome::Rejected { name: task.name, position: task.position, rejected };
                send_counted(&out, "output", Message::Outcome(outcome))
            }
        };
        decoding.fetch_sub(1, Ordering::AcqRel);
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
    decoding: &AtomicUsize,
) {
    while let Some(items) = next_batch(ready, max_batch, config.max_wait, decoding) {
        events::queue_moved("batch", -(items.len() as f64));
        if !send_counted(&out, "output", Message::Batch(items.len())) {
            return;
        }
        let parts: Vec<&PreparedBatch> = items.iter().map(|item| &item.batch).collect();
        let outcomes: Vec<Outcome> = match classify(classifier, &parts, config) {
            Ok(predictions) => items
                .into_iter()
                .zip(predictions)
                .map(|(item, p)| Outcome::Classified {
                    name: item.name,
                    position: item.position,
                    prediction: Box::new(p),
                })
                .collect(),
            // One bad image must not take the good ones with it: run them one by one before dead-lettering any.
            Err(failure) if items.len() > 1 => {
                tracing::warn!(
                    images = items.len(), reason = failure.reason.as_str(), detail = %failure.detail,
                    "inference failed on a batch; retrying its images one by one"
                );
                items
                    .into_iter()
                    .map(|item| match classify(classifier, &[&item.batch], config) {
                        Ok(mut predictions) => match predictions.pop() {
                            Some(p) => Outcome::Classified {
                                name: item.name,
                                position: item.position,
                                prediction: Box::new(p),
                            },
                            None => item.rejected(&no_prediction(), config.dead_letter_payload_cap),
                        },
                        Err(failure) => item.rejected(&failure, config.dead_letter_payload_cap),
                    })
                    .collect()
            }
            Err(failure) => {
                items.into_iter().map(|item| item.rejected(&failure, config.dead_letter_payload_cap)).collect()
            }
        };
        for outcome in outcomes {
            if !send_counted(&out, "output", Message::Outcome(outcome)) {
                return;
            }
        }
    }
}

/// Classifies the images of `parts` as one batch: one prediction per image, in order, or why not (a panic in
/// the model included).
fn classify(
    classifier: &Classifier,
    parts: &[&PreparedBatch],
    config: &PipelineSettings,
) -> Result<Vec<Prediction>, StageFailure> {
    guarded(Stage::Inference, || {
        let mut batch = PreparedBatch::with_capacity(classifier.preprocessor(), parts.len());
        for part in parts {
            batch.append(part);
        }
        #[cfg(test)]
        fault::inference(&batch)?;
        let predictions = classifier
            .classify_batch(&batch, config.top_k, config.threshold)
            .map_err(|e| StageFailure { reason: RejectReason::InferenceError, detail: e.to_string() })?;
        if predictions.len() != batch.len() {
            return Err(no_prediction());
        }
        Ok(predictions)
    })
}

fn no_prediction() -> StageFailure {
    StageFailure {
        reason: RejectReason::InternalError,
        detail: "the model returned a different number of predictions than images".into(),
    }
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

/// Test-only faults, injected by image id: a panic in a stage, or an inference error on any batch holding an
/// image. Compiled into unit tests only.
#[cfg(test)]
mod fault {
    use std::sync::Mutex;

    use fvision_models::PreparedBatch;

    use super::StageFailure;
    use fvision_records::RejectReason;

    /// (what, image id): `("decode", id)` panics while decoding `id`; `("inference-panic", id)` panics on
    /// any batch holding `id`; `("inference-error", id)` fails such batches with an error.
    pub static FAULTS: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

    fn armed(what: &str, id: &str) -> bool {
        FAULTS.lock().map(|f| f.iter().any(|(w, i)| *w == what && i == id)).unwrap_or(false)
    }

    pub fn inject(stage: &str, id: &str) {
        if armed(stage, id) {
            panic!("injected fault in {stage} for {id}");
        }
    }

    pub fn inference(batch: &PreparedBatch) -> Result<(), StageFailure> {
        for image in batch.images() {
            inject("inference-panic", &image.meta.id);
            if armed("inference-error", &image.meta.id) {
                return Err(StageFailure {
                    reason: RejectReason::InferenceError,
                    detail: format!("injected inference error for {}", image.meta.id),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use fvision_models::{ClassifierOptions, Registry};

    fn classifier() -> &'static Classifier {
        static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
        CLASSIFIER.get_or_init(|| {
            let spec = Registry::open_default().unwrap().resolve("efficientnet-lite0").unwrap();
            Classifier::load(spec, &ClassifierOptions::default()).unwrap()
        })
    }

    /// `count` sample photos as envelopes with ids `{prefix}-{i}`.
    fn photos(prefix: &str, count: usize) -> Vec<Item> {
        fvision_tests::data_files("imagenet-sample")
            .into_iter()
            .take(count)
            .enumerate()
            .map(|(i, (_, bytes))| {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                let value = serde_json::json!({"id": format!("{prefix}-{i}"), "data": data}).to_string();
                Item { name: format!("t/0@{i}"), value: value.into_bytes(), position: None }
            })
            .collect()
    }

    /// The native validator, as the WASM runs it.
    fn native(values: &[&[u8]]) -> Vec<Option<ValidationRecord>> {
        let params = image_validate::ValidationParams::default();
        values.iter().map(|v| Some(image_validate::validate_value(v, &params))).collect()
    }

    fn run(items: Vec<Item>, config: &PipelineSettings) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        let stats = run_pipeline(items.into_iter(), native, classifier(), config, |o| {
            outcomes.push(o);
            Ok::<_, String>(())
        })
        .unwrap();
        assert_eq!(stats.tally.classified + stats.tally.rejected, outcomes.len() as u64);
        outcomes
    }

    fn arm(what: &'static str, id: &str) {
        fault::FAULTS.lock().unwrap().push((what, id.to_string()));
    }

    fn by_id(outcomes: &[Outcome]) -> std::collections::BTreeMap<String, Result<String, (RejectReason, Stage)>> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Classified { prediction, .. } => (prediction.image_id.clone(), Ok(prediction.label.clone())),
                Outcome::Rejected { rejected, .. } => {
                    (rejected.event.id.clone(), Err((rejected.reason, rejected.stage)))
                }
            })
            .collect()
    }

    #[test]
    fn an_input_gets_its_outcome_before_the_next_one_arrives() {
        // Each input is offered only once the previous one has its outcome, as a slow source does: a stage
        // that waited for a full validator batch (4) or for more images to batch would never get the next.
        let config = PipelineSettings { max_batch: 4, max_wait: Duration::from_secs(3600), ..Default::default() };
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let mut photos = photos("one-by-one", 3).into_iter().enumerate();
        let inputs = std::iter::from_fn(move || {
            let (i, item) = photos.next()?;
            if i > 0 {
                done_rx.recv_timeout(Duration::from_secs(120)).expect("the previous input never got its outcome");
            }
            Some(item)
        });
        let mut outcomes = Vec::new();
        run_pipeline(inputs, native, classifier(), &config, |o| {
            outcomes.push(o);
            let _ = done_tx.send(()); // after the last input the feeder is gone
            Ok::<_, String>(())
        })
        .unwrap();
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Classified { .. })));
    }

    #[test]
    fn a_panic_in_decode_is_one_dead_letter_and_the_workers_go_on() {
        arm("decode", "panic-decode-1");
        // One worker: if the panic killed it, nothing after the faulty image would be classified.
        let config = PipelineSettings { workers: 1, max_batch: 2, ..PipelineSettings::default() };
        let items = photos("panic-decode", 5);
        let values: Vec<Vec<u8>> = items.iter().map(|i| i.value.clone()).collect();
        let outcomes = run(items, &config);
        let got = by_id(&outcomes);
        assert_eq!(got.len(), 5, "every image has an outcome: {got:?}");
        assert_eq!(got["panic-decode-1"], Err((RejectReason::InternalError, Stage::Decode)));
        assert_eq!(got.values().filter(|v| v.is_ok()).count(), 4);
        let dead = outcomes.iter().find_map(|o| match o {
            Outcome::Rejected { rejected, .. } => Some(rejected),
            _ => None,
        });
        let dead = dead.unwrap();
        assert!(dead.detail.contains("injected fault"), "{}", dead.detail);
        assert_eq!(dead.payload.to_bytes().unwrap(), values[1], "the dead letter carries the record as produced");
        assert_eq!(dead.record.as_deref(), Some("t/0@1"));
    }

    #[test]
    fn a_panic_in_inference_costs_only_its_image() {
        arm("inference-panic", "panic-infer-2");
        let config =
            PipelineSettings { workers: 1, max_batch: 4, max_wait: Duration::from_millis(200), ..Default::default() };
        let got = by_id(&run(photos("panic-infer", 6), &config));
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got["panic-infer-2"], Err((RejectReason::InternalError, Stage::Inference)));
        assert_eq!(got.values().filter(|v| v.is_ok()).count(), 5, "{got:?}");
    }

    #[test]
    fn an_inference_error_on_a_batch_retries_its_images_one_by_one() {
        arm("inference-error", "retry-3");
        let config =
            PipelineSettings { workers: 1, max_batch: 4, max_wait: Duration::from_millis(200), ..Default::default() };
        let items = photos("retry", 8);
        // The same photos without the fault give the labels the retried images must get.
        let expected = by_id(&run(photos("retry-ref", 8), &config));
        let outcomes = run(items, &config);
        let got = by_id(&outcomes);
        assert_eq!(got["retry-3"], Err((RejectReason::InferenceError, Stage::Inference)));
        for i in (0..8).filter(|i| *i != 3) {
            let label = &expected[&format!("retry-ref-{i}")];
            assert!(label.is_ok());
            assert_eq!(
                &got[&format!("retry-{i}")],
                label,
                "image {i} was batched with the bad one and still classified"
            );
        }
    }

    #[test]
    fn a_decode_dead_letter_carries_the_record_as_produced_in_both_validation_modes() {
        let bad = fvision_tests::data_files("bad-inputs")
            .into_iter()
            .find(|(name, _)| name == "png-corrupt-idat-bad-zlib-good-crc.png")
            .unwrap()
            .1;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bad);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bad);
        let values: Vec<Vec<u8>> = vec![
            format!(r#"{{"id":"spu-1","source":"kafka","data":"{b64}","attributes":{{"k":"v"}}}}"#).into_bytes(),
            format!(r#"{{"data":"{b64}"}}"#).into_bytes(),
            format!(" {{\"id\":\"spu-3\",\"data\":\"{url_safe}\"}}\n").into_bytes(),
            bad.clone(),
            b64.clone().into_bytes(),
            format!("data:image/png;base64,{b64}").into_bytes(),
        ];
        let config = PipelineSettings { workers: 1, ..PipelineSettings::default() };
        let items = || {
            values.iter().enumerate().map(|(i, v)| Item {
                name: format!("images/0@{i}"),
                value: v.clone(),
                position: None,
            })
        };
        // In the connector: the record as produced goes through the validator here.
        let here = run(items().collect(), &config);
        // On the SPU: the pipeline sees the validator's output records (what the SPU sends), not the originals.
        struct Spu;
        impl Validate for Spu {
            fn validate(&mut self, values: &[&[u8]]) -> Vec<Option<ValidationRecord>> {
                values.iter().map(|v| Some(serde_json::from_slice(v).unwrap())).collect()
            }
            fn sees_originals(&self) -> bool {
                false
            }
        }
        let params = image_validate::ValidationParams::default();
        let spu_items: Vec<Item> = items()
            .map(|item| Item { value: image_validate::validate_to_json(&item.value, &params).json, ..item })
            .collect();
        let mut spu = Vec::new();
        run_pipeline(spu_items.into_iter(), Spu, classifier(), &config, |o| {
            spu.push(o);
            Ok::<_, String>(())
        })
        .unwrap();
        let dead_letters = |outcomes: &[Outcome]| -> std::collections::BTreeMap<String, Vec<u8>> {
            outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Rejected { name, rejected, .. } => (name.clone(), serde_json::to_vec(rejected).unwrap()),
                    Outcome::Classified { name, .. } => panic!("{name} was classified"),
                })
                .collect()
        };
        let (here, spu) = (dead_letters(&here), dead_letters(&spu));
        assert_eq!(here.len(), values.len());
        for (i, value) in values.iter().enumerate() {
            let name = format!("images/0@{i}");
            let rejected: RejectedImage = serde_json::from_slice(&here[&name]).unwrap();
            assert_eq!(rejected.reason, RejectReason::DecodeError, "{name}");
            assert_eq!(&rejected.payload.to_bytes().unwrap(), value, "{name}: the record as produced");
            assert_eq!(String::from_utf8_lossy(&spu[&name]), String::from_utf8_lossy(&here[&name]), "{name}");
        }
    }
}
