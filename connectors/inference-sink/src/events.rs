//! Telemetry of the pipeline: one function per event, each counting with bounded labels (status, reason,
//! stage, model), named per Prometheus conventions. With no recorder installed these cost nothing.

use fvision_records::{Prediction, RejectedImage};

/// Images out of the pipeline, by status (`classified`, `rejected`), reason and stage.
pub const IMAGES_TOTAL: &str = "fvision_images_total";
/// Per-stage time of classified images, by stage (`decode`, `preprocess`, `queue`, `inference`).
pub const STAGE_SECONDS: &str = "fvision_stage_seconds";
/// End-to-end time of classified images.
pub const PROCESSING_SECONDS: &str = "fvision_processing_seconds";
/// Images per inference batch.
pub const BATCH_SIZE: &str = "fvision_batch_size";
/// Predictions below the confidence threshold.
pub const BELOW_THRESHOLD_TOTAL: &str = "fvision_below_threshold_total";
/// Time to load the model, by model.
pub const MODEL_LOAD_SECONDS: &str = "fvision_model_load_seconds";

/// A prediction left the pipeline.
pub fn image_classified(prediction: &Prediction) {
    metrics::counter!(IMAGES_TOTAL, "status" => "classified", "reason" => "", "stage" => "", "model" => prediction.model_name.clone())
        .increment(1);
    let t = &prediction.timings;
    for (stage, ms) in
        [("decode", t.decode_ms), ("preprocess", t.preprocess_ms), ("queue", t.queue_ms), ("inference", t.inference_ms)]
    {
        metrics::histogram!(STAGE_SECONDS, "stage" => stage).record(ms / 1e3);
    }
    metrics::histogram!(PROCESSING_SECONDS).record(prediction.processing_time_ms / 1e3);
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
        "model" => ""
    )
    .increment(1);
}

/// An inference batch ran.
pub fn batch_run(size: usize) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
}

/// The model was loaded.
pub fn model_loaded(model: &str, seconds: f64) {
    metrics::gauge!(MODEL_LOAD_SECONDS, "model" => model.to_string()).set(seconds);
}

/// Records the Fluvio client skipped at a fetch boundary and the connector read again.
pub const REREAD_TOTAL: &str = "fvision_reread_total";
/// Records read from the Fluvio topic.
pub const CONSUMED_TOTAL: &str = "fvision_consumed_total";
/// Commit barriers passed: every record up to there delivered, confirmed and its offset committed.
pub const OFFSET_COMMITS_TOTAL: &str = "fvision_offset_commits_total";
/// Outcomes handed to an output, by destination (`predictions`, `review`, `dead_letter`, `dropped`).
pub const DELIVERED_TOTAL: &str = "fvision_delivered_total";
/// Records read but not yet delivered.
pub const IN_FLIGHT: &str = "fvision_in_flight";
/// Items waiting in a queue between stages, by queue (`consumed`, `decode`, `batch`, `output`).
pub const QUEUE_DEPTH: &str = "fvision_queue_depth";

/// A record was read from Fluvio.
pub fn record_consumed() {
    metrics::counter!(CONSUMED_TOTAL).increment(1);
}

/// The client skipped `count` records, which are read again.
pub fn records_reread(count: u64) {
    metrics::counter!(REREAD_TOTAL).increment(count);
}

/// Offsets were committed.
pub fn offsets_committed() {
    metrics::counter!(OFFSET_COMMITS_TOTAL).increment(1);
}

/// An outcome went to `destination`.
pub fn delivered(destination: &'static str) {
    metrics::counter!(DELIVERED_TOTAL, "destination" => destination).increment(1);
}

/// Records read but not delivered, and the depth of the queue from the consumer into the pipeline.
pub fn in_flight(records: u64, consumed_queue: usize) {
    metrics::gauge!(IN_FLIGHT).set(records as f64);
    metrics::gauge!(QUEUE_DEPTH, "queue" => "consumed").set(consumed_queue as f64);
}

/// An item entered (`+1`) or left (`-1`) the queue in front of a pipeline stage.
pub fn queue_moved(queue: &'static str, delta: f64) {
    metrics::gauge!(QUEUE_DEPTH, "queue" => queue).increment(delta);
}

/// Bucket bounds of the `*_seconds` histograms: 1 ms to 10 s, where image latencies live.
const SECONDS_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Bucket bounds of the batch-size histogram.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The Prometheus exporter with real histograms (buckets) for this crate's metrics, as `fvision run` and
/// the connector serve them; without buckets the exporter would render summaries, which cannot be
/// aggregated across instances.
pub fn prometheus() -> metrics_exporter_prometheus::PrometheusBuilder {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS));
    // Setting buckets only fails for an empty list; these are constants, so this never falls back.
    builder.unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Serves `/metrics` on `address` with [`prometheus`]'s histograms, for the process's lifetime; returns the
/// bound address. [`crate::endpoint::serve`] also serves the status page on the same listener.
pub fn serve(address: std::net::SocketAddr) -> Result<std::net::SocketAddr, crate::endpoint::EndpointError> {
    crate::endpoint::serve(address, None)
}

/// Starts the series without labels at 0, so a dashboard's `rate()` has them from the first scrape (the
/// labelled ones start with their first label set). Called once the recorder is installed.
pub fn register() {
    metrics::counter!(BELOW_THRESHOLD_TOTAL).increment(0);
}

/// The connector's own series without labels start at 0 too (`fvision run` reads no topic, so it does not
/// export them). Called once the recorder is installed.
pub fn register_connector() {
    for counter in [CONSUMED_TOTAL, REREAD_TOTAL, OFFSET_COMMITS_TOTAL] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!(IN_FLIGHT).set(0.0);
}

/// Records after the committed offset, by partition of the input topic (connector).
pub const CONSUMER_LAG: &str = "fvision_consumer_lag";
/// Failures of an output as a whole (a send or an acknowledgement that failed), by sink.
pub const OUTPUT_ERRORS_TOTAL: &str = "fvision_output_errors_total";
/// Rows an output refused one by one (dead-lettered with reason `sink_error`), by sink.
pub const OUTPUT_REFUSED_TOTAL: &str = "fvision_output_refused_total";
/// 1 while an output is failing and retrying, else 0, by sink.
pub const OUTPUT_RETRYING: &str = "fvision_output_retrying";
/// Rows an output accepted and has not stored yet (queued, batched, awaiting delivery reports), by sink.
pub const OUTPUT_BACKLOG: &str = "fvision_output_backlog";

/// The records of `partition` after the committed offset.
pub fn consumer_lag(partition: u32, lag: i64) {
    metrics::gauge!(CONSUMER_LAG, "partition" => partition.to_string()).set(lag as f64);
}

/// An output joined the run: its error series start at 0, so rates and alerts work before the first error.
pub fn output_added(sink: &str) {
    metrics::counter!(OUTPUT_ERRORS_TOTAL, "sink" => sink.to_string()).increment(0);
    metrics::counter!(OUTPUT_REFUSED_TOTAL, "sink" => sink.to_string()).increment(0);
    metrics::gauge!(OUTPUT_RETRYING, "sink" => sink.to_string()).set(0.0);
    metrics::gauge!(OUTPUT_BACKLOG, "sink" => sink.to_string()).set(0.0);
}

/// An external sink joined the run: its series start at 0 (errors of every kind, retries, rows, bytes,
/// replays skipped), so dashboards and alerts have them before the first event.
pub fn sink_added(sink: &str) {
    for counter in [SINK_ROWS_TOTAL, SINK_BYTES_TOTAL, SINK_RETRIES_TOTAL, SINK_REPLAY_SKIPPED_TOTAL] {
        metrics::counter!(counter, "sink" => sink.to_string()).increment(0);
    }
    for kind in SINK_ERROR_KINDS {
        metrics::counter!(SINK_ERRORS_TOTAL, "sink" => sink.to_string(), "kind" => kind).increment(0);
    }
    // Registered without a sample: the exporter renders their (empty) buckets.
    for histogram in [SINK_WRITE_SECONDS, SINK_BACKPRESSURE_SECONDS] {
        drop(metrics::histogram!(histogram, "sink" => sink.to_string()));
    }
}

/// The kinds of [`SINK_ERRORS_TOTAL`].
pub const SINK_ERROR_KINDS: [&str; 5] = ["transient", "too_large", "rejected_row", "fatal", "gave_up"];

/// An output's retrying state and backlog, as polled.
pub fn output_state(sink: &str, retrying: bool, backlog: u64) {
    output_retrying(sink, retrying);
    metrics::gauge!(OUTPUT_BACKLOG, "sink" => sink.to_string()).set(backlog as f64);
}

/// An output failed as a whole.
pub fn output_failed(sink: &str) {
    metrics::counter!(OUTPUT_ERRORS_TOTAL, "sink" => sink.to_string()).increment(1);
}

/// An output refused `count` rows one by one.
pub fn output_refused(sink: &str, count: usize) {
    metrics::counter!(OUTPUT_REFUSED_TOTAL, "sink" => sink.to_string()).increment(count as u64);
}

/// Whether an output is retrying.
pub fn output_retrying(sink: &str, retrying: bool) {
    metrics::gauge!(OUTPUT_RETRYING, "sink" => sink.to_string()).set(if retrying { 1.0 } else { 0.0 });
}

/// Rows (messages, lines) an external sink stored, by sink (`bigquery`, `kafka`, `gcs`).
pub const SINK_ROWS_TOTAL: &str = "fvision_sink_rows_total";
/// Bytes an external sink sent (the encoded rows), by sink.
pub const SINK_BYTES_TOTAL: &str = "fvision_sink_bytes_total";
/// Failed writes by sink and kind (`transient`, `too_large`, `rejected_row`, `fatal`, `gave_up`).
pub const SINK_ERRORS_TOTAL: &str = "fvision_sink_errors_total";
/// Time of one successful write request (a BigQuery insert, a GCS upload, a Kafka delivery), by sink.
pub const SINK_WRITE_SECONDS: &str = "fvision_sink_write_seconds";
/// Attempts repeated after a transient error, by sink.
pub const SINK_RETRIES_TOTAL: &str = "fvision_sink_retries_total";
/// Each wait of the pipeline for room in a sink's full queue (back-pressure), by sink; `_sum` is the total
/// time blocked.
pub const SINK_BACKPRESSURE_SECONDS: &str = "fvision_sink_backpressure_seconds";
/// Rows of the replay window not written again because the destination already held them, by sink.
pub const SINK_REPLAY_SKIPPED_TOTAL: &str = "fvision_sink_replay_skipped_total";

/// A sink stored `rows` rows of `bytes` bytes in one request that took `seconds`.
pub fn sink_written(sink: &str, rows: u64, bytes: u64, seconds: f64) {
    metrics::counter!(SINK_ROWS_TOTAL, "sink" => sink.to_string()).increment(rows);
    metrics::counter!(SINK_BYTES_TOTAL, "sink" => sink.to_string()).increment(bytes);
    metrics::histogram!(SINK_WRITE_SECONDS, "sink" => sink.to_string()).record(seconds);
}

/// A sink's write failed; `kind` is one of a fixed set (see [`SINK_ERRORS_TOTAL`]).
pub fn sink_error(sink: &str, kind: &'static str) {
    metrics::counter!(SINK_ERRORS_TOTAL, "sink" => sink.to_string(), "kind" => kind).increment(1);
}

/// A sink retries after a transient error.
pub fn sink_retry(sink: &str) {
    metrics::counter!(SINK_RETRIES_TOTAL, "sink" => sink.to_string()).increment(1);
}

/// The pipeline waited `seconds` for room in a sink's queue.
pub fn sink_backpressure(sink: &str, seconds: f64) {
    metrics::histogram!(SINK_BACKPRESSURE_SECONDS, "sink" => sink.to_string()).record(seconds);
}

/// Rows of the replay window a sink did not write again.
pub fn sink_replay_skipped(sink: &str, rows: u64) {
    metrics::counter!(SINK_REPLAY_SKIPPED_TOTAL, "sink" => sink.to_string()).increment(rows);
}
