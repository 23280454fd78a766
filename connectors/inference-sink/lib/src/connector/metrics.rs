//! The connector's own telemetry (`fvision run` reads no topic, so it does not export these): records
//! consumed and re-read, commits, deliveries by destination and the consumer lag.

/// Records the Fluvio client skipped at a fetch boundary and the connector read again.
pub const REREAD_TOTAL: &str = "fvision_reread_total";
/// Records read from the Fluvio topic.
pub const CONSUMED_TOTAL: &str = "fvision_consumed_total";
/// Commit barriers passed: every record up to there delivered, confirmed and its offset committed.
pub const OFFSET_COMMITS_TOTAL: &str = "fvision_offset_commits_total";
/// Outcomes handed to an output, by destination (`predictions`, `review`, `dead_letter`, `dropped`).
pub const DELIVERED_TOTAL: &str = "fvision_delivered_total";

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

/// The connector's series without labels start at 0, and each of its metrics gets its `# HELP` line.
/// Called once the recorder is installed.
pub fn register() {
    for counter in [CONSUMED_TOTAL, REREAD_TOTAL, OFFSET_COMMITS_TOTAL] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!(fvision_pipeline::metrics::IN_FLIGHT).set(0.0);
    for (name, help) in [
        (CONSUMED_TOTAL, "Records read from the Fluvio topic."),
        (REREAD_TOTAL, "Records the Fluvio client skipped at a fetch boundary and the connector read again."),
        (
            OFFSET_COMMITS_TOTAL,
            "Commit barriers passed: every record before them delivered, confirmed and its offset committed.",
        ),
        (DELIVERED_TOTAL, "Outcomes handed to an output, by destination (predictions, review, dead_letter, dropped)."),
    ] {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_gauge!(
        CONSUMER_LAG,
        "Records after the offset committed under the consumer id, up to the partition's end, by partition."
    );
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
