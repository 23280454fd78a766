//! The external sinks, each against its real server without the connector: BigQuery (`bqemulator`), GCS
//! (`gcp-storage-emulator`) and Kafka (librdkafka's mock cluster, read back with a real consumer). Each
//! test asserts what landed: rows, objects, messages.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluvio_future::task::run_block_on;
use fvision_outputs::bigquery::{self, BigQueryConfig, BigQueryOutput, BigQuerySettings};
use fvision_outputs::gcs::{self, GcsConfig, GcsOutput};
use fvision_outputs::kafka::{KafkaConfig, KafkaOutput};
use fvision_outputs::route;
use fvision_outputs::BelowThreshold;
use fvision_outputs::{Delivery, Output, OutputHealth, ReplayWindow};
use fvision_pipeline::{Outcome, SourcePosition};
use fvision_records::{
    prediction_id, ClassScore, EventMeta, ImageDigest, Prediction, RejectReason, RejectedImage, Source, Stage,
};
use fvision_tests::emulators::{self, Emulator, PROJECT};

const TOPIC: &str = "images";

/// How long the outage tests keep an emulator down. The issue asks for 30 s; the suite uses 10 s to stay
/// fast: by then the backoff has reached its 5 s ceiling and the queue is full, so a longer outage only
/// repeats the same state. `FVISION_OUTAGE_SECS=30` runs the full one.
fn outage() -> Duration {
    let secs = std::env::var("FVISION_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    Duration::from_secs(secs)
}

/// The process-wide Prometheus recorder (tests run in parallel, so values are at least what one test did).
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of the first sample whose line starts with `prefix`.
fn metric(prefix: &str) -> f64 {
    let text = metrics().render();
    let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A prediction for image `i`; every third one is below the threshold.
fn prediction(i: usize) -> Prediction {
    let image_id = format!("img-{i:04}");
    Prediction {
        prediction_id: prediction_id(&image_id, &ImageDigest::of(image_id.as_bytes()), "efficientnet-lite0", "1"),
        image_id,
        label: ["tabby", "beagle", "volcano"][i % 3].into(),
        class_index: 281 + i % 3,
        confidence: if i % 3 == 2 { 0.1 } else { 0.9 },
        top_k: vec![ClassScore { label: "tabby".into(), class_index: 281, confidence: 0.9 }],
        model_name: "efficientnet-lite0".into(),
        model_version: "1".into(),
        processing_time_ms: 10.0 + i as f64,
        image_size_bytes: 1000 + i as u64,
        source: Source::Gcs,
        bucket: Some("uploads".into()),
        object_name: Some(format!("in/{i}.jpg")),
        processed_at: format!("2026-12-01T10:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
        above_threshold: i % 3 != 2,
        ..Prediction::default()
    }
}

/// Sends predictions `range` of partition `partition` (offset = index) to `output`.
fn send(output: &dyn Output, partition: u32, range: std::ops::Range<usize>) {
    for i in range {
        send_one(output, prediction(i), Some(SourcePosition { partition, offset: i as i64 }));
    }
}

fn send_one(output: &dyn Output, prediction: Prediction, position: Option<SourcePosition>) {
    let outcome = Outcome::Classified {
        name: format!("{TOPIC}/0@{}", prediction.image_id),
        position,
        prediction: Box::new(prediction),
    };
    let routed = route(&outcome, BelowThreshold::Flag).unwrap();
    output.send(&Delivery { outcome: &outcome, routed: &routed, position }).unwrap();
}

fn above(range: std::ops::Range<usize>) -> usize {
    range.filter(|i| i % 3 != 2).count()
}

fn window(partitions: &[(u32, std::ops::Range<i64>)]) -> ReplayWindow {
    ReplayWindow { partitions: partitions.iter().cloned().collect() }
}

// ---------------------------------------------------------------------------------------------- BigQuery

fn bigquery_settings(emulator: &Emulator, table: &str, extra: &str) -> BigQuerySettings {
    let yaml = format!(
        "project: {PROJECT}\ntable: {table}\nendpoint: {}\ncreate-table: true\nmax-batch-rows: 10\n{extra}",
        emulator.url()
    );
    let config: BigQueryConfig = serde_yaml::from_str(&yaml).unwrap();
    config.settings(Path::new("sink.yaml"), TOPIC).unwrap()
}

/// `SELECT COUNT(*), COUNT(DISTINCT prediction_id)` of a table.
fn counts(output: &BigQueryOutput, settings: &BigQuerySettings) -> (i64, i64) {
    let sql = format!("SELECT COUNT(*) AS n, COUNT(DISTINCT prediction_id) AS d FROM {}", settings.table_ref());
    let rows = query(output, &sql);
    let cells = rows[0].columns.as_ref().unwrap();
    let int = |i: usize| cells[i].value.as_ref().unwrap().as_str().unwrap().parse::<i64>().unwrap();
    (int(0), int(1))
}

fn query(output: &BigQueryOutput, sql: &str) -> Vec<gcp_bigquery_client::model::table_row::TableRow> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime
        .block_on(fvision_gcp::bigquery::query(output.client(), PROJECT, sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn bigquery_rows_land_once_and_the_runbooks_queries_run() {
    let emulator = emulators::bigquery();
    let settings = bigquery_settings(&emulator, "image_predictions", "");
    let output = BigQueryOutput::connect(settings.clone()).unwrap_or_else(|e| panic!("{e}\n{}", emulator.log()));
    send(&output, 0, 0..45);
    let refused = run_block_on(output.acknowledge()).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let expected = above(0..45) as i64;
    assert_eq!(counts(&output, &settings), (expected, expected), "COUNT(*), COUNT(DISTINCT prediction_id)");
    let ids = fvision_gcp::bigquery::first_column(&query(
        &output,
        &format!("SELECT prediction_id FROM {}", settings.table_ref()),
    ));
    let sent: HashSet<String> = (0..45).filter(|i| i % 3 != 2).map(|i| prediction(i).prediction_id).collect();
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), sent);

    // The runbook's two queries (the job's own), on this table.
    let runbook =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fluvio-config/RUNBOOK.md")).unwrap();
    let queries = runbook_queries(&runbook);
    assert_eq!(queries.len(), 2, "the runbook has the recent-predictions and per-model queries");
    let table = format!("{PROJECT}.ml_streaming.image_predictions");
    let recent = query(&output, &queries[0].replace("PROJECT.ml_streaming.image_predictions", &table));
    assert_eq!(recent.len(), 10, "the ten most recent predictions");
    let newest = recent[0].columns.as_ref().unwrap()[0].value.as_ref().unwrap().as_str().unwrap().to_string();
    assert_eq!(newest, prediction(43).prediction_id, "ordered by processed_at, newest first");
    let per_model = query(&output, &queries[1].replace("PROJECT.ml_streaming.image_predictions", &table));
    assert_eq!(per_model.len(), 1, "one model");
    let cells = per_model[0].columns.as_ref().unwrap();
    let text = |i: usize| cells[i].value.as_ref().unwrap().as_str().unwrap().to_string();
    assert_eq!((text(0).as_str(), text(1).parse::<i64>().unwrap()), ("efficientnet-lite0", expected));
    assert!((text(2).parse::<f64>().unwrap() - 0.9).abs() < 1e-6, "average confidence {}", text(2));
    let stored: Vec<usize> = (0..45).filter(|i| i % 3 != 2).collect();
    let average_ms = stored.iter().map(|i| (10 + i) as f64).sum::<f64>() / stored.len() as f64;
    assert!((text(3).parse::<f64>().unwrap() - average_ms).abs() < 1e-6, "average processing time {}", text(3));
    // First and last prediction: TIMESTAMPs come back as epoch seconds (BigQuery's float), epoch microseconds
    // (bqemulator, as with `useInt64Timestamp`) or an RFC 3339 text.
    let epoch = |value: &str| -> f64 {
        let seconds = |n: f64| if n > 1e12 { n / 1e6 } else { n };
        value.parse::<f64>().map(seconds).unwrap_or_else(|_| {
            let time = humantime::parse_rfc3339_weak(value.trim_end_matches(" UTC").trim_end_matches('Z'))
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            time.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
        })
    };
    let at = |i: usize| epoch(prediction(i).processed_at.trim_end_matches('Z'));
    assert_eq!((epoch(&text(4)), epoch(&text(5))), (at(0), at(43)), "first and last prediction");
}

/// The ```sql blocks of the runbook's BigQuery section.
fn runbook_queries(runbook: &str) -> Vec<String> {
    let mut queries = Vec::new();
    let mut current: Option<String> = None;
    for line in runbook.lines() {
        match (&mut current, line.trim()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(sql), "```") => {
                queries.push(sql.trim().trim_end_matches(';').to_string());
                current = None;
            }
            (Some(sql), _) => {
                sql.push_str(line);
                sql.push('\n');
            }
            (None, _) => {}
        }
    }
    queries
}

#[test]
fn bigquery_replay_after_a_crash_writes_no_row_twice() {
    let emulator = emulators::bigquery();
    let settings = bigquery_settings(&emulator, "replayed", "include: predictions");
    // A first run wrote offsets 0..25 and committed only up to 10, then died.
    let first = BigQueryOutput::connect(settings.clone()).unwrap();
    send(&first, 0, 0..25);
    send(&first, 1, 0..5);
    assert!(run_block_on(first.acknowledge()).unwrap().is_empty());
    drop(first);
    // The restart replays 10..40 of partition 0 (the topic had 40 records at start-up) and 5..8 of partition 1.
    let second = BigQueryOutput::connect(settings.clone()).unwrap();
    second.prepare(&window(&[(0, 10..40), (1, 5..8)])).unwrap();
    send(&second, 0, 10..40);
    send(&second, 1, 5..8);
    assert!(run_block_on(second.acknowledge()).unwrap().is_empty());
    // Partition 1 shares image ids with partition 0 here, so count per partition.
    for (partition, expected) in [(0, 40), (1, 8)] {
        let sql = format!(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT prediction_id) AS d FROM {} WHERE source_partition = {partition}",
            settings.table_ref()
        );
        let rows = query(&second, &sql);
        let cells = rows[0].columns.as_ref().unwrap();
        let int = |i: usize| cells[i].value.as_ref().unwrap().as_str().unwrap().parse::<i64>().unwrap();
        assert_eq!((int(0), int(1)), (expected, expected), "partition {partition}: every prediction exactly once");
    }
}

#[test]
fn bigquery_start_up_errors_name_the_file_and_the_field() {
    let emulator = emulators::bigquery();
    let strict = |table: &str| {
        let mut settings = bigquery_settings(&emulator, table, "");
        settings.create_table = false;
        settings
    };
    let error =
        |settings: BigQuerySettings| BigQueryOutput::connect(settings).err().expect("a start-up error").to_string();
    let missing_dataset = error(strict("t1"));
    assert!(missing_dataset.starts_with("sink.yaml: field `inference.bigquery.dataset`"), "{missing_dataset}");
    // create-table creates the dataset and the table; a table lacking a column is refused by name.
    let with_table = BigQueryOutput::connect(bigquery_settings(&emulator, "full", "")).unwrap();
    let mut fields = fvision_gcp::bigquery::schema_of(bigquery::columns()).fields().clone().unwrap();
    fields.retain(|f| f.name != "confidence");
    let table = gcp_bigquery_client::model::table::Table::new(
        PROJECT,
        "ml_streaming",
        "lacking",
        gcp_bigquery_client::model::table_schema::TableSchema::new(fields),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(with_table.client().table().create(table)).unwrap();
    let lacking = error(strict("lacking"));
    assert!(
        lacking.contains("field `inference.bigquery.table`") && lacking.contains("no column `confidence` (FLOAT64)"),
        "{lacking}"
    );
    let missing_table = error(strict("absent"));
    assert!(
        missing_table.contains("field `inference.bigquery.table`") && missing_table.contains("does not exist"),
        "{missing_table}"
    );
    // Nothing listens: the endpoint is named.
    let mut unreachable = strict("t1");
    unreachable.v2_base_url = Some(format!("http://127.0.0.1:{}/bigquery/v2", emulators::free_port()));
    let refused = error(unreachable);
    assert!(refused.starts_with("sink.yaml: field `inference.bigquery.endpoint`"), "{refused}");
}

/// A dead letter of record `offset` with `payload` as its record value.
fn send_dead_letter(output: &dyn Output, offset: i64, reason: RejectReason, payload: &[u8]) {
    let position = Some(SourcePosition { partition: 0, offset });
    let name = format!("{TOPIC}/0@{offset}");
    let rejected = RejectedImage::new(reason, format!("bad record {offset}"), Stage::Validate, payload)
        .with_event(EventMeta { id: format!("bad-{offset}"), ..EventMeta::default() })
        .at_record(&name);
    let outcome = Outcome::Rejected { name, position, rejected: Box::new(rejected) };
    let routed = route(&outcome, BelowThreshold::Flag).unwrap();
    output.send(&Delivery { outcome: &outcome, routed: &routed, position }).unwrap();
}

#[test]
fn bigquery_dead_letters_land_in_their_own_table_once_after_a_replay() {
    let emulator = emulators::bigquery();
    let settings = bigquery_settings(&emulator, "preds", "dead-letter-table: rejected");
    let dead_letters = settings.dead_letter_table_ref().unwrap();
    let first = BigQueryOutput::connect(settings.clone()).unwrap_or_else(|e| panic!("{e}\n{}", emulator.log()));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    send(&first, 0, 0..6);
    send_dead_letter(&first, 6, RejectReason::Truncated, b"\xff\xd8\xff\xe0 cut");
    send_dead_letter(&first, 7, RejectReason::UnknownFormat, br#"{"id":"bad-7","data":"aGVsbG8="}"#);
    send_dead_letter(&first, 8, RejectReason::TooLarge, &big);
    assert!(run_block_on(first.acknowledge()).unwrap().is_empty());
    drop(first);
    // A restart replays offsets 4..9: neither table gets a row twice.
    let second = BigQueryOutput::connect(settings.clone()).unwrap();
    second.prepare(&window(&[(0, 4..9)])).unwrap();
    send(&second, 0, 4..6);
    send_dead_letter(&second, 6, RejectReason::Truncated, b"\xff\xd8\xff\xe0 cut");
    send_dead_letter(&second, 7, RejectReason::UnknownFormat, br#"{"id":"bad-7","data":"aGVsbG8="}"#);
    send_dead_letter(&second, 8, RejectReason::TooLarge, &big);
    assert!(run_block_on(second.acknowledge()).unwrap().is_empty());

    let expected = above(0..6) as i64;
    assert_eq!(counts(&second, &settings), (expected, expected), "predictions");
    let sql = format!("SELECT COUNT(*) AS n, COUNT(DISTINCT dead_letter_id) AS d FROM {dead_letters}");
    let rows = query(&second, &sql);
    let cells = rows[0].columns.as_ref().unwrap();
    let int = |i: usize| cells[i].value.as_ref().unwrap().as_str().unwrap().parse::<i64>().unwrap();
    assert_eq!((int(0), int(1)), (3, 3), "one row per dead letter after the replay");
    let sql = format!(
        "SELECT reason, stage, record, image_id, payload_size, payload_sha256, payload_truncated, source_offset \
         FROM {dead_letters} ORDER BY source_offset"
    );
    let rows = query(&second, &sql);
    let text = |row: usize, i: usize| -> String {
        let value = rows[row].columns.as_ref().unwrap()[i].value.clone().unwrap_or_default();
        value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())
    };
    assert_eq!(
        (text(0, 0), text(0, 1), text(0, 2), text(0, 3)),
        ("truncated".into(), "validate".into(), format!("{TOPIC}/0@6"), "bad-6".into())
    );
    assert_eq!(text(1, 0), "unknown_format");
    let sha = |bytes: &[u8]| -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!((text(0, 4), text(0, 5), text(0, 6)), ("8".into(), sha(b"\xff\xd8\xff\xe0 cut"), "false".into()));
    // The large record: its whole size and hash, the payload cut for the table.
    assert_eq!((text(2, 4), text(2, 5), text(2, 6)), (big.len().to_string(), sha(&big), "true".into()));
    let sql = format!("SELECT payload FROM {dead_letters} WHERE source_offset = 7");
    let payload = fvision_gcp::bigquery::first_column(&query(&second, &sql)).pop().unwrap();
    let decoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(&payload).unwrap_or_else(|_| payload.clone().into_bytes())
    };
    assert_eq!(decoded, br#"{"id":"bad-7","data":"aGVsbG8="}"#, "the record value, as it arrived");
}

#[test]
fn bigquery_a_missing_dead_letter_table_is_named_at_start_up() {
    let emulator = emulators::bigquery();
    // Creates the dataset and the predictions table only.
    BigQueryOutput::connect(bigquery_settings(&emulator, "preds", "")).unwrap();
    let mut settings = bigquery_settings(&emulator, "preds", "dead-letter-table: absent");
    settings.create_table = false;
    let error = BigQueryOutput::connect(settings).err().expect("a start-up error").to_string();
    assert!(
        error.starts_with("sink.yaml: field `inference.bigquery.dead-letter-table`")
            && error.contains("does not exist"),
        "{error}"
    );
}

#[test]
fn bigquery_refuses_one_bad_row_without_holding_up_the_others() {
    let emulator = emulators::bigquery();
    let settings = bigquery_settings(&emulator, "mixed", "");
    let output = BigQueryOutput::connect(settings.clone()).unwrap();
    send(&output, 0, 0..6);
    let mut bad = prediction(100);
    bad.processed_at = "yesterday-ish".into();
    send_one(&output, bad.clone(), Some(SourcePosition { partition: 0, offset: 100 }));
    send(&output, 0, 6..12);
    let refused = run_block_on(output.acknowledge()).unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let rejection = &refused[0];
    assert_eq!((rejection.key.as_str(), rejection.position.map(|p| p.offset)), (bad.image_id.as_str(), Some(100)));
    assert_eq!(rejection.rejected.reason, RejectReason::SinkError);
    assert!(rejection.rejected.detail.contains("BigQuery refused the row"), "{}", rejection.rejected.detail);
    let payload: serde_json::Value = serde_json::from_slice(&rejection.rejected.payload.to_bytes().unwrap()).unwrap();
    assert_eq!(payload["prediction_id"], bad.prediction_id.as_str(), "the dead letter carries the row");
    let expected = above(0..12) as i64;
    assert_eq!(counts(&output, &settings), (expected, expected));
}

#[test]
fn bigquery_down_for_an_outage_applies_back_pressure_then_drains() {
    metrics();
    let mut emulator = emulators::bigquery_persistent();
    let settings = bigquery_settings(&emulator, "outage", "include: predictions\nqueue: 20\nmax-retry-time: 2m");
    let output = Arc::new(BigQueryOutput::connect(settings.clone()).unwrap());
    send(&*output, 0, 0..20);
    assert!(run_block_on(output.acknowledge()).unwrap().is_empty());
    emulator.stop();
    let sent = Arc::new(AtomicUsize::new(20));
    let sender = {
        let (output, sent) = (Arc::clone(&output), Arc::clone(&sent));
        std::thread::spawn(move || {
            for i in 20..200 {
                send(&*output, 0, i..i + 1);
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let down = Instant::now();
    std::thread::sleep(outage());
    let accepted_while_down = sent.load(Ordering::SeqCst) - 20;
    // The queue (20) plus the batch being retried (10) plus the one in the sender's hand: the rest waits.
    assert!(accepted_while_down <= 31, "{accepted_while_down} rows accepted while BigQuery was down");
    assert!(matches!(output.health(), OutputHealth::Retrying { .. }), "{:?}", output.health());
    let backlog = output.backlog();
    assert!((20..=32).contains(&backlog), "the backlog is what was accepted and not stored: {backlog}");
    emulator.start();
    sender.join().unwrap();
    assert!(run_block_on(output.acknowledge()).unwrap().is_empty());
    assert_eq!(output.health(), OutputHealth::Healthy);
    assert_eq!(counts(&output, &settings), (200, 200), "no loss, no duplicate after {:?} down", down.elapsed());
    assert_eq!(output.backlog(), 0, "the backlog drained");
    // The outage shows in the sink's metrics.
    assert!(metric("fvision_sink_rows_total{sink=\"bigquery\"}") >= 200.0);
    assert!(metric("fvision_sink_retries_total{sink=\"bigquery\"}") >= 3.0);
    assert!(metric("fvision_sink_errors_total{sink=\"bigquery\",kind=\"transient\"}") >= 3.0);
    let held = metric("fvision_sink_backpressure_seconds_sum{sink=\"bigquery\"}");
    assert!(held >= outage().as_secs_f64() * 0.6, "held back {held} s, most of the outage");
    assert!(metric("fvision_sink_write_seconds_count{sink=\"bigquery\"}") >= 2.0);
}

// --------------------------------------------------------------------------------------------------- GCS

const BUCKET: &str = "fvision-predictions";

fn gcs_output(emulator: &Emulator, extra: &str) -> GcsOutput {
    let yaml = format!("bucket: {BUCKET}\nendpoint: {}\ninclude: predictions\n{extra}", emulator.url());
    let config: GcsConfig = serde_yaml::from_str(&yaml).unwrap();
    GcsOutput::connect(config.settings(Path::new("sink.yaml")).unwrap())
        .unwrap_or_else(|e| panic!("{e}\n{}", emulator.log()))
}

fn create_bucket(emulator: &Emulator) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = format!("{}/storage/v1/b?project={PROJECT}", emulator.url());
    let status = runtime.block_on(async {
        reqwest::Client::new().post(url).json(&serde_json::json!({"name": BUCKET})).send().await.unwrap().status()
    });
    assert!(status.is_success(), "creating the bucket: {status}");
}

/// Every object under the prefix with its lines' prediction ids.
fn objects(output: &GcsOutput) -> BTreeMap<String, Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = output.client();
        let mut objects = BTreeMap::new();
        for name in client.list("outputs/predictions/").await.map_err(|e| format!("{e:?}")).unwrap() {
            let body = client.download(&name).await.map_err(|e| format!("{e:?}")).unwrap();
            let ids = body
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| serde_json::from_slice::<Prediction>(line).unwrap().prediction_id)
                .collect();
            objects.insert(name, ids);
        }
        objects
    })
}

fn name(partition: u32, from: i64, to: i64) -> String {
    gcs::object_name("outputs/predictions/", partition, from, to)
}

fn assert_each_once(objects: &BTreeMap<String, Vec<String>>, expected: usize) {
    let all: Vec<&String> = objects.values().flatten().collect();
    let distinct: HashSet<&String> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (expected, expected), "lines, distinct prediction ids: {objects:?}");
}

#[test]
fn gcs_writes_one_object_per_partition_and_window_named_by_offsets() {
    let emulator = emulators::gcs();
    create_bucket(&emulator);
    let output = gcs_output(&emulator, "");
    send(&output, 0, 0..10);
    send(&output, 1, 0..4);
    assert!(run_block_on(output.acknowledge()).unwrap().is_empty());
    send(&output, 0, 10..15);
    assert!(run_block_on(output.acknowledge()).unwrap().is_empty());
    // An acknowledgement with nothing new writes nothing.
    assert!(run_block_on(output.acknowledge()).unwrap().is_empty());
    let objects = objects(&output);
    let names: Vec<&String> = objects.keys().collect();
    assert_eq!(names, [&name(0, 0, 9), &name(0, 10, 14), &name(1, 0, 3)]);
    assert_eq!(objects[&name(0, 0, 9)].len(), 10);
    assert_eq!(objects[&name(0, 0, 9)][0], prediction(0).prediction_id, "lines in offset order");
    assert_eq!(objects[&name(1, 0, 3)].len(), 4);
    assert_eq!(objects.values().flatten().count(), 19);
}

#[test]
fn gcs_replay_after_a_crash_leaves_every_prediction_once() {
    let emulator = emulators::gcs();
    create_bucket(&emulator);
    // A first run: window 0..10 committed, window 10..25 uploaded but never committed.
    let first = gcs_output(&emulator, "");
    send(&first, 0, 0..10);
    run_block_on(first.acknowledge()).unwrap();
    send(&first, 0, 10..25);
    run_block_on(first.acknowledge()).unwrap();
    drop(first);
    // The restart replays from offset 10 with other window boundaries.
    let second = gcs_output(&emulator, "");
    second.prepare(&window(&[(0, 10..40)])).unwrap();
    assert_eq!(objects(&second).keys().collect::<Vec<_>>(), [&name(0, 0, 9)], "the uncommitted object is gone");
    send(&second, 0, 10..30);
    run_block_on(second.acknowledge()).unwrap();
    send(&second, 0, 30..40);
    run_block_on(second.acknowledge()).unwrap();
    let objects = objects(&second);
    assert_eq!(objects.keys().collect::<Vec<_>>(), [&name(0, 0, 9), &name(0, 10, 29), &name(0, 30, 39)]);
    assert_each_once(&objects, 40);
}

#[test]
fn gcs_rolls_objects_by_size() {
    let emulator = emulators::gcs();
    create_bucket(&emulator);
    let output = gcs_output(&emulator, "max-object-bytes: 2 KiB");
    send(&output, 0, 0..20);
    run_block_on(output.acknowledge()).unwrap();
    let objects = objects(&output);
    assert!(objects.len() >= 3, "rolled by size: {:?}", objects.keys());
    assert_each_once(&objects, 20);
    let ranges: Vec<(u32, i64, i64)> =
        objects.keys().map(|n| gcs::parse_object_name("outputs/predictions/", n).unwrap()).collect();
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].2 + 1, pair[1].1, "consecutive objects cover consecutive offsets: {ranges:?}");
    }
}

#[test]
fn gcs_start_up_errors_name_the_file_and_the_field() {
    let emulator = emulators::gcs();
    let config: GcsConfig =
        serde_yaml::from_str(&format!("bucket: absent-bucket\nendpoint: {}", emulator.url())).unwrap();
    let error = GcsOutput::connect(config.settings(Path::new("sink.yaml")).unwrap()).err().unwrap().to_string();
    assert!(
        error.starts_with("sink.yaml: field `inference.gcs.bucket`") && error.contains("does not exist"),
        "{error}"
    );
    let config: GcsConfig =
        serde_yaml::from_str(&format!("bucket: b-1\nendpoint: http://127.0.0.1:{}", emulators::free_port())).unwrap();
    let error = GcsOutput::connect(config.settings(Path::new("sink.yaml")).unwrap()).err().unwrap().to_string();
    assert!(error.starts_with("sink.yaml: field `inference.gcs.endpoint`"), "{error}");
}

#[test]
fn gcs_down_for_an_outage_applies_back_pressure_then_drains() {
    metrics();
    let mut emulator = emulators::gcs_on_disk();
    create_bucket(&emulator);
    let output = Arc::new(gcs_output(&emulator, "queue: 20\nmax-retry-time: 2m\nmax-object-bytes: 4 KiB"));
    send(&*output, 0, 0..20);
    run_block_on(output.acknowledge()).unwrap();
    emulator.stop();
    let sent = Arc::new(AtomicUsize::new(20));
    let sender = {
        let (output, sent) = (Arc::clone(&output), Arc::clone(&sent));
        std::thread::spawn(move || {
            for i in 20..200 {
                send(&*output, 0, i..i + 1);
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(outage());
    let accepted_while_down = sent.load(Ordering::SeqCst) - 20;
    // The queue (20), the object being retried (4 KiB of ~600-byte lines) and the row in the sender's hand.
    assert!(accepted_while_down <= 20 + 10 + 1, "{accepted_while_down} rows accepted while GCS was down");
    assert!(matches!(output.health(), OutputHealth::Retrying { .. }), "{:?}", output.health());
    let backlog = output.backlog();
    assert!((20..=32).contains(&backlog), "the backlog is what was accepted and not stored: {backlog}");
    emulator.start();
    sender.join().unwrap();
    run_block_on(output.acknowledge()).unwrap();
    assert_eq!(output.health(), OutputHealth::Healthy);
    assert_each_once(&objects(&output), 200);
    assert_eq!(output.backlog(), 0, "the backlog drained");
    assert!(metric("fvision_sink_retries_total{sink=\"gcs\"}") >= 3.0);
    let held = metric("fvision_sink_backpressure_seconds_sum{sink=\"gcs\"}");
    assert!(held >= outage().as_secs_f64() * 0.6, "held back {held} s, most of the outage");
    assert!(metric("fvision_sink_rows_total{sink=\"gcs\"}") >= 200.0);
}

// ------------------------------------------------------------------------------------------------- Kafka

#[test]
fn kafka_messages_carry_the_image_id_key_and_the_prediction() {
    use rdkafka::message::Message;

    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("image-stream-results", 2, 1).unwrap();
    let config: KafkaConfig = serde_yaml::from_str(&format!("brokers: {}", cluster.bootstrap_servers())).unwrap();
    let output = KafkaOutput::connect(config.settings(Path::new("sink.yaml")).unwrap()).unwrap();
    send(&output, 0, 0..30);
    assert!(run_block_on(output.acknowledge()).unwrap().is_empty());

    let consumer = fvision_tests::kafka::reader(&cluster.bootstrap_servers(), "image-stream-results");
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < above(0..30) && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value: Prediction = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(key, value.image_id, "key = image id");
        assert!(value.above_threshold, "only predictions above the threshold by default");
        assert!(seen.insert(key, value.prediction_id).is_none(), "a message delivered twice");
    }
    let expected: BTreeMap<String, String> =
        (0..30).filter(|i| i % 3 != 2).map(|i| (prediction(i).image_id, prediction(i).prediction_id)).collect();
    assert_eq!(seen, expected);
}

#[test]
fn kafka_start_up_errors_name_the_file_and_the_field() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let config: KafkaConfig =
        serde_yaml::from_str(&format!("brokers: {}\ntopic: nowhere", cluster.bootstrap_servers())).unwrap();
    let error = KafkaOutput::connect(config.settings(Path::new("sink.yaml")).unwrap()).err().unwrap().to_string();
    assert!(error.starts_with("sink.yaml: field `inference.kafka.topic`"), "{error}");
}

#[test]
fn kafka_broker_down_applies_back_pressure_then_delivers_everything() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("image-stream-results", 1, 1).unwrap();
    let config: KafkaConfig = serde_yaml::from_str(&format!(
        "brokers: {}\ninclude: predictions\nqueue: 20\nmax-retry-time: 1m",
        cluster.bootstrap_servers()
    ))
    .unwrap();
    let output = Arc::new(KafkaOutput::connect(config.settings(Path::new("sink.yaml")).unwrap()).unwrap());
    cluster.broker_down(1).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (output, sent) = (Arc::clone(&output), Arc::clone(&sent));
        std::thread::spawn(move || {
            for i in 0..100 {
                send(&*output, 0, i..i + 1);
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let accepted = sent.load(Ordering::SeqCst);
    assert!(accepted <= 21, "{accepted} messages accepted while the broker was down (queue 20)");
    assert!((1..=21).contains(&output.backlog()), "unconfirmed messages: {}", output.backlog());
    cluster.broker_up(1).unwrap();
    sender.join().unwrap();
    assert!(run_block_on(output.acknowledge()).unwrap().is_empty());
    assert_eq!(output.backlog(), 0, "every delivery report collected");
    let consumer = fvision_tests::kafka::reader(&cluster.bootstrap_servers(), "image-stream-results");
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count < 100 && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            message.unwrap();
            count += 1;
        }
    }
    assert_eq!(count, 100, "every message delivered once after the broker came back");
    assert!(consumer.poll(Duration::from_millis(500)).is_none(), "no duplicate");
}

// ------------------------------------------------------------------------------------------- Credentials

/// A key file that is missing or not a service-account key is a start-up error naming the file, the field
/// and the key file, before any request (what can be tested without Google: a valid key needs Google's token
/// endpoint).
#[test]
fn a_missing_or_malformed_key_file_is_a_start_up_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent-key.json");
    let malformed = dir.path().join("malformed-key.json");
    std::fs::write(&malformed, r#"{"type": "service_account", "client_email": "x@y"}"#).unwrap();
    for key in [&missing, &malformed] {
        // An endpoint that would answer if it were reached: the key is read first.
        let bigquery: BigQueryConfig = serde_yaml::from_str(&format!(
            "project: {PROJECT}\nendpoint: http://127.0.0.1:{}\ncredentials-file: {}",
            emulators::free_port(),
            key.display()
        ))
        .unwrap();
        let settings = bigquery.settings(Path::new("sink.yaml"), TOPIC).unwrap();
        let error = BigQueryOutput::connect(settings).err().expect("a start-up error").to_string();
        assert!(
            error.starts_with("sink.yaml: field `inference.bigquery.credentials-file`")
                && error.contains(&key.display().to_string()),
            "{error}"
        );
        let gcs: GcsConfig = serde_yaml::from_str(&format!(
            "bucket: {BUCKET}\nendpoint: http://127.0.0.1:{}\ncredentials-file: {}",
            emulators::free_port(),
            key.display()
        ))
        .unwrap();
        let error = GcsOutput::connect(gcs.settings(Path::new("sink.yaml")).unwrap()).err().unwrap().to_string();
        assert!(
            error.starts_with("sink.yaml: field `inference.gcs.credentials-file`")
                && error.contains(&key.display().to_string()),
            "{error}"
        );
    }
}

/// librdkafka is built without OpenSSL (RUNBOOK section 6): a TLS setting is a start-up error naming the
/// field, never a silent plaintext connection. SASL settings from secrets reach the producer as they are
/// (`connectors/inference-sink/tests/sink/config.rs` checks the substitution); SASL_PLAINTEXT is accepted.
#[test]
fn kafka_security_settings_reach_librdkafka_with_tls_built_in() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("image-stream-results", 1, 1).unwrap();
    let connect = |properties: &str| {
        let yaml = format!("brokers: {}\nproperties: {{{properties}}}", cluster.bootstrap_servers());
        let config: KafkaConfig = serde_yaml::from_str(&yaml).unwrap();
        KafkaOutput::connect(config.settings(Path::new("sink.yaml")).unwrap()).err().map(|e| e.to_string())
    };
    // TLS is built in: the client takes SSL (the plaintext mock broker then fails the handshake, which is
    // reported as brokers that do not answer, never as an unsupported setting).
    if let Some(error) = connect("security.protocol: SSL") {
        assert!(!error.contains("field `inference.kafka.properties`"), "{error}");
    }
    // The TLS settings reach OpenSSL: a CA file that does not exist is refused at start-up, by name.
    let ca = connect("security.protocol: SSL, ssl.ca.location: /nonexistent/fvision-ca.pem").expect("refused");
    assert!(ca.starts_with("sink.yaml: field `inference.kafka.properties`") && ca.contains("ssl.ca.location"), "{ca}");
    // A SASL mechanism librdkafka knows is accepted by the client (the mock broker then refuses the handshake,
    // which is reported as brokers that do not answer, not as an unknown setting).
    let sasl =
        connect("security.protocol: SASL_PLAINTEXT, sasl.mechanism: PLAIN, sasl.username: u, sasl.password: s3cret");
    if let Some(error) = sasl {
        assert!(!error.contains("field `inference.kafka.properties`"), "{error}");
        assert!(!error.contains("s3cret"), "the password is not in the error: {error}");
    }
}
