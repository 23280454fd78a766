//! Feeding local inputs (files, directories, stdin) through the embedded pipeline, shared by `fvision
//! run` and `fvision classify`.

use std::sync::Mutex;

use anyhow::Result;
use fvision_models::Classifier;
use fvision_pipeline::{run_pipeline, Item, Outcome, PipelineSettings, PipelineStats, Validate};
use fvision_records::{RejectReason, RejectedImage, Stage};

use crate::inputs::{InputError, InputSource};
use crate::output::progress;

/// Feeds local inputs through the pipeline, handing every outcome to `emit`: unreadable inputs are
/// reported on stderr and counted (the return value), inputs above the read limit become rejections
/// (stage `ingest`). Shows a progress bar on a terminal.
pub fn run_inputs(
    source: InputSource,
    validate: impl Validate,
    classifier: &Classifier,
    config: &PipelineSettings,
    mut emit: impl FnMut(Outcome) -> Result<()>,
) -> Result<(u64, PipelineStats)> {
    let bar = progress(source.len_hint(), "classifying");
    let early = Mutex::new(Vec::new());
    let unreadable = Mutex::new(0u64);
    let items = source.iter().filter_map(|input| match input.value {
        Ok(value) => Some(Item::new(input.name, value)),
        Err(err @ InputError::TooLarge { .. }) => {
            let rejected = RejectedImage::new(RejectReason::TooLarge, err.to_string(), Stage::Ingest, b"");
            if let Ok(mut early) = early.lock() {
                early.push(Outcome::Rejected { name: input.name, position: None, rejected: Box::new(rejected) });
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
        bar.suspend(|| emit(outcome))
    })?;
    for outcome in early.into_inner().unwrap_or_default() {
        stats.tally.record(&outcome);
        emit(outcome)?;
    }
    bar.finish_and_clear();
    Ok((unreadable.into_inner().unwrap_or(0), stats))
}
