//! `fvision run`: the pipeline embedded in one process, no cluster.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use fluvio_future::task::run_block_on;
use inference_sink::outputs::{Destination, JsonlOutput, OutputSet};
use inference_sink::BelowThreshold;

use crate::args::{ModelArgs, PipelineArgs, ValidatorArgs};
use crate::data::demo_images;
use crate::feed::run_inputs;
use crate::inputs::InputSource;
use crate::report::Table;

/// Run the pipeline embedded in this process: validation through the same WASM SmartModule a cluster
/// runs, parallel decode workers, a micro-batcher and one shared model, predictions and rejections to
/// the console (and optionally a JSONL file), and a summary.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision run                                  # the shipped demo images, efficientnet-lite0
  fvision run ~/photos --confidence-threshold 0.5 --output predictions.jsonl
  fvision run --model resnet50 --max-batch 8 --max-wait-ms 20 data/imagenet-sample
  fvision run --config fluvio-config/connectors/inference-sink.yaml data/imagenet-sample")]
pub struct RunArgs {
    /// Files, directories or `-` (one record per line) [default: the shipped demo images]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    validator: ValidatorArgs,

    #[command(flatten)]
    pipeline: PipelineArgs,

    /// Also write every outcome as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Read the inference sink's connector YAML: its model, threshold, batching and image-validate
    /// params replace the corresponding options here.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Serve Prometheus metrics on ADDRESS:PORT/metrics while running.
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,

    /// The address the metrics endpoint binds [default: 127.0.0.1, or the config's `metrics-address`];
    /// 0.0.0.0 exposes it to the network.
    #[arg(long, value_name = "IP")]
    metrics_address: Option<std::net::IpAddr>,

    /// Secrets for `${{ secrets.NAME }}` references in --config (NAME=value lines).
    #[arg(long, value_name = "FILE", requires = "config")]
    secrets: Option<PathBuf>,
}

/// Entry point of `fvision run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let paths = if args.paths.is_empty() { vec![demo_images()] } else { args.paths };
    let source = InputSource::from_args(&paths)?;
    let mut below = BelowThreshold::Flag;
    let mut metrics_port = args.metrics_port;
    let mut metrics_address = args.metrics_address;
    let (mut validator, classifier, pipeline, output) = match &args.config {
        Some(path) => {
            let settings = inference_sink::config::load(path, args.secrets.as_deref())?;
            let config = &settings.inference;
            let model = ModelArgs { model: config.model.clone(), threads: args.model.threads };
            let output = args.output.clone().or_else(|| config.jsonl.clone());
            below = config.below_threshold;
            metrics_port = metrics_port.or(config.metrics_port);
            metrics_address = metrics_address.or(Some(config.metrics_address));
            if below == BelowThreshold::Review {
                eprintln!(
                    "fvision: below-threshold `review` needs the review topic of the connector; run flags them instead"
                );
                below = BelowThreshold::Flag;
            }
            let mut pipeline = config.pipeline();
            pipeline.dead_letter_payload_cap = settings.validation.dead_letter_payload_cap;
            (args.validator.load_with(settings.validation.params.clone())?, model.load()?, pipeline, output)
        }
        None => (args.validator.load()?, args.model.load()?, args.pipeline.config(), args.output.clone()),
    };
    if let Some(port) = metrics_port {
        let address = std::net::SocketAddr::new(metrics_address.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()), port);
        inference_sink::events::serve(address)
            .with_context(|| format!("starting the metrics endpoint on {address}"))?;
        eprintln!("metrics on http://{address}/metrics");
    }
    inference_sink::events::model_loaded(classifier.spec().name(), classifier.load_time().as_secs_f64());
    // The file outputs are the connector's own (same JSONL shape); the table is this command's console.
    let mut outputs = OutputSet::new(below);
    if let Some(path) = &output {
        outputs = outputs.with(Box::new(JsonlOutput::create(path)?));
    }
    let mut out = io::stdout().lock();
    let mut table = Table::new(false);
    let wasm = |values: &[&[u8]]| validator.validate_batch(values);
    let mut dropped = 0u64;
    let (unreadable, stats) = run_inputs(source, wasm, &classifier, &pipeline, |outcome| {
        if outputs.deliver(&outcome, None)? == Destination::Dropped {
            dropped += 1;
            return Ok(());
        }
        table.write(&mut out, &outcome)
    })?;
    run_block_on(outputs.acknowledge())?;
    let tally = &stats.tally;
    writeln!(
        out,
        "\n{} images in {:.2} s ({:.1} images/s): {} classified ({:.0}% success), {} rejected, {} below the \
         confidence threshold ({dropped} of them dropped as configured); latency p50 {:.1} ms, p99 {:.1} ms; {} \
         inference batches",
        tally.total(),
        stats.elapsed.as_secs_f64(),
        tally.images_per_sec(stats.elapsed),
        tally.classified,
        tally.success_percent(),
        tally.rejected,
        tally.below_threshold,
        tally.latency_ms(0.5),
        tally.latency_ms(0.99),
        stats.batches,
    )?;
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
