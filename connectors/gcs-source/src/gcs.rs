//! The few GCS JSON API calls the source and the simulator make, as plain HTTP requests (they work the same
//! against Google and against `gcp-storage-emulator`): download one generation (`alt=media`), upload,
//! create a bucket.

use std::time::Duration;

use serde_json::Value;

/// A GCS request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcsError {
    /// No answer (connection refused, timeout, TLS, ...).
    #[error("{action}: {source}")]
    Transport {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: Box<ureq::Error>,
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

impl GcsError {
    /// Whether trying again later can help without anyone changing anything: no answer at all (an outage), a
    /// 5xx other than 501, 408 or 429. A timeout, a 501 and every other 4xx (400, 401, 403, ...) are not; 404
    /// and 410 never get here ([`Download::NotFound`]).
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Transport { source, .. } => match &**source {
                ureq::Error::Timeout(_) => false,
                ureq::Error::Io(e) => e.kind() != std::io::ErrorKind::TimedOut,
                _ => true,
            },
            Self::Status { status, .. } => matches!(status, 408 | 429) || (*status >= 500 && *status != 501),
        }
    }
}

/// The hosts a Google access token is sent to (exactly these names, over https on port 443): Google's
/// storage API and its mTLS name. Any other endpoint (an emulator, a look-alike such as
/// `storage.googleapis.com.example`, a proxy) gets requests without credentials.
pub const GOOGLE_STORAGE_HOSTS: [&str; 2] = ["storage.googleapis.com", "storage.mtls.googleapis.com"];

/// Whether requests to `endpoint` may carry a Google token: an `https://` URL whose host is one of
/// [`GOOGLE_STORAGE_HOSTS`] (no user info, port 443 or none).
pub fn token_allowed(endpoint: &str) -> bool {
    let Some(rest) = endpoint.get(..8).filter(|scheme| scheme.eq_ignore_ascii_case("https://")).map(|_| &endpoint[8..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, "443")) => host,
        Some(_) => return false,
        None => authority,
    };
    GOOGLE_STORAGE_HOSTS.iter().any(|allowed| allowed.eq_ignore_ascii_case(host))
}

/// What a pinned download found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// The object's bytes.
    Bytes(Vec<u8>),
    /// The object (or that generation of it) no longer exists.
    NotFound,
    /// The object is larger than the limit; nothing more than the limit was read.
    TooLarge,
}

/// A JSON API endpoint with optional bearer credentials, sent only where [`token_allowed`] says so.
#[derive(Clone)]
pub struct GcsClient {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Path segment encoding for object and bucket names (everything but unreserved characters).
pub fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl GcsClient {
    /// A client for `endpoint` (`https://storage.googleapis.com`, or an emulator's URL).
    pub fn new(endpoint: &str, token: Option<String>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build();
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Replaces the bearer token (refreshed credentials).
    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    fn auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) if token_allowed(&self.endpoint) => request.header("Authorization", format!("Bearer {token}")),
            _ => request,
        }
    }

    /// Downloads `generation` of `bucket/name`, reading at most `limit` bytes.
    pub fn download(&self, bucket: &str, name: &str, generation: i64, limit: u64) -> Result<Download, GcsError> {
        let action = format!("downloading gs://{bucket}/{name}#{generation}");
        let url = format!(
            "{}/storage/v1/b/{}/o/{}?alt=media&generation={generation}",
            self.endpoint,
            encode_segment(bucket),
            encode_segment(name)
        );
        let mut response = self
            .auth(self.agent.get(&url))
            .call()
            .map_err(|e| GcsError::Transport { action: action.clone(), source: Box::new(e) })?;
        match response.status().as_u16() {
            200 => {}
            404 | 410 => return Ok(Download::NotFound),
            status => return Err(status_error(action, status, response.body_mut())),
        }
        if response.body().content_length().is_some_and(|n| n > limit) {
            return Ok(Download::TooLarge);
        }
        match response.body_mut().with_config().limit(limit).read_to_vec() {
            Ok(bytes) => Ok(Download::Bytes(bytes)),
            Err(ureq::Error::BodyExceedsLimit(_)) => Ok(Download::TooLarge),
            Err(e) => Err(GcsError::Transport { action, source: Box::new(e) }),
        }
    }

    /// Uploads `bytes` as `bucket/name`; returns the new generation. A multipart upload (metadata and
    /// media in one request), which also takes an empty object.
    pub fn upload(&self, bucket: &str, name: &str, bytes: &[u8], content_type: &str) -> Result<i64, GcsError> {
        let action = format!("uploading gs://{bucket}/{name}");
        let url = format!("{}/upload/storage/v1/b/{}/o?uploadType=multipart", self.endpoint, encode_segment(bucket));
        let boundary = "fvision-upload-boundary-7d3f";
        let metadata = serde_json::json!({ "name": name, "contentType": content_type }).to_string();
        let mut body = Vec::with_capacity(bytes.len() + metadata.len() + 200);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut response = self
            .auth(self.agent.post(&url))
            .header("Content-Type", format!("multipart/related; boundary={boundary}"))
            .send(&body[..])
            .map_err(|e| GcsError::Transport { action: action.clone(), source: Box::new(e) })?;
        if response.status().as_u16() != 200 {
            return Err(status_error(action, response.status().as_u16(), response.body_mut()));
        }
        let body = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| GcsError::Transport { action: action.clone(), source: Box::new(e) })?;
        let object: Value = serde_json::from_slice(&body).unwrap_or_default();
        let generation = object.get("generation").and_then(|g| g.as_str().and_then(|s| s.parse().ok()).or(g.as_i64()));
        generation.ok_or(GcsError::Status { action, status: 200, body: "no generation in the answer".into() })
    }

    /// Creates `bucket` in `project` (an existing bucket is fine).
    pub fn create_bucket(&self, project: &str, bucket: &str) -> Result<(), GcsError> {
        let action = format!("creating bucket {bucket}");
        let url = format!("{}/storage/v1/b?project={}", self.endpoint, encode_segment(project));
        let body = serde_json::json!({ "name": bucket }).to_string();
        let mut response = self
            .auth(self.agent.post(&url))
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| GcsError::Transport { action: action.clone(), source: Box::new(e) })?;
        match response.status().as_u16() {
            200 | 409 => Ok(()),
            status => Err(status_error(action, status, response.body_mut())),
        }
    }

    /// Deletes `bucket/name` (all generations the endpoint keeps).
    pub fn delete(&self, bucket: &str, name: &str) -> Result<(), GcsError> {
        let action = format!("deleting gs://{bucket}/{name}");
        let url = format!("{}/storage/v1/b/{}/o/{}", self.endpoint, encode_segment(bucket), encode_segment(name));
        let mut response = self
            .auth(self.agent.delete(&url))
            .call()
            .map_err(|e| GcsError::Transport { action: action.clone(), source: Box::new(e) })?;
        match response.status().as_u16() {
            200 | 204 | 404 => Ok(()),
            status => Err(status_error(action, status, response.body_mut())),
        }
    }
}

fn status_error(action: String, status: u16, body: &mut ureq::Body) -> GcsError {
    let text = body.with_config().limit(4096).lossy_utf8(true).read_to_string().unwrap_or_default();
    GcsError::Status { action, status, body: text.chars().take(300).collect() }
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
    fn outages_are_told_apart_from_permanent_failures() {
        let status = |status| GcsError::Status { action: "a".into(), status, body: String::new() };
        for outage in [500, 502, 503, 408, 429] {
            assert!(status(outage).is_outage(), "{outage}");
        }
        for permanent in [400, 401, 403, 405, 412, 501] {
            assert!(!status(permanent).is_outage(), "{permanent}");
        }
    }

    #[test]
    fn names_are_encoded_as_one_path_segment() {
        assert_eq!(encode_segment("input-images/cat 1.jpg"), "input-images%2Fcat%201.jpg");
        assert_eq!(encode_segment("a~b_c.d"), "a~b_c.d");
    }
}
