//! `fvision bench`: throughput measured as ratios within one run, so noisy shared machines still
//! give comparable figures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::{Args, Subcommand};
use fvision_connector_common::{find_in_target_dir, SmartModuleRunner};
use fvision_records::{EventMeta, ImageEvent, Source, ValidationRecord};
use image_validate::{validate_value, ValidationParams};
use serde::Serialize;

use crate::cmd::validate::ValidatorArgs;
use crate::data::imagenet_sample;
use crate::inputs::InputSource;
use crate::output::progress;

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
}

/// Options of `fvision bench connector`.
#[derive(Debug, Args)]
pub struct BenchConnectorArgs {
    /// Images to use [default: the shipped ImageNet sample]
    #[arg(value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,

    /// How many times the images are produced.
    #[arg(long, default_value_t = 3)]
    pub(crate) repeat: usize,

    /// A preset or a manifest path.
    #[arg(long, short = 'm', default_value = fvision_models::DEFAULT_MODEL)]
    pub(crate) model: String,

    /// Where the connector validates: auto, cluster (the SPU) or connector.
    #[arg(long, default_value = "connector", value_parser = ["auto", "cluster", "connector"])]
    pub(crate) validate_at: String,

    /// Seconds between the connector's offset commits (`meta.consumer.offset.flush-period`).
    #[arg(long, default_value_t = 2)]
    pub(crate) flush_period: u64,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

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
    model: crate::cmd::classify::ModelArgs,

    #[command(flatten)]
    pipeline: crate::cmd::run::PipelineArgs,

    #[command(flatten)]
    validator: ValidatorArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

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

    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Options of `fvision bench validate`.
#[derive(Debug, Args)]
pub struct BenchValidateArgs {
    /// Images to validate [default: the shipped ImageNet sample]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Measured time per mode, in seconds (modes are interleaved pass by pass).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,

    /// Records per call into WASM (small batches stay in cache: 1-8 measured fastest).
    #[arg(long, default_value_t = 4)]
    batch_size: usize,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,

    /// Feed raw image bytes (as a Kafka value may carry them) instead of ImageEvent JSON envelopes.
    #[arg(long)]
    raw: bool,

    #[command(flatten)]
    validator: ValidatorArgs,
}

/// Entry point of `fvision bench`.
pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Validate(args) => bench_validate(args),
        BenchCommand::Inference(args) => bench_inference(args),
        BenchCommand::Pipeline(args) => bench_pipeline(args),
        BenchCommand::Connector(args) => crate::cmd::bench_connector::run(args),
    }
}

#[derive(Debug, Serialize)]
struct ModeResult {
    mode: String,
    images: u64,
    seconds: f64,
    images_per_sec: f64,
    mb_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct ValidateReport {
    images: usize,
    mean_image_bytes: f64,
    input: &'static str,
    batch_size: usize,
    modes: Vec<ModeResult>,
    /// WASM header-mode throughput over the identity SmartModule's: 1.0 would mean validation is free.
    wasm_header_vs_identity: f64,
    wasm_vs_native_header: f64,
    wasm_vs_native_full: f64,
}

/// The reference SmartModule: returns records unchanged (the engine and ABI floor).
const IDENTITY_WASM: &str = "identity_smartmodule.wasm";

fn bench_validate(args: BenchValidateArgs) -> Result<ExitCode> {
    if args.validator.full_decode || !args.validator.params.is_empty() {
        bail!("bench validate sets full_decode itself and runs with default limits; drop --full-decode/--param");
    }
    let paths = if args.paths.is_empty() { vec![imagenet_sample()] } else { args.paths.clone() };
    let values = record_values(&paths, args.raw)?;
    let image_bytes: u64 = values.iter().map(|(_, size)| size).sum();
    let values: Vec<Vec<u8>> = values.into_iter().map(|(v, _)| v).collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let n = refs.len();

    let header_params = ValidationParams::default();
    let full_params = ValidationParams { full_decode: true, ..ValidationParams::default() };
    let mut wasm_header = args.validator.load()?;
    let mut full_args = args.validator.param_map();
    full_args.insert("full_decode".into(), "true".into());
    let mut wasm_full = args.validator.load_with(full_args)?;
    let identity_path = find_in_target_dir(IDENTITY_WASM).with_context(|| {
        format!(
            "the reference SmartModule {IDENTITY_WASM} was not found; build it with \
             `cargo build --profile release-wasm --target wasm32-unknown-unknown -p identity-smartmodule`"
        )
    })?;
    // A stock module leaks its output (see smartmodule/src/abi.rs): recycle it, as one would in production.
    let mut identity =
        SmartModuleRunner::builder("identity").recycle_after_output_bytes(256 << 20).load(&identity_path)?;
    let batch = args.batch_size.max(1);

    // Each mode returns how many records it accepted (or passed through), so a mode that silently
    // rejects everything cannot look fast.
    type Mode<'a> = Box<dyn FnMut() -> Result<usize> + 'a>;
    let mut modes: Vec<(&str, Mode<'_>)> = vec![
        ("wasm identity (ABI floor)", Box::new(|| engine_pass(&mut identity, &refs, batch, |_| true))),
        ("wasm header", Box::new(|| engine_pass(wasm_header.runner(), &refs, batch, is_ok_json))),
        ("native header", Box::new(|| Ok(refs.iter().filter(|v| is_ok(&validate_value(v, &header_params))).count()))),
        ("wasm full-decode", Box::new(|| engine_pass(wasm_full.runner(), &refs, batch, is_ok_json))),
        (
            "native full-decode",
            Box::new(|| Ok(refs.iter().filter(|v| is_ok(&validate_value(v, &full_params))).count())),
        ),
    ];
    let budget = Duration::from_secs_f64(args.seconds.max(0.1));
    let mut spent = vec![Duration::ZERO; modes.len()];
    let mut passes = vec![0u64; modes.len()];
    let bar = progress(Some((args.seconds * modes.len() as f64).ceil() as u64), "benchmarking (s)");
    while spent.iter().any(|s| *s < budget) {
        for (i, (name, mode)) in modes.iter_mut().enumerate() {
            if spent[i] >= budget {
                continue;
            }
            let start = Instant::now();
            let accepted = mode().with_context(|| format!("{name}, pass {}", passes[i] + 1))?;
            spent[i] += start.elapsed();
            passes[i] += 1;
            if accepted != n {
                bail!("{name}: only {accepted} of {n} images were accepted; benchmark on valid images");
            }
        }
        bar.set_position(spent.iter().map(|s| s.as_secs_f64().min(args.seconds)).sum::<f64>() as u64);
    }
    bar.finish_and_clear();

    let results: Vec<ModeResult> = modes
        .iter()
        .zip(spent.iter().zip(&passes))
        .map(|((name, _), (spent, passes))| {
            let secs = spent.as_secs_f64();
            ModeResult {
                mode: name.to_string(),
                images: passes * n as u64,
                seconds: secs,
                images_per_sec: (passes * n as u64) as f64 / secs,
                mb_per_sec: (passes * image_bytes) as f64 / secs / 1e6,
            }
        })
        .collect();
    let rate = |i: usize| results[i].images_per_sec;
    let report = ValidateReport {
        images: n,
        mean_image_bytes: image_bytes as f64 / n as f64,
        input: if args.raw { "raw image bytes" } else { "ImageEvent JSON, base64" },
        batch_size: batch,
        wasm_header_vs_identity: rate(1) / rate(0),
        wasm_vs_native_header: rate(1) / rate(2),
        wasm_vs_native_full: rate(3) / rate(4),
        modes: results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "validation throughput on one core: {} images, mean {:.0} KB, as {}, WASM batch {}",
            report.images,
            report.mean_image_bytes / 1e3,
            report.input,
            report.batch_size
        );
        println!("{:<28} {:>10} {:>10}", "mode", "images/s", "MB/s");
        for m in &report.modes {
            println!("{:<28} {:>10.0} {:>10.1}", m.mode, m.images_per_sec, m.mb_per_sec);
        }
        println!(
            "wasm header / identity floor: {:.2}   wasm / native: header {:.2}, full decode {:.2}",
            report.wasm_header_vs_identity, report.wasm_vs_native_header, report.wasm_vs_native_full
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn is_ok(record: &ValidationRecord) -> bool {
    matches!(record, ValidationRecord::Ok(_))
}

/// One pass through an engine, counting outputs that `accepted` approves, without parsing them:
/// this is the SPU's share of the work; parsing is the consumer's.
fn engine_pass(
    runner: &mut SmartModuleRunner,
    values: &[&[u8]],
    batch: usize,
    accepted: fn(&[u8]) -> bool,
) -> Result<usize> {
    let mut count = 0;
    for chunk in values.chunks(batch) {
        let outputs = runner.process(chunk).map_err(|e| anyhow::anyhow!("SmartModule failed: {e}"))?;
        count += outputs.iter().filter(|record| accepted(record.value.as_ref())).count();
    }
    Ok(count)
}

/// Validated records start with their status tag (see `validate_to_json`).
fn is_ok_json(json: &[u8]) -> bool {
    json.starts_with(br#"{"status":"ok""#)
}

/// Reads the images and wraps each in an `ImageEvent` JSON envelope, as sources write them (or
/// leaves them raw). Returns each record value with the image's size.
pub(crate) fn record_values(paths: &[PathBuf], raw: bool) -> Result<Vec<(Vec<u8>, u64)>> {
    let mut out = Vec::new();
    for input in InputSource::from_args(paths)?.iter() {
        let bytes = input.value.with_context(|| format!("reading {}", input.name))?;
        if raw {
            let size = bytes.len() as u64;
            out.push((bytes, size));
            continue;
        }
        let event = ImageEvent {
            meta: EventMeta { id: input.name.clone(), source: Source::File, ..Default::default() },
            data: STANDARD.encode(&bytes),
        };
        out.push((serde_json::to_vec(&event)?, bytes.len() as u64));
    }
    if out.is_empty() {
        bail!("no images found in {paths:?}");
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
struct BatchResult {
    batch_size: usize,
    runs: u64,
    ms_per_image: f64,
    images_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct InferenceReport {
    model: String,
    real_weights: bool,
    load_ms: f64,
    images: usize,
    decode_ms: f64,
    resize_ms: f64,
    normalize_ms: f64,
    inference: Vec<BatchResult>,
    best_batch_size: usize,
    best_images_per_sec: f64,
    preprocess_to_inference: f64,
}

fn bench_inference(args: BenchInferenceArgs) -> Result<ExitCode> {
    let registry = fvision_models::Registry::open_default()?;
    let specs = if args.model == "all" { registry.list().to_vec() } else { vec![registry.resolve(&args.model)?] };
    let paths = if args.paths.is_empty() { vec![imagenet_sample()] } else { args.paths.clone() };
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

/// Prepares every file once (timing each step), then runs inference at each batch size for `seconds`
/// (sizes interleaved run by run).
fn bench_model(
    model: &fvision_models::Classifier,
    files: &[Vec<u8>],
    batch_sizes: &[usize],
    seconds: f64,
) -> Result<InferenceReport> {
    let pre = model.preprocessor();
    let mut prepared = fvision_models::PreparedBatch::with_capacity(pre, files.len());
    for bytes in files {
        prepared.push(pre, bytes, fvision_records::EventMeta::default())?;
    }
    let n = prepared.len() as f64;
    let mean_ms = |f: fn(&fvision_models::StageTimes) -> Duration| {
        prepared.images().iter().map(|p| f(&p.times).as_secs_f64() * 1e3).sum::<f64>() / n
    };
    let (decode_ms, resize_ms, normalize_ms) = (mean_ms(|t| t.decode), mean_ms(|t| t.resize), mean_ms(|t| t.normalize));

    let max_batch = model.spec().manifest.max_batch;
    let mut sizes: Vec<usize> = batch_sizes.iter().copied().filter(|b| (1..=max_batch).contains(b)).collect();
    sizes.dedup();
    if sizes.is_empty() {
        bail!("no batch size in {batch_sizes:?} fits {}'s max_batch {max_batch}", model.spec().name());
    }
    if sizes.iter().any(|&b| b > prepared.len()) {
        bail!(
            "batch sizes {sizes:?} need at least {} images, got {}",
            sizes.iter().max().unwrap_or(&0),
            prepared.len()
        );
    }
    let budget = Duration::from_secs_f64(seconds.max(0.05));
    let mut spent = vec![Duration::ZERO; sizes.len()];
    let mut runs = vec![0u64; sizes.len()];
    let bar = progress(Some((seconds * sizes.len() as f64).ceil() as u64), model.spec().name());
    while spent.iter().any(|s| *s < budget) {
        for (i, &b) in sizes.iter().enumerate() {
            if spent[i] >= budget {
                continue;
            }
            let start = Instant::now();
            model.probabilities(prepared.tensor(0..b), b)?;
            spent[i] += start.elapsed();
            runs[i] += 1;
        }
        bar.set_position(spent.iter().map(|s| s.as_secs_f64().min(seconds)).sum::<f64>() as u64);
    }
    bar.finish_and_clear();
    let inference: Vec<BatchResult> = sizes
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let ms = spent[i].as_secs_f64() * 1e3 / (runs[i] as f64 * b as f64);
            BatchResult { batch_size: b, runs: runs[i], ms_per_image: ms, images_per_sec: 1e3 / ms }
        })
        .collect();
    let best = inference
        .iter()
        .min_by(|a, b| a.ms_per_image.total_cmp(&b.ms_per_image))
        .map(|b| (b.batch_size, b.ms_per_image, b.images_per_sec));
    let (best_batch_size, best_ms, best_images_per_sec) = best.unwrap_or((1, f64::NAN, f64::NAN));
    Ok(InferenceReport {
        model: model.spec().name().to_string(),
        real_weights: model.spec().manifest.real_weights,
        load_ms: model.load_time().as_secs_f64() * 1e3,
        images: prepared.len(),
        decode_ms,
        resize_ms,
        normalize_ms,
        inference,
        best_batch_size,
        best_images_per_sec,
        preprocess_to_inference: (decode_ms + resize_ms + normalize_ms) / best_ms,
    })
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
fn bench_pipeline(args: BenchPipelineArgs) -> Result<ExitCode> {
    let classifier = args.model.load()?;
    let paths = if args.paths.is_empty() { vec![imagenet_sample()] } else { args.paths.clone() };
    let values = record_values(&paths, false)?;
    let files: Vec<Vec<u8>> = record_values(&paths, true)?.into_iter().map(|(bytes, _)| bytes).collect();
    // Inference alone, before and after the pipeline run (averaged against drift), at the same sizes.
    let sizes: Vec<usize> = [1, 2, 4, 8, 16].into_iter().filter(|&b| b <= files.len()).collect();
    let before = bench_model(&classifier, &files, &sizes, 0.5)?;
    let items: Vec<inference_sink::Item> = (0..args.repeat.max(1))
        .flat_map(|round| values.iter().enumerate().map(move |(i, (v, _))| (round, i, v.clone())))
        .map(|(round, i, value)| inference_sink::Item { name: format!("{round}/{i}"), value })
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
