//! `fvision classify`: validate, preprocess and classify local images with one model.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use fvision_pipeline::PipelineSettings;

use crate::args::ModelArgs;
use crate::feed::run_inputs;
use crate::inputs::InputSource;
use crate::report::Table;

/// Classify images: validation (the SmartModule's checks, natively), faithful preprocessing and
/// batched ONNX inference with one model loaded once.
#[derive(Debug, Args)]
#[command(after_help = "\
Output: with --json one line per image, {\"file\", \"label\", \"class_index\", \"confidence\", \"top_k\",
\"model_name\", \"model_version\", \"processing_time_ms\"}, or {\"file\", \"status\": \"rejected\", \"reason\",
\"detail\", \"stage\"} for images that fail validation or decoding; otherwise a table.

Examples:
  fvision classify data/demo-images                         # the default model, efficientnet-lite0
  fvision classify --json --top-k 3 photo.jpg
  fvision classify --model resnet50 --batch-size 8 images/  # a preset (weight-free: throughput only)
  fvision classify --model ./my-model/manifest.toml images/ # a custom ONNX model")]
pub struct ClassifyArgs {
    /// Files, directories (recursive) or `-` (one record per line: ImageEvent JSON or base64).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    model: ModelArgs,

    /// How many classes to report per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    top_k: u16,

    /// Images per inference batch (capped by the model's max_batch).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch_size: u16,

    /// One JSON line per image instead of a table.
    #[arg(long)]
    json: bool,
}

/// Entry point of `fvision classify`.
pub fn run(args: ClassifyArgs) -> Result<ExitCode> {
    let source = InputSource::from_args(&args.paths)?;
    let classifier = args.model.load()?;
    let params = image_validate::ValidationParams::default();
    let native =
        |values: &[&[u8]]| values.iter().map(|v| Some(image_validate::validate_value(v, &params))).collect::<Vec<_>>();
    let config = PipelineSettings {
        max_batch: usize::from(args.batch_size),
        top_k: usize::from(args.top_k),
        ..PipelineSettings::default()
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut table = Table::new(args.json);
    let (unreadable, _) = run_inputs(source, native, &classifier, &config, |outcome| table.write(&mut out, &outcome))?;
    out.flush()?;
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
