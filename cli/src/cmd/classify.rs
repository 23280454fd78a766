//! `fvision classify`: validate, preprocess and classify local images with one model.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use fvision_models::{Classifier, ClassifierOptions, PreparedBatch, Registry, DEFAULT_MODEL};
use fvision_records::{EventMeta, Prediction, RejectReason, Source, Stage, ValidationRecord};
use serde::Serialize;

use crate::inputs::{batches, readable, InputError, InputSource};
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

impl Outcome {
    fn rejected(file: &str, reason: RejectReason, detail: String, stage: Stage) -> Self {
        Outcome::Rejected { file: file.to_string(), status: "rejected", reason, detail, stage }
    }
}

/// Validates each input with `validate` (one verdict per value), prepares the accepted ones and
/// classifies them in batches, handing every outcome to `emit` in input order.
pub fn classify_inputs(
    source: InputSource,
    classifier: &Classifier,
    batch_size: usize,
    top_k: usize,
    threshold: f32,
    mut validate: impl FnMut(&[&[u8]]) -> Vec<Option<ValidationRecord>>,
    mut emit: impl FnMut(Outcome) -> Result<()>,
) -> Result<usize> {
    let bar = progress(source.len_hint(), "classifying");
    let mut unreadable = 0;
    for batch in batches(source.iter(), batch_size) {
        let mut verdicts = validate(&readable(&batch)).into_iter();
        // Outcomes in input order: rejections now, predictions once the batch has run.
        let mut slots: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
        let mut prepared = PreparedBatch::with_capacity(classifier.preprocessor(), batch.len());
        let mut prepared_slots: Vec<usize> = Vec::new();
        for input in &batch {
            let slot = match &input.value {
                Err(err @ InputError::TooLarge { .. }) => {
                    Some(Outcome::rejected(&input.name, RejectReason::TooLarge, err.to_string(), Stage::Ingest))
                }
                Err(InputError::Io(err)) => {
                    bar.suspend(|| eprintln!("fvision: cannot read {}: {err}", input.name));
                    unreadable += 1;
                    None
                }
                Ok(bytes) => match verdicts.next().flatten() {
                    Some(ValidationRecord::Ok(ok)) => {
                        let image = image_bytes(bytes, &ok.event.data);
                        let meta = EventMeta { source: Source::File, uri: Some(input.name.clone()), ..ok.event.meta };
                        match prepared.push(classifier.preprocessor(), &image, meta) {
                            Ok(()) => {
                                prepared_slots.push(slots.len());
                                None
                            }
                            Err(e) => Some(Outcome::rejected(&input.name, e.reason, e.detail, Stage::Decode)),
                        }
                    }
                    Some(ValidationRecord::Rejected(r)) => {
                        Some(Outcome::rejected(&input.name, r.reason, r.detail, Stage::Validate))
                    }
                    None => None, // dropped by on_invalid=drop
                },
            };
            slots.push(slot);
        }
        let predictions = classifier.classify_batch(&prepared, top_k, threshold)?;
        for (&slot, prediction) in prepared_slots.iter().zip(predictions) {
            slots[slot] =
                Some(Outcome::Classified { file: batch[slot].name.clone(), prediction: Box::new(prediction) });
        }
        for outcome in slots.into_iter().flatten() {
            emit(outcome)?;
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(unreadable)
}

/// The image file: the raw input when it is one, else the validated record's canonical base64.
fn image_bytes(raw: &[u8], data: &str) -> Vec<u8> {
    use base64::Engine as _;
    if image_validate::header::sniff(raw).is_some() {
        return raw.to_vec();
    }
    base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default()
}

/// Entry point of `fvision classify`.
pub fn run(args: ClassifyArgs) -> Result<ExitCode> {
    let source = InputSource::from_args(&args.paths)?;
    let classifier = args.model.load()?;
    let params = image_validate::ValidationParams::default();
    let native = |values: &[&[u8]]| values.iter().map(|v| Some(image_validate::validate_value(v, &params))).collect();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut table = Table::new(args.json);
    let batch = usize::from(args.batch_size);
    let unreadable = classify_inputs(source, &classifier, batch, usize::from(args.top_k), 0.0, native, |outcome| {
        table.write(&mut out, &outcome)
    })?;
    out.flush()?;
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
