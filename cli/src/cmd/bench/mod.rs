//! `fvision bench`: throughput measured as ratios within one run, so noisy shared machines still
//! give comparable figures. One file per benchmark; `shared.rs` holds the sample inputs, the interleaved
//! timing loop and the per-model cost that several of them use.

mod connector;
mod inference;
mod pipeline;
mod shared;
mod soak;
mod validate;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

pub use connector::BenchConnectorArgs;
pub use inference::BenchInferenceArgs;
pub use pipeline::BenchPipelineArgs;
pub use soak::BenchSoakArgs;
pub use validate::BenchValidateArgs;

/// Benchmarks. Each reports ratios measured in the same run, interleaved, on the same images.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Validation throughput: WASM (fluvio-smartengine) vs native, header checks vs full decode.
    #[command(after_help = "\
Examples:
  fvision bench validate                       # the 100 ImageNet sample images, 3 s per mode
  fvision bench validate --seconds 10 --json   # longer, machine-readable")]
    Validate(BenchValidateArgs),
    /// Per-image cost of each stage (decode, resize, normalise, inference at several batch sizes) for
    /// one or every model, in one run.
    #[command(after_help = "\
Examples:
  fvision bench inference                              # efficientnet-lite0 on the ImageNet sample
  fvision bench inference --model all --seconds 1      # every shipped model
  fvision bench inference --batch-sizes 1,4,16 --json")]
    Inference(BenchInferenceArgs),
    /// Embedded pipeline throughput and latency vs the limits of the same model, measured in one run.
    #[command(after_help = "\
Examples:
  fvision bench pipeline                       # efficientnet-lite0, the ImageNet sample 3 times
  fvision bench pipeline --repeat 10 --json")]
    Pipeline(BenchPipelineArgs),
    /// The inference-sink connector on a live Fluvio cluster vs the embedded pipeline, same images, one run.
    #[command(after_help = "\
Examples:
  fvision bench connector                          # needs a running cluster (current fluvio profile)
  fvision bench connector --repeat 5 --validate-at cluster --json

Creates three uniquely named topics, produces the images, runs the connector until it has drained the
topic, and deletes the topics. `--validate-at cluster` needs image-validate loaded on the cluster.")]
    Connector(BenchConnectorArgs),
    /// Memory over a long stream: resident memory sampled every second while 100,000 records go through
    /// the embedded pipeline; reports the growth after warm-up.
    #[command(after_help = "\
Examples:
  fvision bench soak                           # 100,000 records: the ImageNet sample and the hostile inputs
  fvision bench soak --records 20000 --json")]
    Soak(BenchSoakArgs),
}

/// Entry point of `fvision bench`.
pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Validate(args) => validate::run(args),
        BenchCommand::Inference(args) => inference::run(args),
        BenchCommand::Pipeline(args) => pipeline::run(args),
        BenchCommand::Connector(args) => connector::run(args),
        BenchCommand::Soak(args) => soak::run(args),
    }
}
