//! The outputs' telemetry: errors, refusals, retrying state and backlog of every output, and the rows,
//! bytes, write times, retries and back-pressure of the external sinks, by `sink` label.

/// Failures of an output as a whole (a send or an acknowledgement that failed), by sink.
pub const OUTPUT_ERRORS_TOTAL: &str = "fvision_output_errors_total";
/// Rows an output refused one by one (dead-lettered with reason `sink_error`), by sink.
pub const OUTPUT_REFUSED_TOTAL: &str = "fvision_output_refused_total";
/// 1 while an output is failing and retrying, else 0, by sink.
pub const OUTPUT_RETRYING: &str = "fvision_output_retrying";
/// Rows an output accepted and has not stored yet (queued, batched, awaiting delivery reports), by sink.
pub const OUTPUT_BACKLOG: &str = "fvision_output_backlog";

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

/// Gives every metric of this module its `# HELP` line. Called once the recorder is installed.
pub fn describe() {
    for (name, help) in [
        (OUTPUT_ERRORS_TOTAL, "Failures of an output as a whole (a send or an acknowledgement), by sink."),
        (OUTPUT_REFUSED_TOTAL, "Rows an output refused one by one, dead-lettered with reason sink_error, by sink."),
        (SINK_ROWS_TOTAL, "Rows, messages or NDJSON lines an external sink stored, by sink."),
        (SINK_BYTES_TOTAL, "Bytes of encoded rows an external sink sent, by sink."),
        (
            SINK_ERRORS_TOTAL,
            "Failed writes of an external sink, by sink and kind (transient, too_large, rejected_row, fatal, gave_up).",
        ),
        (SINK_RETRIES_TOTAL, "Write attempts an external sink repeated after a transient error, by sink."),
        (
            SINK_REPLAY_SKIPPED_TOTAL,
            "Rows of the replay window not written again because the destination already held them, by sink.",
        ),
    ] {
        metrics::describe_counter!(name, help);
    }
    for (name, help) in [
        (OUTPUT_RETRYING, "1 while an output is failing and retrying with backoff, else 0, by sink."),
        (
            OUTPUT_BACKLOG,
            "Rows an output accepted and has not stored yet (queued, batched, awaiting delivery reports), by sink.",
        ),
    ] {
        metrics::describe_gauge!(name, help);
    }
    for (name, help) in [
        (
            SINK_WRITE_SECONDS,
            "Time of one successful write of an external sink (an insert, an upload, a delivery), by sink.",
        ),
        (
            SINK_BACKPRESSURE_SECONDS,
            "Each wait of the pipeline for room in a sink's full queue, by sink; _sum is the time held back.",
        ),
    ] {
        metrics::describe_histogram!(name, help);
    }
}
