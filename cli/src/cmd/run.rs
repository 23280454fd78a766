//! `fvision run`: the pipeline embedded in one process, no cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::cmd::validate::{validate_inputs, ValidatorArgs};
use crate::data::demo_images;
use crate::inputs::InputSource;

/// Run the pipeline embedded in this process on local images: validation through the same WASM
/// SmartModule a cluster runs, then a summary.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision run                    # the shipped demo images
  fvision run ~/photos           # a directory, searched recursively")]
pub struct RunArgs {
    /// Files, directories or `-` (one record per line) [default: the shipped demo images]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    validator: ValidatorArgs,
}

/// Entry point of `fvision run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let paths = if args.paths.is_empty() { vec![demo_images()] } else { args.paths };
    let source = InputSource::from_args(&paths)?;
    let mut validator = args.validator.load()?;
    let started = Instant::now();
    let (mut ok, mut rejected) = (0u64, 0u64);
    println!("{:<48} {:<9} {:<6} {:>11}  reason", "image", "status", "format", "size");
    let unreadable = validate_inputs(source, &mut validator, 4, |verdict| {
        let line = serde_json::to_value(&verdict)?;
        let text = |key: &str| line[key].as_str().unwrap_or("").to_string();
        let size = match (line["width"].as_u64(), line["height"].as_u64()) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => String::new(),
        };
        if text("status") == "ok" {
            ok += 1;
        } else {
            rejected += 1;
        }
        println!("{:<48} {:<9} {:<6} {:>11}  {}", text("file"), text("status"), text("format"), size, text("detail"));
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let total = ok + rejected;
    println!(
        "\n{total} images in {secs:.2} s ({:.0} images/s): {ok} valid, {rejected} rejected",
        total as f64 / secs.max(1e-9)
    );
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
