//! Telemetry of the pipeline: one function per event, each counting with bounded labels (status, reason,
//! stage, model), named per Prometheus conventions. With no recorder installed these cost nothing.

use fvision_records::{Prediction, RejectedImage};

/// Images out of the pipeline, by status (`classified`, `rejected`), reason and stage.
pub const IMAGES_TOTAL: &str = "fvision_images_total";
/// Per-stage time of classified images, by stage (`decode`, `preprocess`, `queue`, `inference`).
pub const STAGE_SECONDS: &str = "fvision_stage_seconds";
/// End-to-end time of classified images.
pub const PROCESSING_SECONDS: &str = "fvision_processing_seconds";
/// Images per inference batch.
pub const BATCH_SIZE: &str = "fvision_batch_size";
/// Predictions below the confidence threshold.
pub const BELOW_THRESHOLD_TOTAL: &str = "fvision_below_threshold_total";
/// Time to load the model, by model.
pub const MODEL_LOAD_SECONDS: &str = "fvision_model_load_seconds";

/// A prediction left the pipeline.
pub fn image_classified(prediction: &Prediction) {
    metrics::counter!(IMAGES_TOTAL, "status" => "classified", "reason" => "", "stage" => "", "model" => prediction.model_name.clone())
        .increment(1);
    let t = &prediction.timings;
    for (stage, ms) in
        [("decode", t.decode_ms), ("preprocess", t.preprocess_ms), ("queue", t.queue_ms), ("inference", t.inference_ms)]
    {
        metrics::histogram!(STAGE_SECONDS, "stage" => stage).record(ms / 1e3);
    }
    metrics::histogram!(PROCESSING_SECONDS).record(prediction.processing_time_ms / 1e3);
    if !prediction.above_threshold {
        metrics::counter!(BELOW_THRESHOLD_TOTAL).increment(1);
    }
}

/// An image was rejected (it belongs on the dead-letter topic).
pub fn image_rejected(rejected: &RejectedImage) {
    metrics::counter!(
        IMAGES_TOTAL,
        "status" => "rejected",
        "reason" => rejected.reason.as_str(),
        "stage" => rejected.stage.as_str(),
        "model" => ""
    )
    .increment(1);
}

/// An inference batch ran.
pub fn batch_run(size: usize) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
}

/// The model was loaded.
pub fn model_loaded(model: &str, seconds: f64) {
    metrics::gauge!(MODEL_LOAD_SECONDS, "model" => model.to_string()).set(seconds);
}
