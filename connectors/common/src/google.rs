//! Google Cloud credentials shared by the connectors that talk to Google APIs: OAuth access tokens from a
//! service-account key file, or from the application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
//! or the metadata server on Google Cloud) when no file is named. Tokens are cached and refreshed before
//! they expire by `yup-oauth2`; emulators need none of this.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_source::{TokenSource, TokenSourceProvider};
use yup_oauth2::authenticator::{ApplicationDefaultCredentialsTypes, DefaultAuthenticator};

/// Read-only access to GCS objects (what a source needs).
pub const SCOPE_STORAGE_READ: &str = "https://www.googleapis.com/auth/devstorage.read_only";
/// Pub/Sub pull, ack and publish.
pub const SCOPE_PUBSUB: &str = "https://www.googleapis.com/auth/pubsub";

/// Credentials that could not be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GoogleAuthError {
    /// The key file is missing, unreadable or not a service-account key.
    #[error("a service-account key file ({}: {source})", path.display())]
    KeyFile {
        /// The file named in the config.
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

/// Reads and parses a service-account key file without contacting Google: the start-up check that turns a
/// wrong path or a wrong file into a config error naming it.
pub fn check_key_file(path: &Path) -> Result<(), GoogleAuthError> {
    let key_error = |source| GoogleAuthError::KeyFile { path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(key_error)?;
    let key = yup_oauth2::parse_service_account_key(bytes).map_err(key_error)?;
    if key.private_key.trim().is_empty() || key.client_email.trim().is_empty() {
        return Err(key_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the key has no private_key or client_email",
        )));
    }
    Ok(())
}

/// An access-token source for a set of scopes; cheap to clone (the token cache is shared).
#[derive(Clone)]
pub struct GoogleAuth {
    authenticator: DefaultAuthenticator,
    scopes: Arc<[String]>,
}

impl fmt::Debug for GoogleAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleAuth").field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

impl GoogleAuth {
    /// Credentials from `key_file`, or the application default credentials without one. Must run inside a
    /// Tokio runtime (the token requests use it).
    pub async fn new(key_file: Option<&Path>, scopes: &[&str]) -> Result<Self, GoogleAuthError> {
        let authenticator = match key_file {
            Some(path) => {
                let key_error = |source| GoogleAuthError::KeyFile { path: path.to_owned(), source };
                let key = yup_oauth2::read_service_account_key(path).await.map_err(key_error)?;
                yup_oauth2::ServiceAccountAuthenticator::builder(key).build().await.map_err(key_error)?
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
        Ok(Self { authenticator, scopes: scopes.iter().map(|s| s.to_string()).collect() })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_malformed_key_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = check_key_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.json"), "{err}");

        let malformed = dir.path().join("malformed.json");
        std::fs::write(&malformed, b"{\"type\": \"service_account\"").unwrap();
        let err = check_key_file(&malformed).unwrap_err().to_string();
        assert!(err.contains("malformed.json"), "{err}");

        let empty_key = dir.path().join("empty.json");
        std::fs::write(
            &empty_key,
            br#"{"type":"service_account","private_key":"","client_email":"a@b","token_uri":"https://oauth2.googleapis.com/token"}"#,
        )
        .unwrap();
        let err = check_key_file(&empty_key).unwrap_err().to_string();
        assert!(err.contains("no private_key"), "{err}");
    }
}
