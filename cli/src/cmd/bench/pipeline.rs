//! `fvision bench pipeline`: the embedded pipeline's throughput and latency against the limits of the same
//! model, measured in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::shared::{bench_model, record_values, sample_or};
use crate::args::{ModelArgs, PipelineArgs, ValidatorArgs};

/// Options of `fvision bench pipeline`.
#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// Images to use [default: the shipped ImageNet sample]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// How many times the images are fed through the pipeline.
    #[arg(long, default_value_t = 3)]
    repeat: usize,

    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    pipeline: PipelineArgs,

    #[command(flatten)]
    validator: ValidatorArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PipelineReport {
    model: String,
    images: u64,
    pipeline_images_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    batches: u64,
    inference_only_images_per_sec: f64,
    inference_best_batch: usize,
    prepare_ms_per_image: f64,
    limit_images_per_sec: f64,
    ratio_vs_inference_only: f64,
    ratio_vs_limit: f64,
}

/// The pipeline against two limits of the same model on the same machine: inference alone at its best
/// batch size (measured before and after the pipeline run, averaged), and the design's limit: the CPU
/// time per image that cannot be avoided (decoding once plus inference on every ONNX Runtime thread)
/// spread over all cores.
pub fn run(args: BenchPipelineArgs) -> Result<ExitCode> {
    let classifier = args.model.load()?;
    let paths = sample_or(&args.paths);
    let values = record_values(&paths, false)?;
    let files: Vec<Vec<u8>> = record_values(&paths, true)?.into_iter().map(|(bytes, _)| bytes).collect();
    // Inference alone, before and after the pipeline run (averaged against drift), at the same sizes.
    let sizes: Vec<usize> = [1, 2, 4, 8, 16].into_iter().filter(|&b| b <= files.len()).collect();
    let before = bench_model(&classifier, &files, &sizes, 0.5)?;
    let items: Vec<inference_sink::Item> = (0..args.repeat.max(1))
        .flat_map(|round| values.iter().enumerate().map(move |(i, (v, _))| (round, i, v.clone())))
        .map(|(round, i, value)| inference_sink::Item::new(format!("{round}/{i}"), value))
        .collect();
    let mut validator = args.validator.load()?;
    let stats = inference_sink::run_pipeline(
        items.into_iter(),
        |v: &[&[u8]]| validator.validate_batch(v),
        &classifier,
        &args.pipeline.config(),
        |_| Ok::<(), String>(()),
    )?;
    let after = bench_model(&classifier, &files, &sizes, 0.5)?;
    let inference_rate = (before.best_images_per_sec + after.best_images_per_sec) / 2.0;
    let prepare_ms = before.decode_ms + before.resize_ms + before.normalize_ms;
    let threads = fvision_models::ClassifierOptions::default().intra_threads as f64;
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1) as f64;
    let limit = cores * 1e3 / (prepare_ms + threads * 1e3 / inference_rate);
    let report = PipelineReport {
        model: classifier.spec().name().to_string(),
        images: stats.inputs,
        pipeline_images_per_sec: stats.images_per_sec(),
        p50_ms: stats.latency_ms(0.5),
        p99_ms: stats.latency_ms(0.99),
        batches: stats.batches,
        inference_only_images_per_sec: inference_rate,
        inference_best_batch: before.best_batch_size,
        prepare_ms_per_image: prepare_ms,
        limit_images_per_sec: limit,
        ratio_vs_inference_only: stats.images_per_sec() / inference_rate,
        ratio_vs_limit: stats.images_per_sec() / limit,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} images through the embedded pipeline ({}), {} cores", report.images, report.model, cores);
        println!(
            "  pipeline        {:>8.1} images/s, latency p50 {:.1} ms, p99 {:.1} ms, {} batches",
            report.pipeline_images_per_sec, report.p50_ms, report.p99_ms, report.batches
        );
        println!(
            "  inference only  {:>8.1} images/s (best batch {})",
            report.inference_only_images_per_sec, report.inference_best_batch
        );
        println!("  limit           {:>8.1} images/s (decode+preprocess {:.2} ms/image + inference on {threads} threads, over {cores} cores)", report.limit_images_per_sec, report.prepare_ms_per_image);
        println!(
            "  ratio: pipeline / inference only = {:.2}, pipeline / limit = {:.2}",
            report.ratio_vs_inference_only, report.ratio_vs_limit
        );
    }
    Ok(ExitCode::SUCCESS)
}
