//! What the source counts (Prometheus, see docs/metrics.md).

use metrics::counter;

/// Records written to Fluvio: `outcome` is `produced` (to `images`) or `dead_letter`.
pub fn records(outcome: &'static str, n: u64) {
    counter!("fvision_source_records_total", "source" => "gcs", "outcome" => outcome).increment(n);
}

/// Events and dead letters not written to Fluvio again because their topic already held their id (replays
/// after a crash between Fluvio's acknowledgement and the acks, or Pub/Sub redeliveries); their messages are
/// acked all the same.
pub fn replays_skipped(n: u64) {
    counter!("fvision_source_replays_skipped_total", "source" => "gcs").increment(n);
}

/// Notifications acked without an event: `reason` is `event_type`, `prefix` or `content_type`.
pub fn ignored(reason: &'static str) {
    counter!("fvision_source_ignored_total", "source" => "gcs", "reason" => reason).increment(1);
}

/// Pub/Sub messages acked after Fluvio acknowledged what they became.
pub fn acked(n: u64) {
    counter!("fvision_source_commits_total", "source" => "gcs").increment(n);
}

/// Failed calls (`pull`, `ack`, `download`, `extend`), retried or left for redelivery.
pub fn client_error(kind: &'static str) {
    counter!("fvision_source_errors_total", "source" => "gcs", "kind" => kind).increment(1);
}

/// Serves `/metrics` on `address`.
pub fn serve(address: std::net::SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(address).install()
}
