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

/// Serves `/metrics` on `address`.
pub fn serve(address: std::net::SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(address).install()
}
