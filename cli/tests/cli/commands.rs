//! The `fvision` binary as users run it: arguments, output lines, exit codes.

use fvision_tests::repo_root as repo;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use std::process::{Command, Output, Stdio};

fn fvision(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fvision"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fvision runs");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("fvision finishes")
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[test]
fn validate_prints_one_verdict_per_file_and_exits_zero_even_with_rejections() {
    let out = fvision(&["validate", "data/bad-inputs"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 20, "README.md is skipped, every image reported");
    for line in &lines {
        for key in ["file", "status", "reason", "detail", "format", "width", "height", "size_bytes"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let bomb = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with("bomb-10000x10000-grey-8bit.png")).unwrap();
    assert_eq!(bomb["status"], "rejected");
    assert_eq!(bomb["reason"], "too_many_pixels");
    assert_eq!(bomb["width"], 10000);
    let gif = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with(".gif")).unwrap();
    assert_eq!((gif["status"].as_str(), gif["format"].as_str()), (Some("ok"), Some("gif")));
}

#[test]
fn validate_full_decode_and_params_change_verdicts() {
    let file = "data/bad-inputs/png-corrupt-idat-bad-zlib-good-crc.png";
    let header = json_lines(&fvision(&["validate", file], None));
    assert_eq!(header[0]["status"], "ok");
    let full = json_lines(&fvision(&["validate", "--full-decode", file], None));
    assert_eq!(full[0]["reason"], "decode_error");
    let strict = json_lines(&fvision(&["validate", "-p", "allowed_formats=jpeg", file], None));
    assert_eq!(strict[0]["reason"], "unsupported_format");
}

#[test]
fn validate_reads_stdin_one_record_per_line() {
    let tench = std::fs::read(repo().join("data/imagenet-sample/n01440764_tench.JPEG")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&tench);
    let input = format!("{{\"id\":\"t1\",\"data\":\"{b64}\"}}\n{b64}\n\nnot an image\n{{broken\n");
    let out = fvision(&["validate", "-"], Some(input.as_bytes()));
    assert!(out.status.success());
    let lines = json_lines(&out);
    let statuses: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["file"].as_str().unwrap(), l["reason"].as_str().unwrap_or(l["status"].as_str().unwrap())))
        .collect();
    assert_eq!(
        statuses,
        [("-:1", "ok"), ("-:2", "ok"), ("-:4", "unknown_format"), ("-:5", "malformed_envelope")],
        "blank lines are skipped, the rest numbered by line"
    );
    assert_eq!(lines[0]["width"], 500);
}

#[test]
fn usage_and_io_errors_exit_nonzero_with_a_clear_message() {
    let missing = fvision(&["validate", "no/such/file.jpg"], None);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no/such/file.jpg"), "{stderr}");

    let bad_param = fvision(&["validate", "-p", "max_pixels=lots", "data/demo-images"], None);
    assert_eq!(bad_param.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_param.stderr);
    assert!(stderr.contains("max_pixels") && stderr.contains("positive integer"), "{stderr}");

    let not_pair = fvision(&["validate", "-p", "full_decode", "x"], None);
    assert_eq!(not_pair.status.code(), Some(2), "clap usage error");

    let no_paths = fvision(&["validate"], None);
    assert_eq!(no_paths.status.code(), Some(2));
}

#[test]
fn unreadable_files_are_reported_and_the_rest_still_validated() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("data/bad-inputs/valid-1x1.png"), dir.path().join("a.png")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone.png"), dir.path().join("b.png")).unwrap();
    let out = fvision(&["validate", dir.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "an unreadable input is an I/O error");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], "ok");
    assert!(String::from_utf8_lossy(&out.stderr).contains("b.png"));
}

#[test]
fn every_command_has_help_with_examples() {
    for args in [
        &["--help"][..],
        &["validate", "--help"],
        &["run", "--help"],
        &["classify", "--help"],
        &["models", "list", "--help"],
        &["models", "show", "--help"],
        &["bench", "validate", "--help"],
        &["bench", "inference", "--help"],
        &["bench", "pipeline", "--help"],
        &["dev", "up", "--help"],
        &["dev", "down", "--help"],
        &["deploy", "--help"],
        &["status", "--help"],
        &["cleanup", "--help"],
    ] {
        let out = fvision(args, None);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"), "{args:?}");
    }
}

#[test]
fn run_with_no_arguments_processes_the_demo_images() {
    let out = fvision(&["run"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for demo in ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg", "retina.jpg", "rocket.jpg"] {
        assert!(stdout.contains(demo), "{demo} missing:\n{stdout}");
    }
    assert!(stdout.contains("6 images") && stdout.contains("6 classified (100% success)"), "{stdout}");
    assert!(stdout.contains("espresso"), "the coffee photo is recognised:\n{stdout}");
    // Paths relative to the current directory, whole (they used to be cut mid-name).
    assert!(stdout.lines().any(|l| l.starts_with("data/demo-images/hubble_deep_field.jpg ")), "{stdout}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fvision"));
    command.args(["classify", "data/demo-images/coffee.jpg"]).current_dir(repo()).env("RUST_LOG", "info");
    let out = command.output().expect("fvision runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO") && stderr.contains("model loaded"), "the run logged something to check:\n{stderr}");
    assert!(!stderr.contains("\x1b["), "ANSI colour codes in a piped stderr:\n{stderr}");
}

#[test]
fn run_writes_every_outcome_to_a_jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let out = fvision(
        &["run", "data/bad-inputs", "--output", output.to_str().unwrap(), "--confidence-threshold", "0.5"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 20, "one outcome per input file");
    let rejected = lines.iter().filter(|l| l["status"] == "rejected").count();
    let classified = lines.iter().filter(|l| l.get("prediction_id").is_some()).count();
    assert_eq!(rejected + classified, 20);
    assert_eq!(rejected, 10, "9 rejected by the validator in header mode, 1 (bad zlib) at decode");
    let bad_zlib = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with("bad-zlib-good-crc.png")).unwrap();
    assert_eq!((bad_zlib["reason"].as_str(), bad_zlib["stage"].as_str()), (Some("decode_error"), Some("decode")));
    assert!(lines.iter().filter(|l| l.get("above_threshold").is_some()).all(|l| l["above_threshold"].is_boolean()));
}

#[test]
fn classify_prints_predictions_and_rejections_as_json() {
    let out = fvision(
        &[
            "classify",
            "--json",
            "--top-k",
            "3",
            "data/imagenet-sample/n01440764_tench.JPEG",
            "data/bad-inputs/zero-bytes.jpg",
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    let by_file = |suffix: &str| lines.iter().find(|l| l["file"].as_str().unwrap().ends_with(suffix)).unwrap();
    let tench = by_file("tench.JPEG");
    assert_eq!(tench["label"], "tench");
    assert_eq!(tench["class_index"], 0);
    assert_eq!(tench["top_k"].as_array().unwrap().len(), 3);
    for key in ["confidence", "model_name", "model_version", "processing_time_ms"] {
        assert!(tench.get(key).is_some(), "{key}");
    }
    let empty = by_file("zero-bytes.jpg");
    assert_eq!((empty["status"].as_str(), empty["reason"].as_str()), (Some("rejected"), Some("empty")));
    let unknown = fvision(&["classify", "--model", "no-such-model", "data/demo-images"], None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("efficientnet-lite0"));
}

/// `file -> torchvision's top-1` for the sample images, from `data/imagenet-sample/expected-mobilenet_v2.tsv`.
fn torchvision_top1() -> std::collections::HashMap<String, u64> {
    let text = std::fs::read_to_string(repo().join("data/imagenet-sample/expected-mobilenet_v2.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f[0].to_owned(), f[2].parse().unwrap())
        })
        .collect()
}

/// How many predictions (JSON lines with `file` and `class_index`) agree with torchvision's top-1.
fn agreeing_with_torchvision(lines: &[serde_json::Value]) -> usize {
    let expected = torchvision_top1();
    lines
        .iter()
        .filter(|l| {
            let file = l["file"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default();
            expected.get(file).is_some_and(|top1| l["class_index"].as_u64() == Some(*top1))
        })
        .count()
}

#[test]
fn model_mobilenet_v2_classifies_like_torchvision_by_flag_and_by_yaml() {
    let out = fvision(&["classify", "--json", "--model", "mobilenet_v2", "data/imagenet-sample"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 100);
    assert!(lines.iter().all(|l| l["model_name"] == "mobilenet_v2"));
    let agreeing = agreeing_with_torchvision(&lines);
    // models/tests/inference.rs holds the exact figures; here: real predictions, not the weight-free class 0.
    assert!(agreeing >= 99, "--model mobilenet_v2 agrees with torchvision on {agreeing}/100");

    // `model: mobilenet_v2` in the sink's YAML, through `fvision run --config`.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let shipped = std::fs::read_to_string(repo().join("fluvio-config/connectors/inference-sink.yaml")).unwrap();
    assert!(shipped.contains("  model: efficientnet-lite0\n"));
    let yaml = dir.join("inference-sink.yaml");
    std::fs::write(&yaml, shipped.replace("  model: efficientnet-lite0\n", "  model: mobilenet_v2\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let jsonl = dir.join("out.jsonl");
    let args =
        ["run", "--config", yaml.to_str().unwrap(), "--metrics-port", &port, "--output", jsonl.to_str().unwrap()];
    let images: Vec<String> = lines.iter().take(10).map(|l| l["file"].as_str().unwrap().to_owned()).collect();
    let out = fvision(&[&args[..], &images.iter().map(String::as_str).collect::<Vec<_>>()].concat(), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&jsonl).unwrap();
    let run_lines: Vec<serde_json::Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(run_lines.len(), 10, "{written}");
    assert!(run_lines.iter().all(|l| l["model_name"] == "mobilenet_v2"), "{written}");
    let agreeing = agreeing_with_torchvision(&run_lines);
    assert!(agreeing >= 9, "model: mobilenet_v2 in YAML agrees with torchvision on {agreeing}/10:\n{written}");
}

#[test]
fn models_list_and_show_describe_every_preset() {
    let list = String::from_utf8_lossy(&fvision(&["models", "list"], None).stdout).into_owned();
    let weights = |name: &str| {
        let row = list.lines().find(|l| l.split_whitespace().next() == Some(name));
        row.unwrap_or_else(|| panic!("{name} is not listed:\n{list}")).to_owned()
    };
    for name in ["efficientnet-lite0", "efficientnet-lite0-int8", "mobilenet_v2"] {
        assert!(weights(name).contains("real (trained)"), "{}", weights(name));
    }
    for name in ["mobilenet_v2-keras", "mobilenet_v2-light", "resnet50", "vgg16"] {
        assert!(weights(name).contains("WEIGHT-FREE (throughput only)"), "{}", weights(name));
    }
    assert_eq!(list.lines().count(), 8, "a header and seven presets:\n{list}");
    let show = fvision(&["models", "show", "mobilenet_v2-keras"], None);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success());
    assert!(text.contains("`input` Float32 [-1, 224, 224, 3]"), "shape read from the ONNX file:\n{text}");
    assert!(text.contains("WEIGHT-FREE"));
}

#[test]
fn run_reads_the_sink_connector_yaml() {
    // The shipped YAML serves metrics on 9464; on a shared machine that port may be taken, so use a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let yaml = "fluvio-config/connectors/inference-sink.yaml";
    let out = fvision(&["run", "--config", yaml, "--metrics-port", &port, "data/demo-images"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The shipped config sets confidence-threshold 0.3: the dimmer demo predictions are flagged, not dropped.
    assert!(stdout.contains("6 classified (100% success)"), "{stdout}");
    assert!(!stdout.contains(" 0 below the confidence threshold"), "{stdout}");

    let bad = fvision(
        &["run", "--config", "fluvio-config/connectors/test-data/error-threshold.yaml", "data/demo-images"],
        None,
    );
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("error-threshold.yaml") && stderr.contains("inference.confidence-threshold"), "{stderr}");
}

#[test]
fn run_serves_metrics_on_loopback_only_unless_told_otherwise() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Reading stdin keeps `fvision run` (and its endpoint) alive until stdin closes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fvision"))
        .args(["run", "--metrics-port", &port.to_string(), "-"])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the metrics endpoint did not come up");
        assert!(child.try_wait().unwrap().is_none(), "fvision run exited early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Bound to 127.0.0.1 only, another loopback address is free on the same port; bound to 0.0.0.0 (every
    // interface, reachable from the network), it would be taken.
    let other = std::net::TcpListener::bind(("127.0.0.2", port));
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(other.is_ok(), "the endpoint listens on every interface: {other:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("http://127.0.0.1:{port}/metrics")));
}

/// Envelopes around valid images, one file each, named so they run in order: (name, envelope).
fn envelope_files(dir: &Path, envelopes: &[(&str, String)]) {
    for (name, text) in envelopes {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn sample(name: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(repo().join("data/imagenet-sample").join(name)).unwrap())
}

/// Issue 28: a 9 MiB `id` or a 2 MiB `event_time` on a valid image was `ok` and became a prediction of that size
/// (which the outputs refuse, stalling the partition). Now both are `malformed_envelope` in the WASM validator,
/// as small dead letters, and the image behind them is classified.
#[test]
fn huge_envelope_fields_are_dead_letters_and_the_image_behind_is_classified() {
    let dir = tempfile::tempdir().unwrap();
    let tench = sample("n01440764_tench.JPEG");
    let png = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(repo().join("data/bad-inputs/valid-1x1.png")).unwrap());
    envelope_files(
        dir.path(),
        &[
            ("a-id-9mib.json", format!(r#"{{"id":"{}","data":"{png}"}}"#, "i".repeat(9 << 20))),
            (
                "b-event-time-2mib.json",
                format!(r#"{{"id":"t","event_time":"{}","data":"{png}"}}"#, "9".repeat(2 << 20)),
            ),
            ("c-id-600kb.json", format!(r#"{{"id":"{}","data":"{png}"}}"#, "k".repeat(600_000))),
            ("d-valid.json", format!(r#"{{"id":"behind","data":"{tench}"}}"#)),
        ],
    );
    let path = dir.path().to_str().unwrap();
    let verdicts = json_lines(&fvision(&["validate", path], None));
    let reasons: Vec<&str> =
        verdicts.iter().map(|l| l["reason"].as_str().unwrap_or(l["status"].as_str().unwrap())).collect();
    assert_eq!(reasons, ["malformed_envelope", "malformed_envelope", "malformed_envelope", "ok"], "{verdicts:?}");
    assert!(verdicts[0]["detail"].as_str().unwrap().contains("`id` is 9437184 bytes"), "{}", verdicts[0]);
    assert!(verdicts[1]["detail"].as_str().unwrap().contains("`event_time` is 2097152 bytes"), "{}", verdicts[1]);
    // The SmartModule param sets the cap.
    let other = tempfile::tempdir().unwrap();
    let id_60kb = other.path().join("id-60kb.json");
    std::fs::write(&id_60kb, format!(r#"{{"id":"{}","data":"{png}"}}"#, "s".repeat(60_000))).unwrap();
    let id_60kb = id_60kb.to_str().unwrap();
    assert_eq!(json_lines(&fvision(&["validate", id_60kb], None))[0]["reason"], "malformed_envelope");
    let raised = json_lines(&fvision(&["validate", "-p", "max_envelope_field_bytes=65536", id_60kb], None));
    assert_eq!(raised[0]["status"], "ok", "{raised:?}");

    let output = dir.path().join("out.jsonl");
    let out = fvision(&["run", path, "--output", output.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "one outcome per input");
    for line in text.lines() {
        assert!(line.len() < 1_200_000, "every outcome is small ({} bytes)", line.len());
    }
    let rejected: Vec<&str> = lines.iter().filter_map(|l| l["reason"].as_str()).collect();
    assert_eq!(rejected, ["malformed_envelope"; 3]);
    let classified: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("prediction_id").is_some()).collect();
    assert_eq!(classified.len(), 1);
    assert_eq!((classified[0]["image_id"].as_str(), classified[0]["label"].as_str()), (Some("behind"), Some("tench")));
}

/// Issue 28, "one image, one row": the prediction id carries a digest of the image bytes, so a camera reusing
/// its id gets a prediction id per image, and the same image sent again (in another base64 variant) the same one.
#[test]
fn prediction_ids_tell_images_under_one_id_apart_and_name_one_image_once() {
    let dir = tempfile::tempdir().unwrap();
    let tench = std::fs::read(repo().join("data/imagenet-sample/n01440764_tench.JPEG")).unwrap();
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tench);
    envelope_files(
        dir.path(),
        &[
            ("a.json", format!(r#"{{"id":"camera-1","data":"{}"}}"#, sample("n01440764_tench.JPEG"))),
            ("b.json", format!(r#"{{"id":"camera-1","data":"{}"}}"#, sample("n01530575_brambling.JPEG"))),
            ("c.json", format!(r#"{{"id":"camera-1","data":"{url_safe}"}}"#)),
            ("d.json", format!(r#"{{"id":"camera-2","data":"{}"}}"#, sample("n01440764_tench.JPEG"))),
        ],
    );
    let output = dir.path().join("out.jsonl");
    let out = fvision(&["run", dir.path().to_str().unwrap(), "--output", output.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let id = |file: &str| {
        let line = lines.iter().find(|l| l["file"].as_str().unwrap().ends_with(file)).unwrap();
        line["prediction_id"].as_str().unwrap_or_else(|| panic!("{line}")).to_string()
    };
    assert_ne!(id("a.json"), id("b.json"), "two images under one id: two predictions");
    assert_eq!(id("a.json"), id("c.json"), "one image delivered twice: one prediction id");
    assert_ne!(id("a.json"), id("d.json"), "the image id is still part of it");
}

/// Issue 28: a token on the command line is visible to every user of the machine (`ps`); the simulator takes it
/// from a file or the environment only.
#[test]
fn the_simulator_takes_no_token_on_its_command_line() {
    let out = fvision(&["simulate", "--mode", "gcs", "--gcs-token", "ya29.secret", "--count", "1"], None);
    assert_eq!(out.status.code(), Some(2), "an unknown flag");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--gcs-token") && !stderr.contains("ya29.secret"), "{stderr}");
    let help = String::from_utf8_lossy(&fvision(&["simulate", "--help"], None).stdout).into_owned();
    assert!(!help.contains("token") && help.contains("application default credentials"), "{help}");
}
