//! What the source counts (Prometheus, see docs/metrics.md).

use fvision_connector_common::source_metrics as names;
use metrics::counter;

/// Records written to Fluvio: `outcome` is `produced` (to `images`) or `dead_letter`.
pub fn records(outcome: &'static str, n: u64) {
    counter!(names::RECORDS_TOTAL, "source" => "gcs", "outcome" => outcome).increment(n);
}

/// Events and dead letters not written to Fluvio again because their topic already held their id (replays
/// after a crash between Fluvio's acknowledgement and the acks, or Pub/Sub redeliveries); their messages are
/// acked all the same.
pub fn replay_skipped(n: u64) {
    counter!(names::REPLAY_SKIPPED_TOTAL, "source" => "gcs").increment(n);
}

/// Notifications acked without an event: `reason` is `event_type`, `prefix` or `content_type`.
pub fn ignored(reason: &'static str) {
    counter!(names::IGNORED_TOTAL, "source" => "gcs", "reason" => reason).increment(1);
}

/// Pub/Sub messages acked after Fluvio acknowledged what they became.
pub fn acked(n: u64) {
    counter!(names::COMMITS_TOTAL, "source" => "gcs").increment(n);
}

/// Failed calls (`pull`, `ack`, `download`, `extend`), retried or left for redelivery.
pub fn client_error(kind: &'static str) {
    counter!(names::ERRORS_TOTAL, "source" => "gcs", "kind" => kind).increment(1);
}
