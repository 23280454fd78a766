//! The sources end to end, with real servers: `fvision simulate` feeds Kafka (librdkafka's mock cluster,
//! hosted by this test) and GCS + Pub/Sub (the emulators), `kafka-source` and `gcs-source` run at once into
//! one `images` topic of the local Fluvio cluster, each crashes mid-stream at the worst moment (after Fluvio
//! acknowledged a batch, before its commit) and is restarted without writing anything twice, and then
//! `inference-sink` classifies what arrived. The three simulator runs are the runbook's (the seed job's)
//! three invocations with shorter durations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fvision_gcp::pubsub;
use fvision_gcp::storage::BlockingClient;
use fvision_records::{ImageEvent, Prediction, Stage, ValidationRecord};
use fvision_tests::cluster::{local_cluster, unique_name, LocalCluster};
use fvision_tests::emulators::{self, PROJECT};
use fvision_tests::process::{target_binary, Process};
use rdkafka::mocking::MockCluster;

const KAFKA_TOPIC: &str = "image-stream";
const BUCKET: &str = "fvt-sim";
const PUBSUB_TOPIC: &str = "gcs-image-notifications";
const SUBSCRIPTION: &str = "image-stream-sub";
/// Records per Kafka commit and messages per Pub/Sub pull: the most a kill may replay, per source.
const BATCH: usize = 2;

/// Runs `fvision simulate` with `args` to completion; returns the ids it reported acknowledged.
fn simulate(dir: &Path, run: &str, args: &[&str]) -> Process {
    simulate_with_env(dir, run, args, &[])
}

fn simulate_with_env(dir: &Path, run: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
    let ids = dir.join(format!("{run}.ids"));
    let mut all: Vec<&str> = vec!["simulate", "--run-id", run, "--ids", ids.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    Process::start(&target_binary("fvision"), &all, env, &dir.join(format!("{run}.log")))
}

fn finish_simulate(mut process: Process, dir: &Path, run: &str) -> Vec<String> {
    assert!(process.wait(Duration::from_secs(60)).success(), "simulate {run}:\n{}", process.log());
    let log = process.log();
    let start = if log.starts_with('{') { Some(0) } else { log.find("\n{").map(|i| i + 1) };
    let report: serde_json::Value = start
        .and_then(|start| serde_json::Deserializer::from_str(&log[start..]).into_iter().next())
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("simulate {run} prints its report as JSON:\n{log}"));
    let ids: Vec<String> =
        std::fs::read_to_string(dir.join(format!("{run}.ids"))).unwrap().lines().map(str::to_string).collect();
    assert_eq!(report["images"].as_u64(), Some(ids.len() as u64), "every send acknowledged: {report}");
    ids
}

/// The run and index of a simulated image, from its id (`R-0000007` or `gs://b/prefix/R-0000007-name#g`).
fn run_index(id: &str, runs: &[&str]) -> Option<(String, u64)> {
    runs.iter().find_map(|run| {
        let at = id.find(&format!("{run}-"))?;
        let digits = id.get(at + run.len() + 1..at + run.len() + 8)?;
        Some((run.to_string(), digits.parse().ok()?))
    })
}

/// Image i of a run with `--bad-ratio ratio` was drawn from the hostile inputs (the simulator's rule).
fn is_bad(i: u64, ratio: f64) -> bool {
    ratio > 0.0 && ((i + 1) as f64 * ratio).floor() > (i as f64 * ratio).floor()
}

struct Topics {
    images: String,
    dlq: String,
    predictions: String,
}

fn read_events(cluster: &LocalCluster, topic: &str) -> Vec<ImageEvent> {
    cluster.read_all(topic).into_iter().map(|(_, v)| serde_json::from_slice(&v).unwrap()).collect()
}

fn read_dead(cluster: &LocalCluster, topic: &str) -> Vec<fvision_records::RejectedImage> {
    cluster
        .read_all(topic)
        .into_iter()
        .map(|(_, value)| match serde_json::from_slice(&value).unwrap() {
            ValidationRecord::Rejected(r) => r,
            other => panic!("not a rejection: {other:?}"),
        })
        .collect()
}

fn source_config(dir: &Path, name: &str, kind: &str, topics: &Topics, section: &str) -> PathBuf {
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: {name}
  type: {kind}
  topic: {{meta: {{name: {images}}}}}
  producer: {{linger: 5ms, batch-size: 8 MiB}}
{section}  dlq-topic: {dlq}
",
        images = topics.images,
        dlq = topics.dlq,
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn simulated_streams_survive_source_kills_and_reach_predictions() {
    let test = "simulated_streams_survive_source_kills_and_reach_predictions";
    let Some(cluster) = local_cluster(test) else { return };
    let topics = Topics {
        images: unique_name("fvt-src-images"),
        dlq: unique_name("fvt-src-dlq"),
        predictions: unique_name("fvt-src-predictions"),
    };
    for topic in [&topics.images, &topics.dlq, &topics.predictions] {
        cluster.create_topic(topic);
    }
    let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("starting the Kafka mock cluster: {e}"));
    // 35 sample images are about 5 MiB, what the mock keeps per partition (fvision_tests::kafka).
    mock.create_topic(KAFKA_TOPIC, 4, 1).unwrap();
    let servers = mock.bootstrap_servers();
    let gcs_emulator = emulators::gcs();
    let pubsub_emulator = emulators::pubsub();
    let gcs_url = gcs_emulator.url();
    let grpc = pubsub_emulator.grpc_host();
    BlockingClient::anonymous(&gcs_url, Duration::from_secs(30)).unwrap().create_bucket(PROJECT, BUCKET).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(pubsub::client(PROJECT, Some(&grpc), None)).unwrap();
    runtime.block_on(pubsub::ensure_subscription(&client, PUBSUB_TOPIC, SUBSCRIPTION, 10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // The runbook's three invocations, shortened: Kafka at 10/s, GCS at 5/s, both at 20/s with hostile inputs.
    let run = unique_name("r").replace('-', "");
    let runs = [format!("{run}k"), format!("{run}g"), format!("{run}b")];
    let gcs_args = ["--gcs-bucket", BUCKET, "--gcs-endpoint", &gcs_url, "--pubsub-project", PROJECT];
    let notify = ["--pubsub-emulator-host", &grpc, "--pubsub-topic", PUBSUB_TOPIC, "--notify"];
    // The GCS-only run names both emulators the way Google's tools do: no endpoint flags, no credentials.
    let gcs_by_env = ["--gcs-bucket", BUCKET, "--pubsub-project", PROJECT, "--pubsub-topic", PUBSUB_TOPIC, "--notify"];
    let emulator_env = [("STORAGE_EMULATOR_HOST", gcs_url.as_str()), ("PUBSUB_EMULATOR_HOST", grpc.as_str())];
    let kafka = ["--kafka-servers", &servers, "--kafka-topic", KAFKA_TOPIC];
    let with = |base: &[&str], parts: &[&[&str]]| -> Vec<String> {
        base.iter().chain(parts.iter().flat_map(|p| p.iter())).map(|s| s.to_string()).collect()
    };
    let invocations = [
        with(&["--mode", "kafka", "--rate", "10", "--duration", "1.5"], &[&kafka]),
        with(&["--mode", "gcs", "--rate", "5", "--duration", "2"], &[&gcs_by_env]),
        with(
            &["--mode", "both", "--rate", "20", "--duration", "2", "--bad-ratio", "0.15"],
            &[&kafka, &gcs_args, &notify],
        ),
    ];
    let processes: Vec<Process> = runs
        .iter()
        .zip(&invocations)
        .enumerate()
        .map(|(i, (run, args))| {
            let env: &[(&str, &str)] = if i == 1 { &emulator_env } else { &[] };
            simulate_with_env(dir, run, &args.iter().map(String::as_str).collect::<Vec<_>>(), env)
        })
        .collect();
    let mut simulated: BTreeSet<String> = BTreeSet::new();
    for (process, run) in processes.into_iter().zip(&runs) {
        simulated.extend(finish_simulate(process, dir, run));
    }
    let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
    let kafka_count = simulated.iter().filter(|id| !id.starts_with("gs://")).count();
    let gcs_count = simulated.len() - kafka_count;
    assert_eq!((kafka_count, gcs_count), (15 + 20, 10 + 20), "{simulated:?}");
    fvision_tests::kafka::assert_kept_all(&servers, KAFKA_TOPIC, kafka_count);

    // Both sources at once; each is killed (SIGKILL) mid-stream after a few commits, then restarted.
    let kafka_config = source_config(
        dir,
        &unique_name("fvt-kafka-source"),
        "kafka-source",
        &topics,
        &format!(
            "kafka:\n  bootstrap-servers: {servers}\n  topics: [{KAFKA_TOPIC}]\n  group-id: {group}\n  max-batch: \
             {BATCH}\n  client: {{session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\"}}\n",
            group = unique_name("fvt-group")
        ),
    );
    let gcs_config = source_config(
        dir,
        "fvt-gcs-source",
        "gcs-source",
        &topics,
        &format!(
            "gcs:\n  project: {PROJECT}\n  buckets: [{BUCKET}]\n  subscription: {SUBSCRIPTION}\n  pubsub-emulator-host: {grpc}\n  \
             gcs-endpoint: {gcs_url}\n  max-messages: {BATCH}\n  ack-deadline: 10s\n"
        ),
    );
    let env = [("RUST_LOG", "info,kafka_source=debug,fvision_kafka_source=debug,gcs_source=debug,fvision_gcs_source=debug,fvision_connector_common=debug,fluvio=warn")];
    let start = |bin: &str, config: &Path, log: &str, crash: Option<&str>| {
        let mut env = env.to_vec();
        env.extend(crash.map(|at| ("FVISION_CRASH_BEFORE_COMMIT", at)));
        Process::start(&target_binary(bin), &["--config", config.to_str().unwrap()], &env, &dir.join(log))
    };
    // Both sources at once, each crashing at the worst moment of its third batch: Fluvio acknowledged the
    // events, the Kafka offsets are not committed, the Pub/Sub messages not acked.
    let mut kafka_source = start("kafka-source", &kafka_config, "kafka-1.log", Some("3"));
    let mut gcs_source = start("gcs-source", &gcs_config, "gcs-1.log", Some("3"));
    for source in [&mut kafka_source, &mut gcs_source] {
        assert!(!source.wait(Duration::from_secs(90)).success(), "the first run aborts:\n{}", source.log());
        assert!(source.log().contains("aborting after Fluvio acknowledged, before the commit"), "{}", source.log());
    }
    let kafka_commits = kafka_source.log().matches("committed").count();
    let gcs_acks = gcs_source.log().matches("acked").count();
    assert!(kafka_commits * BATCH < kafka_count, "kafka-source crashed mid-stream ({kafka_commits} commits)");
    assert!(gcs_acks * BATCH < gcs_count, "gcs-source crashed mid-stream ({gcs_acks} ack batches)");

    let mut kafka_source = start("kafka-source", &kafka_config, "kafka-2.log", None);
    let mut gcs_source = start("gcs-source", &gcs_config, "gcs-2.log", None);
    // Every simulated image is in `images`, or (an empty hostile file) a dead letter of the source.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let events = read_events(&cluster, &topics.images);
        let dead: Vec<_> = read_dead(&cluster, &topics.dlq).into_iter().filter(|r| r.stage == Stage::Ingest).collect();
        let seen: BTreeSet<&str> =
            events.iter().map(|e| e.meta.id.as_str()).chain(dead.iter().map(|r| r.event.id.as_str())).collect();
        if simulated.iter().all(|id| seen.contains(id.as_str())) {
            break;
        }
        kafka_source.assert_running();
        gcs_source.assert_running();
        assert!(
            Instant::now() < deadline,
            "missing after 90 s: {:?}\nkafka-source:\n{}\ngcs-source:\n{}",
            simulated.iter().filter(|id| !seen.contains(id.as_str())).collect::<Vec<_>>(),
            kafka_source.log(),
            gcs_source.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // What the crashed runs wrote but did not commit comes again (Kafka at once, Pub/Sub after the ack
    // deadline) and is skipped ("not sent again: a replay").
    for source in [&mut kafka_source, &mut gcs_source] {
        source.wait_log("a replay", 1, Duration::from_secs(60));
    }
    for source in [&mut kafka_source, &mut gcs_source] {
        source.signal("-TERM");
        assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    }
    let (events, ingest_dead) = (
        read_events(&cluster, &topics.images),
        read_dead(&cluster, &topics.dlq).into_iter().filter(|r| r.stage == Stage::Ingest).collect::<Vec<_>>(),
    );

    // Exactly once by id: what the crashed runs wrote but did not commit was read again and skipped.
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for id in events.iter().map(|e| e.meta.id.as_str()).chain(ingest_dead.iter().map(|r| r.event.id.as_str())) {
        *copies.entry(id).or_default() += 1;
    }
    let unexpected: Vec<&&str> = copies.keys().filter(|id| !simulated.contains(**id)).collect();
    assert!(unexpected.is_empty(), "records that were not simulated: {unexpected:?}");
    let duplicates =
        |gcs: bool| copies.iter().filter(|(id, _)| id.starts_with("gs://") == gcs).map(|(_, n)| n - 1).sum::<usize>();
    let (kafka_dups, gcs_dups) = (duplicates(false), duplicates(true));
    let skipped = |source: &Process| {
        let log = source.log();
        let at = log.rfind("replay_skipped=").map(|at| at + "replay_skipped=".len());
        at.and_then(|at| log[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()).unwrap_or(0)
    };
    let (kafka_skipped, gcs_skipped) = (skipped(&kafka_source), skipped(&gcs_source));
    eprintln!(
        "{test}: {} images; written twice after the crashes: kafka {kafka_dups}, gcs {gcs_dups}; replays skipped: \
         kafka {kafka_skipped}, gcs {gcs_skipped}",
        simulated.len()
    );
    assert_eq!((kafka_dups, gcs_dups), (0, 0), "no image twice on `images` after a crash at the worst moment");
    assert!(kafka_skipped > 0, "kafka-source read its uncommitted batch again and skipped it:\n{}", kafka_source.log());
    assert!(gcs_skipped > 0, "gcs-source got its un-acked pull again and skipped it:\n{}", gcs_source.log());
    for event in events.iter().filter(|e| e.meta.id.starts_with("gs://")) {
        assert_eq!(event.meta.attribute("bucket"), Some(BUCKET));
        assert!(event.meta.attribute("object_name").is_some_and(|n| n.starts_with("input-images/")));
    }
    for letter in &ingest_dead {
        assert_eq!(letter.reason, fvision_records::RejectReason::Empty, "{}: {}", letter.event.id, letter.detail);
    }

    // Then through the inference sink: every good image is classified, every event answered.
    let sink_config = dir.join("sink.yaml");
    std::fs::write(
        &sink_config,
        format!(
            "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: fvt-src-sink
  type: inference-sink
  topic: {{meta: {{name: {images}}}}}
  consumer:
    id: {consumer}
    offset: {{start: beginning, strategy: manual}}
inference:
  model: efficientnet-lite0
  predictions-topic: {predictions}
  dlq-topic: {dlq}
  validate-at: connector
transforms:
  - uses: image-validate
",
            images = topics.images,
            consumer = unique_name("fvt-src-sink"),
            predictions = topics.predictions,
            dlq = topics.dlq,
        ),
    )
    .unwrap();
    let mut sink = Process::start(
        &target_binary("inference-sink"),
        &["--config", sink_config.to_str().unwrap(), "--drain"],
        &[("RUST_LOG", "info,fluvio=warn")],
        &dir.join("sink.log"),
    );
    assert!(sink.wait(Duration::from_secs(120)).success(), "inference-sink --drain:\n{}", sink.log());
    let predictions: Vec<Prediction> =
        cluster.read_all(&topics.predictions).into_iter().map(|(_, v)| serde_json::from_slice(&v).unwrap()).collect();
    let classified: BTreeSet<&str> = predictions.iter().map(|p| p.image_id.as_str()).collect();
    let rejected: BTreeSet<String> =
        read_dead(&cluster, &topics.dlq).into_iter().filter(|r| r.stage != Stage::Ingest).map(|r| r.event.id).collect();
    let distinct: BTreeSet<&str> = events.iter().map(|e| e.meta.id.as_str()).collect();
    for id in &distinct {
        assert!(classified.contains(id) || rejected.contains(*id), "{id}: neither a prediction nor a dead letter");
        let (run, index) = run_index(id, &runs).unwrap_or_else(|| panic!("{id}: not a simulated id"));
        if !(run.ends_with('b') && is_bad(index, 0.15)) {
            assert!(classified.contains(id), "{id}: a sample image without a prediction");
        }
    }
    for p in predictions.iter().filter(|p| p.image_id.starts_with("gs://")) {
        assert_eq!(p.bucket.as_deref(), Some(BUCKET), "the BigQuery column `bucket` is filled");
        assert!(p.object_name.as_deref().is_some_and(|n| n.starts_with("input-images/")));
    }
    drop(runtime);
}

#[test]
fn simulate_to_fluvio_sends_every_image_once() {
    let Some(cluster) = local_cluster("simulate_to_fluvio_sends_every_image_once") else { return };
    let images = unique_name("fvt-sim-images");
    cluster.create_topic(&images);
    let dir = tempfile::tempdir().unwrap();
    let process = simulate(
        dir.path(),
        "fvtsim",
        &["--mode", "fluvio", "--fluvio-topic", &images, "--count", "30", "--rate", "200", "--synthetic", "64x48"],
    );
    let ids = finish_simulate(process, dir.path(), "fvtsim");
    let events = read_events(&cluster, &images);
    let got: Vec<&str> = events.iter().map(|e| e.meta.id.as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>(), "every image once, in order");
    assert!(events.iter().all(|e| e.meta.source == fvision_records::Source::Simulator));
}

/// Seconds between the first and the last log line containing `word`, and the records those lines report
/// after the first (`field=N` in each line): a source's steady throughput, its start-up excluded.
fn throughput(log: &str, word: &str, field: &str) -> (f64, u64) {
    let lines = counted_lines(log, word, field);
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else { panic!("no `{word}` lines in:\n{log}") };
    let seconds = last.0.duration_since(first.0).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    (seconds, lines[1..].iter().map(|(_, n)| n).sum())
}

/// Every log line containing `word` and `field=N`: its time and N.
fn counted_lines(log: &str, word: &str, field: &str) -> Vec<(std::time::SystemTime, u64)> {
    let lines: Vec<(std::time::SystemTime, u64)> = log
        .lines()
        .filter(|line| line.contains(word) && line.contains(field))
        .filter_map(|line| {
            let time = humantime::parse_rfc3339_weak(line.split_whitespace().next()?).ok()?;
            let at = line.find(field)? + field.len();
            let n = line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
            Some((time, n))
        })
        .collect();
    lines
}

/// Records reported so far by `word` lines.
fn counted(log: &str, word: &str, field: &str) -> u64 {
    counted_lines(log, word, field).iter().map(|(_, n)| n).sum()
}

/// Benchmark, not a test (run by hand, see docs/benchmarks.md): the simulator's achieved rate at 10, 100 and
/// 1,000 images/s, and each source's throughput on the sample images.
#[test]
#[ignore = "benchmark: cargo test --release -p fvision-tests --test e2e bench_sources -- --ignored --nocapture"]
fn bench_sources() {
    let Some(cluster) = local_cluster("bench_sources") else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mock = MockCluster::new(1).unwrap();
    // 1,000 sample images are ~150 MiB; the mock keeps 5 MiB per partition and deletes the oldest records
    // beyond (with one partition the source found only the last ~31-90 records: the "stall" once recorded here).
    mock.create_topic(KAFKA_TOPIC, 48, 1).unwrap();
    let servers = mock.bootstrap_servers();
    let topics = Topics {
        images: unique_name("fvb-images"),
        dlq: unique_name("fvb-dlq"),
        predictions: unique_name("fvb-unused"),
    };
    cluster.create_topic(&topics.images);
    cluster.create_topic(&topics.dlq);

    for rate in [10u64, 100, 1000] {
        for mode in ["fluvio", "kafka"] {
            let count = (rate * 3).max(30).to_string();
            let rate_text = rate.to_string();
            let run = format!("fvbsim{mode}{rate}");
            let mut args = vec!["--mode", mode, "--rate", &rate_text, "--count", &count, "--synthetic", "224x224"];
            args.extend(["--fluvio-topic", &topics.images, "--kafka-servers", &servers, "--kafka-topic", "sim-bench"]);
            let process = simulate(dir, &run, &args);
            let ids = finish_simulate(process, dir, &run);
            let log = std::fs::read_to_string(dir.join(format!("{run}.log"))).unwrap();
            let achieved = log.lines().find(|l| l.contains("\"achieved_rate\"")).unwrap_or_default().to_string();
            eprintln!("simulate --mode {mode} --rate {rate}: {} images, {}", ids.len(), achieved.trim());
        }
    }

    // A reference in the same run: the same 1,000 sample images produced straight to Fluvio, unpaced, by the
    // simulator's Fluvio mode (the sources' producer settings; one send at a time, settled every 256).
    let ceiling_topic = unique_name("fvb-ceiling");
    cluster.create_topic(&ceiling_topic);
    let process = simulate(
        dir,
        "fvbf",
        &["--mode", "fluvio", "--rate", "100000", "--count", "1000", "--fluvio-topic", &ceiling_topic],
    );
    finish_simulate(process, dir, "fvbf");
    let log = std::fs::read_to_string(dir.join("fvbf.log")).unwrap_or_default();
    let ceiling = log.lines().find(|l| l.contains("achieved_rate")).unwrap_or_default().to_string();
    eprintln!("simulate --mode fluvio, unpaced, sample images (reference): {}", ceiling.trim());

    // kafka-source on 1,000 sample images already in Kafka.
    let process =
        simulate(dir, "fvbk", &["--mode", "kafka", "--rate", "100000", "--count", "1000", "--kafka-servers", &servers]);
    finish_simulate(process, dir, "fvbk");
    fvision_tests::kafka::assert_kept_all(&servers, KAFKA_TOPIC, 1000);
    let config = source_config(
        dir,
        "fvb-kafka",
        "kafka-source",
        &topics,
        &format!("kafka:\n  bootstrap-servers: {servers}\n  topics: [{KAFKA_TOPIC}]\n  group-id: fvb\n"),
    );
    let env = [(
        "RUST_LOG",
        "info,kafka_source=debug,fvision_kafka_source=debug,gcs_source=debug,fvision_gcs_source=debug,fluvio=warn",
    )];
    let mut source = Process::start(
        &target_binary("kafka-source"),
        &["--config", config.to_str().unwrap()],
        &env,
        &dir.join("k.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while counted(&source.log(), "committed", "records=") < 1000 && Instant::now() < deadline {
        source.assert_running();
        std::thread::sleep(Duration::from_millis(200));
    }
    source.signal("-TERM");
    source.wait(Duration::from_secs(30));
    let (seconds, records) = throughput(&source.log(), "committed", "records=");
    eprintln!(
        "kafka-source: {records} images in {seconds:.2} s after the first batch = {:.1} images/s",
        records as f64 / seconds
    );

    // gcs-source on 200 sample images uploaded and announced.
    let gcs_emulator = emulators::gcs();
    let pubsub_emulator = emulators::pubsub();
    let (gcs_url, grpc) = (gcs_emulator.url(), pubsub_emulator.grpc_host());
    BlockingClient::anonymous(&gcs_url, Duration::from_secs(30)).unwrap().create_bucket(PROJECT, BUCKET).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(pubsub::client(PROJECT, Some(&grpc), None)).unwrap();
    runtime.block_on(pubsub::ensure_subscription(&client, PUBSUB_TOPIC, SUBSCRIPTION, 60)).unwrap();
    let args = [
        "--mode",
        "gcs",
        "--rate",
        "100000",
        "--count",
        "200",
        "--gcs-bucket",
        BUCKET,
        "--gcs-endpoint",
        &gcs_url,
        "--pubsub-project",
        PROJECT,
        "--pubsub-emulator-host",
        &grpc,
        "--pubsub-topic",
        PUBSUB_TOPIC,
        "--notify",
    ];
    let process = simulate(dir, "fvbg", &args);
    finish_simulate(process, dir, "fvbg");
    let log = std::fs::read_to_string(dir.join("fvbg.log")).unwrap_or_default();
    eprintln!(
        "simulate --mode gcs --notify, unpaced: {}",
        log.lines().find(|l| l.contains("achieved_rate")).unwrap_or_default()
    );
    let config = source_config(
        dir,
        "fvb-gcs",
        "gcs-source",
        &topics,
        &format!(
            "gcs:\n  project: {PROJECT}\n  buckets: [{BUCKET}]\n  subscription: {SUBSCRIPTION}\n  pubsub-emulator-host: {grpc}\n  \
             gcs-endpoint: {gcs_url}\n  max-messages: 16\n"
        ),
    );
    let mut source =
        Process::start(&target_binary("gcs-source"), &["--config", config.to_str().unwrap()], &env, &dir.join("g.log"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while counted(&source.log(), "acked", "count=") < 200 && Instant::now() < deadline {
        source.assert_running();
        std::thread::sleep(Duration::from_millis(200));
    }
    source.signal("-TERM");
    source.wait(Duration::from_secs(30));
    let (seconds, records) = throughput(&source.log(), "acked", "count=");
    eprintln!(
        "gcs-source: {records} images in {seconds:.2} s after the first pull = {:.1} images/s",
        records as f64 / seconds
    );
}
