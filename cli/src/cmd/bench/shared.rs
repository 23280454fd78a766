//! What several benchmarks share: the sample inputs, the interleaved timing loop, and the per-image cost
//! of a model.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use fvision_records::{EventMeta, ImageEvent, Source};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::data::imagenet_sample;
use crate::inputs::InputSource;
use crate::output::progress;

/// The paths given, or the shipped ImageNet sample.
pub fn sample_or(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if paths.is_empty() {
        Ok(vec![imagenet_sample()?])
    } else {
        Ok(paths.to_vec())
    }
}

/// Runs `pass(i)` for each of `modes` modes in turn, round after round, until every mode has spent
/// `budget`: interleaving spreads the machine's drift over all modes alike. Returns the time spent and the
/// passes run per mode.
pub fn interleaved(
    modes: usize,
    budget: Duration,
    bar: &ProgressBar,
    mut pass: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<(Duration, u64)>> {
    let mut spent = vec![(Duration::ZERO, 0u64); modes];
    while spent.iter().any(|(s, _)| *s < budget) {
        for (i, (time, passes)) in spent.iter_mut().enumerate() {
            if *time >= budget {
                continue;
            }
            let start = Instant::now();
            pass(i)?;
            *time += start.elapsed();
            *passes += 1;
        }
        bar.set_position(spent.iter().map(|(s, _)| s.min(&budget).as_secs_f64()).sum::<f64>() as u64);
    }
    bar.finish_and_clear();
    Ok(spent)
}

/// Reads the images and wraps each in an `ImageEvent` JSON envelope, as sources write them (or
/// leaves them raw). Returns each record value with the image's size.
pub fn record_values(paths: &[PathBuf], raw: bool) -> Result<Vec<(Vec<u8>, u64)>> {
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
pub struct BatchResult {
    pub batch_size: usize,
    pub runs: u64,
    pub ms_per_image: f64,
    pub images_per_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct InferenceReport {
    pub model: String,
    pub real_weights: bool,
    pub load_ms: f64,
    pub images: usize,
    pub decode_ms: f64,
    pub resize_ms: f64,
    pub normalize_ms: f64,
    pub inference: Vec<BatchResult>,
    pub best_batch_size: usize,
    pub best_images_per_sec: f64,
    pub preprocess_to_inference: f64,
}

/// Prepares every file once (timing each step), then runs inference at each batch size for `seconds`
/// (sizes interleaved run by run).
pub fn bench_model(
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
    let bar = progress(Some((seconds * sizes.len() as f64).ceil() as u64), model.spec().name());
    let spent = interleaved(sizes.len(), budget, &bar, |i| {
        let b = sizes[i];
        model.probabilities(prepared.tensor(0..b), b)?;
        Ok(())
    })?;
    let inference: Vec<BatchResult> = sizes
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let (time, runs) = spent[i];
            let ms = time.as_secs_f64() * 1e3 / (runs as f64 * b as f64);
            BatchResult { batch_size: b, runs, ms_per_image: ms, images_per_sec: 1e3 / ms }
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
