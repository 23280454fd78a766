//! The `fvision` binary as users run it: arguments, output lines, exit codes.

use fvision_tests::repo_root as repo;
use std::io::Write;

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
