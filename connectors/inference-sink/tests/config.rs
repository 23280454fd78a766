//! The sink's connector YAML: the shipped file, the bad fixtures beside it, secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fvision_connector_common::config::{OffsetStart, OffsetStrategy, PartitionSelection};
use inference_sink::config::{is_image_validate, load, BelowThreshold};
use inference_sink::ValidateAt;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fluvio-config/connectors")
}

#[test]
fn the_shipped_config_reads_as_documented() {
    let config = load(&config_dir().join("inference-sink.yaml"), None).unwrap();
    assert_eq!(config.meta.topic.name(), "images");
    assert_eq!(config.meta.kind, "inference-sink");
    let consumer = config.meta.consumer.as_ref().unwrap();
    assert_eq!(consumer.id.as_deref(), Some("inference-sink"));
    assert!(matches!(consumer.partition, Some(PartitionSelection::All(_))));
    assert_eq!(consumer.max_bytes.map(|b| b.as_u64()), Some(16 * 1024 * 1024));
    let offset = consumer.offset.as_ref().unwrap();
    assert_eq!((offset.start.clone(), offset.strategy), (Some(OffsetStart::Beginning), Some(OffsetStrategy::Manual)));
    assert_eq!(config.meta.producer.as_ref().unwrap().linger, Some(Duration::from_millis(10)));
    let inference = &config.inference;
    assert_eq!(inference.model, "efficientnet-lite0");
    assert_eq!((inference.confidence_threshold, inference.below_threshold), (0.3, BelowThreshold::Flag));
    assert_eq!((inference.max_batch, inference.max_wait), (4, Duration::from_millis(5)));
    assert_eq!((inference.predictions_topic.as_str(), inference.dlq_topic.as_str()), ("predictions", "images-dlq"));
    assert_eq!(config.validation.smartmodule, "image-validate");
    let params = config.validation.params.clone();
    assert_eq!(params["max_pixels"], "50000000");
    assert_eq!(params["full_decode"], "false");
    // The SmartModule itself accepts exactly these params.
    image_validate_params_are_valid(&params);
    assert_eq!((inference.validate_at, inference.summary_interval), (ValidateAt::Auto, Duration::from_secs(10)));
    assert_eq!(offset.flush_period.map(|p| p.secs), Some(2));
    assert!(inference.dashboard && inference.metrics_address.is_loopback());
    let pipeline = inference.pipeline();
    assert_eq!((pipeline.max_batch, pipeline.threshold), (4, 0.3));
}

fn image_validate_params_are_valid(params: &std::collections::BTreeMap<String, String>) {
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(fvision_connector_common::validator::check_params(pairs).is_ok());
}

#[test]
fn every_bad_fixture_fails_with_the_error_it_names() {
    let dir = config_dir().join("test-data");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    fixtures.sort();
    assert!(fixtures.len() >= 9);
    for path in fixtures {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("first line: # expect: ...");
        let err = load(&path, None).expect_err(&path.display().to_string()).to_string();
        assert!(err.starts_with(&path.display().to_string()), "the error names the file: {err}");
        assert!(err.contains(expect), "{}:\n  expected `{expect}`\n  got      `{err}`", path.display());
    }
}

#[test]
fn secrets_are_substituted_from_the_secrets_file() {
    let dir = std::env::temp_dir().join(format!("fvision-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.yaml");
    std::fs::write(
        &config,
        "apiVersion: 0.2.0\nmeta:\n  {version: 0.1.0, name: s, type: inference-sink, topic: \"${{ secrets.TOPIC }}\", secrets: [{name: TOPIC}]}\ninference: {model: \"${{secrets.MODEL}}\"}\n",
    )
    .unwrap();
    let secrets = dir.join("secrets.env");
    std::fs::write(&secrets, "# comment\nTOPIC=camera-7\nMODEL=resnet50\n").unwrap();
    let loaded = load(&config, Some(&secrets)).unwrap();
    assert_eq!(loaded.meta.topic.name(), "camera-7");
    assert_eq!(loaded.inference.model, "resnet50");
    std::fs::write(&secrets, "not a pair\n").unwrap();
    let err = load(&config, Some(&secrets)).unwrap_err().to_string();
    assert!(err.contains("secrets.env") && err.contains("line 1") && err.contains("NAME=value"), "{err}");
}

#[test]
fn transforms_name_image_validate_or_a_copy_of_it() {
    for ok in
        ["image-validate", "image-validate-v2", "infinyon/image-validate@0.1.0", "acme/image-validate-canary@1.0.0"]
    {
        assert!(is_image_validate(ok), "{ok}");
    }
    for bad in ["image-validator", "image-validate-", "jolt", "infinyon/jolt@0.4.1", ""] {
        assert!(!is_image_validate(bad), "{bad}");
    }
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let bad = config_dir().join("test-data/error-threshold.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inference-sink"))
        .args(["--config", bad.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .expect("inference-sink runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR") && stderr.contains("inference.confidence-threshold"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "ANSI colour codes in a piped stderr:\n{stderr}");
}
