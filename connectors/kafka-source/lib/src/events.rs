//! What the source counts (Prometheus, see docs/metrics.md): records by outcome, commits, client errors.

use fvision_connector_common::source_metrics as names;
use metrics::counter;

/// Records written to Fluvio: `outcome` is `produced` (to `images`) or `dead_letter`.
pub fn records(outcome: &'static str, n: u64) {
    counter!(names::RECORDS_TOTAL, "source" => "kafka", "outcome" => outcome).increment(n);
}

/// Records not written to Fluvio again because their topic already held their id (replays after a crash
/// between Fluvio's acknowledgement and the commit); their offsets are committed all the same.
pub fn replay_skipped(n: u64) {
    counter!(names::REPLAY_SKIPPED_TOTAL, "source" => "kafka").increment(n);
}

/// Offset commits made after Fluvio acknowledged a batch.
pub fn committed() {
    counter!(names::COMMITS_TOTAL, "source" => "kafka").increment(1);
}

/// Errors reported by the Kafka client (`poll`, `commit`), which it retries or the next batch replays.
pub fn client_error(kind: &'static str) {
    counter!(names::ERRORS_TOTAL, "source" => "kafka", "kind" => kind).increment(1);
}

/// `assignment: all`: a commit under `group-id` made by another process (which reads the same partitions).
pub fn group_conflict() {
    counter!(names::GROUP_CONFLICTS_TOTAL, "source" => "kafka").increment(1);
}

/// Records deleted (Kafka retention, a recreated topic) before the source read them: each lost range is also
/// an `expired` dead letter and an error log line. A range past the end of a recreated topic counts 0 here
/// (its size is unknown) and 1 in the ranges counter.
pub fn expired(records: u64) {
    counter!(names::EXPIRED_RECORDS_TOTAL, "source" => "kafka").increment(records);
    counter!(names::EXPIRED_RANGES_TOTAL, "source" => "kafka").increment(1);
}
