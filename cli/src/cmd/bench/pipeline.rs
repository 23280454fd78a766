//! `fvision bench pipeline`: the embedded pipeline's throughput and latency against the limits of the same
//! model, measured in one run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

    /// Open-loop latency: after the closed-loop run, feed images on a fixed schedule at these percentages of
    /// the throughput it measured (whatever the pipeline does) and report p50/p99/p999 from each image's
    /// scheduled arrival to its outcome, against the compute floor (for example `--load 2,10,50,90`).
    #[arg(long, value_delimiter = ',', value_parser = load_percent)]
    load: Vec<f64>,

    /// Seconds of open-loop feeding per `--load` level (at least 20 images each).
    #[arg(long, default_value_t = 10.0)]
    load_seconds: f64,

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
    /// Decode + preprocess + inference at batch 1 of one image, on an idle pipeline: no latency can be lower.
    floor_ms: f64,
    open_loop: Vec<OpenLoopReport>,
}

/// Latency at one offered load, from each image's scheduled arrival to its outcome.
#[derive(Debug, Serialize)]
struct OpenLoopReport {
    load_percent: f64,
    offered_images_per_sec: f64,
    images: usize,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    p50_over_floor: f64,
    p99_over_floor: f64,
}

fn load_percent(raw: &str) -> Result<f64, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|p| *p > 0.0 && *p <= 200.0)
        .ok_or_else(|| format!("`{raw}` is not a percentage of saturation from 0 (excluded) to 200"))
}

/// Feeds `values` (cycled) at `rate` images/s on a fixed schedule; the latency of each image runs from its
/// scheduled arrival, so time spent queued before the pipeline takes it counts too. Sorted, in ms.
fn open_loop(
    classifier: &fvision_models::Classifier,
    validator: &mut fvision_connector_common::WasmValidator,
    config: &fvision_pipeline::PipelineSettings,
    values: &[(Vec<u8>, u64)],
    rate: f64,
    images: usize,
) -> Result<Vec<f64>> {
    let start = Instant::now() + Duration::from_millis(20);
    let schedule: Vec<Instant> = (0..images).map(|i| start + Duration::from_secs_f64(i as f64 / rate)).collect();
    let items = schedule.iter().enumerate().map(|(i, at)| {
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        fvision_pipeline::Item::new(i.to_string(), values[i % values.len()].0.clone())
    });
    let mut latencies = Vec::with_capacity(images);
    fvision_pipeline::run_pipeline(
        items,
        |v: &[&[u8]]| validator.validate_batch(v),
        classifier,
        config,
        |outcome| {
            let i: usize = outcome.name().parse().map_err(|_| format!("unexpected input name {}", outcome.name()))?;
            latencies.push(schedule[i].elapsed().as_secs_f64() * 1e3);
            Ok::<(), String>(())
        },
    )?;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The pipeline against two limits of the same model on the same machine: inference alone at its best
/// batch size (measured before and after the pipeline run, averaged), and the design's limit: the CPU
/// time per image that cannot be avoided (decoding once plus inference on every ONNX Runtime thread)
/// spread over all cores.
pub fn run(args: BenchPipelineArgs) -> Result<ExitCode> {
    let classifier = args.model.load()?;
    let paths = sample_or(&args.paths)?;
    let values = record_values(&paths, false)?;
    let files: Vec<Vec<u8>> = record_values(&paths, true)?.into_iter().map(|(bytes, _)| bytes).collect();
    // Inference alone, before and after the pipeline run (averaged against drift), at the same sizes.
    let sizes: Vec<usize> = [1, 2, 4, 8, 16].into_iter().filter(|&b| b <= files.len()).collect();
    let before = bench_model(&classifier, &files, &sizes, 0.5)?;
    let items: Vec<fvision_pipeline::Item> = (0..args.repeat.max(1))
        .flat_map(|round| values.iter().enumerate().map(move |(i, (v, _))| (round, i, v.clone())))
        .map(|(round, i, value)| fvision_pipeline::Item::new(format!("{round}/{i}"), value))
        .collect();
    let mut validator = args.validator.load()?;
    let stats = fvision_pipeline::run_pipeline(
        items.into_iter(),
        |v: &[&[u8]]| validator.validate_batch(v),
        &classifier,
        &args.pipeline.config(),
        |_| Ok::<(), String>(()),
    )?;
    let after = bench_model(&classifier, &files, &sizes, 0.5)?;
    let inference_rate = (before.best_images_per_sec + after.best_images_per_sec) / 2.0;
    let prepare_ms = before.decode_ms + before.resize_ms + before.normalize_ms;
    let batch1_ms = |r: &super::shared::InferenceReport| {
        r.inference.iter().find(|b| b.batch_size == 1).map_or(f64::NAN, |b| b.ms_per_image)
    };
    let floor_ms = prepare_ms + (batch1_ms(&before) + batch1_ms(&after)) / 2.0;
    let mut open_loop_reports = Vec::new();
    for &percent in &args.load {
        let rate = stats.images_per_sec() * percent / 100.0;
        let images = ((rate * args.load_seconds).ceil() as usize).max(20);
        let sorted = open_loop(&classifier, &mut validator, &args.pipeline.config(), &values, rate, images)?;
        let (p50, p99, p999) = (quantile(&sorted, 0.5), quantile(&sorted, 0.99), quantile(&sorted, 0.999));
        open_loop_reports.push(OpenLoopReport {
            load_percent: percent,
            offered_images_per_sec: rate,
            images: sorted.len(),
            p50_ms: p50,
            p99_ms: p99,
            p999_ms: p999,
            p50_over_floor: p50 / floor_ms,
            p99_over_floor: p99 / floor_ms,
        });
    }
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
        floor_ms,
        open_loop: open_loop_reports,
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
        if !report.open_loop.is_empty() {
            println!("  open loop, latency from scheduled arrival (floor {:.1} ms = decode+preprocess+inference at batch 1):", report.floor_ms);
        }
        for r in &report.open_loop {
            println!(
                "    {:>5.1} % load {:>7.1} images/s {:>6} images: p50 {:.1} ms ({:.2}x floor), p99 {:.1} ms ({:.2}x), p999 {:.1} ms",
                r.load_percent, r.offered_images_per_sec, r.images, r.p50_ms, r.p50_over_floor, r.p99_ms, r.p99_over_floor, r.p999_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
