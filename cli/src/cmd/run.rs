//! `fvision run`: the pipeline embedded in one process, no cluster.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::cmd::classify::{classify_inputs, ModelArgs, Outcome, Table};
use crate::cmd::validate::ValidatorArgs;
use crate::data::demo_images;
use crate::inputs::InputSource;

/// Run the pipeline embedded in this process on local images: validation through the same WASM
/// SmartModule a cluster runs, preprocessing and batched inference with one shared model, predictions
/// and rejections to the console (and optionally a JSONL file), and a summary.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision run                                  # the shipped demo images, efficientnet-lite0
  fvision run ~/photos --confidence-threshold 0.5 --output predictions.jsonl
  fvision run --model resnet50 --batch-size 4 data/imagenet-sample")]
pub struct RunArgs {
    /// Files, directories or `-` (one record per line) [default: the shipped demo images]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    validator: ValidatorArgs,

    /// Predictions below this confidence are flagged (`above_threshold: false`).
    #[arg(long, default_value_t = 0.0, value_parser = threshold)]
    confidence_threshold: f32,

    /// Images per inference batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch_size: u16,

    /// Also write every outcome as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
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
    let mut validator = args.validator.load()?;
    let classifier = args.model.load()?;
    let mut jsonl = match &args.output {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)),
        None => None,
    };
    let mut out = io::stdout().lock();
    let mut table = Table::new(false);
    let (mut latencies, mut rejected, mut flagged) = (Vec::new(), 0u64, 0u64);
    let started = Instant::now();
    let unreadable = classify_inputs(
        source,
        &classifier,
        usize::from(args.batch_size),
        5,
        args.confidence_threshold,
        |values| validator.validate_batch(values),
        |outcome| {
            match &outcome {
                Outcome::Classified { prediction, .. } => {
                    latencies.push(prediction.processing_time_ms);
                    flagged += u64::from(!prediction.above_threshold);
                }
                Outcome::Rejected { .. } => rejected += 1,
            }
            table.write(&mut out, &outcome)?;
            if let Some(file) = jsonl.as_mut() {
                serde_json::to_writer(&mut *file, &outcome)?;
                file.write_all(b"\n")?;
            }
            Ok(())
        },
    )?;
    if let Some(mut file) = jsonl {
        file.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    let classified = latencies.len() as u64;
    let total = classified + rejected;
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    writeln!(
        out,
        "\n{total} images in {secs:.2} s ({:.1} images/s): {classified} classified ({:.0}% success), {rejected} rejected, \
         {flagged} below the confidence threshold; latency p50 {:.1} ms, p99 {:.1} ms",
        total as f64 / secs.max(1e-9),
        if total == 0 { 0.0 } else { 100.0 * classified as f64 / total as f64 },
        pct(0.5),
        pct(0.99),
    )?;
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
