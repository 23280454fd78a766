//! The inference core against the real ONNX Runtime and the shipped models.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fvision_models::{Classifier, ClassifierOptions, ModelError, PreparedBatch, Registry};
use fvision_records::{EventMeta, RejectReason};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data").join(path)
}

fn load(name: &str) -> Classifier {
    let spec = Registry::open_default().unwrap().resolve(name).unwrap();
    Classifier::load(spec, &ClassifierOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The default model, loaded once for all tests of this binary (as the pipeline shares it).
fn efficientnet() -> &'static Classifier {
    static MODEL: OnceLock<Classifier> = OnceLock::new();
    MODEL.get_or_init(|| load("efficientnet-lite0"))
}

/// The files prepared straight into one batch tensor.
fn prepare(model: &Classifier, paths: &[PathBuf]) -> PreparedBatch {
    let mut batch = PreparedBatch::with_capacity(model.preprocessor(), paths.len());
    for path in paths {
        let bytes = std::fs::read(path).unwrap();
        let meta = EventMeta { id: path.display().to_string(), ..Default::default() };
        batch.push(model.preprocessor(), &bytes, meta).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    batch
}

struct Reference {
    file: String,
    class_index: usize,
    top1: usize,
    top1_prob: f32,
    stable: bool,
}

/// The fields of every row of a `data/imagenet-sample` TSV file, its header skipped.
fn sample_rows(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(data(&format!("imagenet-sample/{file}"))).unwrap();
    text.lines().skip(1).map(|line| line.split('\t').map(str::to_owned).collect()).collect()
}

fn references() -> Vec<Reference> {
    let first = |s: &str| s.split(',').next().unwrap().to_string();
    sample_rows("expected-top5.tsv")
        .iter()
        .map(|f| Reference {
            file: f[0].clone(),
            class_index: f[1].parse().unwrap(),
            top1: first(&f[2]).parse().unwrap(),
            top1_prob: first(&f[3]).parse().unwrap(),
            stable: f[5] == "yes",
        })
        .collect()
}

#[test]
fn efficientnet_reproduces_the_reference_preprocessing_on_the_imagenet_sample() {
    let model = efficientnet();
    let refs = references();
    assert_eq!(refs.len(), 100);
    let files: Vec<PathBuf> = refs.iter().map(|r| data(&format!("imagenet-sample/{}", r.file))).collect();
    let predictions = model.classify_batch(&prepare(model, &files), 5, 0.0).unwrap();
    let (mut correct, mut max_diff, mut stable_checked) = (0, 0f32, 0);
    let mut diffs: Vec<(f32, &str)> = refs
        .iter()
        .zip(&predictions)
        .filter(|(r, _)| r.stable)
        .map(|(r, p)| ((p.confidence - r.top1_prob).abs(), r.file.as_str()))
        .collect();
    diffs.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("largest top-1 probability differences: {:?}", &diffs[..5]);
    for (r, p) in refs.iter().zip(&predictions) {
        if p.class_index == r.class_index {
            correct += 1;
        }
        if r.stable {
            stable_checked += 1;
            assert_eq!(p.class_index, r.top1, "{}: top-1 differs from the reference", r.file);
            let diff = (p.confidence - r.top1_prob).abs();
            max_diff = max_diff.max(diff);
            if std::env::var_os("FVISION_PRINT_DIFFS").is_some() {
                println!("DIFF {diff:.4} {} {} {}", r.file, p.confidence, r.top1_prob);
            }
            assert!(diff <= 0.02, "{}: top-1 probability {} vs reference {}", r.file, p.confidence, r.top1_prob);
        }
    }
    println!(
        "top-1 {correct}/100, {stable_checked} filter-stable rows match, max probability difference {max_diff:.4}"
    );
    assert_eq!(stable_checked, 95);
    assert!(correct >= 88, "top-1 accuracy {correct}/100 is below 88");
}

/// The kernels ONNX Runtime's MLAS picks for INT8 (u8 x s8) convolutions on this CPU, in its order of
/// preference. With VNNI the dot products are exact; without it (AVX2, AVX-512 without VNNI) they pass through
/// saturating 16-bit sums, which only 7-bit weights (`reduce_range`) keep exact. INT8 accuracy therefore
/// depends on this, and every INT8 figure says which it came from.
fn int8_instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
            "AVX-512 VNNI"
        } else if is_x86_feature_detected!("avx512bw") {
            "AVX-512 without VNNI"
        } else if is_x86_feature_detected!("avxvnni") {
            "AVX-VNNI"
        } else if is_x86_feature_detected!("avx2") {
            "AVX2 without VNNI"
        } else {
            "SSE4.1 or older"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "not x86-64"
    }
}

/// Set for the emulated run of the INT8 check: the instruction set it must find, proving the emulation.
const EXPECT_INT8_ISA_ENV: &str = "FVISION_EXPECT_INT8_ISA";

#[test]
fn the_int8_preset_keeps_the_fp32_top1_on_the_imagenet_sample() {
    let isa = int8_instruction_set();
    if let Some(expected) = std::env::var_os(EXPECT_INT8_ISA_ENV) {
        assert_eq!(isa, expected.to_string_lossy(), "the emulated CPU is not the one asked for");
    }
    // Calibrated on views of data/demo-images only (models/tools/quantize.py), so the sample is unseen.
    let int8 = load("efficientnet-lite0-int8");
    let refs = references();
    let files: Vec<PathBuf> = refs.iter().map(|r| data(&format!("imagenet-sample/{}", r.file))).collect();
    let predictions = int8.classify_batch(&prepare(&int8, &files), 5, 0.0).unwrap();
    let fp32_correct = refs.iter().filter(|r| r.top1 == r.class_index).count();
    let correct = refs.iter().zip(&predictions).filter(|(r, p)| p.class_index == r.class_index).count();
    let agree: Vec<bool> = refs.iter().zip(&predictions).map(|(r, p)| p.class_index == r.top1).collect();
    let agreeing = agree.iter().filter(|a| **a).count();
    let stable_disagree: Vec<&str> =
        refs.iter().zip(&agree).filter(|(r, a)| r.stable && !**a).map(|(r, _)| r.file.as_str()).collect();
    println!(
        "INT8 kernels: {isa}. INT8 top-1 {correct}/100 (FP32 reference {fp32_correct}/100), same top-1 as FP32 on \
         {agreeing}/100"
    );
    assert!(
        correct + 1 >= fp32_correct,
        "{isa}: INT8 top-1 {correct}/100 is more than 1 point below FP32's {fp32_correct}"
    );
    assert!(
        agreeing >= 95,
        "{isa}: INT8 and FP32 agree on only {agreeing}/100; filter-stable disagreements: {stable_disagree:?}"
    );
}

/// The CPU QEMU emulates for the INT8 check without VNNI: AVX2 and FMA, no AVX-512 (QEMU cannot emulate it).
const NO_VNNI_CPU: &str = "Haswell";

#[test]
fn the_int8_preset_keeps_the_fp32_top1_without_vnni_too() {
    // The INT8 kernels differ by CPU, so one machine's verdict would say nothing about the other kind. The
    // check above runs on this CPU; here it runs again in QEMU's user-mode emulation of a CPU with AVX2 and no
    // VNNI (the saturating kernels), whatever this machine has. Slow (emulated), but never CPU-dependent.
    if std::env::var_os(EXPECT_INT8_ISA_ENV).is_some() {
        return; // this binary is the emulated child: the parent runs this test
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("qemu-x86_64")
        .args(["-cpu", NO_VNNI_CPU])
        .arg(&exe)
        .args(["--exact", "the_int8_preset_keeps_the_fp32_top1_on_the_imagenet_sample", "--nocapture"])
        .env(EXPECT_INT8_ISA_ENV, "AVX2 without VNNI")
        .output();
    let out = out.unwrap_or_else(|e| {
        panic!("cannot start qemu-x86_64 ({e}): install qemu-user (scripts/lib.sh ensure_qemu does) to check INT8 without VNNI")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: Vec<&str> = stderr.lines().filter(|l| !l.contains("TCG doesn't support")).collect();
    let stderr = stderr.join("\n");
    let figures = stdout.lines().find(|l| l.starts_with("INT8 kernels:")).unwrap_or("no INT8 figures printed");
    println!("emulated {NO_VNNI_CPU}: {figures}");
    assert!(out.status.success(), "the INT8 check failed on an emulated {NO_VNNI_CPU}:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed") && figures.contains("AVX2 without VNNI"), "{stdout}\n{stderr}");
}

/// One row of `expected-mobilenet_v2.tsv`: torchvision's own prediction for a sample image.
struct TorchvisionReference {
    file: String,
    top1: usize,
    top1_prob: f32,
}

fn torchvision_references() -> Vec<TorchvisionReference> {
    // file, class_index, top1_index, top1_prob, then the label as `synset<TAB>name`.
    sample_rows("expected-mobilenet_v2.tsv")
        .iter()
        .map(|f| TorchvisionReference {
            file: f[0].clone(),
            top1: f[2].parse().unwrap(),
            top1_prob: f[3].parse().unwrap(),
        })
        .collect()
}

#[test]
fn mobilenet_v2_classifies_the_imagenet_sample_like_torchvision() {
    let model = load("mobilenet_v2");
    assert!(model.spec().manifest.real_weights);
    let refs = torchvision_references();
    assert_eq!(refs.len(), 100);
    let files: Vec<PathBuf> = refs.iter().map(|r| data(&format!("imagenet-sample/{}", r.file))).collect();
    let predictions = model.classify_batch(&prepare(&model, &files), 5, 0.0).unwrap();
    let same_top1: Vec<bool> = refs.iter().zip(&predictions).map(|(r, p)| p.class_index == r.top1).collect();
    let mut diffs: Vec<(f32, &str)> =
        refs.iter().zip(&predictions).map(|(r, p)| ((p.confidence - r.top1_prob).abs(), r.file.as_str())).collect();
    diffs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let agreeing = same_top1.iter().filter(|s| **s).count();
    let close = diffs.iter().filter(|(d, _)| *d <= 0.02).count();
    let differing: Vec<&str> =
        refs.iter().zip(&same_top1).filter(|(_, s)| !**s).map(|(r, _)| r.file.as_str()).collect();
    println!(
        "mobilenet_v2: same top-1 as torchvision on {agreeing}/100 (differ: {differing:?}), top-1 probability \
         within 0.02 on {close}/100; largest differences {:?}",
        &diffs[..5]
    );
    // The issue's bar: at least 99 and 97. Measured 100 and 100, largest difference 0.0084; the 8-bit bilinear
    // resize, 1 off Pillow on 18 % of the values, got 99 and 97 with 0.033, which the last bound catches.
    assert!(agreeing >= 99, "same top-1 as torchvision on only {agreeing}/100: {differing:?}");
    assert!(close >= 97, "top-1 probability within 0.02 of torchvision's on only {close}/100: {:?}", &diffs[..5]);
    assert!(diffs[0].0 <= 0.015, "the resize no longer follows Pillow's bilinear: {:?}", &diffs[..5]);
}

/// A sample image enlarged four times and encoded again (quality 90): a large photo, as uploads often are.
fn enlarged(file: &str) -> Vec<u8> {
    let image = image::open(data(&format!("imagenet-sample/{file}"))).unwrap().to_rgb8();
    let (w, h) = image.dimensions();
    let big = image::imageops::resize(&image, w * 4, h * 4, image::imageops::FilterType::Lanczos3);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(big.as_raw(), w * 4, h * 4, image::ExtendedColorType::Rgb8)
        .unwrap();
    jpeg
}

#[test]
fn fast_decode_scales_large_jpegs_and_keeps_their_top1_and_full_size() {
    let spec = Registry::open_default().unwrap().resolve("efficientnet-lite0").unwrap();
    let fast =
        Classifier::load(spec, &ClassifierOptions { fast_decode: true, ..ClassifierOptions::default() }).unwrap();
    let full = efficientnet();
    let refs: Vec<Reference> = references().into_iter().filter(|r| r.stable).take(12).collect();
    let mut agree = 0;
    for r in &refs {
        let bytes = enlarged(&r.file);
        let (w, h) = image::load_from_memory(&bytes).unwrap().to_rgb8().dimensions();
        // Decoded at a reduced scale (the shorter side stays at least the 256 resize target), not at full size.
        let denom = fvision_models::jpeg::scale_denominator(w, h, 256);
        assert!(denom >= 4, "{}: {w}x{h} scaled by 1/{denom} only", r.file);
        let scaled = fvision_models::jpeg::decode_rgb8_scaled(&bytes, u64::MAX, Some(256)).unwrap();
        assert_eq!(scaled.dimensions(), (w.div_ceil(denom), h.div_ceil(denom)), "{}", r.file);
        assert!(w.min(h).div_ceil(denom) >= 256, "{}", r.file);
        let classify = |model: &Classifier| {
            let mut batch = PreparedBatch::with_capacity(model.preprocessor(), 1);
            batch.push(model.preprocessor(), &bytes, EventMeta::default()).unwrap();
            let info = batch.images()[0].clone();
            (model.classify_batch(&batch, 1, 0.0).unwrap().remove(0), info)
        };
        let ((slow, full_info), (quick, fast_info)) = (classify(full), classify(&fast));
        // The prediction reports the image's real size either way.
        assert_eq!((fast_info.width, fast_info.height), (w, h), "{}", r.file);
        assert_eq!((full_info.width, full_info.height), (w, h), "{}", r.file);
        agree += usize::from(slow.class_index == quick.class_index);
    }
    // Measured on all 100 enlarged sample images: the same top-1 on 97 (docs/benchmarks.md).
    assert!(
        agree + 1 >= refs.len(),
        "fast decode changed the top-1 of {} of {} images",
        refs.len() - agree,
        refs.len()
    );
}

#[test]
fn results_do_not_depend_on_batch_size() {
    let model = efficientnet();
    let files: Vec<PathBuf> =
        references().iter().take(8).map(|r| data(&format!("imagenet-sample/{}", r.file))).collect();
    let batch = prepare(model, &files);
    let together = model.probabilities(batch.tensor(0..8), 8).unwrap();
    for (i, row) in together.iter().enumerate() {
        let alone = model.probabilities(batch.tensor(i..i + 1), 1).unwrap();
        let diff = alone[0].iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4, "image {i}: max difference {diff} between batch 1 and batch 8");
    }
}

#[test]
fn one_model_serves_many_threads() {
    let model = efficientnet();
    let chelsea = data("demo-images/chelsea.jpg");
    let expected =
        model.classify_batch(&prepare(model, std::slice::from_ref(&chelsea)), 1, 0.0).unwrap()[0].class_index;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| model.classify_batch(&prepare(model, std::slice::from_ref(&chelsea)), 1, 0.0)))
            .collect();
        for worker in workers {
            assert_eq!(worker.join().unwrap().unwrap()[0].class_index, expected);
        }
    });
}

#[test]
fn every_preset_loads_and_runs() {
    let registry = Registry::open_default().unwrap();
    let names: Vec<&str> = registry.list().iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "efficientnet-lite0",
            "efficientnet-lite0-int8",
            "mobilenet_v2",
            "mobilenet_v2-keras",
            "mobilenet_v2-light",
            "resnet50",
            "vgg16"
        ]
    );
    let chelsea = data("demo-images/chelsea.jpg");
    for spec in registry.list() {
        let model = if spec.name() == "efficientnet-lite0" { efficientnet() } else { &load(spec.name()) };
        let images = prepare(model, &[chelsea.clone(), data("demo-images/coffee.jpg")]);
        let predictions = model.classify_batch(&images, 3, 0.5).unwrap();
        assert_eq!(predictions.len(), 2, "{}", spec.name());
        for p in &predictions {
            assert_eq!(p.top_k.len(), 3);
            assert!(p.confidence.is_finite() && p.confidence > 0.0 && p.confidence <= 1.0);
            assert_eq!(p.model_name, spec.name());
            if !spec.manifest.real_weights {
                // All 1000 logits are equal in the weight-free graphs: softmax is uniform.
                assert!((p.confidence - 0.001).abs() < 1e-4, "{}: {}", spec.name(), p.confidence);
                assert!(!p.above_threshold);
            }
        }
        assert!(model.load_time().as_nanos() > 0);
    }
    // The real model knows a cat when it sees one (ImageNet classes 281-285 are domestic cats).
    let cat = efficientnet().classify_batch(&prepare(efficientnet(), &[chelsea]), 1, 0.0).unwrap();
    assert!((281..=285).contains(&cat[0].class_index), "{:?}", cat[0].label);
}

fn custom_manifest(dir: &Path, body: &str) -> PathBuf {
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx");
    let text = body.replace("ONNX_DIR", &onnx.display().to_string());
    let path = dir.join("custom.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const CUSTOM: &str = r#"
name = "my-keras-net"
version = "2026.11"
real_weights = false
onnx = "ONNX_DIR/mobilenet_v2-light-nhwc.onnx"
labels = "ONNX_DIR/imagenet-labels.txt"
max_batch = 4
[input]
name = "input"
layout = "NHWC"
size = 224
channel_order = "BGR"
[preprocess]
resize = "squash"
filter = "lanczos3"
normalize = "custom"
mean = [0.4, 0.4, 0.4]
std = [0.3, 0.3, 0.3]
[output]
name = "logits"
kind = "logits"
"#;

#[test]
fn a_custom_manifest_loads_by_path_and_runs() {
    let dir = std::env::temp_dir().join(format!("fvision-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = custom_manifest(&dir, CUSTOM);
    let spec = Registry::open_default().unwrap().resolve(path.to_str().unwrap()).unwrap();
    let model = Classifier::load(spec, &ClassifierOptions::default()).unwrap();
    let images = prepare(&model, &vec![data("demo-images/rocket.jpg"); 6]);
    let predictions = model.classify_batch(&images, 1, 0.0).unwrap(); // 6 images, max_batch 4: two runs
    assert_eq!(predictions.len(), 6);
    assert_eq!(predictions[0].model_version, "2026.11");
    assert_eq!(predictions[0].prediction_id, predictions[5].prediction_id, "same image id, model and version");
}

#[test]
fn a_manifest_that_does_not_match_its_graph_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("fvision-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (CUSTOM.replace("name = \"input\"", "name = \"image\""), "the graph's inputs are: input"),
        (CUSTOM.replace("\"NHWC\"", "\"NCHW\""), "need [batch, 3, 224, 224]"),
        (CUSTOM.replace("size = 224", "size = 160"), "input.size = 160"),
        (CUSTOM.replace("name = \"logits\"", "name = \"probs\""), "the graph's outputs are: logits"),
    ];
    for (text, want) in cases {
        let spec = Registry::open_default().unwrap().resolve(custom_manifest(&dir, &text).to_str().unwrap()).unwrap();
        let err = Classifier::load(spec, &ClassifierOptions::default()).unwrap_err();
        assert!(matches!(err, ModelError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains(want), "{err}");
    }
    let err = Registry::open_default().unwrap().resolve("no-such-model").unwrap_err().to_string();
    assert!(err.contains("efficientnet-lite0") && err.contains("no-such-model"), "{err}");
}

#[test]
fn hostile_and_unusual_inputs_become_rgb_or_a_clear_rejection() {
    let model = efficientnet();
    let pre = model.preprocessor();
    let decode = |name: &str| pre.decode(&std::fs::read(data(&format!("bad-inputs/{name}"))).unwrap());
    // EXIF orientation 6: stored 240x320, upright 320x240.
    let upright = decode("exif-orientation-6-stored-240x320.jpg").unwrap();
    assert_eq!(upright.dimensions(), (320, 240));
    // 16-bit grey ramp 0..65535 becomes 0..255 by the high byte, replicated to R=G=B (not clamped white).
    let ramp = decode("grey-16bit-64x64.png").unwrap();
    let values: Vec<u8> = ramp.pixels().map(|p| p[0]).collect(); // the ramp runs in row-major order
    assert!(values[0] < 2 && values[values.len() - 1] > 250, "{:?}", &values[..8]);
    assert!(values.windows(2).all(|w| w[0] <= w[1]));
    assert!(ramp.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    // CMYK (Adobe, inverted) converts to the same picture as the RGB original it was made from.
    let cmyk = decode("cmyk.jpg").unwrap();
    let rgba = decode("rgba-alpha.png").unwrap(); // alpha dropped: the full photo
    let mean_diff = cmyk.as_raw().iter().zip(rgba.as_raw()).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>()
        / cmyk.as_raw().len() as f64;
    assert!(mean_diff < 12.0, "CMYK decodes to a different picture: mean difference {mean_diff:.1}");
    for name in [
        "greyscale.jpg",
        "rgb-16bit-64x64.png",
        "animated-3frames-64x48.gif",
        "valid-lossy-320x240.webp",
        "png-content-with-jpg-extension.jpg",
    ] {
        assert!(decode(name).is_ok(), "{name}");
    }
    // Tiny and extreme shapes go through the crop-aware resize without a huge intermediate, in the 8-bit
    // (bicubic) and the 16-bit (bilinear) path.
    let mobilenet = load("mobilenet_v2");
    for pre in [pre, mobilenet.preprocessor()] {
        for name in ["valid-1x1.png", "extreme-aspect-10000x2.png"] {
            let bytes = std::fs::read(data(&format!("bad-inputs/{name}"))).unwrap();
            let mut batch = PreparedBatch::with_capacity(pre, 1);
            batch.push(pre, &bytes, EventMeta::default()).unwrap();
            assert_eq!(batch.tensor(0..1).len(), pre.tensor_len(), "{name}");
            assert!(batch.tensor(0..1).iter().all(|v| v.is_finite()));
        }
    }
    // Bombs are refused from the header; broken data is a decode error, never a panic.
    assert_eq!(decode("bomb-10000x10000-grey-8bit.png").unwrap_err().reason, RejectReason::TooManyPixels);
    assert_eq!(decode("header-claims-100000x100000.png").unwrap_err().reason, RejectReason::TooManyPixels);
    assert_eq!(decode("png-corrupt-idat-bad-zlib-good-crc.png").unwrap_err().reason, RejectReason::DecodeError);
    assert_eq!(decode("random-bytes.jpg").unwrap_err().reason, RejectReason::UnknownFormat);
    assert_eq!(decode("zero-bytes.jpg").unwrap_err().reason, RejectReason::UnknownFormat);
}

#[test]
fn jpeg_decoding_is_bit_identical_to_pillow() {
    use sha2::Digest as _;
    let table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/pillow-rgb.tsv")).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(rows.len() >= 100, "the Pillow digests cover the sample, the demo images and the JPEG bad inputs");
    let mut differ = Vec::new();
    for row in rows {
        let [file, width, height, digest] = row.split('\t').collect::<Vec<_>>()[..] else { panic!("bad row {row}") };
        let rgb = fvision_models::jpeg::decode_rgb8(&std::fs::read(data(file)).unwrap(), 100_000_000)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(rgb.dimensions(), (width.parse().unwrap(), height.parse().unwrap()), "{file}");
        let ours: String = sha2::Sha256::digest(rgb.as_raw()).iter().map(|b| format!("{b:02x}")).collect();
        if ours != digest {
            differ.push(file);
        }
    }
    assert!(differ.is_empty(), "decoded RGB differs from Pillow's for {differ:?}");
    // What Pillow refuses, the decoder refuses too, with the reason Pillow gives.
    let truncated = std::fs::read(data("bad-inputs/truncated-40pct.jpg")).unwrap();
    let err = fvision_models::jpeg::decode_rgb8(&truncated, 100_000_000).unwrap_err();
    assert!(matches!(err, fvision_models::jpeg::JpegError::Truncated(_)), "{err}");
}
