//! The run loop: pull a batch of notifications, turn each into an event or a dead letter (downloading the
//! object while its ack deadline is renewed), wait for Fluvio's acknowledgement of the batch, then ack the
//! messages. SIGTERM/SIGINT stop between batches, after the acks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluvio_future::task::run_block_on;
use fvision_connector_common::dead_letter::source_rejection;
use fvision_connector_common::source_output::ReplayLookback;
use fvision_connector_common::{Sent, SourceOutput, SourceOutputError as OutputError};
use fvision_records::{EventMeta, RejectReason, Source};
use gcloud_pubsub::subscriber::ReceivedMessage;

use crate::config::{GcsConfig, GcsSettings};
use crate::events;
use crate::notification::{read_notice, Notice, ObjectRef};
use fvision_gcp::auth::SCOPE_STORAGE_READ;
use fvision_gcp::emulator::storage_endpoint_from_env;
use fvision_gcp::pubsub::{self, PubSubError};
use fvision_gcp::storage::{BlockingClient, Download, StorageError};

/// Pause after an empty pull (a unary pull may return at once with nothing).
const IDLE: Duration = Duration::from_millis(200);

/// Why the source stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Writing to Fluvio failed: nothing of the batch was acked, Pub/Sub redelivers it.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Pub/Sub could not be reached or the subscription does not exist.
    #[error(transparent)]
    PubSub(#[from] PubSubError),
    /// The subscription does not exist.
    #[error(
        "subscription `{0}` does not exist; create it on the topic that receives the bucket's notifications \
         (`gcloud storage buckets notifications create gs://BUCKET --topic=TOPIC`, then `gcloud pubsub \
         subscriptions create {0} --topic=TOPIC`)"
    )]
    MissingSubscription(String),
    /// The async runtime or the metrics endpoint could not be started.
    #[error("{0}")]
    Setup(String),
}

/// What a run did, for the exit log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages pulled.
    pub pulled: u64,
    /// Events written to the events topic.
    pub produced: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Events and dead letters not written again because their topic already held their id (a predecessor's
    /// replay, or a redelivery); their messages are acked.
    pub replay_skipped: u64,
    /// Notifications acked without an event (other event types, prefix, content type).
    pub ignored: u64,
    /// Messages acked.
    pub acked: u64,
    /// Messages left un-acked after a failed download (Pub/Sub redelivers them).
    pub retried: u64,
}

/// What one message became.
enum Handled {
    Event(Box<fvision_records::ImageEvent>),
    DeadLetter(Box<fvision_records::RejectedImage>),
    Ignored(&'static str),
    /// An object whose event the events topic already holds (a replay): acked without downloading it.
    Replay,
    /// A transient failure: not acked, so Pub/Sub redelivers it.
    Retry,
}

/// A configured source, ready to run.
pub struct GcsSource {
    config: GcsSettings,
    stop: Arc<AtomicBool>,
}

impl GcsSource {
    /// The source for a checked config.
    pub fn new(config: GcsSettings) -> Self {
        Self { config, stop: Arc::default() }
    }

    /// The flag that stops the source between batches (set by the signal handlers).
    pub fn stop_flag(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// Connects to Fluvio, Pub/Sub and GCS and runs until stopped (or an error).
    pub fn run(self) -> Result<RunReport, SourceError> {
        let settings = &self.config.custom;
        if let Some(port) = settings.metrics_port {
            fvision_connector_common::source_metrics::serve(([127, 0, 0, 1], port).into())
                .map_err(|e| SourceError::Setup(format!("starting the metrics endpoint on port {port}: {e}")))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| SourceError::Setup(format!("starting the async runtime: {e}")))?;
        let lookback = ReplayLookback::new(settings.replay_lookback, settings.replay_lookback_bytes);
        let mut output = run_block_on(SourceOutput::open(&self.config.meta, &settings.dlq_topic, lookback))?;
        let client = runtime.block_on(pubsub::client(
            &settings.project,
            settings.pubsub_emulator_host.as_deref(),
            settings.credentials_file.as_deref(),
        ))?;
        let subscription = client.subscription(&settings.subscription);
        let exists = runtime.block_on(subscription.exists(None)).map_err(|status| PubSubError::Call {
            action: format!("looking up subscription {}", settings.subscription),
            status: Box::new(status),
        })?;
        if !exists {
            return Err(SourceError::MissingSubscription(settings.subscription.clone()));
        }
        // An endpoint other than Google's is an emulator; Google's gives way to `STORAGE_EMULATOR_HOST`. A fixed
        // token wins; otherwise Google's GCS gets refreshed tokens, any other endpoint none (the client sends a
        // token only to Google's storage hosts; a credentials file then serves Pub/Sub only).
        let configured = (!settings.gcs_is_google()).then_some(settings.gcs_endpoint.as_str());
        let endpoint = storage_endpoint_from_env(configured, settings.credentials_file.is_some());
        let key_file = settings.credentials_file.as_deref();
        let gcs = BlockingClient::new(
            &endpoint,
            settings.access_token.clone(),
            key_file,
            SCOPE_STORAGE_READ,
            settings.download_timeout,
        )
        .map_err(|e| SourceError::Setup(format!("GCS: {e}")))?;
        tracing::info!(
            project = %settings.project, subscription = %settings.subscription, gcs = %endpoint.url,
            prefix = %settings.prefix, fluvio_topic = output.topic(), dlq_topic = %settings.dlq_topic, "consuming"
        );

        let deadline_secs = settings.ack_deadline.as_secs() as i32;
        let mut report = RunReport::default();
        let mut failures = Failures::default();
        while !self.stop.load(Ordering::Relaxed) {
            let messages = match runtime.block_on(subscription.pull(settings.max_messages as i32, None)) {
                Ok(messages) => messages,
                Err(status) => {
                    events::client_error("pull");
                    tracing::warn!("pulling {}: {status}", settings.subscription);
                    std::thread::sleep(IDLE * 5);
                    continue;
                }
            };
            if messages.is_empty() {
                std::thread::sleep(IDLE);
                continue;
            }
            report.pulled += messages.len() as u64;
            // Our own deadline for the whole batch, renewed for a download that takes long.
            for message in &messages {
                if let Err(status) = runtime.block_on(message.modify_ack_deadline(deadline_secs)) {
                    events::client_error("extend");
                    tracing::debug!("extending the ack deadline: {status}");
                }
            }
            let mut to_ack = Vec::new();
            let (mut produced, mut dead, mut replays) = (0u64, 0u64, 0u64);
            for message in &messages {
                match self.handle(message, &gcs, &runtime, settings, &output, &mut failures) {
                    Handled::Event(event) => {
                        match run_block_on(output.send_event(&event))? {
                            Sent::Produced => produced += 1,
                            Sent::Replay => replays += 1,
                        }
                        to_ack.push(message);
                    }
                    Handled::DeadLetter(rejected) => {
                        tracing::warn!(id = %rejected.event.id, reason = %rejected.reason, "dead letter: {}", rejected.detail);
                        match run_block_on(output.send_dead_letter(*rejected))? {
                            Sent::Produced => dead += 1,
                            Sent::Replay => replays += 1,
                        }
                        to_ack.push(message);
                    }
                    Handled::Replay => {
                        replays += 1;
                        to_ack.push(message);
                    }
                    Handled::Ignored(reason) => {
                        events::ignored(reason);
                        report.ignored += 1;
                        to_ack.push(message);
                    }
                    Handled::Retry => report.retried += 1,
                }
            }
            // Fluvio confirmed every record of the batch: only now are the messages acked.
            run_block_on(output.acknowledge())?;
            fvision_connector_common::source_output::crash_before_commit_if_asked("Fluvio");
            events::records("produced", produced);
            events::records("dead_letter", dead);
            events::replay_skipped(replays);
            report.produced += produced;
            report.dead_letters += dead;
            report.replay_skipped += replays;
            let ack_ids: Vec<String> = to_ack.iter().map(|m| m.ack_id().to_string()).collect();
            let count = ack_ids.len() as u64;
            if !ack_ids.is_empty() {
                match runtime.block_on(subscription.ack(ack_ids)) {
                    Ok(()) => {
                        report.acked += count;
                        events::acked(count);
                        tracing::debug!(count, "acked");
                    }
                    // Not fatal: the events were delivered; Pub/Sub redelivers and the ids repeat.
                    Err(status) => {
                        events::client_error("ack");
                        tracing::warn!("acking {count} messages: {status}");
                    }
                }
            }
        }
        Ok(report)
    }

    /// One notification: ignored, an event, a dead letter, or left for redelivery.
    fn handle(
        &self,
        message: &ReceivedMessage,
        gcs: &BlockingClient,
        runtime: &tokio::runtime::Runtime,
        settings: &GcsConfig,
        output: &SourceOutput,
        failures: &mut Failures,
    ) -> Handled {
        let pubsub_message = &message.message;
        let object = match read_notice(
            &pubsub_message.attributes,
            &pubsub_message.data,
            &settings.prefix,
            &settings.content_types,
        ) {
            Notice::Finalize(object) => object,
            Notice::Ignored(reason) => return Handled::Ignored(reason),
            Notice::Malformed(detail) => {
                let id = format!(
                    "pubsub://projects/{}/subscriptions/{}/{}",
                    settings.project, settings.subscription, pubsub_message.message_id
                );
                let meta = EventMeta { id: id.clone(), source: Source::Gcs, uri: Some(id), ..EventMeta::default() };
                let rejected = source_rejection(RejectReason::MalformedEnvelope, detail, meta, &pubsub_message.data);
                return Handled::DeadLetter(Box::new(rejected));
            }
        };
        // Before anything names the object in a detail: its fields are bounded from here on.
        if let Err(oversized) = settings.envelope_field_cap().check_meta(&object.meta()) {
            let detail = format!("an OBJECT_FINALIZE notification: {oversized}");
            let rejected =
                source_rejection(RejectReason::MalformedEnvelope, detail, object.meta(), &pubsub_message.data);
            return Handled::DeadLetter(Box::new(rejected));
        }
        if !settings.buckets.contains(&object.bucket) {
            let detail = format!(
                "{}: bucket `{}` is not in gcs.buckets ({}); nothing was downloaded",
                object.id(),
                object.bucket,
                settings.buckets.join(", ")
            );
            let rejected =
                source_rejection(RejectReason::BucketNotAllowed, detail, object.meta(), &pubsub_message.data);
            return Handled::DeadLetter(Box::new(rejected));
        }
        if output.is_replayed_event(&object.id()) {
            tracing::debug!(id = %object.id(), "not downloaded again: a replay");
            return Handled::Replay;
        }
        let limit = settings.max_object_bytes.as_u64();
        let too_large = |size: String| {
            let detail = format!(
                "{}: the object is {size} bytes, over gcs.max-object-bytes ({})",
                object.id(),
                settings.max_object_bytes
            );
            Handled::DeadLetter(Box::new(source_rejection(RejectReason::TooLarge, detail, object.meta(), b"")))
        };
        if let Some(size) = object.size.filter(|&size| size > limit) {
            return too_large(size.to_string());
        }
        let downloaded = download_renewing(message, gcs, &object, limit, runtime, settings.ack_deadline);
        if downloaded.is_ok() {
            failures.forget(&object.id());
        }
        match downloaded {
            Ok(Download::Bytes(bytes)) if bytes.is_empty() => {
                let detail = format!("{}: the object is empty", object.id());
                Handled::DeadLetter(Box::new(source_rejection(RejectReason::Empty, detail, object.meta(), b"")))
            }
            Ok(Download::Bytes(bytes)) => Handled::Event(Box::new(object.event(&bytes))),
            Ok(Download::TooLarge) => too_large(format!("more than {limit}")),
            Ok(Download::NotFound) => {
                let detail = format!("{}: the object was deleted (or replaced) before it was downloaded", object.id());
                Handled::DeadLetter(Box::new(source_rejection(RejectReason::NotFound, detail, object.meta(), b"")))
            }
            Err(e) if e.is_outage() => {
                // No token (credentials) or no answer: either way the message is redelivered, without bound.
                let kind = if matches!(e, StorageError::Credentials { .. }) { "token" } else { "download" };
                events::client_error(kind);
                tracing::warn!("{e}; left un-acked for redelivery");
                Handled::Retry
            }
            Err(e) => {
                events::client_error("download");
                let tries = failures.count(object.id());
                if tries < settings.download_attempts {
                    tracing::warn!(
                        tries,
                        "{e}; left un-acked for redelivery (gcs.download-attempts = {})",
                        settings.download_attempts
                    );
                    return Handled::Retry;
                }
                failures.forget(&object.id());
                let last = if e.is_timeout() {
                    format!("timed out after {:?} (gcs.download-timeout): {e}", settings.download_timeout)
                } else {
                    e.to_string()
                };
                let detail =
                    format!("{}: {tries} downloads failed (gcs.download-attempts); the last: {last}", object.id());
                Handled::DeadLetter(Box::new(source_rejection(
                    RejectReason::DownloadFailed,
                    detail,
                    object.meta(),
                    b"",
                )))
            }
        }
    }
}

/// Most objects whose failed downloads are counted at once; the oldest is forgotten beyond it.
const MAX_FAILING_OBJECTS: usize = 4096;

/// Failed downloads per object id (permanent statuses and timeouts, not outages), so that an object failing
/// every time becomes a dead letter after `gcs.download-attempts` tries; per process, bounded.
#[derive(Default)]
struct Failures {
    counts: std::collections::HashMap<String, u32>,
    order: std::collections::VecDeque<String>,
}

impl Failures {
    /// Counts one more failure of `id`; returns its failures so far.
    fn count(&mut self, id: String) -> u32 {
        if !self.counts.contains_key(&id) {
            if self.order.len() >= MAX_FAILING_OBJECTS {
                if let Some(oldest) = self.order.pop_front() {
                    self.counts.remove(&oldest);
                }
            }
            self.order.push_back(id.clone());
        }
        let tries = self.counts.entry(id).or_default();
        *tries += 1;
        *tries
    }

    fn forget(&mut self, id: &str) {
        if self.counts.remove(id).is_some() {
            self.order.retain(|held| held != id);
        }
    }
}

/// Downloads on a helper thread while this one renews the message's ack deadline every third of it.
fn download_renewing(
    message: &ReceivedMessage,
    gcs: &BlockingClient,
    object: &ObjectRef,
    limit: u64,
    runtime: &tokio::runtime::Runtime,
    deadline: Duration,
) -> Result<Download, StorageError> {
    std::thread::scope(|scope| {
        let download = scope.spawn(|| gcs.download(&object.bucket, &object.name, Some(object.generation), limit));
        let mut renewed = Instant::now();
        while !download.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if renewed.elapsed() >= deadline / 3 {
                renewed = Instant::now();
                if let Err(status) = runtime.block_on(message.modify_ack_deadline(deadline.as_secs() as i32)) {
                    events::client_error("extend");
                    tracing::debug!("extending the ack deadline of {}: {status}", object.id());
                }
            }
        }
        download.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_object_and_bounded() {
        let mut failures = Failures::default();
        assert_eq!((failures.count("a".into()), failures.count("a".into()), failures.count("b".into())), (1, 2, 1));
        failures.forget("a");
        assert_eq!(failures.count("a".into()), 1, "a success starts the count again");
        for i in 0..MAX_FAILING_OBJECTS {
            failures.count(format!("o{i}"));
        }
        assert!(failures.counts.len() <= MAX_FAILING_OBJECTS && failures.order.len() == failures.counts.len());
        assert_eq!(failures.count("b".into()), 1, "the oldest were forgotten");
    }
}
