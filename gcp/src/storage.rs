//! The one GCS client: the few JSON API calls the project makes, as plain HTTP requests with `reqwest`
//! (they work the same against Google and against `gcp-storage-emulator`, which serves only the JSON API):
//! buckets, uploads, pinned downloads with a size limit, listing, deleting, and a bucket's Pub/Sub
//! notification. Asynchronous; [`BlockingClient`] runs it on a runtime of its own for the synchronous
//! callers (the source's download thread, `fvision simulate`, `fvision deploy`).

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{GoogleAuth, GoogleAuthError};
use crate::emulator::StorageEndpoint;
use crate::Change;

/// A GCS request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The endpoint is not a URL, or no HTTP client could be built.
    #[error("GCS endpoint `{endpoint}`: {detail}")]
    Setup {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
    /// No answer (connection refused, timeout, TLS, a body cut short, ...).
    #[error("{action}: {source}")]
    Transport {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// No access token.
    #[error("{action}: {source}")]
    Credentials {
        /// What was being done.
        action: String,
        /// Why there was no token.
        #[source]
        source: GoogleAuthError,
    },
    /// An answer other than the expected one.
    #[error("{action}: HTTP {status}: {body}")]
    Status {
        /// What was being done.
        action: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

impl StorageError {
    /// Whether repeating the request may help: no answer, no token, 408, 429 or a server error.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Setup { .. } => false,
            Self::Transport { .. } | Self::Credentials { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
        }
    }

    /// Whether trying again later can help without anyone changing anything, so that a source retries it
    /// without bound: no answer at all (an outage), no token, a 5xx other than 501, 408 or 429. A timeout, a
    /// 501 and every other 4xx (400, 401, 403, ...) are not: they repeat on every try.
    pub fn is_outage(&self) -> bool {
        self.is_transient() && !self.is_timeout() && self.status() != Some(501)
    }

    /// Whether the request ran out of its time (the client's timeout), answer or not.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Transport { source, .. } if source.is_timeout())
    }

    /// The HTTP status of an unexpected answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The hosts a Google access token is sent to (exactly these names, over https on port 443): Google's
/// storage API and its mTLS name. Any other endpoint (an emulator, a look-alike such as
/// `storage.googleapis.com.example`, a proxy) gets requests without credentials.
pub const GOOGLE_STORAGE_HOSTS: [&str; 2] = ["storage.googleapis.com", "storage.mtls.googleapis.com"];

/// Whether requests to `endpoint` may carry a Google token: an `https://` URL whose host is one of
/// [`GOOGLE_STORAGE_HOSTS`], with no user info and port 443 or none.
pub fn token_allowed(endpoint: &str) -> bool {
    let Ok(url) = Url::parse(endpoint) else {
        return false;
    };
    url.scheme() == "https"
        && url.username().is_empty()
        && url.password().is_none()
        && url.port().is_none()
        && url
            .host_str()
            .is_some_and(|host| GOOGLE_STORAGE_HOSTS.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)))
}

/// What a download found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// The object's bytes.
    Bytes(Vec<u8>),
    /// The object (or that generation of it) does not exist.
    NotFound,
    /// The object is larger than the limit; nothing more than the limit was read.
    TooLarge,
}

/// How requests are authorised.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// None (an emulator).
    Anonymous,
    /// A fixed access token (an explicit override; it expires within the hour).
    Token(String),
    /// Tokens from a key file or the application default credentials, refreshed before they expire.
    Google(GoogleAuth),
}

impl Credentials {
    /// The credentials for `endpoint`: none for an emulator, else a fixed `token` when one is given, else
    /// [`GoogleAuth`] for `scope` from `key_file` or the application default credentials.
    pub async fn for_endpoint(
        endpoint: &StorageEndpoint,
        token: Option<String>,
        key_file: Option<&std::path::Path>,
        scope: &str,
    ) -> Result<Self, GoogleAuthError> {
        match token {
            Some(token) => Ok(Self::Token(token)),
            None if endpoint.anonymous => Ok(Self::Anonymous),
            None => Ok(Self::Google(GoogleAuth::new(key_file, &[scope]).await?)),
        }
    }
}

/// The JSON API at one endpoint; cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    credentials: Credentials,
    /// [`token_allowed`] for the endpoint: credentials go nowhere else.
    sends_tokens: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: Vec<ObjectItem>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ObjectItem {
    name: String,
}

/// The boundary of multipart uploads (never inside JSON metadata; the media part is length-delimited by it
/// only in theory: GCS reads up to the closing boundary, which random object bytes do not contain).
const BOUNDARY: &str = "fvision-upload-boundary-7d3f";

impl Client {
    /// A client for `endpoint` (its API root), each request limited to `timeout`.
    pub fn new(endpoint: &str, credentials: Credentials, timeout: Duration) -> Result<Self, StorageError> {
        let setup = |detail: String| StorageError::Setup { endpoint: endpoint.to_string(), detail };
        let endpoint_url = Url::parse(endpoint).map_err(|e| setup(format!("not a URL: {e}")))?;
        if endpoint_url.cannot_be_a_base() {
            return Err(setup("not a base URL".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| setup(format!("an HTTP client could not be built: {e}")))?;
        let sends_tokens = token_allowed(endpoint_url.as_str());
        Ok(Self { http, endpoint: endpoint_url, credentials, sends_tokens })
    }

    /// The API root.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(
        &self,
        action: &str,
        method: Method,
        url: Url,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<reqwest::Response, StorageError> {
        let mut request = self.http.request(method, url);
        let credentials = if self.sends_tokens { &self.credentials } else { &Credentials::Anonymous };
        match credentials {
            Credentials::Anonymous => {}
            Credentials::Token(token) => request = request.bearer_auth(token),
            Credentials::Google(auth) => {
                let token = auth
                    .access_token()
                    .await
                    .map_err(|source| StorageError::Credentials { action: action.to_string(), source })?;
                request = request.bearer_auth(token);
            }
        }
        if let Some((content_type, body)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        }
        request.send().await.map_err(|source| StorageError::Transport { action: action.to_string(), source })
    }

    async fn json(
        &self,
        action: &str,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Response, StorageError> {
        let body = body.map(|b| ("application/json".to_string(), b.to_string().into_bytes()));
        let response = self.send(action, method, url, body).await?;
        Response::read(action, response).await
    }

    /// Whether `bucket` exists.
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, StorageError> {
        let action = format!("reading bucket {bucket}");
        let response = self.json(&action, Method::GET, self.url(&["storage", "v1", "b", bucket]), None).await?;
        match response.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(response.error(action)),
        }
    }

    /// Creates `bucket` in `project`; one that exists already is [`Change::Exists`].
    pub async fn create_bucket(&self, project: &str, bucket: &str) -> Result<Change, StorageError> {
        let action = format!("creating bucket {bucket}");
        let mut url = self.url(&["storage", "v1", "b"]);
        url.query_pairs_mut().append_pair("project", project);
        let response = self.json(&action, Method::POST, url, Some(serde_json::json!({ "name": bucket }))).await?;
        match response.status.as_u16() {
            200 => Ok(Change::Created),
            409 => Ok(Change::Exists),
            _ => Err(response.error(action)),
        }
    }

    /// Creates `bucket` unless it exists (looked up first: creating needs more rights than reading).
    pub async fn ensure_bucket(&self, project: &str, bucket: &str) -> Result<Change, StorageError> {
        if self.bucket_exists(bucket).await? {
            return Ok(Change::Exists);
        }
        self.create_bucket(project, bucket).await
    }

    /// Uploads `bytes` as `bucket/name` (replacing any object of that name); returns the new generation. A
    /// multipart upload (metadata and media in one request), which also takes an empty object.
    pub async fn upload(
        &self,
        bucket: &str,
        name: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<i64, StorageError> {
        let action = format!("uploading gs://{bucket}/{name}");
        let mut url = self.url(&["upload", "storage", "v1", "b", bucket, "o"]);
        url.query_pairs_mut().append_pair("uploadType", "multipart");
        let metadata = serde_json::json!({ "name": name, "contentType": content_type }).to_string();
        let mut body = Vec::with_capacity(bytes.len() + metadata.len() + 200);
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{BOUNDARY}\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let content = format!("multipart/related; boundary={BOUNDARY}");
        let response = self.send(&action, Method::POST, url, Some((content, body))).await?;
        let response = Response::read(&action, response).await?;
        if !response.status.is_success() {
            return Err(response.error(action));
        }
        let generation = &response.body["generation"];
        generation.as_str().and_then(|s| s.parse().ok()).or(generation.as_i64()).ok_or(StorageError::Status {
            action,
            status: response.status.as_u16(),
            body: "no generation in the answer".into(),
        })
    }

    /// Downloads `bucket/name` (that `generation` of it, when given), reading at most `limit` bytes.
    pub async fn download(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        limit: u64,
    ) -> Result<Download, StorageError> {
        let action = match generation {
            Some(generation) => format!("downloading gs://{bucket}/{name}#{generation}"),
            None => format!("downloading gs://{bucket}/{name}"),
        };
        let mut url = self.url(&["storage", "v1", "b", bucket, "o", name]);
        url.query_pairs_mut().append_pair("alt", "media");
        if let Some(generation) = generation {
            url.query_pairs_mut().append_pair("generation", &generation.to_string());
        }
        let mut response = self.send(&action, Method::GET, url, None).await?;
        match response.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(Download::NotFound),
            _ => return Err(Response::read(&action, response).await?.error(action)),
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Ok(Download::TooLarge);
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if (bytes.len() + chunk.len()) as u64 > limit => return Ok(Download::TooLarge),
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                Ok(None) => return Ok(Download::Bytes(bytes)),
                Err(source) => return Err(StorageError::Transport { action, source }),
            }
        }
    }

    /// The names of the objects of `bucket` under `prefix`, every page.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        let action = format!("listing gs://{bucket}/{prefix}");
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut url = self.url(&["storage", "v1", "b", bucket, "o"]);
            url.query_pairs_mut().append_pair("prefix", prefix);
            if let Some(token) = &page {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
            let response = self.json(&action, Method::GET, url, None).await?;
            if !response.status.is_success() {
                return Err(response.error(action));
            }
            let list: ObjectList = serde_json::from_value(response.body).map_err(|e| StorageError::Status {
                action: action.clone(),
                status: response.status.as_u16(),
                body: format!("not an object list: {e}"),
            })?;
            names.extend(list.items.into_iter().map(|item| item.name));
            match list.next_page_token {
                Some(token) if !token.is_empty() => page = Some(token),
                _ => return Ok(names),
            }
        }
    }

    /// Deletes `bucket/name`; one that is already gone is fine.
    pub async fn delete(&self, bucket: &str, name: &str) -> Result<(), StorageError> {
        let action = format!("deleting gs://{bucket}/{name}");
        let url = self.url(&["storage", "v1", "b", bucket, "o", name]);
        let response = self.json(&action, Method::DELETE, url, None).await?;
        match response.status.as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(response.error(action)),
        }
    }

    /// Deletes every object of `bucket`, then the bucket; one that is already gone is fine.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        let names = match self.list(bucket, "").await {
            Err(e) if e.status() == Some(404) => return Ok(()),
            listed => listed?,
        };
        for name in names {
            self.delete(bucket, &name).await?;
        }
        let action = format!("deleting gs://{bucket}");
        let response = self.json(&action, Method::DELETE, self.url(&["storage", "v1", "b", bucket]), None).await?;
        match response.status.as_u16() {
            200 | 204 | 404 => Ok(()),
            _ => Err(response.error(action)),
        }
    }

    /// Whether the endpoint answers at all (any HTTP status).
    pub async fn answers(&self, project: &str) -> Result<(), StorageError> {
        let mut url = self.url(&["storage", "v1", "b"]);
        url.query_pairs_mut().append_pair("project", project);
        self.json(&format!("GCS at {}", self.endpoint), Method::GET, url, None).await.map(|_| ())
    }

    /// The bucket's OBJECT_FINALIZE notification of objects under `prefix` to Pub/Sub `topic` of `project`
    /// (Google Cloud; the emulator has none), unless one to that topic exists.
    pub async fn ensure_notification(
        &self,
        bucket: &str,
        project: &str,
        topic: &str,
        prefix: &str,
    ) -> Result<Change, StorageError> {
        let action = format!("the notifications of gs://{bucket}");
        let url = self.url(&["storage", "v1", "b", bucket, "notificationConfigs"]);
        let response = self.json(&action, Method::GET, url.clone(), None).await?;
        if response.status != StatusCode::OK {
            return Err(response.error(action));
        }
        let full = format!("//pubsub.googleapis.com/projects/{project}/topics/{topic}");
        let exists = response.body["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|n| n["topic"].as_str() == Some(&full)));
        if exists {
            return Ok(Change::Exists);
        }
        let config = serde_json::json!({
            "topic": format!("projects/{project}/topics/{topic}"),
            "payload_format": "JSON_API_V1",
            "event_types": ["OBJECT_FINALIZE"],
            "object_name_prefix": prefix,
        });
        let action = format!("creating the notification of gs://{bucket}");
        let response = self.json(&action, Method::POST, url, Some(config)).await?;
        if response.status != StatusCode::OK {
            return Err(response.error(action));
        }
        Ok(Change::Created)
    }
}

/// An answer read whole (JSON when it is JSON, else the text as a string).
struct Response {
    status: StatusCode,
    body: Value,
}

impl Response {
    async fn read(action: &str, response: reqwest::Response) -> Result<Self, StorageError> {
        let status = response.status();
        let text =
            response.text().await.map_err(|source| StorageError::Transport { action: action.to_string(), source })?;
        Ok(Self { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    fn error(self, action: String) -> StorageError {
        let body = match self.body {
            Value::String(text) => text,
            other => other.to_string(),
        };
        StorageError::Status { action, status: self.status.as_u16(), body: body.chars().take(300).collect() }
    }
}

/// [`Client`] for synchronous callers: every call runs on a one-worker runtime of its own, so several
/// threads may call at once (the simulator's upload workers). Must not be called from inside a Tokio runtime.
pub struct BlockingClient {
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl BlockingClient {
    /// A client for `endpoint`; credentials are resolved on its own runtime (see [`Credentials::for_endpoint`]).
    pub fn new(
        endpoint: &StorageEndpoint,
        token: Option<String>,
        key_file: Option<&std::path::Path>,
        scope: &str,
        timeout: Duration,
    ) -> Result<Self, StorageError> {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().map_err(|e| {
                StorageError::Setup { endpoint: endpoint.url.clone(), detail: format!("a runtime: {e}") }
            })?;
        let credentials = runtime
            .block_on(Credentials::for_endpoint(endpoint, token, key_file, scope))
            .map_err(|source| StorageError::Credentials { action: format!("GCS at {}", endpoint.url), source })?;
        let client = Client::new(&endpoint.url, credentials, timeout)?;
        Ok(Self { client, runtime })
    }

    /// An emulator's client: no credentials.
    pub fn anonymous(endpoint: &str, timeout: Duration) -> Result<Self, StorageError> {
        let endpoint = StorageEndpoint { url: endpoint.trim_end_matches('/').to_string(), anonymous: true };
        Self::new(&endpoint, None, None, "", timeout)
    }

    /// The asynchronous client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// See [`Client::bucket_exists`].
    pub fn bucket_exists(&self, bucket: &str) -> Result<bool, StorageError> {
        self.runtime.block_on(self.client.bucket_exists(bucket))
    }

    /// See [`Client::create_bucket`].
    pub fn create_bucket(&self, project: &str, bucket: &str) -> Result<Change, StorageError> {
        self.runtime.block_on(self.client.create_bucket(project, bucket))
    }

    /// See [`Client::ensure_bucket`].
    pub fn ensure_bucket(&self, project: &str, bucket: &str) -> Result<Change, StorageError> {
        self.runtime.block_on(self.client.ensure_bucket(project, bucket))
    }

    /// See [`Client::upload`].
    pub fn upload(&self, bucket: &str, name: &str, bytes: &[u8], content_type: &str) -> Result<i64, StorageError> {
        self.runtime.block_on(self.client.upload(bucket, name, bytes, content_type))
    }

    /// See [`Client::download`].
    pub fn download(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        limit: u64,
    ) -> Result<Download, StorageError> {
        self.runtime.block_on(self.client.download(bucket, name, generation, limit))
    }

    /// See [`Client::list`].
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.runtime.block_on(self.client.list(bucket, prefix))
    }

    /// See [`Client::delete`].
    pub fn delete(&self, bucket: &str, name: &str) -> Result<(), StorageError> {
        self.runtime.block_on(self.client.delete(bucket, name))
    }

    /// See [`Client::delete_bucket`].
    pub fn delete_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        self.runtime.block_on(self.client.delete_bucket(bucket))
    }

    /// See [`Client::answers`].
    pub fn answers(&self, project: &str) -> Result<(), StorageError> {
        self.runtime.block_on(self.client.answers(project))
    }

    /// See [`Client::ensure_notification`].
    pub fn ensure_notification(
        &self,
        bucket: &str,
        project: &str,
        topic: &str,
        prefix: &str,
    ) -> Result<Change, StorageError> {
        self.runtime.block_on(self.client.ensure_notification(bucket, project, topic, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_only_to_googles_storage_hosts() {
        for allowed in [
            "https://storage.googleapis.com",
            "https://storage.googleapis.com/",
            "https://STORAGE.googleapis.com:443/storage/v1",
            "https://storage.mtls.googleapis.com",
        ] {
            assert!(token_allowed(allowed), "{allowed}");
        }
        for refused in [
            "http://storage.googleapis.com",
            "https://evil-googleapis.com",
            "https://storage.googleapis.com.attacker.example",
            "https://attacker.example/storage.googleapis.com",
            "https://storage.googleapis.com@attacker.example",
            "https://user@storage.googleapis.com",
            "https://storage.googleapis.com:8443",
            "https://bigquery.googleapis.com",
            "http://127.0.0.1:9023",
            "",
        ] {
            assert!(!token_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn outages_are_told_apart_from_failures_that_repeat() {
        let status = |status| StorageError::Status { action: "a".into(), status, body: String::new() };
        for outage in [500, 502, 503, 408, 429] {
            assert!(status(outage).is_outage(), "{outage}");
        }
        for permanent in [400, 401, 403, 405, 412, 501] {
            assert!(!status(permanent).is_outage(), "{permanent}");
        }
    }

    #[test]
    fn names_are_one_path_segment_each() {
        let client = Client::new("http://127.0.0.1:9023/", Credentials::Anonymous, Duration::from_secs(1)).unwrap();
        let url = client.url(&["storage", "v1", "b", "bkt", "o", "input-images/cat 1.jpg"]);
        assert_eq!(url.as_str(), "http://127.0.0.1:9023/storage/v1/b/bkt/o/input-images%2Fcat%201.jpg");
        assert!(matches!(
            Client::new("not a url", Credentials::Anonymous, Duration::from_secs(1)),
            Err(StorageError::Setup { .. })
        ));
    }

    #[test]
    fn only_answers_worth_repeating_are_transient() {
        let status = |status| StorageError::Status { action: "a".into(), status, body: String::new() };
        assert!(status(503).is_transient() && status(429).is_transient() && status(408).is_transient());
        assert!(!status(403).is_transient() && !status(404).is_transient());
        assert_eq!(status(404).status(), Some(404));
    }
}
