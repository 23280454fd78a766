//! The `gcs` section of the source's connector YAML, and its checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use fvision_connector_common::source_output::{LookbackBytes, LookbackIds};
use fvision_connector_common::{CheckSection, CheckedConfig, ConfigError, ConnectorConfig, MAX_EVENT_RECORD};
use fvision_records::{EnvelopeFieldCap, DEFAULT_ENVELOPE_FIELD_CAP};
use serde::Deserialize;

use fvision_gcp::storage::{token_allowed, GOOGLE_STORAGE_HOSTS};

/// The name of this connector's own section in the YAML.
pub const SECTION: &str = "gcs";

/// `gcs:`: the subscription announcing uploads, the storage endpoint, filters and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GcsConfig {
    /// The Google Cloud project of the subscription.
    pub project: String,
    /// The Pub/Sub subscription receiving the bucket's OBJECT_FINALIZE notifications.
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// `host:port` of a Pub/Sub emulator (plain gRPC, no credentials); unset: `$PUBSUB_EMULATOR_HOST`,
    /// else Google Cloud.
    #[serde(default)]
    pub pubsub_emulator_host: Option<String>,
    /// Base URL of the GCS JSON API (an emulator's URL, or Google's).
    #[serde(default = "default_gcs_endpoint")]
    pub gcs_endpoint: String,
    /// A fixed OAuth access token for GCS (put it in secrets; it expires within the hour, so this is for
    /// trying things out); unset: `credentials-file`, else anonymous requests to an emulator, else the
    /// application default credentials.
    #[serde(default)]
    pub access_token: Option<String>,
    /// A Google service-account key file (JSON) for Pub/Sub and GCS on Google Cloud; tokens are refreshed
    /// before they expire. Unset: the application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
    /// or the metadata server). Not used with emulators.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The buckets whose notifications are read; a notification for any other bucket (a subscription shared
    /// or misrouted, a forged message) goes to the dead-letter topic as `bucket_not_allowed`, nothing downloaded.
    pub buckets: Vec<String>,
    /// Only objects whose name starts with this are read (others are acked and counted).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Only objects with one of these content types are read; empty: every type.
    #[serde(default = "default_content_types")]
    pub content_types: Vec<String>,
    /// Larger objects go to the dead-letter topic as `too_large` without being downloaded whole.
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: ByteSize,
    /// Tries of one object's download that end in a permanent failure (an HTTP status such as 400, 401, 403 or
    /// 501) or a timeout (`download-timeout`) before the object goes to the dead-letter topic as
    /// `download_failed` and its message is acked; each failed try leaves the message un-acked, so Pub/Sub
    /// redelivers it after `ack-deadline`. Unreachable servers, 5xx answers and 429 are outages: retried
    /// without bound, never dead-lettered.
    #[serde(default = "default_download_attempts")]
    pub download_attempts: u32,
    /// Longest time one download may take.
    #[serde(default = "default_download_timeout", with = "humantime_serde")]
    pub download_timeout: Duration,
    /// Largest envelope field of an event (its id `gs://bucket/object#generation`, `event_time`, an attribute);
    /// a notification with a larger one goes to the dead-letter topic as `malformed_envelope`, nothing
    /// downloaded. Keep it equal to the `image-validate` param `max_envelope_field_bytes`.
    #[serde(default = "default_max_envelope_field_bytes")]
    pub max_envelope_field_bytes: ByteSize,
    /// Messages per pull: what a crash may leave un-acked (they are redelivered).
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// The ack deadline the source asks for while it works on a message, renewed while a download is slow.
    #[serde(default = "default_ack_deadline", with = "humantime_serde")]
    pub ack_deadline: Duration,
    /// Fluvio topic for objects that cannot become an event.
    #[serde(default = "default_dlq_topic")]
    pub dlq_topic: String,
    /// Serve Prometheus metrics on this port.
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// Ids per partition of the written topics remembered and read back at start-up (the replay guard; 0
    /// turns it off): [`LookbackIds`].
    #[serde(default)]
    pub replay_lookback: LookbackIds,
    /// The most bytes of records read back per topic at start-up for `replay-lookback`: [`LookbackBytes`].
    #[serde(default)]
    pub replay_lookback_bytes: LookbackBytes,
}

fn default_subscription() -> String {
    "image-stream-sub".into()
}

fn default_gcs_endpoint() -> String {
    "https://storage.googleapis.com".into()
}

fn default_prefix() -> String {
    "input-images/".into()
}

fn default_content_types() -> Vec<String> {
    ["image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"].map(String::from).to_vec()
}

/// The largest object read: its base64 (4/3 of it) plus the event's other fields fits [`MAX_EVENT_RECORD`].
const MAX_OBJECT_BYTES: u64 = MAX_EVENT_RECORD.as_u64() / 4 * 3 - 64 * 1024;

fn default_max_object_bytes() -> ByteSize {
    // base64 grows the object by 4/3: an 11 MiB object is a 15 MiB event, below the sink's 16 MiB fetch.
    ByteSize::mib(11)
}

fn default_download_attempts() -> u32 {
    5
}

fn default_download_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_max_envelope_field_bytes() -> ByteSize {
    ByteSize::b(DEFAULT_ENVELOPE_FIELD_CAP as u64)
}

fn default_max_messages() -> usize {
    16
}

fn default_ack_deadline() -> Duration {
    Duration::from_secs(60)
}

fn default_dlq_topic() -> String {
    "images-dlq".into()
}

impl CheckSection for GcsConfig {
    const SECTION: &'static str = SECTION;

    /// What serde cannot check.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let field = |name: &str, expected: &str| ConfigError::Field {
            path: path.to_owned(),
            field: format!("{SECTION}.{name}"),
            expected: expected.into(),
        };
        if self.project.trim().is_empty() {
            return Err(field("project", "a Google Cloud project id"));
        }
        if self.subscription.trim().is_empty() || self.subscription.contains('/') {
            return Err(field("subscription", "a subscription id (not a path)"));
        }
        if !(self.gcs_endpoint.starts_with("http://") || self.gcs_endpoint.starts_with("https://")) {
            return Err(field("gcs-endpoint", "an http:// or https:// URL"));
        }
        if self.buckets.is_empty() || self.buckets.iter().any(|b| b.trim().is_empty() || b.contains('/')) {
            return Err(field("buckets", "a non-empty list of bucket names (no `gs://`, no `/`)"));
        }
        if !(1..=100).contains(&self.download_attempts) {
            return Err(field("download-attempts", "a count from 1 to 100"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.download_timeout) {
            return Err(field("download-timeout", "from 1s to 1h"));
        }
        if self.checked_envelope_field_cap().is_none() {
            return Err(field(
                "max-envelope-field-bytes",
                &format!("from {} B to {} KiB", EnvelopeFieldCap::MIN, EnvelopeFieldCap::MAX / 1024),
            ));
        }
        if self.access_token.is_some() && !token_allowed(&self.gcs_endpoint) {
            return Err(field(
                "access-token",
                &format!(
                    "unset: a token is only sent to Google's storage hosts over https ({}), and gcs-endpoint is {}",
                    GOOGLE_STORAGE_HOSTS.join(", "),
                    self.gcs_endpoint
                ),
            ));
        }
        if self.max_messages == 0 || self.max_messages > 1000 {
            return Err(field("max-messages", "a count from 1 to 1000"));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(600)).contains(&self.ack_deadline) {
            return Err(field("ack-deadline", "from 10s to 600s (Pub/Sub's limits)"));
        }
        // base64 grows an object by 4/3; the event must stay within what the producer sends.
        if self.max_object_bytes.as_u64() == 0 || self.max_object_bytes.as_u64() > MAX_OBJECT_BYTES {
            return Err(field(
                "max-object-bytes",
                &format!(
                    "from 1 B to {} (its base64 event must fit {MAX_EVENT_RECORD})",
                    ByteSize::b(MAX_OBJECT_BYTES)
                ),
            ));
        }
        if let Some(key) = &self.credentials_file {
            fvision_gcp::auth::check_key_file(key).map_err(|e| field("credentials-file", &e.to_string()))?;
        }
        Ok(())
    }
}

impl GcsConfig {
    /// Whether GCS is Google's (not an emulator): requests then carry a token.
    pub fn gcs_is_google(&self) -> bool {
        token_allowed(&self.gcs_endpoint)
    }

    fn checked_envelope_field_cap(&self) -> Option<EnvelopeFieldCap> {
        usize::try_from(self.max_envelope_field_bytes.as_u64()).ok().and_then(EnvelopeFieldCap::new)
    }

    /// `max-envelope-field-bytes` as checked by [`CheckSection::check`] (the default when out of range).
    pub fn envelope_field_cap(&self) -> EnvelopeFieldCap {
        self.checked_envelope_field_cap().unwrap_or_default()
    }
}

/// The connector config as serde reads it, with the `gcs` section.
pub type SourceConfig = ConnectorConfig<GcsConfig>;

/// The connector config after the `gcs` section's checks ([`load`] runs them): what [`crate::GcsSource`] takes.
pub type GcsSettings = CheckedConfig<GcsConfig>;

/// Reads and checks the YAML (and secrets file).
pub fn load(path: &Path, secrets: Option<&Path>) -> Result<GcsSettings, ConfigError> {
    GcsSettings::load(path, secrets)
}
