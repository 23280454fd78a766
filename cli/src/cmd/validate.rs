//! `fvision validate`: run inputs through the compiled `image-validate` WASM, one JSON verdict each.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use fvision_connector_common::WasmValidator;
use fvision_records::{ImageFormat, RejectReason, ValidationRecord};
use serde::Serialize;

use crate::args::ValidatorArgs;
use crate::inputs::{batches, readable, InputError, InputSource};
use crate::output::progress;

/// Validate images by their bytes, through the image-validate SmartModule compiled to WASM and run by
/// fluvio-smartengine, exactly as a Fluvio SPU runs it.
#[derive(Debug, Args)]
#[command(after_help = "\
Output: one JSON line per input, {\"file\", \"status\": \"ok\"|\"rejected\"|\"dropped\", \"reason\", \"detail\",
\"format\", \"width\", \"height\", \"size_bytes\"}. Exit code 0 when every input was examined, whatever the
verdicts; 1 when an input could not be read; 2 for usage errors.

Examples:
  fvision validate photo.jpg                          # one file
  fvision validate data/bad-inputs --full-decode      # a directory, decoding every pixel in WASM
  fvision validate -p max_pixels=1000000 -p allowed_formats=jpeg,png images/
  cat events.jsonl | fvision validate -               # ImageEvent JSON or base64, one per line")]
pub struct ValidateArgs {
    /// Files, directories (searched recursively; .md, .tsv and .txt files are skipped) or `-` for
    /// standard input, one record value per line.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    validator: ValidatorArgs,

    /// Records passed into WASM per call (the SPU also hands the SmartModule batches).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch_size: u16,
}

/// One line of `fvision validate` output.
#[derive(Debug, Serialize)]
pub struct Verdict {
    file: String,
    status: &'static str,
    reason: Option<RejectReason>,
    detail: Option<String>,
    format: Option<ImageFormat>,
    width: Option<u32>,
    height: Option<u32>,
    size_bytes: Option<u64>,
}

impl Verdict {
    /// The verdict line for a validator output.
    pub fn new(file: String, output: Option<&ValidationRecord>) -> Self {
        let blank = |status| Verdict {
            file: file.clone(),
            status,
            reason: None,
            detail: None,
            format: None,
            width: None,
            height: None,
            size_bytes: None,
        };
        match output {
            None => blank("dropped"),
            Some(ValidationRecord::Ok(ok)) => Verdict {
                format: Some(ok.format),
                width: Some(ok.width),
                height: Some(ok.height),
                size_bytes: Some(ok.size_bytes),
                ..blank("ok")
            },
            Some(ValidationRecord::Rejected(r)) => Verdict {
                reason: Some(r.reason),
                detail: Some(r.detail.clone()),
                format: r.format,
                width: r.width,
                height: r.height,
                size_bytes: r.size_bytes,
                ..blank("rejected")
            },
        }
    }

    fn too_large(file: String, err: &InputError) -> Self {
        Verdict {
            file,
            status: "rejected",
            reason: Some(RejectReason::TooLarge),
            detail: Some(err.to_string()),
            format: None,
            width: None,
            height: None,
            size_bytes: None,
        }
    }
}

/// Runs every input through `validator` in batches of `batch_size`, handing each verdict to `emit`
/// in input order. Unreadable inputs are reported on stderr and counted, not fatal.
pub fn validate_inputs(
    source: InputSource,
    validator: &mut WasmValidator,
    batch_size: usize,
    mut emit: impl FnMut(Verdict) -> Result<()>,
) -> Result<usize> {
    let bar = progress(source.len_hint(), "validating");
    let mut unreadable = 0;
    for batch in batches(source.iter(), batch_size) {
        let mut outputs = validator.validate_batch(&readable(&batch)).into_iter();
        for input in &batch {
            match &input.value {
                Ok(_) => {
                    let output = outputs.next().flatten();
                    emit(Verdict::new(input.name.clone(), output.as_ref()))?;
                }
                Err(err @ InputError::TooLarge { .. }) => emit(Verdict::too_large(input.name.clone(), err))?,
                Err(InputError::Io(err)) => {
                    bar.suspend(|| eprintln!("fvision: cannot read {}: {err}", input.name));
                    unreadable += 1;
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(unreadable)
}

/// Entry point of `fvision validate`.
pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    let source = InputSource::from_args(&args.paths)?;
    let mut validator = args.validator.load()?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let unreadable = validate_inputs(source, &mut validator, usize::from(args.batch_size), |verdict| {
        serde_json::to_writer(&mut out, &verdict)?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
