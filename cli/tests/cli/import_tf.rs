//! `fvision models import` with real TensorFlow: small models built here with fixed seeds (in the importer's
//! own virtualenv, `support/tf_models.py`), imported, then classified by `fvision classify` and compared with
//! TensorFlow's own `predict` on the very tensors fvision fed the ONNX file.
//!
//! Its own test binary: every test shares one virtualenv check and one model-building run (TensorFlow takes
//! seconds to start), and none of the other CLI tests need TensorFlow. Where the virtualenv cannot be
//! installed (no network), each test reports itself skipped, except under CI, where that fails.

use fvision_tests::repo_root as repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use fvision_tests::cluster::report_skip;

fn fvision(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fvision"))
        .args(args)
        .current_dir(repo())
        // How an installed fvision finds the importer script: beside its presets folder.
        .env("FVISION_MODELS_DIR", repo().join("models/presets"))
        .env_remove("FVISION_TOOLS_DIR")
        .output()
        .expect("fvision runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The importer's Python and the folder of test models, or `None` (after reporting the skip).
struct Tf {
    python: PathBuf,
    models: PathBuf,
}

fn tf(test: &str) -> Option<&'static Tf> {
    static TF: OnceLock<Result<Tf, String>> = OnceLock::new();
    let ready = TF.get_or_init(|| {
        let out = fvision(&["models", "install-importer"]);
        if !out.status.success() {
            // One line: the harness counts the lines of its skip log. pip's own messages come before it.
            let all = text(&out);
            let last = all.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            return Err(format!("the TensorFlow importer cannot be installed: {last}"));
        }
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let python = PathBuf::from(line.trim().rsplit(": ").next().unwrap_or_default());
        let models = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("import-tf-{}", std::process::id()));
        let build = Command::new(&python)
            .arg(repo().join("cli/tests/support/tf_models.py"))
            .arg("build")
            .arg(&models)
            .output()
            .expect("python runs");
        assert!(build.status.success(), "building the test models: {}", text(&build));
        Ok(Tf { python, models })
    });
    match ready {
        Ok(tf) => Some(tf),
        Err(reason) => {
            assert!(std::env::var_os("CI").is_none(), "{test}: {reason}");
            report_skip(test, reason);
            None
        }
    }
}

/// A float32 .npy file as (shape, values).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'<f4'"), "{header}");
    let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> =
        shape.split(',').filter(|d| !d.trim().is_empty()).map(|d| d.trim().parse().unwrap()).collect();
    let values =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (shape, values)
}

/// TensorFlow's own prediction (`model.predict`, or the SavedModel's signature) on `inputs` (NHWC, or NCHW
/// as an `--layout NCHW` import saves them), one row per image.
fn tensorflow_predict(tf: &Tf, model: &Path, inputs: &Path) -> Vec<Vec<f32>> {
    let out = inputs.with_extension("tf.npy");
    let run = Command::new(&tf.python)
        .arg(repo().join("cli/tests/support/tf_models.py"))
        .arg("predict")
        .args([model, inputs, &out])
        .output()
        .expect("python runs");
    assert!(run.status.success(), "TensorFlow predict: {}", text(&run));
    let (shape, values) = read_npy(&out);
    assert_eq!(shape.len(), 2, "{shape:?}");
    values.chunks(shape[1]).map(<[f32]>::to_vec).collect()
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// What one successful import gave: its manifest and TensorFlow's own prediction on the check's inputs.
struct Imported {
    manifest: PathBuf,
    predicted: Vec<Vec<f32>>,
}

/// Runs `fvision models import`, checks the difference it reports (at most 1e-4) and the manifest's lines, and
/// runs TensorFlow's `predict` on the very tensors the import fed the ONNX file.
fn import(tf: &Tf, model: &str, extra: &[&str], manifest_lines: &[&str]) -> Imported {
    let source = tf.models.join(model);
    let out = tf.models.join(format!("{model}.imported"));
    let inputs = tf.models.join(format!("{model}.inputs.npy"));
    let mut args = vec!["models", "import", source.to_str().unwrap(), "--out", out.to_str().unwrap(), "--force"];
    args.extend(["--save-check-inputs", inputs.to_str().unwrap()]);
    args.extend(extra);
    let started = std::time::Instant::now();
    let run = fvision(&args);
    let report = text(&run);
    assert!(run.status.success(), "{report}");
    eprintln!("import {model} took {:.1} s:\n{report}", started.elapsed().as_secs_f64());
    let diff: f64 = report
        .split("largest |TensorFlow - ONNX| = ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no difference reported: {report}"))
        .parse()
        .unwrap();
    assert!(diff <= 1e-4, "{model}: {diff}");
    let manifest = out.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for expected in manifest_lines {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    Imported { manifest, predicted: tensorflow_predict(tf, &source, &inputs) }
}

/// `fvision classify --json` on the sample images, one JSON line per image, sorted by file.
fn classify(manifest: &Path, batch: &str) -> Vec<serde_json::Value> {
    let args = ["classify", "--json", "--top-k", "3", "--batch-size", batch, "--model", manifest.to_str().unwrap()];
    let out = fvision(&[&args[..], &["data/imagenet-sample"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let mut lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.sort_by(|a, b| a["file"].as_str().cmp(&b["file"].as_str()));
    lines
}

/// Checks classify against TensorFlow: the same top-1 and the same top-k probabilities within 1e-4, image
/// by image (rows of `predicted` are the sample images in file-name order, as the import preprocessed them).
fn assert_agrees(lines: &[serde_json::Value], predicted: &[Vec<f32>], probabilities: bool, labels: Option<&[&str]>) {
    assert_eq!(lines.len(), predicted.len(), "one prediction per sample image");
    assert_eq!(lines.len(), 100);
    let mut top1_checked = 0;
    for (line, row) in lines.iter().zip(predicted) {
        let probs: Vec<f64> = if probabilities { row.iter().map(|&p| p as f64).collect() } else { softmax(row) };
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        // A near-tie (gap under 1e-5) may order either way in either runtime; the random test models have none
        // on these images, and a missing guard would make a tie a false failure.
        if probs[order[0]] - probs[order[1]] > 1e-5 {
            top1_checked += 1;
            assert_eq!(line["class_index"].as_u64(), Some(order[0] as u64), "top-1 of {}", line["file"]);
        }
        let confidence = line["confidence"].as_f64().unwrap();
        assert!((confidence - probs[order[0]]).abs() < 1e-4, "{}: {confidence} vs {}", line["file"], probs[order[0]]);
        for entry in line["top_k"].as_array().unwrap() {
            let index = entry["class_index"].as_u64().unwrap() as usize;
            let p = entry["confidence"].as_f64().unwrap();
            assert!((p - probs[index]).abs() < 1e-4, "{}: class {index} {p} vs {}", line["file"], probs[index]);
        }
        if let Some(labels) = labels {
            assert_eq!(line["label"].as_str(), Some(labels[line["class_index"].as_u64().unwrap() as usize]));
        }
    }
    assert!(top1_checked >= 90, "only {top1_checked} of 100 images without a near-tie: the test model is degenerate");
}

#[test]
fn a_keras_file_imports_and_classifies_like_tensorflow_predict() {
    let Some(tf) = tf("a_keras_file_imports_and_classifies_like_tensorflow_predict") else { return };
    let labels: Vec<String> = (0..10).map(|i| format!("kind-{i}")).collect();
    let labels_file = tf.models.join("tiny-labels.txt");
    std::fs::write(&labels_file, labels.join("\n") + "\n").unwrap();
    let lines = [
        "name = \"tiny\"",
        "layout = \"NHWC\"",
        "size = 32",
        "normalize = \"custom\"\nmean = [0.5, 0.4, 0.3]\nstd = [0.25, 0.2, 0.3]",
        "kind = \"logits\"",
    ];
    let custom = ["--preprocess", "custom", "--mean", "0.5,0.4,0.3", "--std", "0.25,0.2,0.3"];
    let named = ["--labels", labels_file.to_str().unwrap(), "--name", "tiny"];
    let imported = import(tf, "tiny.keras", &[&custom[..], &named].concat(), &lines);
    let names: Vec<&str> = labels.iter().map(String::as_str).collect();
    let classified = classify(&imported.manifest, "8");
    assert_agrees(&classified, &imported.predicted, false, Some(&names));
    runs_wherever_a_preset_does(tf, &imported.manifest, &classified);
}

/// `fvision run --model MANIFEST` and the sink's YAML with `model: MANIFEST` label every sample image as
/// `fvision classify` did.
fn runs_wherever_a_preset_does(tf: &Tf, manifest: &Path, classified: &[serde_json::Value]) {
    let shipped = std::fs::read_to_string(repo().join("fluvio-config/connectors/inference-sink.yaml")).unwrap();
    assert!(shipped.contains("model: efficientnet-lite0"), "the shipped YAML names its model");
    let yaml = tf.models.join("imported-sink.yaml");
    std::fs::write(&yaml, shipped.replace("model: efficientnet-lite0", &format!("model: {}", manifest.display())))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let jsonl = tf.models.join("imported-run.jsonl");
    let (manifest, yaml, jsonl_arg) = (manifest.to_str().unwrap(), yaml.to_str().unwrap(), jsonl.to_str().unwrap());
    for how in [vec!["--model", manifest], vec!["--config", yaml, "--metrics-port", &port]] {
        let _ = std::fs::remove_file(&jsonl);
        let out = fvision(&[&["run", "--output", jsonl_arg][..], &how, &["data/imagenet-sample"]].concat());
        assert!(out.status.success(), "{how:?}: {}", text(&out));
        let mut lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines.sort_by(|a, b| a["file"].as_str().cmp(&b["file"].as_str()));
        assert_eq!(lines.len(), classified.len(), "{how:?}");
        for (run, classify) in lines.iter().zip(classified) {
            assert_eq!((&run["file"], &run["label"]), (&classify["file"], &classify["label"]), "{how:?}: {run}");
        }
    }
}

#[test]
fn a_legacy_h5_file_imports_and_classifies_like_tensorflow_predict() {
    let Some(tf) = tf("a_legacy_h5_file_imports_and_classifies_like_tensorflow_predict") else { return };
    let lines = ["size = 40", "normalize = \"torch\"", "resize = \"squash\"", "kind = \"probabilities\""];
    let imported = import(tf, "legacy.h5", &["--preprocess", "torch", "--resize", "squash"], &lines);
    assert_agrees(&classify(&imported.manifest, "8"), &imported.predicted, true, None);
}

#[test]
fn a_saved_model_imports_and_classifies_like_tensorflow_predict() {
    let Some(tf) = tf("a_saved_model_imports_and_classifies_like_tensorflow_predict") else { return };
    let lines =
        ["size = 48", "layout = \"NCHW\"", "normalize = \"caffe\"", "channel_order = \"BGR\"", "kind = \"logits\""];
    let options = ["--preprocess", "caffe", "--filter", "catmull-rom", "--layout", "NCHW"];
    let imported = import(tf, "saved_model", &options, &lines);
    assert_agrees(&classify(&imported.manifest, "8"), &imported.predicted, false, None);
}

#[test]
fn a_keras_mobilenet_v2_imports_and_runs_at_batch_1_and_8() {
    let Some(tf) = tf("a_keras_mobilenet_v2_imports_and_runs_at_batch_1_and_8") else { return };
    let imported = import(tf, "mobilenet_v2.keras", &[], &["size = 224", "kind = \"logits\""]);
    let (one, eight) = (classify(&imported.manifest, "1"), classify(&imported.manifest, "8"));
    assert_agrees(&one, &imported.predicted, false, None);
    assert_agrees(&eight, &imported.predicted, false, None);
}

#[test]
fn broken_unsupported_and_wrongly_shaped_models_fail_naming_the_file() {
    let Some(tf) = tf("broken_unsupported_and_wrongly_shaped_models_fail_naming_the_file") else { return };
    for (model, expected) in [
        ("broken.keras", "cannot be loaded: not a .keras file"),
        ("custom_layer.keras", "has a layer the importer cannot convert: custom layer `Doubler`"),
        ("feature_map.keras", "has the wrong output shape: output shape [None, 30, 30, 4]; expected [batch, classes]"),
        // An op tf2onnx has no conversion for (it only logs it): refused before ONNX Runtime sees the graph.
        (
            "unconvertible_op",
            "has a layer the importer cannot convert: TensorFlow op `Dilation2D` has no ONNX conversion",
        ),
    ] {
        let source = tf.models.join(model);
        let out = tf.models.join(format!("{model}.imported"));
        let run = fvision(&["models", "import", source.to_str().unwrap(), "--out", out.to_str().unwrap(), "--force"]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{model}: {}", text(&run));
        assert!(stderr.contains(source.to_str().unwrap()) && stderr.contains(expected), "{model}: {stderr}");
        assert!(!out.join("manifest.toml").exists(), "{model}: no manifest for a failed import");
    }
}

#[test]
fn a_conversion_above_the_tolerance_fails_and_writes_no_manifest() {
    let Some(tf) = tf("a_conversion_above_the_tolerance_fails_and_writes_no_manifest") else { return };
    // BGR minus the means puts inputs in -124..152, where float32 rounding differs by ~1e-5 between runtimes.
    let source = tf.models.join("saved_model");
    let out = tf.models.join("strict.imported");
    let (source_arg, out_arg) = (source.to_str().unwrap(), out.to_str().unwrap());
    let run =
        fvision(&["models", "import", source_arg, "--out", out_arg, "--preprocess", "caffe", "--tolerance", "1e-9"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{}", text(&run));
    let expected = format!("the ONNX file converted from {source_arg} does not compute what TensorFlow computes");
    assert!(stderr.contains(&expected) && stderr.contains("(tolerance 1e-9)"), "{stderr}");
    assert!(out.join("model.onnx").is_file() && !out.join("manifest.toml").exists());
}

/// Issue 30: the importer is installed on first use, saying so with what it downloads, and an install that
/// cannot run is a clear error naming where it installs and what it needs. Here without a usable Python
/// (`FVISION_PYTHON` names none) and with an empty cache, so nothing is downloaded.
#[test]
fn a_first_use_says_what_it_installs_and_an_install_that_cannot_run_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.keras");
    std::fs::write(&model, b"not read: the importer is installed first").unwrap();
    let cache = dir.path().join("cache");
    let out = Command::new(env!("CARGO_BIN_EXE_fvision"))
        .args(["models", "import", model.to_str().unwrap(), "--out", dir.path().join("out").to_str().unwrap()])
        .env("FVISION_MODELS_DIR", repo().join("models/presets"))
        .env_remove("FVISION_TOOLS_DIR")
        .env("FLUVIO_VISION_CACHE", &cache)
        .env("FVISION_PYTHON", dir.path().join("no-python"))
        .output()
        .expect("fvision runs");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    let venv = cache.join("importer-tf");
    assert!(
        said.contains(&format!("installing the TensorFlow importer (first use only) into {}", venv.display()))
            && said.contains("tf2onnx 1.17.0"),
        "the first use says what it installs:\n{said}"
    );
    assert!(
        said.contains(&format!("cannot install the TensorFlow importer into {}", venv.display()))
            && said.contains("needs python3 with venv and access to PyPI")
            && said.contains("python3 -m venv did not start"),
        "a clear error:\n{said}"
    );
    assert!(!dir.path().join("out").join("manifest.toml").exists(), "no manifest");
}
