//! Google Cloud credentials the way Google's client libraries find them (application default credentials):
//! a key file named in the config, else `GOOGLE_APPLICATION_CREDENTIALS`, else the file `gcloud auth
//! application-default login` writes, else the metadata server (on Google Cloud). A key file is either a
//! service account's key or gcloud's authorized-user credentials; which one is read from its `type`.
//! Tokens are fetched, cached and refreshed before they expire by `yup-oauth2`; emulators need none of this
//! (see [`crate::emulator`]).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use token_source::{TokenSource, TokenSourceProvider};
use yup_oauth2::authenticator::{ApplicationDefaultCredentialsTypes, DefaultAuthenticator};

/// Read-only access to GCS objects (what a source needs).
pub const SCOPE_STORAGE_READ: &str = "https://www.googleapis.com/auth/devstorage.read_only";
/// Reading and writing GCS objects (the GCS output).
pub const SCOPE_STORAGE_READ_WRITE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Buckets and their notifications (`fvision deploy`).
pub const SCOPE_STORAGE_FULL: &str = "https://www.googleapis.com/auth/devstorage.full_control";
/// Pub/Sub pull, ack, publish and admin.
pub const SCOPE_PUBSUB: &str = "https://www.googleapis.com/auth/pubsub";
/// BigQuery tables, inserts and queries.
pub const SCOPE_BIGQUERY: &str = "https://www.googleapis.com/auth/bigquery";

/// The variable naming a key file, as every Google client library reads it.
pub const CREDENTIALS_VAR: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// Credentials that could not be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GoogleAuthError {
    /// The key file is missing, unreadable, or not a key of a known type (the message names the field).
    #[error("a service-account key file ({}: {source})", path.display())]
    KeyFile {
        /// The file named in the config or the environment.
        path: PathBuf,
        /// Why it could not be used.
        #[source]
        source: std::io::Error,
    },
    /// No key file was named and no application default credentials were found.
    #[error("a service-account key; no application default credentials either ({0})")]
    NoDefaultCredentials(String),
    /// The token service refused or could not be reached.
    #[error("getting an access token: {0}")]
    Token(String),
}

/// Where credentials come from, in the order Google's client libraries look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A key file named in the config (`credentials-file`).
    Configured(PathBuf),
    /// The key file `GOOGLE_APPLICATION_CREDENTIALS` names.
    Environment(PathBuf),
    /// gcloud's application-default file (`gcloud auth application-default login`).
    Gcloud(PathBuf),
    /// The metadata server of the Google Cloud machine the process runs on.
    MetadataServer,
}

impl CredentialSource {
    /// Chooses the source: `configured` first, then the environment (read through `var`), then gcloud's file
    /// where `exists` says it is, then the metadata server. Pure given `var` and `exists`.
    pub fn choose(
        configured: Option<&Path>,
        var: impl Fn(&str) -> Option<OsString>,
        exists: impl Fn(&Path) -> bool,
    ) -> Self {
        if let Some(path) = configured {
            return Self::Configured(path.to_owned());
        }
        if let Some(path) = var(CREDENTIALS_VAR).filter(|p| !p.is_empty()) {
            return Self::Environment(PathBuf::from(path));
        }
        // gcloud keeps its configuration in $CLOUDSDK_CONFIG, by default ~/.config/gcloud.
        let config_dir = var("CLOUDSDK_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| var("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".config/gcloud")));
        match config_dir.map(|dir| dir.join("application_default_credentials.json")) {
            Some(file) if exists(&file) => Self::Gcloud(file),
            _ => Self::MetadataServer,
        }
    }

    /// The source for this process's environment.
    pub fn from_env(configured: Option<&Path>) -> Self {
        Self::choose(configured, |name| std::env::var_os(name), Path::is_file)
    }

    /// The key file, unless the metadata server is used.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Configured(path) | Self::Environment(path) | Self::Gcloud(path) => Some(path),
            Self::MetadataServer => None,
        }
    }
}

/// A parsed key file.
#[derive(Debug, Clone)]
pub enum KeyFile {
    /// A service account's key (`"type": "service_account"`).
    ServiceAccount(Box<yup_oauth2::ServiceAccountKey>),
    /// gcloud's user credentials (`"type": "authorized_user"`).
    AuthorizedUser(yup_oauth2::authorized_user::AuthorizedUserSecret),
}

#[derive(Deserialize)]
struct KeyType {
    #[serde(rename = "type")]
    kind: String,
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Parses a key file's bytes; the error names the field that is missing or malformed. Pure.
pub fn parse_key_file(bytes: &[u8]) -> Result<KeyFile, std::io::Error> {
    fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // A missing field is reported at the object that lacks it; serde names the field itself.
            if path == "." {
                invalid(inner.to_string())
            } else {
                invalid(format!("field `{path}`: {inner}"))
            }
        })
    }
    let KeyType { kind } = parse(bytes)?;
    match kind.as_str() {
        "service_account" => {
            let key: yup_oauth2::ServiceAccountKey = parse(bytes)?;
            for (field, value) in [("private_key", &key.private_key), ("client_email", &key.client_email)] {
                if value.trim().is_empty() {
                    return Err(invalid(format!("field `{field}`: empty (the key has no {field})")));
                }
            }
            Ok(KeyFile::ServiceAccount(Box::new(key)))
        }
        "authorized_user" => Ok(KeyFile::AuthorizedUser(parse(bytes)?)),
        other => Err(invalid(format!(
            "field `type`: `{other}`, expected `service_account` or `authorized_user` (other kinds of \
             credentials are not supported)"
        ))),
    }
}

/// Reads and parses a key file without contacting Google: the start-up check that turns a wrong path or a
/// wrong file into a config error naming it and the field.
pub fn read_key_file(path: &Path) -> Result<KeyFile, GoogleAuthError> {
    let key_error = |source| GoogleAuthError::KeyFile { path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(key_error)?;
    parse_key_file(&bytes).map_err(key_error)
}

/// [`read_key_file`] for callers that only check.
pub fn check_key_file(path: &Path) -> Result<(), GoogleAuthError> {
    read_key_file(path).map(|_| ())
}

/// An access-token source for a set of scopes; cheap to clone (the token cache is shared).
#[derive(Clone)]
pub struct GoogleAuth {
    authenticator: DefaultAuthenticator,
    scopes: Arc<[String]>,
    source: Arc<CredentialSource>,
}

impl fmt::Debug for GoogleAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleAuth").field("scopes", &self.scopes).field("source", &self.source).finish()
    }
}

impl GoogleAuth {
    /// Credentials from `key_file`, or the application default credentials without one
    /// ([`CredentialSource::from_env`]). Must run inside a Tokio runtime (the token requests use it).
    pub async fn new(key_file: Option<&Path>, scopes: &[&str]) -> Result<Self, GoogleAuthError> {
        Self::from_source(CredentialSource::from_env(key_file), scopes).await
    }

    /// Credentials from a chosen source.
    pub async fn from_source(source: CredentialSource, scopes: &[&str]) -> Result<Self, GoogleAuthError> {
        let authenticator = match source.file() {
            Some(path) => {
                let key_error = |e: std::io::Error| GoogleAuthError::KeyFile { path: path.to_owned(), source: e };
                match read_key_file(path)? {
                    KeyFile::ServiceAccount(key) => {
                        yup_oauth2::ServiceAccountAuthenticator::builder(*key).build().await.map_err(key_error)?
                    }
                    KeyFile::AuthorizedUser(secret) => {
                        yup_oauth2::AuthorizedUserAuthenticator::builder(secret).build().await.map_err(key_error)?
                    }
                }
            }
            None => {
                let options = yup_oauth2::ApplicationDefaultCredentialsFlowOpts::default();
                let built = match yup_oauth2::ApplicationDefaultCredentialsAuthenticator::builder(options).await {
                    ApplicationDefaultCredentialsTypes::ServiceAccount(builder) => builder.build().await,
                    ApplicationDefaultCredentialsTypes::InstanceMetadata(builder) => builder.build().await,
                };
                built.map_err(|e| GoogleAuthError::NoDefaultCredentials(e.to_string()))?
            }
        };
        Ok(Self { authenticator, scopes: scopes.iter().map(|s| s.to_string()).collect(), source: Arc::new(source) })
    }

    /// Where the credentials come from.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// A current access token (from the cache while it is valid).
    pub async fn access_token(&self) -> Result<String, GoogleAuthError> {
        let token = self.authenticator.token(&self.scopes).await.map_err(|e| GoogleAuthError::Token(e.to_string()))?;
        token
            .token()
            .map(str::to_owned)
            .ok_or_else(|| GoogleAuthError::Token("the token service returned no token".into()))
    }
}

/// gRPC clients (`gcloud-pubsub`) ask for the whole `Authorization` header value.
#[async_trait::async_trait]
impl TokenSource for GoogleAuth {
    async fn token(&self) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(format!("Bearer {}", self.access_token().await?))
    }
}

impl TokenSourceProvider for GoogleAuth {
    fn token_source(&self) -> Arc<dyn TokenSource> {
        Arc::new(self.clone())
    }
}

/// The BigQuery client asks for the bare token.
#[async_trait::async_trait]
impl gcp_bigquery_client::auth::Authenticator for GoogleAuth {
    async fn access_token(&self) -> Result<String, gcp_bigquery_client::error::BQError> {
        use gcp_bigquery_client::error::BQError;
        let token = self.authenticator.token(&self.scopes).await.map_err(BQError::YupAuthError)?;
        token.token().map(str::to_owned).ok_or(BQError::NoToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_credential_source_follows_googles_order() {
        let gcloud = Path::new("/home/u/.config/gcloud/application_default_credentials.json");
        let everywhere = |_: &Path| true;
        let nowhere = |_: &Path| false;
        let full = env(&[(CREDENTIALS_VAR, "/keys/sa.json"), ("HOME", "/home/u")]);
        assert_eq!(
            CredentialSource::choose(Some(Path::new("/etc/k.json")), &full, everywhere),
            CredentialSource::Configured("/etc/k.json".into())
        );
        assert_eq!(
            CredentialSource::choose(None, &full, everywhere),
            CredentialSource::Environment("/keys/sa.json".into())
        );
        // An empty variable counts as unset, as in Google's libraries.
        let empty = env(&[(CREDENTIALS_VAR, ""), ("HOME", "/home/u")]);
        assert_eq!(CredentialSource::choose(None, &empty, everywhere), CredentialSource::Gcloud(gcloud.into()));
        assert_eq!(CredentialSource::choose(None, &empty, nowhere), CredentialSource::MetadataServer);
        let custom = env(&[("CLOUDSDK_CONFIG", "/opt/gcloud"), ("HOME", "/home/u")]);
        assert_eq!(
            CredentialSource::choose(None, &custom, everywhere),
            CredentialSource::Gcloud("/opt/gcloud/application_default_credentials.json".into())
        );
        assert_eq!(CredentialSource::choose(None, env(&[]), everywhere), CredentialSource::MetadataServer);
        assert_eq!(CredentialSource::MetadataServer.file(), None);
    }

    #[test]
    fn a_missing_or_malformed_key_file_is_named_in_the_error_with_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = check_key_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.json"), "{err}");

        let cases: [(&str, &[u8], &str); 6] = [
            ("truncated.json", b"{\"type\": \"service_account\"", "EOF"),
            (
                "no-email.json",
                br#"{"type":"service_account","private_key":"k","token_uri":"https://t"}"#,
                "client_email",
            ),
            (
                "number.json",
                br#"{"type":"service_account","private_key":5,"client_email":"a@b","token_uri":"https://t"}"#,
                "field `private_key`",
            ),
            (
                "empty.json",
                br#"{"type":"service_account","private_key":"","client_email":"a@b","token_uri":"https://t"}"#,
                "no private_key",
            ),
            ("kind.json", br#"{"type":"external_account"}"#, "field `type`"),
            ("user.json", br#"{"type":"authorized_user","client_id":"i","client_secret":"s"}"#, "refresh_token"),
        ];
        for (name, body, field) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            let err = check_key_file(&path).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(field), "{name}: {err}");
        }
    }

    #[test]
    fn both_kinds_of_key_file_are_read() {
        let service = br#"{"type":"service_account","private_key":"k","client_email":"a@b","token_uri":"https://t"}"#;
        assert!(matches!(parse_key_file(service), Ok(KeyFile::ServiceAccount(key)) if key.client_email == "a@b"));
        let user = br#"{"type":"authorized_user","client_id":"i","client_secret":"s","refresh_token":"r"}"#;
        assert!(matches!(parse_key_file(user), Ok(KeyFile::AuthorizedUser(secret)) if secret.refresh_token == "r"));
    }
}
