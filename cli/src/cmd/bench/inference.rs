//! `fvision bench inference`: the per-image cost of each stage (decode, resize, normalise, inference at
//! several batch sizes) for one or every model, in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::shared::{bench_model, sample_or};
use crate::inputs::InputSource;

/// Options of `fvision bench inference`.
#[derive(Debug, Args)]
pub struct BenchInferenceArgs {
    /// Images to use [default: the shipped ImageNet sample]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// A preset, a manifest path, or `all` for every preset.
    #[arg(long, short = 'm', default_value = fvision_models::DEFAULT_MODEL)]
    model: String,

    /// Batch sizes to measure (capped by each model's max_batch).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    batch_sizes: Vec<usize>,

    /// Measured inference time per batch size, in seconds (sizes are interleaved run by run).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,

    /// Threads ONNX Runtime uses inside an operator [default: every core].
    #[arg(long)]
    threads: Option<usize>,

    /// Decode large JPEGs at a reduced scale (`fvision run --fast-decode`).
    #[arg(long)]
    fast_decode: bool,

    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub fn run(args: BenchInferenceArgs) -> Result<ExitCode> {
    let registry = fvision_models::Registry::open_default()?;
    let specs = if args.model == "all" { registry.list().to_vec() } else { vec![registry.resolve(&args.model)?] };
    let paths = sample_or(&args.paths)?;
    let files: Vec<Vec<u8>> = InputSource::from_args(&paths)?
        .iter()
        .map(|input| input.value.with_context(|| format!("reading {}", input.name)))
        .collect::<Result<_>>()?;
    if files.is_empty() {
        bail!("no images found in {paths:?}");
    }
    let mut options = fvision_models::ClassifierOptions::default();
    if let Some(threads) = args.threads {
        options.intra_threads = threads;
    }
    options.fast_decode = args.fast_decode;
    let mut reports = Vec::new();
    for spec in specs {
        let model = fvision_models::Classifier::load(spec, &options)?;
        reports.push(bench_model(&model, &files, &args.batch_sizes, args.seconds)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("per-image cost, {} images, {} ONNX Runtime threads", files.len(), options.intra_threads);
    for r in &reports {
        println!(
            "\n{} ({}), loaded in {:.0} ms",
            r.model,
            if r.real_weights { "real weights" } else { "weight-free" },
            r.load_ms
        );
        println!(
            "  decode {:.2} ms, resize+crop {:.2} ms, normalise {:.3} ms (one thread)",
            r.decode_ms, r.resize_ms, r.normalize_ms
        );
        for b in &r.inference {
            println!(
                "  inference batch {:>2}: {:>8.2} ms/image {:>8.1} images/s ({} runs)",
                b.batch_size, b.ms_per_image, b.images_per_sec, b.runs
            );
        }
        println!(
            "  best batch {}: {:.1} images/s; preprocessing / inference per image = {:.3}",
            r.best_batch_size, r.best_images_per_sec, r.preprocess_to_inference
        );
    }
    Ok(ExitCode::SUCCESS)
}
