//! What a run shows of itself over HTTP, for `fvision run` and the sink connector alike: `/metrics` (the
//! Prometheus exposition, with real histograms) and the live status page ([`dashboard`]), served by one
//! small server ([`serve`]) on one listener.
#![deny(missing_docs)]

pub mod dashboard;
mod endpoint;

pub use endpoint::{serve, EndpointError, EndpointOptions};

/// The series that says what is running: `fvision_build_info{version, commit, runtime, runtime_version} 1`,
/// as Prometheus exporters conventionally export (join on it to chart by release).
pub const BUILD_INFO: &str = "fvision_build_info";

/// Sets [`BUILD_INFO`]: the workspace version, the git commit built from (`unknown` outside a checkout), and
/// the model runtime's version (`unknown` when its library name carries none).
fn build_info() {
    let runtime_version = fvision_models::runtime_version().unwrap_or_else(|| "unknown".into());
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say what runs: fluvio-vision's version and git commit, the model runtime and its version."
    );
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => option_env!("FVISION_GIT_COMMIT").unwrap_or("unknown"),
        "runtime" => "onnxruntime",
        "runtime_version" => runtime_version
    )
    .set(1.0);
}

/// Bucket bounds of the `*_seconds` histograms: 1 ms to 10 s, where image latencies live.
const SECONDS_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The Prometheus exporter with real histograms (buckets) for the workspace's metrics, as `fvision run` and
/// the connector serve them; without buckets the exporter would render summaries, which cannot be
/// aggregated across instances.
pub fn prometheus() -> metrics_exporter_prometheus::PrometheusBuilder {
    use fvision_pipeline::metrics::{BATCH_BUCKETS, BATCH_SIZE};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS));
    // Setting buckets only fails for an empty list; these are constants, so this never falls back.
    builder.unwrap_or_else(|_| PrometheusBuilder::new())
}
