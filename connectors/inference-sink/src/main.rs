//! `inference-sink`: the Fluvio sink connector, started the way `cdk deploy start` starts connectors.

use std::process::ExitCode;

use clap::Parser;
use fvision_connector_common::binary;
use fvision_inference_sink::connector::Connector;

/// Classifies the images of a Fluvio topic and writes predictions and dead letters to Fluvio topics.
///
/// Reads a Fluvio connector config (apiVersion 0.2.0) with an `inference` section. Offsets are committed
/// under the consumer id only after every output confirmed (at least once). SIGTERM or Ctrl-C stops reading,
/// delivers and commits what was read, and exits 0.
#[derive(Debug, Parser)]
#[command(
    name = "inference-sink",
    version,
    after_help = "Examples:\n  \
      inference-sink --config fluvio-config/connectors/inference-sink.yaml\n  \
      inference-sink --config sink.yaml --secrets secrets.env\n  \
      inference-sink --config sink.yaml --drain     # process the backlog, then exit\n  \
      RUST_LOG=debug inference-sink --config sink.yaml\n\n\
      The cluster is the current Fluvio profile (~/.fluvio/config, `fluvio profile`)."
)]
struct Args {
    #[command(flatten)]
    connector: binary::ConfigArgs,
    /// Exit 0 once caught up with the end of the topic (everything delivered and committed) instead of
    /// waiting for more: replays a backlog as a batch job.
    #[arg(long)]
    drain: bool,
}

fn main() -> ExitCode {
    fvision_pipeline::memory::limit_malloc_arenas();
    binary::init_logging(binary::CONNECTOR_LOG_FILTER);
    binary::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = fvision_sink_config::load(&args.connector.config, args.connector.secrets.as_deref())?;
    let stop = binary::stop_signal()?;
    let name = config.meta.name.clone();
    tracing::info!(connector = %name, config = %args.connector.config.display(), "starting");
    let (runner, health) = Connector::builder(config).stop(stop).drain(args.drain).build().connect()?;
    tracing::info!(outputs = ?health.outputs(), "connected");
    let report = runner.run()?;
    let stats = &report.pipeline;
    tracing::info!(
        connector = %name,
        consumed = report.consume.consumed,
        classified = stats.tally.classified,
        rejected = stats.tally.rejected,
        below_threshold = stats.tally.below_threshold,
        commits = report.consume.commits,
        validation = report.validated,
        "stopped: everything read was delivered and committed"
    );
    Ok(())
}
