//! `fvision classify`: validate, preprocess and classify local images with one model.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use std::sync::Mutex;

use fvision_models::{Classifier, ClassifierOptions, Registry, DEFAULT_MODEL};
use fvision_records::{Prediction, RejectReason, Stage};
use inference_sink::{run_pipeline, Item, PipelineConfig, PipelineStats, Validate};
use serde::Serialize;

use crate::inputs::{InputError, InputSource};
use crate::output::progress;

/// Classify images: validation (the SmartModule's checks, natively), faithful preprocessing and
/// batched ONNX inference with one model loaded once.
#[derive(Debug, Args)]
#[command(after_help = "\
Output: with --json one line per image, {\"file\", \"label\", \"class_index\", \"confidence\", \"top_k\",
\"model_name\", \"model_version\", \"processing_time_ms\"}, or {\"file\", \"status\": \"rejected\", \"reason\",
\"detail\"} for images that fail validation or decoding; otherwise a table.

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

/// Which model to load and how; shared by the subcommands that classify.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A preset name (`fvision models list`) or the path of a custom manifest (.toml).
    #[arg(long, short = 'm', default_value = DEFAULT_MODEL, env = "FVISION_MODEL")]
    pub model: String,

    /// Threads ONNX Runtime uses inside an operator [default: every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl ModelArgs {
    /// Resolves and loads the model, reporting the load time on stderr.
    pub fn load(&self) -> Result<Classifier> {
        let spec = Registry::open_default()?.resolve(&self.model)?;
        let mut options = ClassifierOptions::default();
        if let Some(threads) = self.threads {
            options.intra_threads = threads;
        }
        let classifier = Classifier::load(spec, &options).with_context(|| format!("loading model {}", self.model))?;
        eprintln!(
            "model {} v{} loaded in {} ms (warm-up {} ms){}",
            classifier.spec().manifest.name,
            classifier.spec().manifest.version,
            classifier.load_time().as_millis(),
            classifier.warm_up_time().as_millis(),
            if classifier.spec().manifest.real_weights { "" } else { " - WEIGHT-FREE model: outputs are meaningless" },
        );
        Ok(classifier)
    }
}

/// What became of one input.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// Classified.
    Classified {
        /// The input's name.
        file: String,
        /// The prediction.
        #[serde(flatten)]
        prediction: Box<Prediction>,
    },
    /// Rejected by validation or decoding.
    Rejected {
        /// The input's name.
        file: String,
        /// Always "rejected".
        status: &'static str,
        /// Stable reason code.
        reason: RejectReason,
        /// Human detail.
        detail: String,
        /// Where it was rejected.
        stage: Stage,
    },
}

impl From<inference_sink::Outcome> for Outcome {
    fn from(outcome: inference_sink::Outcome) -> Self {
        match outcome {
            inference_sink::Outcome::Classified { name, prediction } => Outcome::Classified { file: name, prediction },
            inference_sink::Outcome::Rejected { name, rejected } => {
                Outcome::rejected(&name, rejected.reason, rejected.detail, rejected.stage)
            }
        }
    }
}

impl Outcome {
    /// A rejection line.
    pub fn rejected(file: &str, reason: RejectReason, detail: String, stage: Stage) -> Self {
        Outcome::Rejected { file: file.to_string(), status: "rejected", reason, detail, stage }
    }
}

/// Entry point of `fvision classify`.
pub fn run(args: ClassifyArgs) -> Result<ExitCode> {
    let source = InputSource::from_args(&args.paths)?;
    let classifier = args.model.load()?;
    let params = image_validate::ValidationParams::default();
    let native =
        |values: &[&[u8]]| values.iter().map(|v| Some(image_validate::validate_value(v, &params))).collect::<Vec<_>>();
    let config = PipelineConfig {
        max_batch: usize::from(args.batch_size),
        top_k: usize::from(args.top_k),
        ..PipelineConfig::default()
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut table = Table::new(args.json);
    let (unreadable, _) = run_inputs(source, native, &classifier, &config, |outcome| table.write(&mut out, &outcome))?;
    out.flush()?;
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Feeds local inputs through the pipeline, handing every outcome to `emit`: unreadable inputs are
/// reported on stderr and counted (the return value), inputs above the read limit become rejections.
/// Shows a progress bar on a terminal.
pub fn run_inputs(
    source: InputSource,
    validate: impl Validate,
    classifier: &Classifier,
    config: &PipelineConfig,
    mut emit: impl FnMut(Outcome) -> Result<()>,
) -> Result<(u64, PipelineStats)> {
    let bar = progress(source.len_hint(), "classifying");
    let early = Mutex::new(Vec::new());
    let unreadable = Mutex::new(0u64);
    let items = source.iter().filter_map(|input| match input.value {
        Ok(value) => Some(Item { name: input.name, value }),
        Err(err @ InputError::TooLarge { .. }) => {
            if let Ok(mut early) = early.lock() {
                early.push(Outcome::rejected(&input.name, RejectReason::TooLarge, err.to_string(), Stage::Ingest));
            }
            None
        }
        Err(InputError::Io(err)) => {
            bar.suspend(|| eprintln!("fvision: cannot read {}: {err}", input.name));
            if let Ok(mut n) = unreadable.lock() {
                *n += 1;
            }
            None
        }
    });
    let mut stats = run_pipeline(items, validate, classifier, config, |outcome| {
        bar.inc(1);
        bar.suspend(|| emit(Outcome::from(outcome)))
    })?;
    for outcome in early.into_inner().unwrap_or_default() {
        stats.rejected += 1;
        emit(outcome)?;
    }
    bar.finish_and_clear();
    Ok((unreadable.into_inner().unwrap_or(0), stats))
}

/// Prints outcomes as JSON lines or as an aligned table.
pub struct Table {
    json: bool,
    header_done: bool,
}

impl Table {
    /// JSON lines when `json`, else a table with a header.
    pub fn new(json: bool) -> Self {
        Self { json, header_done: false }
    }

    /// Writes one outcome.
    pub fn write(&mut self, out: &mut impl Write, outcome: &Outcome) -> Result<()> {
        if self.json {
            serde_json::to_writer(&mut *out, outcome)?;
            out.write_all(b"\n")?;
            return Ok(());
        }
        if !self.header_done {
            writeln!(out, "{:<40} {:<28} {:>6} {:>9}  runner-up", "image", "label", "conf", "time ms")?;
            self.header_done = true;
        }
        match outcome {
            Outcome::Classified { file, prediction: p } => {
                let runner_up =
                    p.top_k.get(1).map(|c| format!("{} ({:.2})", c.label, c.confidence)).unwrap_or_default();
                writeln!(
                    out,
                    "{:<40} {:<28} {:>6.3} {:>9.1}  {runner_up}",
                    short(file, 40),
                    short(&p.label, 28),
                    p.confidence,
                    p.processing_time_ms
                )?;
            }
            Outcome::Rejected { file, reason, detail, .. } => {
                writeln!(out, "{:<40} REJECTED {reason}: {detail}", short(file, 40))?;
            }
        }
        Ok(())
    }
}

fn short(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let tail: String = text.chars().rev().take(width - 1).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}
