//! The BigQuery output: predictions as rows of `ml_streaming.image_predictions` (the seed's schema plus
//! documented columns), streamed with `tabledata.insertAll` (`insertId` = `prediction_id`), batched by rows
//! and bytes. "Request too large" halves the batch; 429, 5xx and timeouts retry with backoff; a row that
//! BigQuery refuses comes back from [`Output::acknowledge`] as a [`SinkRejection`] for the dead-letter
//! topic, without holding up the other rows.
//!
//! **No duplicates after a crash.** `insertId` de-duplication is best effort (about a minute, and absent in
//! the emulator), so [`Output::prepare`] asks BigQuery which rows of the replay window (by the
//! `source_topic`/`source_partition`/`source_offset` columns) are already there, and [`Output::send`]
//! skips those prediction ids. One query per start, whose answer is bounded by what a previous run wrote
//! after its last commit (docs/decisions.md).
//!
//! **Dead letters** optionally go to a table of their own (`dead-letter-table`): one row per rejected
//! record with its reason, detail, source position and payload (base64, cut at
//! [`DEAD_LETTER_PAYLOAD_BYTES`]; the whole record stays on the dead-letter topic). Created and checked
//! like the predictions table, and replay-safe the same way (by `dead_letter_id`).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use fvision_connector_common::ConfigError;
use fvision_gcp::bigquery::{self as bq, first_column, query, Client, Column, EnsureError, TableSpec};
use fvision_gcp::Change;
use fvision_records::{EventMeta, Prediction, RejectReason, RejectedImage, Stage};
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_response::TableDataInsertAllResponse;
use serde::{Deserialize, Serialize};

use crate::metrics as events;
use crate::toolkit::{
    self, check_common, default_max_retry_time, default_queue, default_request_timeout, parse_endpoint, Command,
    FailedFlag, Failure, Health, Include, Origin, RetryPolicy, SinkQueue, Stopped,
};
use crate::{
    AckFuture, Delivery, Destination, Output, OutputError, OutputHealth, ReplayWindow, SinkRejection, SourcePosition,
};
use fvision_pipeline::Outcome;

/// The `sink` label and name of this output.
pub const NAME: &str = "bigquery";
/// BigQuery's own limit on one insertAll request is 10 MB.
const MAX_REQUEST_BYTES: u64 = 10_000_000;

/// `inference.bigquery`: the table predictions are streamed into.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BigQueryConfig {
    /// The Google Cloud project that holds the dataset.
    pub project: String,
    /// The dataset (the job this replaces used `ml_streaming`).
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// The table.
    #[serde(default = "default_table")]
    pub table: String,
    /// Also write the dead letters (the records the pipeline rejects) to this table of the same dataset,
    /// one row each (columns in docs/records.md); created and checked like `table`.
    #[serde(default)]
    pub dead_letter_table: Option<String>,
    /// Create the dataset and the table when they are missing; otherwise a missing table or column stops
    /// the connector at start-up, naming it.
    #[serde(default)]
    pub create_table: bool,
    /// An emulator's root URL (`http://127.0.0.1:9050`); no credentials are sent to it.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A service-account key file (usually `${{ secrets.BIGQUERY_KEY_FILE }}`); without one and without
    /// `endpoint`, the application default credentials.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// `above-threshold` (default, as the job this replaces) or `predictions`.
    #[serde(default)]
    pub include: Include,
    /// Rows per insertAll request.
    #[serde(default = "default_max_batch_rows")]
    pub max_batch_rows: usize,
    /// Bytes of row JSON per insertAll request (BigQuery refuses more than 10 MB).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// Timeout of one HTTP request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long BigQuery may keep failing before the connector stops (exit 1, nothing unacknowledged committed).
    #[serde(default = "default_max_retry_time", with = "humantime_serde")]
    pub max_retry_time: Duration,
    /// Rows queued for the writer before the pipeline waits (back-pressure).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_dataset() -> String {
    "ml_streaming".into()
}
fn default_table() -> String {
    "image_predictions".into()
}
fn default_max_batch_rows() -> usize {
    500
}
fn default_max_batch_bytes() -> ByteSize {
    ByteSize::mb(5)
}

/// [`BigQueryConfig`] checked: what the output runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct BigQuerySettings {
    /// Project.
    pub project: String,
    /// Dataset.
    pub dataset: String,
    /// Table.
    pub table: String,
    /// The dead letters' table, when they are written too.
    pub dead_letter_table: Option<String>,
    /// Create what is missing.
    pub create_table: bool,
    /// The v2 API base (`<endpoint>/bigquery/v2`), when not the real service.
    pub v2_base_url: Option<String>,
    /// Service-account key file.
    pub credentials_file: Option<PathBuf>,
    /// Which outcomes.
    pub include: Include,
    /// Rows per request.
    pub max_batch_rows: usize,
    /// Bytes per request.
    pub max_batch_bytes: usize,
    /// HTTP timeout.
    pub request_timeout: Duration,
    /// Retry limit.
    pub retry: RetryPolicy,
    /// Queue capacity.
    pub queue: usize,
    /// The consumed topic, written to `source_topic` and used to find a replay window's rows.
    pub source_topic: String,
    /// The config file and section, for start-up errors.
    pub origin: Origin,
}

fn valid_id(id: &str, extra: &str) -> bool {
    !id.is_empty() && id.len() <= 1024 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c))
}

impl BigQueryConfig {
    /// Checks the section read from `path`; `source_topic` is the topic the connector consumes.
    pub fn settings(&self, path: &Path, source_topic: &str) -> Result<BigQuerySettings, ConfigError> {
        let origin = Origin { path: path.to_owned(), section: format!("{}.bigquery", crate::SECTION) };
        if !valid_id(&self.project, "-.:") {
            return Err(origin.error("project", format!("a project id (letters, digits, `-`), not `{}`", self.project)));
        }
        let dead_letters = self.dead_letter_table.iter().map(|t| ("dead-letter-table", t));
        for (field, value) in [("dataset", &self.dataset), ("table", &self.table)].into_iter().chain(dead_letters) {
            if !valid_id(value, "") {
                return Err(origin.error(field, format!("letters, digits and underscores, not `{value}`")));
            }
        }
        if self.dead_letter_table.as_ref() == Some(&self.table) {
            return Err(origin.error("dead-letter-table", "a table other than `table`"));
        }
        let v2_base_url = match &self.endpoint {
            Some(endpoint) => Some(bq::v2_base_url(parse_endpoint(&origin, endpoint)?.as_str())),
            None => None,
        };
        if !(1..=50_000).contains(&self.max_batch_rows) {
            return Err(origin.error("max-batch-rows", "an integer from 1 to 50000 (BigQuery recommends 500)"));
        }
        if !(1024..=MAX_REQUEST_BYTES).contains(&self.max_batch_bytes.as_u64()) {
            return Err(origin.error("max-batch-bytes", "from 1 KiB to 10 MB (BigQuery's request limit)"));
        }
        check_common(&origin, self.max_retry_time, self.queue)?;
        Ok(BigQuerySettings {
            project: self.project.clone(),
            dataset: self.dataset.clone(),
            table: self.table.clone(),
            dead_letter_table: self.dead_letter_table.clone(),
            create_table: self.create_table,
            v2_base_url,
            credentials_file: self.credentials_file.clone(),
            include: self.include,
            max_batch_rows: self.max_batch_rows,
            max_batch_bytes: self.max_batch_bytes.as_u64() as usize,
            request_timeout: self.request_timeout,
            retry: RetryPolicy::new(self.max_retry_time),
            queue: self.queue,
            source_topic: source_topic.to_string(),
            origin,
        })
    }
}

impl BigQuerySettings {
    /// `project.dataset.table`, as SQL names it (in backticks).
    pub fn table_ref(&self) -> String {
        self.ref_of(&self.table)
    }

    /// `project.dataset.dead_letter_table`, as SQL names it, when dead letters are written.
    pub fn dead_letter_table_ref(&self) -> Option<String> {
        self.dead_letter_table.as_deref().map(|t| self.ref_of(t))
    }

    fn ref_of(&self, table: &str) -> String {
        format!("`{}.{}.{table}`", self.project, self.dataset)
    }
}

/// One of the k best classes, as a `top_k` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopKRow {
    /// Label.
    pub label: String,
    /// Class index.
    pub class_index: i64,
    /// Probability.
    pub confidence: f64,
}

/// A row of the predictions table: the seed's nine columns first, then the documented extras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BigQueryRow {
    /// Deterministic id (also the insertId).
    pub prediction_id: String,
    /// Top-1 label.
    pub label: String,
    /// Top-1 probability.
    pub confidence: f64,
    /// Model name.
    pub model_name: String,
    /// End-to-end processing time, rounded to whole milliseconds (the seed's INTEGER column).
    pub processing_time_ms: i64,
    /// Encoded image size.
    pub image_size_bytes: i64,
    /// GCS bucket of the image, if it came from GCS.
    pub bucket: Option<String>,
    /// GCS object of the image, if it came from GCS.
    pub object_name: Option<String>,
    /// When the prediction was made (RFC 3339).
    pub processed_at: String,
    /// Model version.
    pub model_version: String,
    /// The image's id.
    pub image_id: String,
    /// `kafka`, `gcs`, `simulator`, `file` or `other`.
    pub source: String,
    /// The event's own timestamp.
    pub event_time: Option<String>,
    /// Top-1 class index.
    pub class_index: i64,
    /// The k best classes.
    pub top_k: Vec<TopKRow>,
    /// Whether the confidence reached the threshold.
    pub above_threshold: bool,
    /// The consumed Fluvio topic.
    pub source_topic: String,
    /// Its partition.
    pub source_partition: Option<i64>,
    /// The record's offset.
    pub source_offset: Option<i64>,
}

/// A prediction as its row. Pure.
pub fn encode_row(prediction: &Prediction, topic: &str, position: Option<SourcePosition>) -> BigQueryRow {
    let source = serde_json::to_value(prediction.source).ok().and_then(|v| v.as_str().map(str::to_string));
    BigQueryRow {
        prediction_id: prediction.prediction_id.clone(),
        label: prediction.label.clone(),
        confidence: f64::from(prediction.confidence),
        model_name: prediction.model_name.clone(),
        processing_time_ms: prediction.processing_time_ms.round() as i64,
        image_size_bytes: i64::try_from(prediction.image_size_bytes).unwrap_or(i64::MAX),
        bucket: prediction.bucket.clone(),
        object_name: prediction.object_name.clone(),
        processed_at: prediction.processed_at.clone(),
        model_version: prediction.model_version.clone(),
        image_id: prediction.image_id.clone(),
        source: source.unwrap_or_else(|| "other".into()),
        event_time: prediction.event_time.clone(),
        class_index: prediction.class_index as i64,
        top_k: prediction
            .top_k
            .iter()
            .map(|c| TopKRow {
                label: c.label.clone(),
                class_index: c.class_index as i64,
                confidence: f64::from(c.confidence),
            })
            .collect(),
        above_threshold: prediction.above_threshold,
        source_topic: topic.to_string(),
        source_partition: position.map(|p| i64::from(p.partition)),
        source_offset: position.map(|p| p.offset),
    }
}

/// The largest payload a dead-letter row carries (before base64); the whole record (up to the dead-letter
/// cap) stays on the dead-letter topic.
pub const DEAD_LETTER_PAYLOAD_BYTES: usize = 64 * 1024;

/// A row of the dead-letter table. Documented in docs/records.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// Deterministic: the source position (or the input's name) and the reason; the insertId, and what a
    /// replay is checked against.
    pub dead_letter_id: String,
    /// The image id from the envelope, when it had one.
    pub image_id: String,
    /// The stable reason code.
    pub reason: String,
    /// Where it was rejected.
    pub stage: String,
    /// What was wrong, for humans.
    pub detail: String,
    /// Where the record was read: `topic/partition@offset`, or a path.
    pub record: String,
    /// The envelope's source.
    pub source: String,
    /// Size of the whole record value in bytes.
    pub payload_size: i64,
    /// Lower-case hex SHA-256 of the whole record value, when known (always, unless the dead letter
    /// itself arrived truncated without one).
    pub payload_sha256: Option<String>,
    /// Whether `payload` holds only the first bytes of the record value.
    pub payload_truncated: bool,
    /// The record value (base64, as BigQuery takes BYTES), at most [`DEAD_LETTER_PAYLOAD_BYTES`].
    pub payload: String,
    /// When the connector wrote the dead letter (RFC 3339).
    pub rejected_at: String,
    /// The consumed Fluvio topic (empty for `fvision run`).
    pub source_topic: String,
    /// Its partition.
    pub source_partition: Option<i64>,
    /// The record's offset.
    pub source_offset: Option<i64>,
}

/// A dead letter as its row; `name` is the input's name, `rejected_at` the time to record. Pure.
pub fn encode_dead_letter(
    name: &str,
    rejected: &RejectedImage,
    topic: &str,
    position: Option<SourcePosition>,
    rejected_at: &str,
) -> DeadLetterRow {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let bytes = rejected.payload.to_bytes().unwrap_or_default();
    let sha256 = match (&rejected.payload_sha256, rejected.payload_truncated) {
        (Some(sha), _) => Some(sha.clone()),
        (None, false) => Some(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()),
        (None, true) => None,
    };
    let kept = &bytes[..bytes.len().min(DEAD_LETTER_PAYLOAD_BYTES)];
    let reason = rejected.reason.as_str();
    let record = rejected.record.clone().unwrap_or_else(|| name.to_string());
    let dead_letter_id = match position {
        Some(p) => format!("{topic}/{}@{}/{reason}", p.partition, p.offset),
        None => format!("{record}/{reason}"),
    };
    let source = serde_json::to_value(rejected.event.source).ok().and_then(|v| v.as_str().map(str::to_string));
    DeadLetterRow {
        dead_letter_id,
        image_id: rejected.event.id.clone(),
        reason: reason.to_string(),
        stage: rejected.stage.as_str().to_string(),
        detail: rejected.detail.clone(),
        record,
        source: source.unwrap_or_else(|| "other".into()),
        payload_size: i64::try_from(rejected.payload_size.unwrap_or(bytes.len() as u64)).unwrap_or(i64::MAX),
        payload_sha256: sha256,
        payload_truncated: rejected.payload_truncated || kept.len() < bytes.len(),
        payload: base64::engine::general_purpose::STANDARD.encode(kept),
        rejected_at: rejected_at.to_string(),
        source_topic: topic.to_string(),
        source_partition: position.map(|p| i64::from(p.partition)),
        source_offset: position.map(|p| p.offset),
    }
}

/// The dead-letter table's columns: name, type, and whether it is REPEATED.
pub fn dead_letter_columns() -> Vec<Column> {
    use FieldType::*;
    vec![
        ("dead_letter_id", String, false),
        ("image_id", String, false),
        ("reason", String, false),
        ("stage", String, false),
        ("detail", String, false),
        ("record", String, false),
        ("source", String, false),
        ("payload_size", Int64, false),
        ("payload_sha256", String, false),
        ("payload_truncated", Bool, false),
        ("payload", Bytes, false),
        ("rejected_at", Timestamp, false),
        ("source_topic", String, false),
        ("source_partition", Int64, false),
        ("source_offset", Int64, false),
    ]
}

/// The table's columns: name, type, and whether it is REPEATED. Documented in docs/records.md.
pub fn columns() -> Vec<Column> {
    use FieldType::*;
    vec![
        ("prediction_id", String, false),
        ("label", String, false),
        ("confidence", Float64, false),
        ("model_name", String, false),
        ("processing_time_ms", Int64, false),
        ("image_size_bytes", Int64, false),
        ("bucket", String, false),
        ("object_name", String, false),
        ("processed_at", Timestamp, false),
        ("model_version", String, false),
        ("image_id", String, false),
        ("source", String, false),
        ("event_time", Timestamp, false),
        ("class_index", Int64, false),
        ("top_k", Record, true),
        ("above_threshold", Bool, false),
        ("source_topic", String, false),
        ("source_partition", Int64, false),
        ("source_offset", Int64, false),
    ]
}

/// How an insertAll request failed.
#[derive(Debug, PartialEq)]
pub enum InsertFailure {
    /// BigQuery refused the request's size: halve the batch.
    TooLarge(String),
    /// Worth repeating.
    Transient(String),
    /// Repeating cannot help.
    Fatal(String),
}

/// Classifies a client error. Pure.
pub fn classify(error: &BQError) -> InsertFailure {
    match error {
        BQError::ResponseError { error } => {
            let e = &error.error;
            let message = format!("HTTP {}: {}", e.code, e.message);
            let reasons: Vec<&str> = e.errors.iter().filter_map(|m| m.get("reason").map(String::as_str)).collect();
            let lower = e.message.to_ascii_lowercase();
            if e.code == 413 || lower.contains("too large") || lower.contains("payload size exceeds") {
                InsertFailure::TooLarge(message)
            } else if e.code == 408
                || e.code == 429
                || e.code >= 500
                || reasons.iter().any(|r| matches!(*r, "rateLimitExceeded" | "backendError" | "internalError"))
            {
                InsertFailure::Transient(message)
            } else {
                InsertFailure::Fatal(message)
            }
        }
        BQError::RequestError(e) => match e.status() {
            Some(status) if status.as_u16() == 413 => InsertFailure::TooLarge(format!("{e}")),
            Some(status) if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 => {
                InsertFailure::Fatal(format!("{e}"))
            }
            // Connection refused, timeouts, resets, and error bodies that are not BigQuery's JSON (a proxy's
            // 502 page): worth repeating.
            _ => InsertFailure::Transient(format!("{e:#}")),
        },
        BQError::AuthError(_) | BQError::YupAuthError(_) | BQError::NoToken => {
            InsertFailure::Transient(error.to_string())
        }
        other => InsertFailure::Fatal(other.to_string()),
    }
}

fn failure(error: &BQError) -> Failure {
    match classify(error) {
        InsertFailure::Transient(m) => Failure::Transient(m),
        InsertFailure::TooLarge(m) | InsertFailure::Fatal(m) => Failure::Fatal(m),
    }
}

/// Cuts `sizes` (bytes per row, in order) into consecutive batches of at most `max_rows` rows and
/// `max_bytes` bytes (a single larger row is a batch of its own). Pure.
pub fn plan_batches(sizes: &[usize], max_rows: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        let rows = i - start;
        if rows > 0 && (rows >= max_rows || bytes + size > max_bytes) {
            batches.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        batches.push(start..sizes.len());
    }
    batches
}

/// The rows BigQuery refused in a response to a request of `rows` rows, by index into the request, with
/// their messages; an error without an index, or with one outside the request, is an answer that cannot say
/// which row it refused (`Err`, naming it), never a guess. Pure.
pub fn refused_rows(response: &TableDataInsertAllResponse, rows: usize) -> Result<BTreeMap<usize, String>, String> {
    let mut refused = BTreeMap::new();
    for error in response.insert_errors.iter().flatten() {
        let index = match error.index {
            Some(i) if usize::try_from(i).is_ok_and(|i| i < rows) => i as usize,
            Some(i) => return Err(format!("BigQuery's answer refuses row {i} of a request of {rows} rows")),
            None => return Err(format!("BigQuery's answer refuses a row without its index (request of {rows} rows)")),
        };
        let messages: Vec<String> = error
            .errors
            .iter()
            .flatten()
            .map(|e| {
                let reason = e.reason.as_deref().unwrap_or("error");
                let location = e.location.as_deref().map(|l| format!(" at {l}")).unwrap_or_default();
                format!("{reason}{location}: {}", e.message.as_deref().unwrap_or(""))
            })
            .collect();
        refused.insert(index, messages.join("; "));
    }
    Ok(refused)
}

/// A SQL string literal.
fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The query for the prediction ids a previous run may have written in `window`. Pure.
pub fn replay_query(settings: &BigQuerySettings, window: &ReplayWindow) -> Option<String> {
    replay_query_of(settings, &settings.table_ref(), "prediction_id", window)
}

/// The query for the dead-letter ids a previous run may have written in `window`, when dead letters are
/// written. Pure.
pub fn dead_letter_replay_query(settings: &BigQuerySettings, window: &ReplayWindow) -> Option<String> {
    replay_query_of(settings, &settings.dead_letter_table_ref()?, "dead_letter_id", window)
}

fn replay_query_of(settings: &BigQuerySettings, table: &str, column: &str, window: &ReplayWindow) -> Option<String> {
    let ranges: Vec<String> = window
        .partitions
        .iter()
        .filter(|(_, range)| !range.is_empty())
        .map(|(partition, range)| {
            format!(
                "(source_partition = {partition} AND source_offset >= {} AND source_offset < {})",
                range.start, range.end
            )
        })
        .collect();
    if ranges.is_empty() {
        return None;
    }
    Some(format!(
        "SELECT DISTINCT {column} FROM {table} WHERE source_topic = {} AND ({})",
        sql_string(&settings.source_topic),
        ranges.join(" OR ")
    ))
}

/// A BigQuery client for `settings`: no credentials for an emulator, else the key file or the application
/// default credentials. Errors name the field.
pub async fn client(settings: &BigQuerySettings) -> Result<Client, ConfigError> {
    let key_file = settings.credentials_file.as_deref();
    bq::client(settings.v2_base_url.as_deref(), key_file, settings.request_timeout).await.map_err(|e| {
        let field = match e {
            bq::ClientError::Credentials(_) => "credentials-file",
            _ => "endpoint",
        };
        settings.origin.error(field, e.to_string())
    })
}

/// The length of `value` as serde_json writes it compactly, counted by serde_json's own writer into a
/// counter rather than a buffer: the batcher needs each row's size, and the row is already encoded once (into
/// the value the request sends).
fn json_len(value: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // A `Value` always serialises, and the counter never fails a write.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// One row on its way to BigQuery.
pub struct PendingRow {
    /// For the dead-letter table rather than the predictions table.
    dead_letter: bool,
    insert_id: String,
    row: serde_json::Value,
    bytes: usize,
    key: String,
    position: Option<SourcePosition>,
    event: EventMeta,
}

/// The BigQuery output: a bounded queue into a writer on the output's own runtime.
pub struct BigQueryOutput {
    settings: BigQuerySettings,
    queue: SinkQueue<PendingRow>,
    health: Health,
    client: Client,
    /// The replay window and the prediction ids BigQuery already holds for it.
    replay: Mutex<(ReplayWindow, HashSet<String>)>,
    runtime: tokio::runtime::Runtime,
}

impl BigQueryOutput {
    /// Connects, checks (or creates) the dataset and the table, and starts the writer. Errors name the
    /// file and the field: the endpoint that does not answer, the table or column that is missing.
    pub fn connect(settings: BigQuerySettings) -> Result<Self, ConfigError> {
        let runtime =
            toolkit::runtime(NAME).map_err(|e| settings.origin.error("endpoint", format!("a runtime: {e}")))?;
        let client = runtime.block_on(async {
            let client = client(&settings).await?;
            prepare_table(&client, &settings).await?;
            Ok::<_, ConfigError>(client)
        })?;
        let (queue, rx, failed) = SinkQueue::new(NAME, settings.queue);
        let health = Health::default();
        let writer = Writer {
            client: client.clone(),
            settings: settings.clone(),
            health: health.clone(),
            failed,
            backlog: queue.backlog().clone(),
            pending: Vec::new(),
            pending_bytes: 0,
            refused: Vec::new(),
        };
        runtime.spawn(writer.run(rx));
        Ok(Self { settings, queue, health, client, replay: Mutex::new(Default::default()), runtime })
    }

    /// The client, for tests and tools that query what was written.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Checks the dataset and the tables (predictions, and dead letters when configured), creating them when
/// allowed.
async fn prepare_table(client: &Client, settings: &BigQuerySettings) -> Result<(), ConfigError> {
    let origin = &settings.origin;
    match bq::ensure_dataset(client, &settings.project, &settings.dataset, settings.create_table).await {
        Ok(Change::Created) => {
            tracing::info!(sink = NAME, dataset = %settings.dataset, "created the dataset (create-table)")
        }
        Ok(Change::Exists) => {}
        Err(EnsureError::Missing { .. }) => {
            return Err(origin.error(
                "dataset",
                format!(
                    "an existing dataset: `{}.{}` does not exist (or set create-table: true)",
                    settings.project, settings.dataset
                ),
            ))
        }
        Err(EnsureError::Create { source, .. }) => {
            return Err(origin.error("dataset", format!("a dataset the connector may create: {source}")))
        }
        Err(e) => return Err(origin.error("endpoint", e.to_string())),
    }
    prepare_one(client, settings, "table", &settings.table, columns(), "fluvio-vision predictions (docs/records.md)")
        .await?;
    if let Some(table) = &settings.dead_letter_table {
        let description = "fluvio-vision dead letters (docs/records.md)";
        prepare_one(client, settings, "dead-letter-table", table, dead_letter_columns(), description).await?;
    }
    Ok(())
}

/// Checks one table of the dataset (the config's `field`), creating it when allowed.
async fn prepare_one(
    client: &Client,
    settings: &BigQuerySettings,
    field: &str,
    table: &str,
    columns: Vec<Column>,
    description: &str,
) -> Result<(), ConfigError> {
    let origin = &settings.origin;
    let table_ref = settings.ref_of(table);
    let spec = TableSpec { project: &settings.project, dataset: &settings.dataset, table, columns, description };
    match bq::ensure_table(client, spec, settings.create_table).await {
        Ok(Change::Created) => {
            tracing::info!(sink = NAME, table = %table_ref, "created the table (create-table)");
            Ok(())
        }
        Ok(Change::Exists) => Ok(()),
        Err(EnsureError::Schema(why)) => Err(origin.error(field, why)),
        Err(EnsureError::Create { source, .. }) => {
            Err(origin.error(field, format!("a table the connector may create: {source}")))
        }
        Err(EnsureError::Missing { .. }) => {
            Err(origin
                .error(field, format!("an existing table: {table_ref} does not exist (or set create-table: true)")))
        }
        Err(e) => Err(origin.error("endpoint", e.to_string())),
    }
}

impl Output for BigQueryOutput {
    fn name(&self) -> &str {
        NAME
    }

    /// Asks BigQuery which prediction ids of the replay window it already holds; `send` skips them.
    fn prepare(&self, window: &ReplayWindow) -> Result<(), OutputError> {
        let queries = [replay_query(&self.settings, window), dead_letter_replay_query(&self.settings, window)];
        let mut ids = HashSet::new();
        for sql in queries.into_iter().flatten() {
            let rows =
                self.runtime.block_on(toolkit::with_retries(NAME, &self.settings.retry, &self.health, || async {
                    query(&self.client, &self.settings.project, &sql).await.map_err(|e| failure(&e))
                }))?;
            ids.extend(first_column(&rows));
        }
        tracing::info!(sink = NAME, already_written = ids.len(), ?window, "replay window checked");
        if let Ok(mut replay) = self.replay.lock() {
            *replay = (window.clone(), ids);
        }
        Ok(())
    }

    fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError> {
        let topic = &self.settings.source_topic;
        let (insert_id, row, event, dead_letter) = match delivery.outcome {
            Outcome::Classified { prediction, .. } if self.settings.include.takes(delivery) => {
                let row = serde_json::to_value(encode_row(prediction, topic, delivery.position));
                let event =
                    EventMeta { id: prediction.image_id.clone(), source: prediction.source, ..EventMeta::default() };
                (prediction.prediction_id.clone(), row, event, false)
            }
            Outcome::Rejected { name, rejected, .. }
                if self.settings.dead_letter_table.is_some()
                    && delivery.routed.destination == Destination::DeadLetter =>
            {
                let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
                let row = encode_dead_letter(name, rejected, topic, delivery.position, &now);
                (row.dead_letter_id.clone(), serde_json::to_value(row), rejected.event.clone(), true)
            }
            _ => return Ok(()),
        };
        if let Some(position) = delivery.position {
            let written =
                self.replay.lock().is_ok_and(|replay| replay.0.contains(position) && replay.1.contains(&insert_id));
            if written {
                events::sink_replay_skipped(NAME, 1);
                return Ok(());
            }
        }
        let row = row.map_err(|source| OutputError::Serialize { output: NAME.into(), source })?;
        let bytes = json_len(&row);
        self.queue.push(PendingRow {
            dead_letter,
            insert_id,
            row,
            bytes,
            key: delivery.routed.key.clone(),
            position: delivery.position,
            event,
        })
    }

    /// Inserts every queued row; resolves with the rows BigQuery refused.
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

/// The worker: collects rows into batches and inserts them, halving on "too large".
struct Writer {
    client: Client,
    settings: BigQuerySettings,
    health: Health,
    failed: FailedFlag,
    backlog: toolkit::Backlog,
    pending: Vec<PendingRow>,
    pending_bytes: usize,
    refused: Vec<SinkRejection>,
}

impl Writer {
    async fn run(mut self, rx: async_channel::Receiver<Command<PendingRow>>) {
        while let Ok(command) = rx.recv().await {
            match command {
                Command::Row(row) => {
                    self.pending_bytes += row.bytes;
                    self.pending.push(row);
                    if self.pending.len() >= self.settings.max_batch_rows
                        || self.pending_bytes >= self.settings.max_batch_bytes
                    {
                        // A failure is kept in `failed` and returned to the next acknowledgement.
                        let _ = self.write().await;
                    }
                }
                Command::Flush(reply) => {
                    let result = self.write().await.map(|()| std::mem::take(&mut self.refused));
                    let _ = reply.send(result).await;
                }
            }
        }
    }

    fn failed_error(&self) -> Option<OutputError> {
        let error = self.failed.lock().ok().and_then(|f| f.clone())?;
        Some(OutputError::Failed { output: NAME.into(), action: "inserting".into(), source: error.into() })
    }

    /// Inserts everything pending, in batches.
    async fn write(&mut self) -> Result<(), OutputError> {
        let rows = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if let Some(error) = self.failed_error() {
            return Err(error);
        }
        // Predictions first, then dead letters: each batch goes to one table.
        let (mut rows, dead_letters): (Vec<PendingRow>, Vec<PendingRow>) =
            rows.into_iter().partition(|r| !r.dead_letter);
        let predictions = rows.len();
        rows.extend(dead_letters);
        let sizes: Vec<usize> = rows.iter().map(|r| r.bytes).collect();
        let (max_rows, max_bytes) = (self.settings.max_batch_rows, self.settings.max_batch_bytes);
        let mut work: VecDeque<Range<usize>> = plan_batches(&sizes[..predictions], max_rows, max_bytes)
            .into_iter()
            .chain(
                plan_batches(&sizes[predictions..], max_rows, max_bytes)
                    .into_iter()
                    .map(|r| r.start + predictions..r.end + predictions),
            )
            .collect();
        while let Some(batch) = work.pop_front() {
            match self.insert(&rows[batch.clone()]).await {
                Ok(refused) => {
                    self.backlog.done(batch.len() as u64);
                    for (index, message) in refused {
                        let row = &rows[batch.start + index];
                        events::sink_error(NAME, "rejected_row");
                        self.refused.push(rejection(row, &message));
                    }
                }
                Err(InsertFailure::TooLarge(message)) if batch.len() > 1 => {
                    events::sink_error(NAME, "too_large");
                    let middle = batch.start + batch.len() / 2;
                    tracing::warn!(sink = NAME, rows = batch.len(), "{message}; halving the batch");
                    work.push_front(middle..batch.end);
                    work.push_front(batch.start..middle);
                }
                Err(InsertFailure::TooLarge(message)) => {
                    self.backlog.done(1);
                    events::sink_error(NAME, "rejected_row");
                    self.refused.push(rejection(&rows[batch.start], &format!("the row alone is too large: {message}")));
                }
                Err(InsertFailure::Transient(message) | InsertFailure::Fatal(message)) => {
                    let error =
                        OutputError::Failed { output: NAME.into(), action: "inserting".into(), source: message.into() };
                    toolkit::mark_failed(&self.failed, &error);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// One batch, retried on transient errors until the retry limit; `Err(Transient)` means it gave up.
    async fn insert(&self, rows: &[PendingRow]) -> Result<BTreeMap<usize, String>, InsertFailure> {
        let s = &self.settings;
        let table = match rows.first() {
            Some(row) if row.dead_letter => s.dead_letter_table.as_deref().unwrap_or(&s.table),
            _ => &s.table,
        };
        let mut request = TableDataInsertAllRequest::new();
        request.skip_invalid_rows();
        for row in rows {
            request.add_row(Some(row.insert_id.clone()), &row.row).map_err(|e| InsertFailure::Fatal(e.to_string()))?;
        }
        let bytes: usize = rows.iter().map(|r| r.bytes).sum();
        let started = Instant::now();
        let result = toolkit::retry(NAME, &s.retry, &self.health, || {
            let request = request.clone();
            async move {
                let attempt = Instant::now();
                match self.client.tabledata().insert_all(&s.project, &s.dataset, table, request).await {
                    Ok(response) => Ok((response, attempt.elapsed())),
                    Err(e) => match classify(&e) {
                        InsertFailure::Transient(m) => Err(Failure::Transient(m)),
                        other => Err(Failure::Fatal(other)),
                    },
                }
            }
        })
        .await;
        match result {
            Ok((response, took)) => {
                // Not retried: the rows it did insert are in; a replay after the restart inserts again under
                // the same insert ids, which BigQuery drops as duplicates.
                let refused = refused_rows(&response, rows.len()).map_err(InsertFailure::Fatal)?;
                events::sink_written(NAME, (rows.len() - refused.len()) as u64, bytes as u64, took.as_secs_f64());
                tracing::debug!(
                    sink = NAME,
                    rows = rows.len(),
                    refused = refused.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "inserted"
                );
                Ok(refused)
            }
            Err(Stopped::Fatal(failure)) => Err(failure),
            Err(Stopped::GaveUp(error)) => Err(InsertFailure::Transient(error.to_string())),
        }
    }
}

fn rejection(row: &PendingRow, message: &str) -> SinkRejection {
    let payload = serde_json::to_vec(&row.row).unwrap_or_default();
    let rejected = RejectedImage::new(
        RejectReason::SinkError,
        format!("BigQuery refused the row: {message}"),
        Stage::Sink,
        &payload,
    )
    .with_event(row.event.clone());
    SinkRejection { key: row.key.clone(), position: row.position, rejected }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_gcp::bigquery::{check_schema, schema_of};
    use fvision_records::{ClassScore, Source};

    fn prediction() -> Prediction {
        Prediction {
            prediction_id: "p1".into(),
            image_id: "img-1".into(),
            label: "tabby".into(),
            class_index: 281,
            confidence: 0.5,
            top_k: vec![ClassScore { label: "tabby".into(), class_index: 281, confidence: 0.5 }],
            model_name: "efficientnet-lite0".into(),
            model_version: "1".into(),
            processing_time_ms: 12.6,
            image_size_bytes: 2048,
            source: Source::Gcs,
            bucket: Some("b".into()),
            object_name: Some("o.jpg".into()),
            processed_at: "2026-12-01T10:00:00.000Z".into(),
            above_threshold: true,
            ..Prediction::default()
        }
    }

    #[test]
    fn a_row_is_measured_as_long_as_its_json() {
        let hostile = "q\"b\\s\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é€😀";
        let mut rejected = RejectedImage::new(RejectReason::UnknownFormat, hostile, Stage::Decode, hostile.as_bytes());
        rejected.event.id = hostile.into();
        let position = Some(SourcePosition { partition: 1, offset: 9 });
        let rows = [
            serde_json::to_value(encode_row(&prediction(), "images", position)).unwrap(),
            serde_json::to_value(encode_dead_letter(hostile, &rejected, "images", position, "now")).unwrap(),
            serde_json::json!({"a": [null, true, false, -1, 18446744073709551615u64, 0.1, 1e300, [], {}], "": ""}),
        ];
        for row in &rows {
            assert_eq!(json_len(row), row.to_string().len(), "{row}");
        }
    }

    #[test]
    fn a_prediction_becomes_a_row_with_every_column_of_the_schema() {
        let row = encode_row(&prediction(), "images", Some(SourcePosition { partition: 2, offset: 41 }));
        assert_eq!((row.processing_time_ms, row.source.as_str(), row.source_offset), (13, "gcs", Some(41)));
        assert_eq!(row.confidence, 0.5);
        let json = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = columns().into_iter().map(|(name, ..)| name).collect();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys_sorted, expected, "the row has exactly the table's columns");
        assert_eq!(json["top_k"][0]["class_index"], 281);
    }

    #[test]
    fn the_schema_check_names_the_missing_or_different_column() {
        let fields = schema_of(columns()).fields().clone().unwrap();
        assert_eq!(check_schema("t", columns(), &fields), Ok(()));
        // The seed's own aliases are compatible.
        let mut aliased = fields.clone();
        aliased[2].r#type = FieldType::Float;
        aliased[4].r#type = FieldType::Integer;
        assert_eq!(check_schema("t", columns(), &aliased), Ok(()));
        let without: Vec<_> = fields.iter().filter(|f| f.name != "label").cloned().collect();
        assert!(check_schema("t", columns(), &without).unwrap_err().contains("no column `label` (STRING)"));
        let mut wrong = fields.clone();
        wrong[4].r#type = FieldType::String;
        assert!(check_schema("t", columns(), &wrong)
            .unwrap_err()
            .contains("`processing_time_ms` of table t is STRING, expected INT64"));
        let mut flat = fields;
        flat[14].mode = None;
        assert!(check_schema("t", columns(), &flat).unwrap_err().contains("`top_k`"));
    }

    #[test]
    fn batches_respect_rows_and_bytes() {
        assert_eq!(plan_batches(&[10; 5], 2, 1000), [0..2, 2..4, 4..5]);
        assert_eq!(plan_batches(&[40, 40, 40, 10], 10, 100), [0..2, 2..4]);
        // A row larger than the byte limit goes alone.
        assert_eq!(plan_batches(&[10, 500, 10], 10, 100), [0..1, 1..2, 2..3]);
        assert!(plan_batches(&[], 10, 100).is_empty());
    }

    #[test]
    fn refused_rows_come_from_insert_errors() {
        let response: TableDataInsertAllResponse = serde_json::from_str(
            r#"{"kind":"bigquery#tableDataInsertAllResponse","insertErrors":[
                {"index":1,"errors":[{"reason":"invalid","location":"confidence","message":"Cannot convert value to floating point."}]}]}"#,
        )
        .unwrap();
        let refused = refused_rows(&response, 2).unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[&1], "invalid at confidence: Cannot convert value to floating point.");
    }

    /// Issue 28: an index past the request panicked the writer (`rows[batch.start + index]`), and an error
    /// without an index was dropped; both are now an error that names them, and no row is dead-lettered.
    #[test]
    fn an_answer_naming_a_row_outside_the_request_or_none_is_an_error_not_a_guess() {
        let answer = |errors: serde_json::Value| -> TableDataInsertAllResponse {
            serde_json::from_value(
                serde_json::json!({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}),
            )
            .unwrap()
        };
        let row_errors = serde_json::json!([{"reason": "invalid", "message": "bad"}]);
        let past = answer(serde_json::json!([{"index": 2, "errors": row_errors}]));
        assert_eq!(refused_rows(&past, 2).unwrap_err(), "BigQuery's answer refuses row 2 of a request of 2 rows");
        let huge = answer(serde_json::json!([{"index": i32::MAX, "errors": row_errors}]));
        assert!(refused_rows(&huge, 2).unwrap_err().contains(&i32::MAX.to_string()));
        let negative = answer(serde_json::json!([{"index": -1, "errors": row_errors}]));
        assert!(refused_rows(&negative, 2).unwrap_err().contains("row -1"));
        let unindexed = answer(serde_json::json!([{"errors": row_errors}]));
        assert!(refused_rows(&unindexed, 2).unwrap_err().contains("without its index"));
        assert!(refused_rows(&answer(serde_json::json!([])), 0).unwrap().is_empty());
    }

    #[test]
    fn errors_are_classified_for_retry_and_halving() {
        let response = |code: i64, message: &str, reason: &str| BQError::ResponseError {
            error: serde_json::from_value(
                serde_json::json!({"error": {"code": code, "message": message, "errors": [{"reason": reason}]}}),
            )
            .unwrap(),
        };
        assert!(matches!(classify(&response(413, "Request Entity Too Large", "")), InsertFailure::TooLarge(_)));
        assert!(matches!(
            classify(&response(400, "Request payload size exceeds the limit: 10485760 bytes.", "badRequest")),
            InsertFailure::TooLarge(_)
        ));
        assert!(matches!(classify(&response(503, "unavailable", "backendError")), InsertFailure::Transient(_)));
        assert!(matches!(
            classify(&response(403, "Exceeded rate limits", "rateLimitExceeded")),
            InsertFailure::Transient(_)
        ));
        assert!(matches!(classify(&response(429, "slow down", "")), InsertFailure::Transient(_)));
        assert!(matches!(classify(&response(403, "Access Denied", "accessDenied")), InsertFailure::Fatal(_)));
        assert!(matches!(classify(&response(404, "Not found: Table", "notFound")), InsertFailure::Fatal(_)));
    }

    #[test]
    fn the_replay_query_covers_each_partition_range() {
        let config: BigQueryConfig = serde_yaml::from_str("project: p\nendpoint: http://127.0.0.1:9050").unwrap();
        let settings = config.settings(Path::new("s.yaml"), "ima'ges").unwrap();
        assert_eq!(settings.v2_base_url.as_deref(), Some("http://127.0.0.1:9050/bigquery/v2"));
        let window = ReplayWindow { partitions: [(0u32, 5i64..9i64), (3, 7..7)].into_iter().collect() };
        assert_eq!(
            replay_query(&settings, &window).unwrap(),
            "SELECT DISTINCT prediction_id FROM `p.ml_streaming.image_predictions` WHERE source_topic = 'ima\\'ges' \
             AND ((source_partition = 0 AND source_offset >= 5 AND source_offset < 9))"
        );
        assert_eq!(replay_query(&settings, &ReplayWindow::default()), None);
    }

    #[test]
    fn the_config_is_checked_field_by_field() {
        let settings =
            |text: &str| serde_yaml::from_str::<BigQueryConfig>(text).unwrap().settings(Path::new("s.yaml"), "images");
        let ok = settings("project: my-project").unwrap();
        assert_eq!(
            (ok.dataset.as_str(), ok.table.as_str(), ok.max_batch_rows),
            ("ml_streaming", "image_predictions", 500)
        );
        assert_eq!(ok.v2_base_url, None);
        for (text, field) in [
            ("project: 'a b'", "inference.bigquery.project"),
            ("project: p\ndataset: 'x-y'", "inference.bigquery.dataset"),
            ("project: p\ntable: ''", "inference.bigquery.table"),
            ("project: p\nendpoint: 'localhost:9050'", "inference.bigquery.endpoint"),
            ("project: p\nmax-batch-rows: 0", "inference.bigquery.max-batch-rows"),
            ("project: p\nmax-batch-bytes: 20 MB", "inference.bigquery.max-batch-bytes"),
        ] {
            let err = settings(text).unwrap_err().to_string();
            assert!(err.starts_with("s.yaml: field `") && err.contains(field), "{text}: {err}");
        }
    }
}
