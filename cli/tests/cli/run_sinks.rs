//! `fvision run --config FILE` writes to the external sinks of the connector's YAML, built by the same code
//! as the connector's: BigQuery (`bqemulator`, predictions and dead letters) and Kafka (librdkafka's mock
//! cluster, read back with a real consumer). The test asserts what landed against the run's own JSONL.

use fvision_tests::repo_root as repo;
use std::collections::BTreeSet;
use std::process::Command;

use fvision_outputs::bigquery;
use fvision_tests::emulators::{self, PROJECT};

/// The first column of every row `sql` returns.
fn column(settings: &bigquery::BigQuerySettings, sql: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = bigquery::client(settings).await.unwrap();
        let rows = fvision_gcp::bigquery::query(&client, &settings.project, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        fvision_gcp::bigquery::first_column(&rows)
    })
}

#[test]
fn run_with_a_config_writes_to_its_bigquery_and_kafka_sections() {
    let bq = emulators::bigquery();
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    kafka.create_topic("image-stream-results", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sinks.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: 0.2.0\nmeta: {{version: 0.1.0, name: s, type: inference-sink, topic: {{meta: {{name: images}}}}}}\n\
             inference:\n  model: efficientnet-lite0\n  confidence-threshold: 0.0\n  \
             bigquery: {{project: {PROJECT}, endpoint: '{}', create-table: true, include: predictions, \
             dead-letter-table: image_dead_letters}}\n  \
             kafka: {{brokers: '{}', include: predictions}}\n",
            bq.url(),
            kafka.bootstrap_servers()
        ),
    )
    .unwrap();
    let jsonl = dir.path().join("outcomes.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_fvision"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--output")
        .arg(&jsonl)
        .args(["data/demo-images", "data/bad-inputs"])
        .current_dir(repo())
        .output()
        .expect("fvision runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The bad inputs are rejections, not unreadable files: the run succeeds.
    assert!(out.status.success(), "{stderr}\n{}", bq.log());
    assert!(stderr.contains("outputs: jsonl, bigquery, kafka"), "{stderr}");

    // What the run says it produced, from its own JSONL file.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let predictions: BTreeSet<String> =
        lines.iter().filter_map(|l| l["prediction_id"].as_str().map(str::to_string)).collect();
    let image_ids: Vec<String> = lines
        .iter()
        .filter(|l| l["prediction_id"].is_string())
        .map(|l| l["image_id"].as_str().unwrap().into())
        .collect();
    let rejected = lines.iter().filter(|l| l["status"] == "rejected").count();
    assert!(predictions.len() >= 6 && rejected >= 5, "{} predictions, {rejected} rejections", predictions.len());

    let loaded = fvision_sink_config::load(&config, None).unwrap();
    let settings = loaded.inference.bigquery.as_ref().unwrap().settings(&config, "").unwrap();
    let ids: BTreeSet<String> =
        column(&settings, &format!("SELECT prediction_id FROM {}", settings.table_ref())).into_iter().collect();
    assert_eq!(ids, predictions, "every prediction in BigQuery");
    let count = column(&settings, &format!("SELECT COUNT(*) FROM {}", settings.table_ref()));
    assert_eq!(count, [predictions.len().to_string()], "once each");
    let dead_letters = settings.dead_letter_table_ref().unwrap();
    let reasons = column(&settings, &format!("SELECT reason FROM {dead_letters}"));
    assert_eq!(reasons.len(), rejected, "every rejection in the dead-letter table: {reasons:?}");
    let from_file: BTreeSet<String> = lines.iter().filter_map(|l| l["reason"].as_str().map(str::to_string)).collect();
    assert_eq!(reasons.into_iter().collect::<BTreeSet<_>>(), from_file);

    let mut keys =
        fvision_tests::kafka::message_keys(&kafka.bootstrap_servers(), "image-stream-results", image_ids.len());
    let mut expected = image_ids;
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected, "one message per prediction, keyed by image id");
}

#[test]
fn run_with_a_config_stops_at_start_up_when_a_sink_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("unreachable.yaml");
    let port = emulators::free_port();
    std::fs::write(
        &config,
        format!(
            "apiVersion: 0.2.0\nmeta: {{version: 0.1.0, name: s, type: inference-sink, topic: {{meta: {{name: images}}}}}}\n\
             inference:\n  gcs: {{bucket: predictions, endpoint: 'http://127.0.0.1:{port}'}}\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fvision"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("data/demo-images")
        .current_dir(repo())
        .output()
        .expect("fvision runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable.yaml") && stderr.contains("field `inference.gcs.endpoint`"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing classified before the outputs were checked");
}
