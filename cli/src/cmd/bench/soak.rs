//! `fvision bench soak`: memory over a long stream. Feeds many records (the ImageNet sample and the hostile
//! inputs, cycled) through the embedded pipeline with the JSONL output, samples the process's resident
//! memory every second, and reports its growth after warm-up: a process that runs for months must not
//! keep state per record.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use fluvio_future::task::run_block_on;
use fvision_outputs::{BelowThreshold, JsonlOutput, OutputSet};
use fvision_pipeline::{run_pipeline, Item};
use serde::Serialize;

use super::shared::{record_values, sample_or};
use crate::args::{ModelArgs, PipelineArgs, ValidatorArgs};
use crate::data::data_dir;

/// Options of `fvision bench soak`.
#[derive(Debug, Args)]
pub struct BenchSoakArgs {
    /// Images to cycle through [default: the shipped ImageNet sample, plus data/bad-inputs]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Records to feed.
    #[arg(long, default_value_t = 100_000)]
    records: u64,

    /// Share of the records, from 0 to 1, treated as warm-up: memory growth is measured after it.
    #[arg(long, default_value_t = 0.2)]
    warm_up: f64,

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
struct SoakReport {
    model: String,
    records: u64,
    classified: u64,
    rejected: u64,
    seconds: f64,
    images_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_samples: usize,
    rss_start_mib: f64,
    rss_after_warm_up_mib: f64,
    rss_end_mib: f64,
    rss_max_after_warm_up_mib: f64,
    growth_after_warm_up_percent: f64,
}

/// Resident memory of this process, in bytes (Linux: `/proc/self/statm`).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Runs the benchmark.
pub fn run(args: BenchSoakArgs) -> Result<ExitCode> {
    rss_bytes().context("reading /proc/self/statm: the soak benchmark needs Linux")?;
    let paths = if args.paths.is_empty() {
        let mut paths = sample_or(&[])?;
        paths.push(data_dir()?.join("bad-inputs"));
        paths
    } else {
        sample_or(&args.paths)?
    };
    let values: Vec<Vec<u8>> = record_values(&paths, false)?.into_iter().map(|(value, _)| value).collect();
    let classifier = args.model.load()?;
    let mut validator = args.validator.load()?;
    let dir = tempfile_dir()?;
    let jsonl = dir.join("soak.jsonl");
    let outputs = OutputSet::new(BelowThreshold::Flag).with(Box::new(JsonlOutput::create(&jsonl)?));

    let fed = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    // (records fed so far, RSS) once a second; one sample per second for the whole run is the only thing here
    // that grows, and it is the measurement.
    let samples = Mutex::new(Vec::new());
    let total = args.records;
    let started = Instant::now();
    let stats = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                if let (Some(rss), Ok(mut samples)) = (rss_bytes(), samples.lock()) {
                    samples.push((fed.load(Ordering::Acquire), rss));
                }
                let tick = Instant::now();
                while tick.elapsed() < Duration::from_secs(1) && !done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let items = (0..total).map(|i| {
            fed.fetch_add(1, Ordering::AcqRel);
            let value = values[(i % values.len() as u64) as usize].clone();
            Item::new(format!("soak/{i}"), value)
        });
        let mut acknowledged = 0u64;
        let stats = run_pipeline(
            items,
            |v: &[&[u8]]| validator.validate_batch(v),
            &classifier,
            &args.pipeline.config(),
            |outcome| {
                outputs.deliver(&outcome, None)?;
                acknowledged += 1;
                if acknowledged.is_multiple_of(1_000) {
                    run_block_on(outputs.acknowledge())?;
                }
                Ok::<(), fvision_outputs::DeliveryError>(())
            },
        );
        done.store(true, Ordering::Release);
        stats
    })?;
    run_block_on(outputs.acknowledge())?;
    let _ = std::fs::remove_dir_all(&dir);
    let end = rss_bytes().unwrap_or(0);
    let samples = samples.into_inner().unwrap_or_default();
    let warm = (total as f64 * args.warm_up.clamp(0.0, 0.9)) as u64;
    let after: Vec<u64> = samples.iter().filter(|(fed, _)| *fed >= warm).map(|(_, rss)| *rss).collect();
    // Medians of the first and the last ten samples after warm-up: one sample's noise (a batch in flight,
    // the allocator returning pages) does not decide the figure.
    let window = after.len().min(10);
    let baseline = median(&after[..window]).unwrap_or(end);
    let last = median(&after[after.len() - window..]).unwrap_or(end);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let tally = &stats.tally;
    let report = SoakReport {
        model: classifier.spec().name().to_string(),
        records: stats.inputs,
        classified: tally.classified,
        rejected: tally.rejected,
        seconds: started.elapsed().as_secs_f64(),
        images_per_sec: stats.images_per_sec(),
        p50_ms: tally.latency_ms(0.5),
        p99_ms: tally.latency_ms(0.99),
        rss_samples: samples.len(),
        rss_start_mib: mib(samples.first().map_or(end, |(_, rss)| *rss)),
        rss_after_warm_up_mib: mib(baseline),
        rss_end_mib: mib(last),
        rss_max_after_warm_up_mib: mib(after.iter().copied().max().unwrap_or(end)),
        growth_after_warm_up_percent: 100.0 * (last as f64 - baseline as f64) / baseline.max(1) as f64,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} records ({} classified, {} rejected) through the embedded pipeline ({}) in {:.0} s, {:.1} images/s",
            report.records, report.classified, report.rejected, report.model, report.seconds, report.images_per_sec
        );
        println!(
            "  RSS: start {:.1} MiB, after warm-up ({:.0}% of the records) {:.1} MiB, at the end {:.1} MiB, max after warm-up {:.1} MiB",
            report.rss_start_mib,
            args.warm_up * 100.0,
            report.rss_after_warm_up_mib,
            report.rss_end_mib,
            report.rss_max_after_warm_up_mib
        );
        println!(
            "  growth after warm-up: {:+.2}% ({} samples, one per second)",
            report.growth_after_warm_up_percent, report.rss_samples
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The median of some samples (the upper one of an even count).
fn median(samples: &[u64]) -> Option<u64> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// A private directory for the JSONL file, removed at the end.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("fvision-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
