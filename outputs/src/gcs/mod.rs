//! The GCS output: predictions as newline-delimited JSON objects, one object per partition per commit
//! window, named from the offsets it covers (`<prefix>part-<partition>-<from>-<to>.json`), uploaded before
//! the offsets are committed. Objects also roll when they reach `max-object-bytes` or `max-object-age`.
//!
//! A crash after an upload but before the commit replays those records into objects with other
//! boundaries, so [`Output::prepare`] first deletes every object of the replay window (its first offset
//! at or after the committed offset): those were never committed and their rows are written again. The
//! result holds every prediction exactly once. Talks to the GCS JSON API (or the emulator at `endpoint`,
//! or at `STORAGE_EMULATOR_HOST`) through `fvision-gcp`'s one storage client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use fvision_connector_common::ConfigError;
use fvision_gcp::auth::SCOPE_STORAGE_READ_WRITE;
use fvision_gcp::emulator::{storage_endpoint_from_env, StorageEndpoint};
use fvision_gcp::storage::{self, Credentials, Download, StorageError};
use reqwest::Url;
use serde::Deserialize;

use crate::metrics as events;
use crate::toolkit::{
    self, check_common, default_max_retry_time, default_queue, default_request_timeout, parse_endpoint, Command,
    FailedFlag, Failure, Health, Include, Origin, RetryPolicy, SinkQueue,
};
use crate::{AckFuture, Delivery, Output, OutputError, OutputHealth, ReplayWindow, SourcePosition};

/// The `sink` label and name of this output.
pub const NAME: &str = "gcs";
/// The pseudo-partition of outcomes that were not read from a topic (numbered by a per-run counter).
const LOCAL_PARTITION: u32 = u32::MAX;

/// `inference.gcs`: where and how predictions are written as NDJSON objects.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GcsConfig {
    /// The bucket (it must exist).
    pub bucket: String,
    /// Object name prefix; one prefix per consumed topic, since names come from its offsets.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The API root: an emulator (`http://127.0.0.1:9023`), which needs no credentials; unset:
    /// `STORAGE_EMULATOR_HOST` when it is set (an emulator too), else Google's GCS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A service-account key file (usually `${{ secrets.GCS_KEY_FILE }}`); without one and without
    /// `endpoint`, the application default credentials.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// `above-threshold` (default) or `predictions`.
    #[serde(default)]
    pub include: Include,
    /// An object is closed and uploaded once it holds this much, even inside a commit window.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: ByteSize,
    /// An object is closed and uploaded once its first row is this old, even inside a commit window.
    #[serde(default = "default_max_object_age", with = "humantime_serde")]
    pub max_object_age: Duration,
    /// Timeout of one HTTP request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long GCS may keep failing before the connector stops (exit 1, nothing unacknowledged committed).
    #[serde(default = "default_max_retry_time", with = "humantime_serde")]
    pub max_retry_time: Duration,
    /// Rows queued for the uploader before the pipeline waits (back-pressure).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_prefix() -> String {
    "outputs/predictions/".into()
}
fn default_max_object_bytes() -> ByteSize {
    ByteSize::mib(64)
}
fn default_max_object_age() -> Duration {
    Duration::from_secs(60)
}
/// [`GcsConfig`] checked: what the output runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct GcsSettings {
    /// The bucket.
    pub bucket: String,
    /// Object name prefix.
    pub prefix: String,
    /// The API root.
    pub endpoint: Url,
    /// Whether to send no credentials (an emulator).
    pub anonymous: bool,
    /// Service-account key file.
    pub credentials_file: Option<PathBuf>,
    /// Which outcomes.
    pub include: Include,
    /// Size roll.
    pub max_object_bytes: u64,
    /// Age roll.
    pub max_object_age: Duration,
    /// HTTP timeout.
    pub request_timeout: Duration,
    /// Retry limit.
    pub retry: RetryPolicy,
    /// Queue capacity.
    pub queue: usize,
    /// The config file and section, for start-up errors.
    pub origin: Origin,
}

impl GcsConfig {
    /// Checks the section read from `path`.
    pub fn settings(&self, path: &Path) -> Result<GcsSettings, ConfigError> {
        let origin = Origin { path: path.to_owned(), section: format!("{}.gcs", crate::SECTION) };
        let valid_bucket = (3..=222).contains(&self.bucket.len())
            && self.bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
            && self.bucket.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_bucket {
            return Err(origin.error(
                "bucket",
                format!("a bucket name: 3-222 lowercase letters, digits, `-`, `_`, `.` (got `{}`)", self.bucket),
            ));
        }
        if self.prefix.starts_with('/') {
            return Err(origin.error("prefix", "an object name prefix without a leading `/`"));
        }
        let chosen = storage_endpoint_from_env(self.endpoint.as_deref(), self.credentials_file.is_some());
        let endpoint = parse_endpoint(&origin, &chosen.url)?;
        if self.max_object_bytes.as_u64() < 1024 {
            return Err(origin.error("max-object-bytes", "at least 1 KiB"));
        }
        if self.max_object_age < Duration::from_secs(1) {
            return Err(origin.error("max-object-age", "at least 1s"));
        }
        check_common(&origin, self.max_retry_time, self.queue)?;
        Ok(GcsSettings {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint,
            anonymous: chosen.anonymous,
            credentials_file: self.credentials_file.clone(),
            include: self.include,
            max_object_bytes: self.max_object_bytes.as_u64(),
            max_object_age: self.max_object_age,
            request_timeout: self.request_timeout,
            retry: RetryPolicy::new(self.max_retry_time),
            queue: self.queue,
            origin,
        })
    }
}

/// The object holding rows `from..=to` of `partition`: offsets zero-padded so names sort by offset.
pub fn object_name(prefix: &str, partition: u32, from: i64, to: i64) -> String {
    if partition == LOCAL_PARTITION {
        return format!("{prefix}part-local-{from:020}-{to:020}.json");
    }
    format!("{prefix}part-{partition}-{from:020}-{to:020}.json")
}

/// The partition and offsets of an object named by [`object_name`] under `prefix`.
pub fn parse_object_name(prefix: &str, name: &str) -> Option<(u32, i64, i64)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix("part-")?.strip_suffix(".json")?;
    let mut parts = rest.split('-');
    let (partition, from, to) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((partition.parse().ok()?, from.parse().ok()?, to.parse().ok()?))
}

/// The objects among `names` that a previous run wrote for the replay window but never committed: their
/// first offset is at or after the partition's committed offset. Their rows are written again.
pub fn uncommitted<'a>(prefix: &str, names: &'a [String], window: &ReplayWindow) -> Vec<&'a str> {
    names
        .iter()
        .filter(|name| {
            parse_object_name(prefix, name).is_some_and(|(partition, from, _)| {
                window.partitions.get(&partition).is_some_and(|range| from >= range.start)
            })
        })
        .map(String::as_str)
        .collect()
}

/// One line of an object: the prediction as the predictions topic carries it, one JSON object per line.
pub fn ndjson_line(value: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(value.len() + 1);
    // serde_json's compact output never contains a raw newline; strip any a caller might add.
    line.extend(value.iter().copied().filter(|&b| b != b'\n' && b != b'\r'));
    line.push(b'\n');
    line
}

/// The storage client bound to the output's bucket, its errors classified for the retry toolkit.
#[derive(Clone)]
pub struct GcsClient {
    storage: storage::Client,
    bucket: String,
}

fn failure(error: StorageError) -> Failure {
    if error.is_transient() {
        Failure::Transient(error.to_string())
    } else {
        Failure::Fatal(error.to_string())
    }
}

impl GcsClient {
    /// A client for `settings` (reads the key file; no request yet).
    pub async fn new(settings: &GcsSettings) -> Result<Self, ConfigError> {
        let url = settings.endpoint.as_str().trim_end_matches('/');
        let endpoint = StorageEndpoint { url: url.to_string(), anonymous: settings.anonymous };
        let key_file = settings.credentials_file.as_deref();
        let credentials = Credentials::for_endpoint(&endpoint, None, key_file, SCOPE_STORAGE_READ_WRITE)
            .await
            .map_err(|e| settings.origin.error("credentials-file", e.to_string()))?;
        let storage = storage::Client::new(url, credentials, settings.request_timeout)
            .map_err(|e| settings.origin.error("endpoint", e.to_string()))?;
        Ok(Self { storage, bucket: settings.bucket.clone() })
    }

    /// Whether the bucket exists.
    pub async fn bucket_exists(&self) -> Result<bool, Failure> {
        self.storage.bucket_exists(&self.bucket).await.map_err(failure)
    }

    /// Uploads one object (replacing any object of that name).
    pub async fn upload(&self, name: &str, body: Vec<u8>) -> Result<(), Failure> {
        self.storage.upload(&self.bucket, name, &body, "application/x-ndjson").await.map(|_| ()).map_err(failure)
    }

    /// The names of the objects under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, Failure> {
        self.storage.list(&self.bucket, prefix).await.map_err(failure)
    }

    /// The bytes of one object.
    pub async fn download(&self, name: &str) -> Result<Vec<u8>, Failure> {
        match self.storage.download(&self.bucket, name, None, u64::MAX).await.map_err(failure)? {
            Download::Bytes(bytes) => Ok(bytes),
            Download::NotFound => Err(Failure::Fatal(format!("reading {name}: HTTP 404: no such object"))),
            Download::TooLarge => Err(Failure::Fatal(format!("reading {name}: larger than the address space"))),
        }
    }

    /// Deletes one object; one that is already gone is fine.
    pub async fn delete(&self, name: &str) -> Result<(), Failure> {
        self.storage.delete(&self.bucket, name).await.map_err(failure)
    }
}

/// One line on its way to an object.
pub struct GcsRow {
    position: SourcePosition,
    line: Vec<u8>,
}

/// The rows of one partition not yet uploaded.
struct OpenObject {
    from: i64,
    to: i64,
    rows: u64,
    body: Vec<u8>,
    opened: Instant,
}

/// The GCS output: a bounded queue into an uploader on the output's own runtime.
pub struct GcsOutput {
    settings: GcsSettings,
    queue: SinkQueue<GcsRow>,
    health: Health,
    client: GcsClient,
    local_offset: std::sync::atomic::AtomicI64,
    runtime: tokio::runtime::Runtime,
}

impl GcsOutput {
    /// Connects, checks that the bucket exists (naming the field when it does not, or when the endpoint
    /// does not answer), and starts the uploader.
    pub fn connect(settings: GcsSettings) -> Result<Self, ConfigError> {
        let runtime =
            toolkit::runtime(NAME).map_err(|e| settings.origin.error("endpoint", format!("a runtime: {e}")))?;
        let client = runtime.block_on(async {
            let client = GcsClient::new(&settings).await?;
            match client.bucket_exists().await {
                Ok(true) => Ok(client),
                Ok(false) => Err(settings.origin.error(
                    "bucket",
                    format!("an existing bucket; `{}` does not exist at {}", settings.bucket, settings.endpoint),
                )),
                Err(Failure::Transient(e) | Failure::Fatal(e)) => {
                    Err(settings.origin.error("endpoint", format!("a reachable GCS API: {e}")))
                }
            }
        })?;
        let (queue, rx, failed) = SinkQueue::new(NAME, settings.queue);
        let health = Health::default();
        let uploader = Uploader {
            client: client.clone(),
            settings: settings.clone(),
            health: health.clone(),
            open: BTreeMap::new(),
            failed,
            backlog: queue.backlog().clone(),
        };
        runtime.spawn(uploader.run(rx));
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let local_offset = std::sync::atomic::AtomicI64::new(start.as_millis() as i64 * 1000);
        Ok(Self { settings, queue, health, client, local_offset, runtime })
    }

    /// The client, for tests and tools that read back what was written.
    pub fn client(&self) -> &GcsClient {
        &self.client
    }
}

impl Output for GcsOutput {
    fn name(&self) -> &str {
        NAME
    }

    /// Deletes the objects a previous run wrote for the replay window but never committed.
    fn prepare(&self, window: &ReplayWindow) -> Result<(), OutputError> {
        if window.partitions.is_empty() {
            return Ok(());
        }
        let prefix = self.settings.prefix.clone();
        let parts = format!("{prefix}part-");
        self.runtime.block_on(async {
            let names =
                toolkit::with_retries(NAME, &self.settings.retry, &self.health, || self.client.list(&parts)).await?;
            let stale = uncommitted(&prefix, &names, window);
            for name in &stale {
                toolkit::with_retries(NAME, &self.settings.retry, &self.health, || self.client.delete(name)).await?;
            }
            if !stale.is_empty() {
                tracing::info!(
                    sink = NAME,
                    objects = stale.len(),
                    "deleted the objects of uncommitted windows; their rows are written again"
                );
            }
            Ok(())
        })
    }

    fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError> {
        if !self.settings.include.takes(delivery) {
            return Ok(());
        }
        let position = delivery.position.unwrap_or_else(|| SourcePosition {
            partition: LOCAL_PARTITION,
            offset: self.local_offset.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        self.queue.push(GcsRow { position, line: ndjson_line(&delivery.routed.value) })
    }

    /// Uploads every open object; resolves once GCS stored them.
    fn acknowledge(&self) -> AckFuture<'_> {
        self.queue.flush()
    }

    fn health(&self) -> OutputHealth {
        self.health.get()
    }

    fn backlog(&self) -> u64 {
        self.queue.backlog().get()
    }
}

/// The worker: appends rows to their partition's open object and uploads objects when they roll or at a flush.
struct Uploader {
    client: GcsClient,
    settings: GcsSettings,
    health: Health,
    open: BTreeMap<u32, OpenObject>,
    failed: FailedFlag,
    backlog: toolkit::Backlog,
}

impl Uploader {
    async fn run(mut self, rx: async_channel::Receiver<Command<GcsRow>>) {
        loop {
            let oldest = self.open.values().map(|o| o.opened).min();
            let deadline = oldest.map(|t| t + self.settings.max_object_age);
            let command = match deadline {
                Some(deadline) => {
                    tokio::select! {
                        command = rx.recv() => command,
                        () = tokio::time::sleep_until(deadline.into()) => {
                            let aged: Vec<u32> = self.open.iter()
                                .filter(|(_, o)| o.opened.elapsed() >= self.settings.max_object_age)
                                .map(|(p, _)| *p).collect();
                            self.upload(aged).await;
                            continue;
                        }
                    }
                }
                None => rx.recv().await,
            };
            match command {
                Ok(Command::Row(row)) => {
                    let partition = row.position.partition;
                    let object = self.open.entry(partition).or_insert_with(|| OpenObject {
                        from: row.position.offset,
                        to: row.position.offset,
                        rows: 0,
                        body: Vec::new(),
                        opened: Instant::now(),
                    });
                    object.from = object.from.min(row.position.offset);
                    object.to = object.to.max(row.position.offset);
                    object.rows += 1;
                    object.body.extend_from_slice(&row.line);
                    if object.body.len() as u64 >= self.settings.max_object_bytes {
                        self.upload(vec![partition]).await;
                    }
                }
                Ok(Command::Flush(reply)) => {
                    let all: Vec<u32> = self.open.keys().copied().collect();
                    let result = match self.upload(all).await {
                        Some(error) => Err(error),
                        None => Ok(Vec::new()),
                    };
                    let _ = reply.send(result).await;
                }
                Err(_) => return,
            }
        }
    }

    /// Uploads the open objects of `partitions`; after a failure the output is failed for good (the
    /// connector stops without committing), and the error is returned to the next acknowledgement.
    async fn upload(&mut self, partitions: Vec<u32>) -> Option<OutputError> {
        if let Some(error) = self.failed.lock().ok().and_then(|f| f.clone()) {
            self.open.clear();
            return Some(OutputError::Failed { output: NAME.into(), action: "uploading".into(), source: error.into() });
        }
        for partition in partitions {
            let Some(object) = self.open.remove(&partition) else { continue };
            let name = object_name(&self.settings.prefix, partition, object.from, object.to);
            let bytes = object.body.len() as u64;
            let started = Instant::now();
            let uploaded = toolkit::with_retries(NAME, &self.settings.retry, &self.health, || {
                self.client.upload(&name, object.body.clone())
            })
            .await;
            match uploaded {
                Ok(()) => {
                    self.backlog.done(object.rows);
                    events::sink_written(NAME, object.rows, bytes, started.elapsed().as_secs_f64());
                    tracing::debug!(sink = NAME, object = %name, rows = object.rows, bytes, "uploaded");
                }
                Err(error) => {
                    tracing::error!(sink = NAME, object = %name, "{error}");
                    toolkit::mark_failed(&self.failed, &error);
                    self.open.clear();
                    return Some(error);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    #[test]
    fn object_names_sort_by_offset_and_parse_back() {
        let name = object_name("outputs/predictions/", 3, 7, 120);
        assert_eq!(name, "outputs/predictions/part-3-00000000000000000007-00000000000000000120.json");
        assert_eq!(parse_object_name("outputs/predictions/", &name), Some((3, 7, 120)));
        assert!(object_name("p/", 0, 9, 9) < object_name("p/", 0, 10, 12));
        for foreign in
            ["outputs/predictions/other.json", "outputs/predictions/part-1-2.json", "elsewhere/part-1-2-3.json"]
        {
            assert_eq!(parse_object_name("outputs/predictions/", foreign), None, "{foreign}");
        }
        assert_eq!(parse_object_name("p/", &object_name("p/", LOCAL_PARTITION, 1, 2)), None);
    }

    #[test]
    fn only_objects_starting_in_the_replay_window_are_uncommitted() {
        let names: Vec<String> = [(0, 0, 9), (0, 10, 19), (0, 20, 25), (1, 0, 4), (2, 50, 60)]
            .iter()
            .map(|&(p, from, to)| object_name("x/", p, from, to))
            .chain(["x/notes.txt".to_string()])
            .collect();
        let window = ReplayWindow {
            partitions: [(0u32, 10i64..30i64), (1, 5..9)].into_iter().collect::<BTreeMap<u32, Range<i64>>>(),
        };
        let stale = uncommitted("x/", &names, &window);
        assert_eq!(stale, [object_name("x/", 0, 10, 19), object_name("x/", 0, 20, 25)]);
    }

    #[test]
    fn a_line_is_one_json_object_and_a_newline() {
        assert_eq!(ndjson_line(br#"{"a":1}"#), b"{\"a\":1}\n");
        assert_eq!(ndjson_line(b"{\"a\":\n1}\n"), b"{\"a\":1}\n");
    }

    #[test]
    fn the_config_is_checked_field_by_field() {
        let yaml = |text: &str| serde_yaml::from_str::<GcsConfig>(text).unwrap().settings(Path::new("s.yaml"));
        let settings = yaml("bucket: my-bucket\nendpoint: http://127.0.0.1:9023").unwrap();
        assert_eq!((settings.prefix.as_str(), settings.anonymous), ("outputs/predictions/", true));
        assert_eq!(settings.max_object_bytes, 64 * 1024 * 1024);
        for (text, field) in [
            ("bucket: A", "inference.gcs.bucket"),
            ("bucket: ok-bucket\nendpoint: 'ftp://x'", "inference.gcs.endpoint"),
            ("bucket: ok-bucket\nendpoint: 'not a url'", "inference.gcs.endpoint"),
            ("bucket: ok-bucket\nprefix: /abs/", "inference.gcs.prefix"),
            ("bucket: ok-bucket\nmax-retry-time: 0s", "inference.gcs.max-retry-time"),
            ("bucket: ok-bucket\nqueue: 0", "inference.gcs.queue"),
        ] {
            let err = yaml(text).unwrap_err().to_string();
            assert!(err.starts_with("s.yaml: field `") && err.contains(field), "{text}: {err}");
        }
    }
}
