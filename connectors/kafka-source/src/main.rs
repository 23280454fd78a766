//! `kafka-source`: the Fluvio source connector, started the way `cdk deploy start` starts connectors.

use std::process::ExitCode;

use clap::Parser;
use fvision_connector_common::binary;
use fvision_kafka_source::KafkaSource;

/// Reads images from Kafka topics and writes them to a Fluvio topic as ImageEvents.
///
/// Reads a Fluvio connector config (apiVersion 0.2.0) with a `kafka` section. Values may be ImageEvent
/// JSON, base64 text, raw image bytes, or JSON with the base64 in a named field. Kafka offsets are
/// committed only after Fluvio acknowledged the records (a crash replays, never loses). Values that cannot
/// become an event go to the dead-letter topic. SIGTERM or Ctrl-C stops after the current batch is
/// delivered and committed, and exits 0.
#[derive(Debug, Parser)]
#[command(
    name = "kafka-source",
    version,
    after_help = "Examples:\n  \
      kafka-source --config fluvio-config/connectors/kafka-source.yaml\n  \
      kafka-source --config kafka-source.yaml --secrets secrets.env   # SASL password etc.\n  \
      RUST_LOG=debug kafka-source --config kafka-source.yaml\n\n\
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
    let config = fvision_kafka_source::load(&args.connector.config, args.connector.secrets.as_deref())?;
    let stop = binary::stop_on_signals()?;
    let name = config.meta.name.clone();
    tracing::info!(connector = %name, config = %args.connector.config.display(), "starting");
    let report = KafkaSource::new(config).stop_flag(stop).run()?;
    tracing::info!(
        connector = %name,
        read = report.read,
        produced = report.produced,
        dead_letters = report.dead_letters,
        replay_skipped = report.replay_skipped,
        commits = report.commits,
        "stopped: everything read was acknowledged by Fluvio and committed"
    );
    Ok(())
}
