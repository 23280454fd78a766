//! `fvision`: the fluvio-vision command line. Each subcommand lives in `cmd/<name>.rs` and turns its
//! arguments into options for a library call; this file only dispatches and maps errors to exit codes.

mod args;
mod cmd;
mod data;
mod feed;
mod inputs;
mod output;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Real-time image classification for Fluvio: validate, classify and benchmark images, or run the
/// whole pipeline embedded in one process.
#[derive(Debug, Parser)]
#[command(name = "fvision", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  fvision run                              # the embedded pipeline on the shipped demo images
  fvision classify --json photo.jpg        # one prediction per image
  fvision models list                      # the shipped models
  fvision validate data/bad-inputs         # one JSON verdict per file, through the WASM SmartModule
  fvision bench inference --model all      # per-stage cost of every model
  fvision bench pipeline                   # the embedded pipeline vs its limits
  fvision bench validate                   # validation throughput, WASM vs native
  fvision simulate --mode kafka --rate 10 --duration 60   # an image stream to Kafka
  fvision dev up                           # local Kafka broker and BigQuery/GCS/Pub/Sub emulators
  fvision deploy fluvio-config/deploy/local.yaml          # topics, resources, connectors
  fvision status fluvio-config/deploy/local.yaml          # up, images/s, lag, dead letters
  fvision cleanup fluvio-config/deploy/local.yaml --yes   # stop, delete what deploy made";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline embedded in this process, no cluster needed.
    Run(cmd::run::RunArgs),
    /// Validate images through the image-validate SmartModule (WASM), as an SPU would.
    Validate(cmd::validate::ValidateArgs),
    /// Classify images with one model.
    Classify(cmd::classify::ClassifyArgs),
    /// List and inspect models.
    #[command(subcommand)]
    Models(cmd::models::ModelsCommand),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Send an image stream at a given rate to Fluvio, Kafka, GCS (+ Pub/Sub), or Kafka and GCS at once.
    Simulate(cmd::simulate::SimulateArgs),
    /// Start or stop the local stand-ins (Kafka broker, BigQuery, GCS and Pub/Sub emulators).
    #[command(subcommand)]
    Dev(cmd::dev::DevCommand),
    /// Deploy the pipeline from a deployment file: topics, SmartModule, resources, supervised connectors.
    Deploy(cmd::deploy::DeployArgs),
    /// One line per component of a deployment: process, images/s, lag, dead letters, health.
    Status(cmd::deploy::status::StatusArgs),
    /// Stop a deployment's connectors and delete what deploy created.
    Cleanup(cmd::deploy::cleanup::CleanupArgs),
    /// Run a connector and restart it when it crashes (started by deploy).
    #[command(hide = true)]
    Supervise(cmd::deploy::supervisor::SuperviseArgs),
}

fn main() -> ExitCode {
    fvision_pipeline::memory::limit_malloc_arenas();
    let cli = Cli::parse();
    fvision_connector_common::binary::init_logging("warn");
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Classify(args) => cmd::classify::run(args),
        Command::Models(command) => cmd::models::run(command),
        Command::Bench(command) => cmd::bench::run(command),
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Dev(command) => cmd::dev::run(command),
        Command::Deploy(args) => cmd::deploy::run(args),
        Command::Status(args) => cmd::deploy::status::run(args),
        Command::Cleanup(args) => cmd::deploy::cleanup::run(args),
        Command::Supervise(args) => cmd::deploy::supervisor::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fvision: error: {}", fvision_connector_common::secret::redact(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
