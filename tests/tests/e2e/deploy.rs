//! `fvision deploy` → `fvision simulate` → `fvision status` → `fvision cleanup`, the way a user runs the
//! whole job, against the local Fluvio cluster and stand-ins started here on free ports (the Kafka mock
//! cluster in this process, the emulators from the harness), so the test can run beside a user's
//! `fvision dev up`. Every simulated image must come out exactly once: a prediction (and a BigQuery row when
//! above the threshold) or a dead letter with the reason `data/bad-inputs/README.md` asks for; cleanup
//! must leave no process, topic, SmartModule or emulator resource.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fvision_records::{Prediction, RejectReason, ValidationRecord};
use fvision_tests::cluster::{local_cluster, unique_name, LocalCluster};
use fvision_tests::emulators::{self, free_port, http_get_status, PROJECT};
use fvision_tests::process::{target_binary, Process};
use fvision_tests::{data_files, repo_root};
use rdkafka::mocking::MockCluster;

/// What the sink does with each file of `data/bad-inputs` (header-mode validation on the SPU, then the
/// sink's decode): `None` = classified.
fn bad_input_verdict(name: &str) -> Option<RejectReason> {
    use RejectReason::*;
    match name {
        "bomb-10000x10000-grey-1bit.png" | "bomb-10000x10000-grey-8bit.png" | "header-claims-100000x100000.png" => {
            Some(TooManyPixels)
        }
        "extreme-aspect-10000x2.png" => Some(ExtremeAspectRatio),
        "png-corrupt-idat-bad-crc.png" => Some(CorruptData),
        "png-corrupt-idat-bad-zlib-good-crc.png" => Some(DecodeError),
        "random-bytes.jpg" | "text-file.jpg" => Some(UnknownFormat),
        "truncated-40pct.jpg" => Some(Truncated),
        "zero-bytes.jpg" => Some(Empty),
        HOSTILE_ENVELOPE => Some(MalformedEnvelope),
        _ => None,
    }
}

/// The simulator's rule: image i of a run with `--bad-ratio ratio` is hostile when the running share
/// would otherwise fall below the ratio; the k-th hostile image is item k mod (n + 3) of the sorted folder's n
/// files followed by three hostile envelopes ([`HOSTILE_ENVELOPE`]).
fn hostile_files(count: u64, ratio: f64) -> BTreeMap<u64, String> {
    let mut items: Vec<String> = data_files("bad-inputs").into_iter().map(|(name, _)| name).collect();
    items.extend([HOSTILE_ENVELOPE; 3].map(String::from));
    let is_bad = |i: u64| ((i + 1) as f64 * ratio).floor() > (i as f64 * ratio).floor();
    (0..count).filter(|&i| is_bad(i)).enumerate().map(|(k, i)| (i, items[k % items.len()].clone())).collect()
}

/// The simulator's hostile envelopes (a valid image with a 600 KB field), dead letters of the sources.
const HOSTILE_ENVELOPE: &str = "hostile envelope";

/// The index of a simulated image from its id (`R-0000007` or `gs://b/input-images/R-0000007-name#g`).
fn index(id: &str, run: &str) -> Option<u64> {
    let at = id.find(&format!("{run}-"))? + run.len() + 1;
    id.get(at..at + 7)?.parse().ok()
}

/// Runs `fvision ARGS` to completion; (success, output).
fn fvision(dir: &Path, log: &str, args: &[&str], limit: Duration) -> (bool, String) {
    let models = repo_root().join("models/presets");
    let env = [
        ("FVISION_MODELS_DIR", models.to_str().unwrap()),
        ("RUST_LOG", "warn,inference_sink=info,fvision_inference_sink=info,fvision_pipeline=info,fvision_outputs=info,fvision_status=info,kafka_source=info,fvision_kafka_source=info,gcs_source=info,fvision_gcs_source=info"),
    ];
    let mut process = Process::start(&target_binary("fvision"), args, &env, &dir.join(log));
    let ok = process.wait(limit).success();
    (ok, process.log())
}

/// Deletes what a deployment made even when the test fails half-way.
struct CleanupGuard {
    dir: PathBuf,
    file: PathBuf,
    armed: bool,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if self.armed {
            let (_, out) = fvision(
                &self.dir,
                "cleanup-guard.log",
                &["cleanup", self.file.to_str().unwrap(), "--yes"],
                Duration::from_secs(180),
            );
            eprintln!("cleanup after a failure:\n{out}");
        }
    }
}

/// Names unique to one run, so the shared cluster and a user's own deployment are never touched.
struct Names {
    deployment: String,
    images: String,
    predictions: String,
    dlq: String,
    smartmodule: String,
    bucket: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        let base = unique_name(prefix);
        Self {
            images: format!("{base}-images"),
            predictions: format!("{base}-predictions"),
            dlq: format!("{base}-dlq"),
            smartmodule: format!("image-validate-{base}"),
            bucket: base.clone(),
            deployment: base,
        }
    }
}

fn connector(name: &str, kind: &str, config: &str, extra: &str) -> String {
    let config = repo_root().join("fluvio-config/connectors").join(config);
    format!(
        "  - name: {name}\n    type: {kind}\n    config: {}\n    metrics-port: {}\n{extra}",
        config.display(),
        free_port()
    )
}

fn topics(names: &Names, image_partitions: u32) -> String {
    let topics = repo_root().join("fluvio-config/topics");
    let t = topics.display();
    format!(
        "topics:\n  images: {{name: {}, config: {t}/images.yaml, partitions: {image_partitions}}}\n  predictions: {{name: {}, \
         config: {t}/predictions.yaml}}\n  dlq: {{name: {}, config: {t}/images-dlq.yaml}}\nsmartmodule:\n  name: {}\n",
        names.images, names.predictions, names.dlq, names.smartmodule
    )
}

fn read_dlq(cluster: &LocalCluster, topic: &str) -> Vec<fvision_records::RejectedImage> {
    cluster
        .read_all(topic)
        .into_iter()
        .map(|(_, value)| match serde_json::from_slice(&value).unwrap() {
            ValidationRecord::Rejected(r) => r,
            other => panic!("not a rejection on the DLQ: {other:?}"),
        })
        .collect()
}

fn status_json(dir: &Path, file: &Path) -> serde_json::Value {
    let (_, out) = fvision(
        dir,
        "status.log",
        &["status", file.to_str().unwrap(), "--json", "--sample", "0.2"],
        Duration::from_secs(60),
    );
    let start = out.find("{\n").unwrap_or_else(|| panic!("status --json printed no JSON:\n{out}"));
    serde_json::Deserializer::from_str(&out[start..])
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("status --json:\n{out}"))
}

fn bigquery_ids(url: &str, dataset: &str) -> Vec<String> {
    use fvision_gcp::bigquery::{first_column, query};
    use fvision_outputs::bigquery::{client, BigQueryConfig};
    let config: BigQueryConfig = serde_json::from_value(
        serde_json::json!({"project": PROJECT, "dataset": dataset, "table": "image_predictions", "endpoint": url}),
    )
    .unwrap();
    let settings = config.settings(Path::new("test"), "images").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = client(&settings).await.unwrap();
        let sql = format!("SELECT prediction_id FROM {}", settings.table_ref());
        first_column(&query(&client, PROJECT, &sql).await.unwrap())
    })
}

/// Pids in the state directory's pid files (connectors and supervisors).
fn recorded_pids(state: &Path) -> Vec<u32> {
    std::fs::read_dir(state)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
}

#[test]
fn deploy_simulate_watch_cleanup_accounts_for_every_image() {
    let test = "deploy_simulate_watch_cleanup_accounts_for_every_image";
    let Some(cluster) = local_cluster(test) else { return };
    let names = Names::new("fvt-dep");
    let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("starting the Kafka mock cluster: {e}"));
    let servers = mock.bootstrap_servers();
    let bigquery = emulators::bigquery();
    let gcs = emulators::gcs();
    let pubsub = emulators::pubsub();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let state = dir.join("state");
    let dataset = names.deployment.replace('-', "_");
    let file = dir.join("deploy.yaml");
    let yaml = format!(
        "name: {name}\nstate-dir: {state}\n{topics}kafka:\n  bootstrap-servers: {servers}\nbigquery:\n  project: {PROJECT}\n  \
         dataset: {dataset}\n  endpoint: {bq}\ngcs:\n  project: {PROJECT}\n  bucket: {bucket}\n  endpoint: {gcs}\npubsub:\n  \
         project: {PROJECT}\n  ack-deadline-seconds: 10\n  emulator-host: {grpc}\nconnectors:\n{sink}{kafka}{gcs_source}",
        name = names.deployment,
        state = state.display(),
        topics = topics(&names, 1),
        bq = bigquery.url(),
        bucket = names.bucket,
        gcs = gcs.url(),
        grpc = pubsub.grpc_host(),
        sink = connector("sink", "inference-sink", "inference-sink.yaml", ""),
        kafka = connector("kafka", "kafka-source", "kafka-source.yaml", ""),
        gcs_source = connector("gcs", "gcs-source", "gcs-source.yaml", ""),
    );
    std::fs::write(&file, yaml).unwrap();
    let file_arg = file.to_str().unwrap();
    let mut guard = CleanupGuard { dir: dir.to_path_buf(), file: file.clone(), armed: true };

    let (ok, out) = fvision(dir, "deploy-1.log", &["deploy", file_arg], Duration::from_secs(240));
    assert!(ok, "deploy:\n{out}");
    for line in [
        format!("created  Fluvio topic {}", names.images),
        format!("created  SmartModule {}", names.smartmodule),
        format!("created  BigQuery table {PROJECT}.{dataset}.image_predictions"),
        format!("created  GCS bucket gs://{}", names.bucket),
        "created  Pub/Sub subscription image-stream-sub".to_string(),
        "created  Kafka topic image-stream ".to_string(),
        "started  connector sink".to_string(),
    ] {
        assert!(out.contains(&line), "deploy says `{line}`:\n{out}");
    }
    let (ok, again) = fvision(dir, "deploy-2.log", &["deploy", file_arg], Duration::from_secs(120));
    assert!(ok && again.contains("deploy: nothing changed"), "a second deploy changes nothing:\n{again}");
    assert!(!again.contains("created ") && !again.contains("started "), "{again}");

    // 300 images through Kafka and GCS at once, 10% from the hostile inputs.
    const COUNT: u64 = 300;
    const RATIO: f64 = 0.1;
    let run = unique_name("d").replace('-', "");
    let ids_file = dir.join("ids");
    let (ok, out) = fvision(
        dir,
        "simulate.log",
        &[
            "simulate",
            "--mode",
            "both",
            "--count",
            &COUNT.to_string(),
            "--rate",
            "150",
            "--bad-ratio",
            &RATIO.to_string(),
            "--run-id",
            &run,
            "--ids",
            ids_file.to_str().unwrap(),
            "--kafka-servers",
            &servers,
            "--gcs-bucket",
            &names.bucket,
            "--gcs-endpoint",
            &gcs.url(),
            "--pubsub-project",
            PROJECT,
            "--pubsub-emulator-host",
            &pubsub.grpc_host(),
            "--notify",
        ],
        Duration::from_secs(120),
    );
    assert!(ok, "simulate:\n{out}");
    let simulated: BTreeSet<String> = std::fs::read_to_string(&ids_file).unwrap().lines().map(str::to_string).collect();
    assert_eq!(simulated.len() as u64, COUNT, "every send acknowledged");

    // Wait until every image has an outcome and the sink's lag is 0.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (predictions, dead) = loop {
        let predictions: Vec<Prediction> = cluster
            .read_all(&names.predictions)
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).unwrap())
            .collect();
        let dead = read_dlq(&cluster, &names.dlq);
        let seen: BTreeSet<&str> =
            predictions.iter().map(|p| p.image_id.as_str()).chain(dead.iter().map(|d| d.event.id.as_str())).collect();
        if simulated.iter().all(|id| seen.contains(id.as_str())) {
            let status = status_json(dir, &file);
            let sink = status["connectors"].as_array().unwrap().iter().find(|c| c["name"] == "sink").cloned().unwrap();
            if sink["lag"] == 0 {
                break (predictions, dead);
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every image came out within 300 s ({} of {COUNT}); sink log:\n{}",
            seen.len(),
            std::fs::read_to_string(state.join("sink.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(2));
    };

    // Exactly once: a prediction or a dead letter, never both, never twice, nothing unknown.
    let mut outcomes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &predictions {
        outcomes.entry(p.image_id.as_str()).or_default().push("prediction".into());
    }
    for d in &dead {
        outcomes.entry(d.event.id.as_str()).or_default().push(d.reason.to_string());
    }
    let hostile = hostile_files(COUNT, RATIO);
    assert_eq!(hostile.len() as u64, (COUNT as f64 * RATIO) as u64);
    for (id, seen) in &outcomes {
        assert!(simulated.contains(*id), "{id}: an outcome for an image that was not simulated");
        assert_eq!(seen.len(), 1, "{id}: exactly one outcome, got {seen:?}");
        let i = index(id, &run).unwrap_or_else(|| panic!("{id}: not an id of run {run}"));
        let expected = match hostile.get(&i) {
            Some(file) => bad_input_verdict(file).map_or("prediction".to_string(), |r| r.to_string()),
            None => "prediction".to_string(),
        };
        assert_eq!(seen[0], expected, "{id} (image {i}, {:?})", hostile.get(&i));
    }
    assert_eq!(outcomes.len() as u64, COUNT);

    // BigQuery holds each prediction above the threshold once.
    let rows = bigquery_ids(&bigquery.url(), &dataset);
    let unique: BTreeSet<&String> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "no duplicate BigQuery row");
    let above: BTreeSet<&String> = predictions.iter().filter(|p| p.above_threshold).map(|p| &p.prediction_id).collect();
    assert_eq!(unique, above, "BigQuery holds exactly the predictions above the threshold");

    // Status reports it.
    let status = status_json(dir, &file);
    assert_eq!(status["dead_letters"].as_u64(), Some(dead.len() as u64), "{status}");
    assert_eq!(status["bigquery_rows"].as_u64(), Some(rows.len() as u64), "{status}");
    for c in status["connectors"].as_array().unwrap() {
        assert_eq!(c["up"], true, "{c}");
        assert_eq!(c["restarts"], 0, "{c}");
    }
    let (ok, lines) = fvision(dir, "status-lines.log", &["status", file_arg], Duration::from_secs(60));
    assert!(ok, "{lines}");
    assert!(lines.contains(&format!("dead letters {}", dead.len())) && lines.contains("lag 0"), "{lines}");

    // Cleanup: refuses without --yes and no terminal; then leaves nothing.
    let (ok, refused) = fvision(dir, "cleanup-1.log", &["cleanup", file_arg], Duration::from_secs(60));
    assert!(!ok && refused.contains("pass --yes"), "{refused}");
    let pids = recorded_pids(&state);
    assert_eq!(pids.len(), 6, "three connectors and their supervisors");
    let (ok, out) = fvision(dir, "cleanup-2.log", &["cleanup", file_arg, "--yes"], Duration::from_secs(300));
    assert!(ok, "cleanup:\n{out}");
    guard.armed = false;
    for connector in ["sink", "kafka", "gcs"] {
        assert!(out.contains(&format!("stopped  connector {connector} (drained: yes)")), "{out}");
    }
    assert!(pids.iter().all(|pid| !alive(*pid)), "no connector or supervisor left: {pids:?}");
    let topics = cluster.cli_ok(&["topic", "list"]);
    for topic in [&names.images, &names.predictions, &names.dlq] {
        assert!(!topics.contains(topic.as_str()), "topic {topic} deleted:\n{topics}");
    }
    assert!(!cluster.cli_ok(&["smartmodule", "list"]).contains(&names.smartmodule));
    assert_eq!(
        http_get_status(bigquery.port, &format!("/bigquery/v2/projects/{PROJECT}/datasets/{dataset}")),
        Some(404)
    );
    assert_eq!(http_get_status(gcs.port, &format!("/storage/v1/b/{}", names.bucket)), Some(404));
    let subscription = format!("/v1/projects/{PROJECT}/subscriptions/image-stream-sub");
    assert_eq!(http_get_status(pubsub.emulator.port, &subscription), Some(404));
    assert!(!cluster.cli_ok(&["consumer", "list"]).contains(&names.deployment), "consumer offsets deleted");
}

#[test]
fn two_sinks_share_a_two_partition_images_topic() {
    let test = "two_sinks_share_a_two_partition_images_topic";
    let Some(cluster) = local_cluster(test) else { return };
    let names = Names::new("fvt-scale");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let state = dir.join("state");
    let file = dir.join("deploy.yaml");
    let yaml = format!(
        "name: {name}\nstate-dir: {state}\n{topics}connectors:\n{a}{b}",
        name = names.deployment,
        state = state.display(),
        topics = topics(&names, 2),
        a = connector("sink-0", "inference-sink", "inference-sink.yaml", "    partition: 0\n"),
        b = connector("sink-1", "inference-sink", "inference-sink.yaml", "    partition: 1\n"),
    );
    std::fs::write(&file, yaml).unwrap();
    let file_arg = file.to_str().unwrap();
    let mut guard = CleanupGuard { dir: dir.to_path_buf(), file: file.clone(), armed: true };
    let (ok, out) = fvision(dir, "deploy.log", &["deploy", file_arg], Duration::from_secs(240));
    assert!(ok && out.contains(&format!("created  Fluvio topic {} (2 partition(s))", names.images)), "deploy:\n{out}");

    const COUNT: usize = 60;
    let ids_file = dir.join("ids");
    let (ok, out) = fvision(
        dir,
        "simulate.log",
        &[
            "simulate",
            "--mode",
            "fluvio",
            "--fluvio-topic",
            &names.images,
            "--count",
            &COUNT.to_string(),
            "--rate",
            "300",
            "--synthetic",
            "96x64",
            "--run-id",
            "scale",
            "--ids",
            ids_file.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(ok, "simulate:\n{out}");
    let simulated: BTreeSet<String> = std::fs::read_to_string(&ids_file).unwrap().lines().map(str::to_string).collect();
    let per_partition: Vec<usize> = (0..2).map(|p| cluster.read_partition(&names.images, p).len()).collect();
    assert!(per_partition.iter().all(|&n| n > 0), "both partitions get images: {per_partition:?}");

    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        let status = status_json(dir, &file);
        let sinks = status["connectors"].as_array().unwrap().clone();
        // Done when each sink committed its partition and its metrics count that partition's images (the
        // counter moves right after the commit, so both are waited for), and the cluster's status of the
        // partition has caught up with what was written (it trails the SPU under load).
        let done = sinks.iter().enumerate().all(|(i, s)| {
            let end = s["partitions"].as_array().filter(|p| p.len() == 1).and_then(|p| p[0]["end"].as_f64());
            s["lag"] == 0 && end == Some(per_partition[i] as f64) && s["total"].as_f64() == end
        });
        let predictions = cluster.read_all(&names.predictions).len();
        if done && predictions >= COUNT {
            break status;
        }
        assert!(Instant::now() < deadline, "the two sinks did not drain both partitions within 180 s: {status}");
        std::thread::sleep(Duration::from_secs(2));
    };
    for (i, sink) in status["connectors"].as_array().unwrap().iter().enumerate() {
        let partitions = sink["partitions"].as_array().unwrap();
        assert_eq!(partitions[0]["partition"].as_u64(), Some(i as u64), "sink-{i} consumes its own partition: {sink}");
        assert_eq!(partitions[0]["end"].as_u64(), Some(per_partition[i] as u64), "{sink}");
        assert_eq!(
            sink["total"].as_f64(),
            Some(per_partition[i] as f64),
            "sink-{i} classified its partition's images: {sink}"
        );
    }
    let predicted: Vec<String> = cluster
        .read_all(&names.predictions)
        .into_iter()
        .map(|(_, v)| serde_json::from_slice::<Prediction>(&v).unwrap().image_id)
        .collect();
    assert_eq!(
        predicted.iter().collect::<BTreeSet<_>>(),
        simulated.iter().collect::<BTreeSet<_>>(),
        "every image once"
    );
    assert_eq!(predicted.len(), COUNT, "no image twice");

    let (ok, out) = fvision(dir, "cleanup.log", &["cleanup", file_arg, "--yes"], Duration::from_secs(240));
    assert!(ok, "cleanup:\n{out}");
    guard.armed = false;
    assert!(!cluster.cli_ok(&["topic", "list"]).contains(&names.images));
}
