//! The sink's connector YAML: the shipped file, the bad fixtures beside it, secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fvision_connector_common::config::{OffsetStart, OffsetStrategy, PartitionSelection};
use fvision_sink_config::{is_image_validate, load, BelowThreshold, ValidateAt};

use fvision_tests::fixtures::connectors_dir as config_dir;

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
    assert_eq!(config.validation.smartmodule, "fluvio-vision/image-validate@0.1.0");
    let params = config.validation.params.clone();
    assert_eq!(params["max_pixels"], "50000000");
    assert_eq!(params["full_decode"], "false");
    // The SmartModule itself accepts exactly these params.
    image_validate_params_are_valid(&params);
    assert_eq!((inference.validate_at, inference.summary_interval), (ValidateAt::Auto, Duration::from_secs(10)));
    assert_eq!((inference.stop_timeout, inference.read_timeout), (Duration::from_secs(30), Duration::from_secs(10)));
    assert_eq!(offset.flush_period.map(|p| p.secs), Some(2));
    assert!(inference.dashboard && inference.metrics_address.is_loopback());
    let pipeline = inference.pipeline();
    assert_eq!((pipeline.max_batch, pipeline.threshold), (4, 0.3));
    assert_eq!(inference.metrics_address, std::net::Ipv4Addr::LOCALHOST, "metrics on this host only");
    assert_eq!(config.validation.dead_letter_payload_cap.bytes(), 1 << 20);
    assert_eq!(config.validation.params["dead_letter_payload_cap"], "1048576");
}

#[test]
fn the_dead_letter_cap_reaches_the_smartmodule_and_must_agree_with_its_param() {
    let dir = tempfile::tempdir().unwrap();
    let write = |inference: &str, with: &str| {
        let path = dir.path().join("cap.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: 0.2.0\nmeta: {{version: 0.1.0, name: s, type: inference-sink, topic: {{meta: {{name: images}}}}}}\n\
                 inference: {{{inference}}}\ntransforms:\n  - uses: image-validate\n    with: {{{with}}}\n"
            ),
        )
        .unwrap();
        path
    };
    // Without any setting: the default, and the metrics endpoint on loopback.
    let config = load(&write("", ""), None).unwrap();
    assert_eq!(config.inference.metrics_address, std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(config.validation.dead_letter_payload_cap.bytes(), 1 << 20);
    // The setting is passed to the SmartModule.
    let config = load(&write("dead-letter-payload-cap: 64 KiB", ""), None).unwrap();
    assert_eq!(config.validation.params["dead_letter_payload_cap"], "65536");
    // The param alone sets the sink's cap too.
    let config = load(&write("", "dead_letter_payload_cap: \"32768\""), None).unwrap();
    assert_eq!(config.validation.dead_letter_payload_cap.bytes(), 32768);
    // Two different values, or one too small for the kept head, are errors naming the field.
    let err = load(&write("dead-letter-payload-cap: 64 KiB", "dead_letter_payload_cap: \"32768\""), None).unwrap_err();
    assert!(err.to_string().contains("inference.dead-letter-payload-cap"), "{err}");
    let err = load(&write("dead-letter-payload-cap: 1 KiB", ""), None).unwrap_err();
    assert!(err.to_string().contains("at least 16 KiB"), "{err}");
}

fn image_validate_params_are_valid(params: &std::collections::BTreeMap<String, String>) {
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(fvision_connector_common::validator::check_params(pairs).is_ok());
}

#[test]
fn every_bad_fixture_fails_with_the_error_it_names() {
    fvision_tests::fixtures::check_bad_fixtures("error-", 9, |path| load(path, None));
}

#[test]
fn secrets_are_substituted_from_the_secrets_file() {
    let dir = std::env::temp_dir().join(format!("fvision-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.yaml");
    std::fs::write(
        &config,
        "apiVersion: 0.2.0\nmeta:\n  {version: 0.1.0, name: s, type: inference-sink, topic: {meta: {name: \"${{ secrets.TOPIC }}\"}}, secrets: [{name: TOPIC}, {name: MODEL}]}\ninference: {model: \"${{secrets.MODEL}}\"}\n",
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
fn the_shipped_external_sink_configs_read_as_documented() {
    let dir = std::env::temp_dir().join(format!("fvision-sink-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = dir.join("secrets.env");
    std::fs::write(
        &secrets,
        "GCP_PROJECT=my-project\nBIGQUERY_KEY_FILE=/etc/bq.json\nKAFKA_BROKERS=k1:9092,k2:9092\nKAFKA_USERNAME=u\n\
         KAFKA_PASSWORD=p\nGCS_BUCKET=my-bucket\nGCS_KEY_FILE=/etc/gcs.json\n",
    )
    .unwrap();
    let load_one = |name: &str| {
        let path = config_dir().join(name);
        load(&path, Some(&secrets)).unwrap_or_else(|e| panic!("{e}"))
    };
    let all = load_one("inference-sink-all.yaml").inference;
    let path = Path::new("x.yaml");
    let bigquery = all.bigquery.as_ref().unwrap().settings(path, "images").unwrap();
    assert_eq!(bigquery.table_ref(), "`my-project.ml_streaming.image_predictions`");
    assert_eq!(bigquery.credentials_file.as_deref(), Some(Path::new("/etc/bq.json")));
    let kafka = all.kafka.as_ref().unwrap().settings(path).unwrap();
    assert_eq!((kafka.topic.as_str(), kafka.properties["sasl.password"].as_str()), ("image-stream-results", "p"));
    assert_eq!(kafka.properties["enable.idempotence"], "true");
    let gcs = all.gcs.as_ref().unwrap().settings(path).unwrap();
    assert_eq!((gcs.bucket.as_str(), gcs.prefix.as_str()), ("my-bucket", "outputs/predictions/"));
    let only = |name: &str| {
        let c = load_one(name).inference;
        (c.bigquery.is_some(), c.kafka.is_some(), c.gcs.is_some())
    };
    assert_eq!(only("inference-sink-bigquery.yaml"), (true, false, false));
    assert_eq!(only("inference-sink-kafka.yaml"), (false, true, false));
    assert_eq!(only("inference-sink-gcs.yaml"), (false, false, true));
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
/// A secret whose value looks like YAML structure: a colon, a comment, a line break and a key.
const HOSTILE_SECRET: &str = "hunter2: #not-a-comment\nmodel: resnet50";

fn secret_files(dir: &Path, inference: &str) -> (PathBuf, PathBuf) {
    let config = dir.join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: 0.2.0\nmeta:\n  version: 0.1.0\n  name: s\n  type: inference-sink\n  topic: {{meta: {{name: images}}}}\n  \
             secrets: [{{name: PASS}}]\ninference:\n{inference}\n"
        ),
    )
    .unwrap();
    let secrets = dir.join("secrets.env");
    // A secrets file holds one line per secret: the line break is written as the two characters `\n` and
    // put back here, the way a deployment templating a value with a line break would.
    std::fs::write(&secrets, format!("PASS={}\n", HOSTILE_SECRET.replace('\n', "\\n"))).unwrap();
    (config, secrets)
}

#[test]
fn secrets_are_values_never_structure() {
    let dir = tempfile::tempdir().unwrap();
    let (config, secrets) = secret_files(dir.path(), "  predictions-topic: \"${{ secrets.PASS }}\"");
    let loaded = load(&config, Some(&secrets)).unwrap();
    assert_eq!(loaded.inference.predictions_topic, HOSTILE_SECRET.replace('\n', "\\n"));
    assert_eq!(loaded.inference.model, "efficientnet-lite0", "the secret's `model:` did not become a setting");
}

/// Issue 28: a substituted value stays a string whatever it looks like (`0x1F2E` is not 7982, a numeric
/// password is a password), and a numeric setting refuses it without showing it in any form.
#[test]
fn secrets_that_look_like_numbers_stay_strings() {
    let dir = tempfile::tempdir().unwrap();
    let (config, secrets) = secret_files(dir.path(), "  predictions-topic: ${{ secrets.PASS }}");
    for value in ["0x1F2E", "123456", "1e3", "true", "7"] {
        std::fs::write(&secrets, format!("PASS={value}\n")).unwrap();
        assert_eq!(load(&config, Some(&secrets)).unwrap().inference.predictions_topic, value);
    }
    let (config, secrets) = secret_files(dir.path(), "  metrics-port: ${{ secrets.PASS }}");
    for value in ["0x1F2E", "9464"] {
        std::fs::write(&secrets, format!("PASS={value}\n")).unwrap();
        let err = load(&config, Some(&secrets)).unwrap_err().to_string();
        assert!(err.contains("inference.metrics-port") && err.contains("${{ secrets.PASS }}"), "{err}");
        assert!(!err.contains(value) && !err.contains("7982"), "the secret leaked: {err}");
    }
}

#[test]
fn a_secret_never_appears_in_an_error_or_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = HOSTILE_SECRET.replace('\n', "\\n");
    let leaks = |text: &str| text.contains("hunter2") || text.contains(&secret);
    // A setting of the wrong type: the parser's message would quote the value.
    let (config, secrets) = secret_files(dir.path(), "  metrics-port: \"${{ secrets.PASS }}\"");
    let err = load(&config, Some(&secrets)).unwrap_err().to_string();
    assert!(!leaks(&err) && err.contains("${{ secrets.PASS }}") && err.contains("inference.metrics-port"), "{err}");
    // The binary at debug level, with that config and with one that puts the secret in a topic name the
    // cluster does not have (the error names the topic).
    let missing_topic = dir.path().join("missing");
    std::fs::create_dir_all(&missing_topic).unwrap();
    let (topic_config, topic_secrets) = secret_files(
        &missing_topic,
        "  predictions-topic: \"${{ secrets.PASS }}\"\n  dlq-topic: \"dlq-${{ secrets.PASS }}\"",
    );
    for (config, secrets) in [(&config, &secrets), (&topic_config, &topic_secrets)] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_inference-sink"))
            .args(["--config", config.to_str().unwrap(), "--secrets", secrets.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!leaks(&stdout) && !leaks(&stderr), "the secret leaked:\n{stdout}\n{stderr}");
        // Where the cluster answers, the missing topic is named by its reference.
        let named = stderr.contains("${{ secrets.PASS }}") || stderr.contains("connecting to the Fluvio cluster");
        assert!(named, "the error names the reference instead:\n{stderr}");
    }
}
