//! The sources' `/metrics` endpoint (kafka-source and gcs-source alike): one exporter, every
//! `fvision_source_*` metric with its `# HELP` line. The sources count through the `metrics` macros with
//! these names and a `source` label (`kafka`, `gcs`).

/// Records written to Fluvio and acknowledged, by source and outcome (`produced`, `dead_letter`).
pub const RECORDS_TOTAL: &str = "fvision_source_records_total";
/// Records not written again because their topic already held the same record, by source.
pub const REPLAY_SKIPPED_TOTAL: &str = "fvision_source_replay_skipped_total";
/// Kafka offset commits / Pub/Sub acks, each after Fluvio acknowledged, by source.
pub const COMMITS_TOTAL: &str = "fvision_source_commits_total";
/// Client errors retried or left for redelivery, by source and kind.
pub const ERRORS_TOTAL: &str = "fvision_source_errors_total";
/// Notifications acked without an event, by source and reason (gcs-source).
pub const IGNORED_TOTAL: &str = "fvision_source_ignored_total";
/// Commits under the source's group id made by another process (kafka-source, `assignment: all`).
pub const GROUP_CONFLICTS_TOTAL: &str = "fvision_source_group_conflicts_total";
/// Records deleted (Kafka retention, a recreated topic) before the source read them (kafka-source).
pub const EXPIRED_RECORDS_TOTAL: &str = "fvision_source_expired_records_total";
/// Ranges of records lost that way, each one `expired` dead letter (kafka-source).
pub const EXPIRED_RANGES_TOTAL: &str = "fvision_source_expired_ranges_total";

/// Installs the Prometheus exporter serving `/metrics` on `address` and describes every source metric.
pub fn serve(address: std::net::SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(address).install()?;
    for (name, help) in [
        (RECORDS_TOTAL, "Records a source wrote to Fluvio and Fluvio acknowledged, by source and outcome (produced, dead_letter)."),
        (
            REPLAY_SKIPPED_TOTAL,
            "Events and dead letters not written again because their topic already held the same record (a replay after a crash, a redelivery), by source.",
        ),
        (COMMITS_TOTAL, "Kafka offset commits or Pub/Sub acks, each made after Fluvio acknowledged, by source."),
        (ERRORS_TOTAL, "Client errors that were retried or left for redelivery, by source and kind."),
        (IGNORED_TOTAL, "Notifications acked without an event, by source and reason (event_type, prefix, content_type)."),
        (GROUP_CONFLICTS_TOTAL, "Commits under the source's group id made by another process since its own (kafka-source)."),
        (
            EXPIRED_RECORDS_TOTAL,
            "Records deleted by Kafka retention or a recreated topic before the source read them (kafka-source).",
        ),
        (EXPIRED_RANGES_TOTAL, "Ranges of records lost before they were read, each an expired dead letter (kafka-source)."),
    ] {
        metrics::describe_counter!(name, help);
    }
    Ok(())
}
