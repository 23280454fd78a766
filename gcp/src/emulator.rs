//! Which endpoint a client talks to, and whether it sends credentials, as Google's client libraries decide
//! it: `STORAGE_EMULATOR_HOST` and `PUBSUB_EMULATOR_HOST` name an emulator, which gets no credentials. An
//! endpoint written in the config is more specific than the environment and wins over it.

/// Google's GCS JSON API.
pub const GOOGLE_STORAGE: &str = "https://storage.googleapis.com";
/// The variable naming a GCS emulator (`host:port` or a URL).
pub const STORAGE_EMULATOR_VAR: &str = "STORAGE_EMULATOR_HOST";
/// The variable naming a Pub/Sub emulator (`host:port`, plain gRPC).
pub const PUBSUB_EMULATOR_VAR: &str = "PUBSUB_EMULATOR_HOST";

/// Where GCS requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEndpoint {
    /// The API root, without a trailing `/`.
    pub url: String,
    /// Whether requests go without credentials (an emulator).
    pub anonymous: bool,
}

/// The GCS endpoint for a `configured` one (from the config; an emulator unless it is Google's, or unless a
/// key file is `keyed` for it), else `emulator_var` (the value of `STORAGE_EMULATOR_HOST`; a bare
/// `host:port` means `http://host:port`), else Google. Pure.
pub fn storage_endpoint(configured: Option<&str>, keyed: bool, emulator_var: Option<&str>) -> StorageEndpoint {
    let trim = |url: &str| url.trim_end_matches('/').to_string();
    if let Some(url) = configured.filter(|u| !u.trim().is_empty()) {
        let url = trim(url.trim());
        let anonymous = !keyed && url != GOOGLE_STORAGE;
        return StorageEndpoint { url, anonymous };
    }
    match emulator_var.map(str::trim).filter(|h| !h.is_empty()) {
        Some(host) if host.contains("://") => StorageEndpoint { url: trim(host), anonymous: true },
        Some(host) => StorageEndpoint { url: trim(&format!("http://{host}")), anonymous: true },
        None => StorageEndpoint { url: GOOGLE_STORAGE.into(), anonymous: false },
    }
}

/// [`storage_endpoint`] with this process's `STORAGE_EMULATOR_HOST`.
pub fn storage_endpoint_from_env(configured: Option<&str>, keyed: bool) -> StorageEndpoint {
    storage_endpoint(configured, keyed, std::env::var(STORAGE_EMULATOR_VAR).ok().as_deref())
}

/// The Pub/Sub emulator's `host:port`: the `configured` one, else `emulator_var` (the value of
/// `PUBSUB_EMULATOR_HOST`); `None` means Google Cloud with credentials. Pure.
pub fn pubsub_emulator(configured: Option<&str>, emulator_var: Option<&str>) -> Option<String> {
    configured.or(emulator_var).map(str::trim).filter(|h| !h.is_empty()).map(str::to_string)
}

/// [`pubsub_emulator`] with this process's `PUBSUB_EMULATOR_HOST`.
pub fn pubsub_emulator_from_env(configured: Option<&str>) -> Option<String> {
    pubsub_emulator(configured, std::env::var(PUBSUB_EMULATOR_VAR).ok().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_emulator_variable_names_an_anonymous_endpoint() {
        let google = StorageEndpoint { url: GOOGLE_STORAGE.into(), anonymous: false };
        assert_eq!(storage_endpoint(None, false, None), google);
        assert_eq!(storage_endpoint(None, false, Some("")), google);
        let emulator = StorageEndpoint { url: "http://127.0.0.1:9023".into(), anonymous: true };
        assert_eq!(storage_endpoint(None, false, Some("127.0.0.1:9023")), emulator);
        assert_eq!(storage_endpoint(None, true, Some("http://127.0.0.1:9023/")), emulator);
        // The config is more specific than the environment.
        let configured = StorageEndpoint { url: "http://10.0.0.5:4443".into(), anonymous: true };
        assert_eq!(storage_endpoint(Some("http://10.0.0.5:4443/"), false, Some("127.0.0.1:9023")), configured);
        // Google's endpoint written out, or any endpoint with a key file for it, gets credentials.
        assert_eq!(storage_endpoint(Some(GOOGLE_STORAGE), false, None), google);
        assert!(!storage_endpoint(Some("https://storage.example.internal"), true, None).anonymous);
    }

    #[test]
    fn the_pubsub_emulator_variable_is_used_when_the_config_names_none() {
        assert_eq!(pubsub_emulator(None, None), None);
        assert_eq!(pubsub_emulator(None, Some(" ")), None);
        assert_eq!(pubsub_emulator(None, Some("127.0.0.1:8085")).as_deref(), Some("127.0.0.1:8085"));
        assert_eq!(pubsub_emulator(Some("10.0.0.2:8681"), Some("127.0.0.1:8085")).as_deref(), Some("10.0.0.2:8681"));
    }
}
