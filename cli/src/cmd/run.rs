//! `fvision run`: the pipeline embedded in one process, no cluster.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use inference_sink::PipelineConfig;

use crate::cmd::classify::{run_inputs, ModelArgs, Outcome, Table};
use crate::cmd::validate::ValidatorArgs;
use crate::data::demo_images;
use crate::inputs::InputSource;

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

/// Pipeline sizes, shared by `run` and `bench pipeline`.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Predictions below this confidence are flagged (`above_threshold: false`), not dropped.
    #[arg(long, default_value_t = 0.0, value_parser = threshold)]
    pub confidence_threshold: f32,

    /// Largest inference batch (the micro-batcher closes a batch when it is full...).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_batch: u16,

    /// ...or when its first image has waited this long.
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,

    /// Decode/preprocess worker threads [default: every core].
    #[arg(long)]
    pub workers: Option<usize>,
}

impl PipelineArgs {
    /// The pipeline configuration these arguments describe.
    pub fn config(&self) -> PipelineConfig {
        let wait = Duration::from_millis(self.max_wait_ms);
        PipelineConfig::new(usize::from(self.max_batch), wait, self.confidence_threshold, self.workers)
    }
}

fn threshold(raw: &str) -> Result<f32, String> {
    raw.parse::<f32>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| format!("`{raw}` is not a number from 0 to 1"))
}

/// Entry point of `fvision run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let paths = if args.paths.is_empty() { vec![demo_images()] } else { args.paths };
    let source = InputSource::from_args(&paths)?;
    let mut below = inference_sink::BelowThreshold::Flag;
    let mut metrics_port = args.metrics_port;
    let mut metrics_address = args.metrics_address;
    let (mut validator, classifier, pipeline, output) = match &args.config {
        Some(path) => {
            let config = inference_sink::config::load(path, args.secrets.as_deref())?;
            let params = inference_sink::config::validation_params(&config, path)?;
            let model = ModelArgs { model: config.custom.model.clone(), threads: args.model.threads };
            let output = args.output.clone().or_else(|| config.custom.jsonl.clone());
            below = config.custom.below_threshold;
            metrics_port = metrics_port.or(config.custom.metrics_port);
            metrics_address = metrics_address.or(Some(config.custom.metrics_address));
            if below == inference_sink::BelowThreshold::Review {
                eprintln!(
                    "fvision: below-threshold `review` needs the review topic of the connector; run flags them instead"
                );
            }
            let mut pipeline = config.custom.pipeline();
            pipeline.dead_letter_payload_cap = inference_sink::config::dead_letter_payload_cap(&config);
            (args.validator.load_with(params)?, model.load()?, pipeline, output)
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
    let mut jsonl = match &output {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)),
        None => None,
    };
    let mut out = io::stdout().lock();
    let mut table = Table::new(false);
    let wasm = |values: &[&[u8]]| validator.validate_batch(values);
    let mut dropped = 0u64;
    let (unreadable, stats) = run_inputs(source, wasm, &classifier, &pipeline, |outcome| {
        if below == inference_sink::BelowThreshold::Drop
            && matches!(&outcome, Outcome::Classified { prediction, .. } if !prediction.above_threshold)
        {
            dropped += 1;
            return Ok(());
        }
        table.write(&mut out, &outcome)?;
        if let Some(file) = jsonl.as_mut() {
            serde_json::to_writer(&mut *file, &outcome)?;
            file.write_all(b"\n")?;
        }
        Ok(())
    })?;
    if let Some(mut file) = jsonl {
        file.flush()?;
    }
    let total = stats.classified + stats.rejected;
    writeln!(
        out,
        "\n{total} images in {:.2} s ({:.1} images/s): {} classified ({:.0}% success), {} rejected, {} below the \
         confidence threshold ({dropped} of them dropped as configured); latency p50 {:.1} ms, p99 {:.1} ms; {} \
         inference batches",
        stats.elapsed.as_secs_f64(),
        total as f64 / stats.elapsed.as_secs_f64().max(1e-9),
        stats.classified,
        if total == 0 { 0.0 } else { 100.0 * stats.classified as f64 / total as f64 },
        stats.rejected,
        stats.below_threshold,
        stats.latency_ms(0.5),
        stats.latency_ms(0.99),
        stats.batches,
    )?;
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
