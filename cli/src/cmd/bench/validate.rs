//! `fvision bench validate`: validation throughput, WASM (fluvio-smartengine) against native, header
//! checks against a full decode, and the identity SmartModule as the engine's floor.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use fvision_connector_common::{locate_beside_smartmodule, SmartModuleRunner};
use fvision_records::ValidationRecord;
use image_validate::{validate_value, ValidationParams};
use serde::Serialize;

use super::shared::{interleaved, record_values, sample_or};
use crate::args::ValidatorArgs;
use crate::output::progress;

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

/// Runs the benchmark.
pub fn run(args: BenchValidateArgs) -> Result<ExitCode> {
    if args.validator.full_decode || !args.validator.params.is_empty() {
        bail!("bench validate sets full_decode itself and runs with default limits; drop --full-decode/--param");
    }
    let paths = sample_or(&args.paths)?;
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
    let identity_path = locate_beside_smartmodule(args.validator.smartmodule.as_deref(), IDENTITY_WASM)?;
    anyhow::ensure!(
        identity_path.is_file(),
        "the reference SmartModule {} is missing; build it with \
         `cargo build --profile release-lto --target wasm32-unknown-unknown -p identity-smartmodule`",
        identity_path.display()
    );
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
    let bar = progress(Some((args.seconds * modes.len() as f64).ceil() as u64), "benchmarking (s)");
    let spent = interleaved(modes.len(), budget, &bar, |i| {
        let (name, mode) = &mut modes[i];
        let accepted = mode().with_context(|| name.to_string())?;
        if accepted != n {
            bail!("{name}: only {accepted} of {n} images were accepted; benchmark on valid images");
        }
        Ok(())
    })?;

    let results: Vec<ModeResult> = modes
        .iter()
        .zip(&spent)
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
