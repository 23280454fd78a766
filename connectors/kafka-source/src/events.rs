//! What the source counts (Prometheus, see docs/metrics.md): records by outcome, commits, client errors.

use metrics::counter;

/// Records written to Fluvio: `outcome` is `produced` (to `images`) or `dead_letter`.
pub fn records(outcome: &'static str, n: u64) {
    counter!("fvision_source_records_total", "source" => "kafka", "outcome" => outcome).increment(n);
}

/// Records not written to Fluvio again because their topic already held their id (replays after a crash
/// between Fluvio's acknowledgement and the commit); their offsets are committed all the same.
pub fn replays_skipped(n: u64) {
    counter!("fvision_source_replays_skipped_total", "source" => "kafka").increment(n);
}

/// Offset commits made after Fluvio acknowledged a batch.
pub fn committed() {
    counter!("fvision_source_commits_total", "source" => "kafka").increment(1);
}

/// Errors reported by the Kafka client (`poll`, `commit`), which it retries or the next batch replays.
pub fn client_error(kind: &'static str) {
    counter!("fvision_source_errors_total", "source" => "kafka", "kind" => kind).increment(1);
}

/// `assignment: all`: a commit under `group-id` made by another process (which reads the same partitions).
pub fn group_conflict() {
    counter!("fvision_source_group_conflicts_total", "source" => "kafka").increment(1);
}

/// Records deleted (Kafka retention, a recreated topic) before the source read them: each lost range is also
/// an `expired` dead letter and an error log line. A range past the end of a recreated topic counts 0 here
/// (its size is unknown) and 1 in `fvision_source_expired_ranges_total`.
pub fn expired(records: u64) {
    counter!("fvision_source_expired_records_total", "source" => "kafka").increment(records);
    counter!("fvision_source_expired_ranges_total", "source" => "kafka").increment(1);
}

/// Serves `/metrics` on `address`.
pub fn serve(address: std::net::SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(address).install()
}
