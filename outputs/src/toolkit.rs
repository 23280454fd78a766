//! What the external sinks (BigQuery, GCS, Kafka) share: which outcomes they take, retries with backoff up
//! to a time limit, their health, and a bounded queue into a worker that runs the sink's I/O on its own
//! tokio runtime. A full queue blocks [`SinkQueue::push`]: that is the back-pressure that stops the
//! connector consuming while a destination is down, so memory stays bounded and nothing is dropped.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fvision_connector_common::ConfigError;
use reqwest::Url;
use serde::Deserialize;

use fvision_pipeline::Outcome;

use crate::metrics as events;
use crate::{Acknowledged, Delivery, Destination, OutputError, OutputHealth};

/// Which outcomes an external sink stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Include {
    /// Predictions that reached the confidence threshold (the job this project replaces wrote only these).
    #[default]
    AboveThreshold,
    /// Every prediction routed to the predictions topic (with `below-threshold: flag`, also those below).
    Predictions,
}

impl Include {
    /// Whether `delivery` is for a sink with this rule. Dead letters never are.
    pub fn takes(self, delivery: &Delivery<'_>) -> bool {
        let Outcome::Classified { prediction, .. } = delivery.outcome else { return false };
        match self {
            Self::AboveThreshold => prediction.above_threshold,
            Self::Predictions => delivery.routed.destination == Destination::Predictions,
        }
    }
}

/// Retry timing: exponential backoff from `initial` doubling up to `max`, for at most `limit` since the
/// first failure of a run of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How long a destination may keep failing before the sink gives up (`max-retry-time`).
    pub limit: Duration,
}

impl RetryPolicy {
    /// The policy for a `max-retry-time`: 100 ms doubling up to 5 s.
    pub fn new(limit: Duration) -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(5), limit }
    }

    /// The wait before attempt `attempt + 1` (`attempt` failures so far, from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        fvision_connector_common::backoff::delay(self.initial, self.max, attempt)
    }
}

/// How one attempt failed; `E` is what a sink wants back from a failure that repeating cannot help (a
/// message by default, BigQuery's classified insert error).
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure<E = String> {
    /// Worth repeating: 429, 5xx, timeouts, refused connections.
    Transient(String),
    /// Repeating cannot help (a 403, a missing bucket, a request too large): the attempt stops.
    Fatal(E),
}

/// Why [`retry`] stopped without a success.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stopped<E> {
    /// An attempt failed in a way repeating cannot help.
    Fatal(E),
    /// The destination kept failing for longer than the policy's limit ([`OutputError::GaveUp`]).
    GaveUp(OutputError),
}

/// The health every sink reports through [`super::Output::health`], shared with its worker.
#[derive(Debug, Clone)]
pub struct Health(Arc<Mutex<OutputHealth>>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(OutputHealth::Healthy)))
    }
}

impl Health {
    /// The current state.
    pub fn get(&self) -> OutputHealth {
        self.0.lock().map(|h| h.clone()).unwrap_or(OutputHealth::Healthy)
    }

    /// An attempt failed: starts or extends the run of failures; returns when it began and the attempts.
    pub fn failed(&self, error: &str) -> (Instant, u32) {
        let Ok(mut health) = self.0.lock() else { return (Instant::now(), 1) };
        let (since, attempts) = match &*health {
            OutputHealth::Retrying { since, attempts, .. } => (*since, attempts + 1),
            OutputHealth::Healthy => (Instant::now(), 1),
        };
        *health = OutputHealth::Retrying { since, attempts, last_error: error.to_string() };
        (since, attempts)
    }

    /// An attempt succeeded.
    pub fn healthy(&self) {
        if let Ok(mut health) = self.0.lock() {
            *health = OutputHealth::Healthy;
        }
    }
}

/// [`retry`] for attempts whose fatal failure is a message: it becomes [`OutputError::Failed`].
pub async fn with_retries<T, F, Fut>(
    sink: &str,
    policy: &RetryPolicy,
    health: &Health,
    attempt: F,
) -> Result<T, OutputError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    retry(sink, policy, health, attempt).await.map_err(|stopped| match stopped {
        Stopped::Fatal(message) => {
            OutputError::Failed { output: sink.to_string(), action: "writing".into(), source: message.into() }
        }
        Stopped::GaveUp(error) => error,
    })
}

/// Runs `attempt` until it succeeds, repeating transient failures with backoff; gives up once the
/// destination has been failing for longer than the policy's limit. A fatal failure comes back as it was.
pub async fn retry<T, E, F, Fut>(
    sink: &str,
    policy: &RetryPolicy,
    health: &Health,
    mut attempt: F,
) -> Result<T, Stopped<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    loop {
        match attempt().await {
            Ok(value) => {
                health.healthy();
                return Ok(value);
            }
            Err(Failure::Fatal(error)) => {
                events::sink_error(sink, "fatal");
                return Err(Stopped::Fatal(error));
            }
            Err(Failure::Transient(message)) => {
                events::sink_error(sink, "transient");
                let (since, attempts) = health.failed(&message);
                let failing_for = since.elapsed();
                if failing_for >= policy.limit {
                    events::sink_error(sink, "gave_up");
                    let output = sink.to_string();
                    return Err(Stopped::GaveUp(OutputError::GaveUp { output, failing_for, last_error: message }));
                }
                tracing::warn!(sink, attempts, error = %message, "write failed; retrying");
                events::sink_retry(sink);
                let wait = policy.delay(attempts).min(policy.limit.saturating_sub(failing_for));
                tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
            }
        }
    }
}

/// A message to a sink's worker: a row to store, or a request to make everything before it durable.
pub enum Command<R> {
    /// One row.
    Row(R),
    /// Store everything queued so far, then answer with the rows refused since the last flush.
    Flush(async_channel::Sender<Result<Acknowledged, OutputError>>),
}

/// Set by a sink's worker when it gave up or failed for good (the error's text); shared with its queue.
pub type FailedFlag = Arc<Mutex<Option<String>>>;

/// Rows pushed into a sink's queue and not yet stored (or refused) by its worker: its
/// [`super::Output::backlog`]. The queue adds, the worker subtracts what it stored.
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<AtomicU64>);

impl Backlog {
    /// The rows not yet stored.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// `rows` more were queued.
    pub fn add(&self, rows: u64) {
        self.0.fetch_add(rows, Ordering::AcqRel);
    }

    /// `rows` were stored or refused.
    pub fn done(&self, rows: u64) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(rows)));
    }
}

/// The sending half of a sink's bounded queue.
pub struct SinkQueue<R> {
    sink: String,
    tx: async_channel::Sender<Command<R>>,
    /// Set by the worker when it gave up or failed for good; every later call fails with it.
    failed: FailedFlag,
    /// Rows queued and not yet stored; the worker holds a clone ([`SinkQueue::backlog`]).
    backlog: Backlog,
}

impl<R: Send + 'static> SinkQueue<R> {
    /// A queue of `capacity` rows and the worker's receiving end.
    pub fn new(sink: &str, capacity: usize) -> (Self, async_channel::Receiver<Command<R>>, FailedFlag) {
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        let failed = Arc::new(Mutex::new(None));
        (Self { sink: sink.to_string(), tx, failed: Arc::clone(&failed), backlog: Backlog::default() }, rx, failed)
    }

    /// The rows queued and not yet stored, shared with the worker, which calls [`Backlog::done`].
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    fn check(&self) -> Result<(), OutputError> {
        match self.failed.lock().ok().and_then(|f| f.clone()) {
            Some(error) => Err(self.error(error)),
            None => Ok(()),
        }
    }

    fn error(&self, message: impl Into<String>) -> OutputError {
        OutputError::Failed { output: self.sink.clone(), action: "queueing".into(), source: message.into().into() }
    }

    /// Queues one row; blocks while the queue is full (back-pressure, timed in metrics).
    pub fn push(&self, row: R) -> Result<(), OutputError> {
        self.check()?;
        // Counted before it is queued, so the worker never subtracts a row not yet added.
        self.backlog.add(1);
        let row = match self.tx.try_send(Command::Row(row)) {
            Ok(()) => return Ok(()),
            Err(async_channel::TrySendError::Closed(_)) => {
                self.backlog.done(1);
                return Err(self.error("the sink's worker stopped"));
            }
            Err(async_channel::TrySendError::Full(row)) => row,
        };
        let waiting = Instant::now();
        let sent = self.tx.send_blocking(row);
        events::sink_backpressure(&self.sink, waiting.elapsed().as_secs_f64());
        sent.map_err(|_| {
            self.backlog.done(1);
            self.error("the sink's worker stopped")
        })
    }

    /// Asks the worker to make everything queued so far durable; resolves with its answer.
    pub fn flush(&self) -> crate::AckFuture<'_> {
        Box::pin(async move {
            self.check()?;
            let (reply, answer) = async_channel::bounded(1);
            self.tx.send(Command::Flush(reply)).await.map_err(|_| self.error("the sink's worker stopped"))?;
            answer.recv().await.map_err(|_| self.error("the sink's worker stopped without answering"))?
        })
    }
}

/// The runtime a sink runs its I/O on: one worker thread of its own, so a slow destination never stalls
/// the pipeline's threads and the sink's start-up checks and `prepare` can `block_on` it from the
/// connector's threads.
pub fn runtime(sink: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("sink-{sink}"))
        .enable_all()
        .build()
}

/// Records that a worker gave up, so every later send and acknowledgement fails at once.
pub fn mark_failed(failed: &Mutex<Option<String>>, error: &OutputError) {
    if let Ok(mut failed) = failed.lock() {
        failed.get_or_insert_with(|| error.to_string());
    }
}

/// `request-timeout` of every sink section.
pub fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
/// `max-retry-time` of every sink section.
pub fn default_max_retry_time() -> Duration {
    Duration::from_secs(300)
}
/// `queue` of every sink section (rows).
pub fn default_queue() -> usize {
    1000
}

/// Where a sink's settings came from, so start-up checks name the file and the field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The config file.
    pub path: PathBuf,
    /// The section, e.g. `inference.gcs`.
    pub section: String,
}

impl Origin {
    /// An error about `field` of this section.
    pub fn error(&self, field: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            path: self.path.clone(),
            field: format!("{}.{field}", self.section),
            expected: expected.into(),
        }
    }
}

/// Checks an endpoint URL.
pub fn parse_endpoint(origin: &Origin, endpoint: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(endpoint.trim_end_matches('/')).map_err(|e| {
        origin.error("endpoint", format!("an http(s) URL such as http://127.0.0.1:9023 ({e}: `{endpoint}`)"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(origin.error("endpoint", format!("an http(s) URL with a host, not `{endpoint}`")));
    }
    Ok(url)
}

/// Checks the common limits of every external sink.
pub fn check_common(origin: &Origin, max_retry_time: Duration, queue: usize) -> Result<(), ConfigError> {
    if max_retry_time < Duration::from_secs(1) {
        return Err(origin.error("max-retry-time", "at least 1s"));
    }
    if !(1..=1_000_000).contains(&queue) {
        return Err(origin.error("queue", "an integer from 1 to 1000000"));
    }
    Ok(())
}

/// The end of the summary line for the outputs that are retrying: `; bigquery retrying for 12 s (7
/// attempts, 31 rows held back): HTTP 503: ...`; empty when all are healthy. Pure.
pub fn retrying_note(reports: &[crate::OutputReport], now: Instant) -> String {
    let mut note = String::new();
    for crate::OutputReport { name, health, backlog } in reports {
        if let OutputHealth::Retrying { since, attempts, last_error } = health {
            let error: String = last_error.chars().take(160).collect();
            let secs = now.saturating_duration_since(*since).as_secs();
            note.push_str(&format!(
                "; {name} retrying for {secs} s ({attempts} attempts, {backlog} rows held back): {error}"
            ));
        }
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_sinks_that_retry() {
        let now = Instant::now();
        let since = now - Duration::from_secs(12);
        let health = vec![
            crate::OutputReport { name: "fluvio".into(), health: OutputHealth::Healthy, backlog: 0 },
            crate::OutputReport {
                name: "bigquery".into(),
                health: OutputHealth::Retrying { since, attempts: 7, last_error: "HTTP 503: down".into() },
                backlog: 31,
            },
        ];
        assert_eq!(
            retrying_note(&health, now),
            "; bigquery retrying for 12 s (7 attempts, 31 rows held back): HTTP 503: down"
        );
        assert_eq!(retrying_note(&health[..1], now), "");
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let policy = RetryPolicy::new(Duration::from_secs(60));
        let delays: Vec<u64> = (1..=8).map(|a| policy.delay(a).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(policy.delay(u32::MAX), policy.max);
    }

    #[test]
    fn health_counts_a_run_of_failures_and_resets() {
        let health = Health::default();
        let (since, first) = health.failed("503");
        let (same, second) = health.failed("timeout");
        assert_eq!((first, second, since), (1, 2, same));
        assert!(
            matches!(health.get(), OutputHealth::Retrying { attempts: 2, ref last_error, .. } if last_error == "timeout")
        );
        health.healthy();
        assert_eq!(health.get(), OutputHealth::Healthy);
    }

    #[test]
    fn retries_stop_at_the_limit_with_the_last_error() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let policy = RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            limit: Duration::from_millis(40),
        };
        let health = Health::default();
        let mut attempts = 0;
        let result: Result<(), _> = runtime.block_on(with_retries("t", &policy, &health, || {
            attempts += 1;
            async move { Err(Failure::Transient(format!("down {attempts}"))) }
        }));
        let Err(OutputError::GaveUp { last_error, failing_for, .. }) = result else { panic!("{result:?}") };
        assert!(failing_for >= policy.limit && attempts > 2, "{failing_for:?} after {attempts} attempts");
        assert_eq!(last_error, format!("down {attempts}"));
        // A success after failures reports healthy again.
        let health = Health::default();
        let mut calls = 0;
        let value = runtime.block_on(with_retries("t", &policy, &health, || {
            calls += 1;
            async move {
                if calls < 3 {
                    Err(Failure::Transient("503".into()))
                } else {
                    Ok(calls)
                }
            }
        }));
        assert_eq!(value.unwrap(), 3);
        assert_eq!(health.get(), OutputHealth::Healthy);
    }
}
