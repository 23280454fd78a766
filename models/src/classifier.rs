//! One ONNX Runtime session per model and process, shared by every worker (the job this replaces
//! cached the model per executor): loaded and checked against its manifest once, warmed up, then run
//! on batches.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use fvision_records::{prediction_id, ClassScore, Prediction, StageTimings};
use ort::session::Session;
use ort::value::TensorRef;

use crate::error::ModelError;
use crate::manifest::{Layout, ModelSpec, OutputKind};
use crate::preprocess::{ImageInfo, PreparedBatch, Preprocessor};
use crate::runtime::init_runtime;

/// How a model is loaded.
#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// Threads ONNX Runtime may use inside one operator (default: every core).
    pub intra_threads: usize,
    /// Images above this many pixels are refused before decoding.
    pub max_pixels: u64,
    /// ONNX Runtime's memory pattern: plans and keeps one block per input shape seen. Off by default: with
    /// batches of varying size it kept a block per size (8 MiB less peak RSS without, same throughput;
    /// docs/benchmarks.md).
    pub memory_pattern: bool,
    /// Decode JPEGs at least twice the resize target at a reduced scale ([`Preprocessor::set_fast_decode`]).
    pub fast_decode: bool,
    /// Whether ONNX Runtime's operator threads spin between operators instead of sleeping. Off by default:
    /// in the pipeline the decode workers need those cycles (measured: 10 % less CPU per image, pipeline /
    /// limit 0.82 instead of 0.76, idle p50 1.5x the floor instead of 1.8x; docs/benchmarks.md).
    pub intra_op_spinning: bool,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        Self {
            intra_threads: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            max_pixels: 50_000_000,
            memory_pattern: false,
            fast_decode: false,
            intra_op_spinning: false,
        }
    }
}

/// Name, element type and shape of a model input or output, as the ONNX file declares them
/// (`-1` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type, as ONNX Runtime names it.
    pub element: String,
    /// Dimensions; -1 is dynamic.
    pub shape: Vec<i64>,
}

/// Probabilities of one image, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The `k` best classes.
    pub top_k: Vec<ClassScore>,
}

/// A loaded model: its session, labels and preprocessing.
pub struct Classifier {
    spec: ModelSpec,
    labels: Vec<String>,
    session: Mutex<Session>,
    preprocessor: Preprocessor,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    load_time: Duration,
    warm_up_time: Duration,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("model", &self.spec.name()).finish_non_exhaustive()
    }
}

impl Classifier {
    /// Loads the runtime (once per process), the labels and the ONNX session; checks the graph's input
    /// and output against the manifest; runs one warm-up batch.
    pub fn load(spec: ModelSpec, options: &ClassifierOptions) -> Result<Self, ModelError> {
        let environment = init_runtime()?;
        let name = spec.name().to_string();
        let load_err =
            |source: ort::Error| ModelError::Load { model: name.clone(), path: spec.onnx_path.clone(), source };
        let labels_text = std::fs::read_to_string(&spec.labels_path).map_err(|e| {
            ModelError::Manifest(crate::error::ManifestError::Read { path: spec.labels_path.clone(), source: e })
        })?;
        let labels: Vec<String> = labels_text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.rsplit('\t').next().unwrap_or(l).trim().to_string())
            .collect();

        let started = Instant::now();
        let session = Session::builder(environment)
            .and_then(|b| b.with_intra_threads(options.intra_threads.max(1)).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| b.with_memory_pattern(options.memory_pattern).map_err(Into::into))
            .and_then(|b| b.with_intra_op_spinning(options.intra_op_spinning).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(&spec.onnx_path))
            .map_err(load_err)?;
        let load_time = started.elapsed();
        let describe = |outlet: &ort::value::Outlet| TensorInfo {
            name: outlet.name().to_string(),
            element: outlet.dtype().tensor_type().map(|t| format!("{t:?}")).unwrap_or_else(|| "non-tensor".into()),
            shape: outlet.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default(),
        };
        let inputs: Vec<TensorInfo> = session.inputs().iter().map(describe).collect();
        let outputs: Vec<TensorInfo> = session.outputs().iter().map(describe).collect();
        check_io(&spec, &inputs, &outputs, labels.len())?;

        let mut preprocessor = Preprocessor::new(&spec, options.max_pixels);
        preprocessor.set_fast_decode(options.fast_decode);
        let mut classifier = Self {
            spec,
            labels,
            session: Mutex::new(session),
            preprocessor,
            inputs,
            outputs,
            load_time,
            warm_up_time: Duration::ZERO,
        };
        let started = Instant::now();
        let zeros = vec![0f32; classifier.preprocessor.tensor_len()];
        classifier.probabilities(&zeros, 1)?;
        classifier.warm_up_time = started.elapsed();
        tracing::info!(model = %classifier.spec.name(), load_ms = load_time.as_millis(), "model loaded");
        Ok(classifier)
    }

    /// The manifest this model was loaded from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Class names, by index.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The preprocessing this model needs.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Hands a small JPEG of every image decoded from now on to `sink` (see
    /// [`Preprocessor::send_thumbnails`]): what the status page shows.
    pub fn send_thumbnails(&mut self, side: u32, sink: std::sync::Arc<dyn crate::ThumbnailSink>) {
        self.preprocessor.send_thumbnails(side, sink);
    }

    /// Inputs as the ONNX file declares them.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// Outputs as the ONNX file declares them.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// Time to create the session (graph optimisation included).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Time of the warm-up batch.
    pub fn warm_up_time(&self) -> Duration {
        self.warm_up_time
    }

    /// Runs the model on `n` images laid out back to back in `batch`; returns one probability vector
    /// per image (softmax applied when the model outputs logits).
    pub fn probabilities(&self, batch: &[f32], n: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        let model = self.spec.name().to_string();
        let fail = |action: String| ModelError::Inference { model: model.clone(), action, source: None };
        let ort_fail = |action: &'static str| {
            let model = model.clone();
            move |e: ort::Error| ModelError::Inference { model, action: action.into(), source: Some(e) }
        };
        let s = self.preprocessor.size() as usize;
        if n == 0 || batch.len() != n * self.preprocessor.tensor_len() {
            return Err(fail(format!("batch of {n} images needs {} floats, got {}", n * 3 * s * s, batch.len())));
        }
        let shape = match self.spec.manifest.input.layout {
            Layout::Nchw => [n, 3, s, s],
            Layout::Nhwc => [n, s, s, 3],
        };
        let input = TensorRef::from_array_view((shape, batch)).map_err(ort_fail("building the input tensor"))?;
        let input_name = self.spec.manifest.input.name.as_str();
        let output_name = self.spec.manifest.output.name.as_str();
        let mut session = self.session.lock().map_err(|_| fail("the session lock is poisoned".into()))?;
        let outputs = session.run(ort::inputs![input_name => input]).map_err(ort_fail("running the session"))?;
        let value = outputs.get(output_name).ok_or_else(|| fail(format!("no output `{output_name}`")))?;
        let (_, data) = value.try_extract_tensor::<f32>().map_err(ort_fail("reading the output tensor"))?;
        let classes = self.labels.len();
        if data.len() != n * classes {
            return Err(fail(format!("expected {n} x {classes} outputs, got {}", data.len())));
        }
        Ok(data
            .chunks_exact(classes)
            .map(|row| match self.spec.manifest.output.kind {
                OutputKind::Logits => softmax(row),
                OutputKind::Probabilities => row.to_vec(),
            })
            .collect())
    }

    /// The `k` most probable classes, best first (ties keep the lower index first).
    pub fn top_k(&self, probabilities: &[f32], k: usize) -> Classification {
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]).then(a.cmp(&b)));
        let top_k = order
            .into_iter()
            .take(k.max(1))
            .map(|i| ClassScore { label: self.labels[i].clone(), class_index: i, confidence: probabilities[i] })
            .collect();
        Classification { top_k }
    }

    /// Classifies a prepared batch in runs of at most the manifest's `max_batch` (zero-copy slices of
    /// the batch tensor), returning one prediction per image, in order. `threshold` only sets
    /// `above_threshold`; nothing is dropped here.
    pub fn classify_batch(
        &self,
        batch: &PreparedBatch,
        top_k: usize,
        threshold: f32,
    ) -> Result<Vec<Prediction>, ModelError> {
        let mut predictions = Vec::with_capacity(batch.len());
        let max = self.spec.manifest.max_batch;
        for start in (0..batch.len()).step_by(max) {
            let end = (start + max).min(batch.len());
            let started = Instant::now();
            let probabilities = self.probabilities(batch.tensor(start..end), end - start)?;
            let per_image_ms = started.elapsed().as_secs_f64() * 1e3 / (end - start) as f64;
            for (image, probs) in batch.images()[start..end].iter().zip(probabilities) {
                predictions.push(self.prediction(image, &probs, top_k, threshold, started, per_image_ms));
            }
        }
        Ok(predictions)
    }

    fn prediction(
        &self,
        image: &ImageInfo,
        probabilities: &[f32],
        top_k: usize,
        threshold: f32,
        inference_started: Instant,
        inference_ms: f64,
    ) -> Prediction {
        let Classification { top_k } = self.top_k(probabilities, top_k);
        let best =
            top_k.first().cloned().unwrap_or(ClassScore { label: String::new(), class_index: 0, confidence: 0.0 });
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let prepared_at = image.started + image.times.decode + image.times.resize + image.times.normalize;
        let manifest = &self.spec.manifest;
        Prediction {
            prediction_id: prediction_id(&image.meta.id, &image.digest, &manifest.name, &manifest.version),
            image_id: image.meta.id.clone(),
            label: best.label.clone(),
            class_index: best.class_index,
            confidence: best.confidence,
            top_k,
            model_name: manifest.name.clone(),
            model_version: manifest.version.clone(),
            processing_time_ms: ms(image.started.elapsed()),
            timings: StageTimings {
                decode_ms: ms(image.times.decode),
                preprocess_ms: ms(image.times.resize + image.times.normalize),
                queue_ms: ms(inference_started.saturating_duration_since(prepared_at)),
                inference_ms,
            },
            image_size_bytes: image.size_bytes,
            width: image.width,
            height: image.height,
            source: image.meta.source,
            bucket: image.meta.attribute("bucket").map(str::to_string),
            object_name: image.meta.attribute("object_name").map(str::to_string),
            event_time: image.meta.event_time.clone(),
            processed_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            above_threshold: best.confidence >= threshold,
        }
    }
}

/// Numerically stable softmax.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The graph must have the manifest's input (rank 4, matching layout and size) and output (one score
/// per label).
fn check_io(spec: &ModelSpec, inputs: &[TensorInfo], outputs: &[TensorInfo], classes: usize) -> Result<(), ModelError> {
    let mismatch = |detail: String| ModelError::Mismatch { model: spec.name().to_string(), detail };
    let names = |t: &[TensorInfo]| t.iter().map(|i| i.name.clone()).collect::<Vec<_>>().join(", ");
    let input = &spec.manifest.input;
    let found = inputs.iter().find(|i| i.name == input.name).ok_or_else(|| {
        mismatch(format!("manifest input.name = `{}`, the graph's inputs are: {}", input.name, names(inputs)))
    })?;
    let s = i64::from(input.size);
    let want: [i64; 4] = match input.layout {
        Layout::Nchw => [-1, 3, s, s],
        Layout::Nhwc => [-1, s, s, 3],
    };
    let fits = found.shape.len() == 4 && found.shape.iter().zip(want).skip(1).all(|(&d, w)| d == w || d < 0);
    if !fits {
        return Err(mismatch(format!(
            "input `{}` has shape {:?}; input.layout = {:?} and input.size = {s} need [batch, {}]",
            found.name,
            found.shape,
            input.layout,
            want[1..].iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        )));
    }
    let output = &spec.manifest.output;
    let found = outputs.iter().find(|o| o.name == output.name).ok_or_else(|| {
        mismatch(format!("manifest output.name = `{}`, the graph's outputs are: {}", output.name, names(outputs)))
    })?;
    match found.shape.last() {
        Some(&d) if d >= 0 && d as usize != classes => {
            Err(mismatch(format!("output `{}` has {d} classes but the label file has {classes} lines", found.name)))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
