//! `gcs-source`: the Fluvio source connector, started the way `cdk deploy start` starts connectors.

use std::process::ExitCode;

use clap::Parser;
use fvision_connector_common::binary;
use fvision_gcs_source::GcsSource;

/// Reads GCS uploads announced by Pub/Sub and writes them to a Fluvio topic as ImageEvents.
///
/// Reads a Fluvio connector config (apiVersion 0.2.0) with a `gcs` section. Pulls the subscription, handles
/// OBJECT_FINALIZE notifications under the prefix, downloads each object pinned to its generation and
/// writes `id = gs://bucket/object#generation`. A message is acked only after Fluvio acknowledged the
/// event; deleted or oversized objects go to the dead-letter topic. SIGTERM or Ctrl-C stops after the
/// current batch is delivered and acked, and exits 0.
#[derive(Debug, Parser)]
#[command(
    name = "gcs-source",
    version,
    after_help = "Examples:\n  \
      gcs-source --config fluvio-config/connectors/gcs-source.yaml\n  \
      gcs-source --config gcs-source.yaml --secrets secrets.env      # GCS access token\n  \
      PUBSUB_EMULATOR_HOST=127.0.0.1:8085 gcs-source --config gcs-source.yaml\n  \
      RUST_LOG=debug gcs-source --config gcs-source.yaml\n\n\
      The Fluvio cluster is the current Fluvio profile (~/.fluvio/config, `fluvio profile`)."
)]
struct Args {
    #[command(flatten)]
    connector: binary::ConfigArgs,
}

fn main() -> ExitCode {
    binary::init_logging(binary::CONNECTOR_LOG_FILTER);
    binary::exit_code(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = fvision_gcs_source::load(&args.connector.config, args.connector.secrets.as_deref())?;
    let stop = binary::stop_on_signals()?;
    let name = config.meta.name.clone();
    tracing::info!(connector = %name, config = %args.connector.config.display(), "starting");
    let report = GcsSource::new(config).stop_flag(stop).run()?;
    tracing::info!(
        connector = %name,
        pulled = report.pulled,
        produced = report.produced,
        dead_letters = report.dead_letters,
        replay_skipped = report.replay_skipped,
        ignored = report.ignored,
        acked = report.acked,
        retried = report.retried,
        "stopped: everything acked was acknowledged by Fluvio first"
    );
    Ok(())
}
