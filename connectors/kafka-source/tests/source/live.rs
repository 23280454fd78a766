//! The `kafka-source` binary between a real Kafka-protocol broker (librdkafka's mock cluster, hosted by
//! this test process) and the local Fluvio cluster: every value format becomes the expected ImageEvent,
//! values that cannot become one reach the dead-letter topic with their reason and Kafka position, offsets
//! are committed (after Fluvio acknowledged), and a restart replays nothing that was committed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use fvision_records::{ImageEvent, RejectReason, Source, ValidationRecord};
use fvision_tests::cluster::{local_cluster, unique_name, LocalCluster};
use fvision_tests::process::Process;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "image-stream";

/// The two ends of a test: a Kafka mock cluster with [`TOPIC`] in `partitions` partitions, and fresh events and
/// dead-letter topics on the local Fluvio cluster named from `prefix`.
struct Ends {
    /// Hosts the broker: dropping it stops the broker.
    mock: MockCluster<'static, DefaultProducerContext>,
    servers: String,
    images: String,
    dlq: String,
}

fn ends(cluster: &LocalCluster, prefix: &str, partitions: i32) -> Ends {
    let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("starting the Kafka mock cluster: {e}"));
    mock.create_topic(TOPIC, partitions, 1).unwrap();
    let servers = mock.bootstrap_servers();
    let (images, dlq) = cluster.create_source_topics(prefix);
    Ends { mock, servers, images, dlq }
}

/// Starts the kafka-source binary on `config`, its output in `log`, with the tests' log filter and `env` on top
/// (a later variable wins).
fn start_source(config: &Path, log: &Path, env: &[(&str, &str)]) -> Process {
    let mut vars = vec![("RUST_LOG", "info,kafka_source=debug,fvision_kafka_source=debug,fluvio=warn")];
    vars.extend_from_slice(env);
    let config = config.to_str().unwrap();
    Process::start(Path::new(env!("CARGO_BIN_EXE_kafka-source")), &["--config", config], &vars, log)
}

/// A valid 1x1 PNG: the smallest image the source writes as an event.
fn png() -> Vec<u8> {
    std::fs::read(fvision_tests::data("bad-inputs").join("valid-1x1.png")).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn write_config(dir: &Path, name: &str, servers: &str, images: &str, dlq: &str) -> std::path::PathBuf {
    write_config_with(
        dir,
        name,
        servers,
        images,
        dlq,
        "client: {session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\"}",
    )
}

/// The test config with `extra` (YAML lines of the `kafka` section) instead of the short session timeout.
fn write_config_with(
    dir: &Path,
    name: &str,
    servers: &str,
    images: &str,
    dlq: &str,
    extra: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: {name}
  type: kafka-source
  topic: {{meta: {{name: {images}}}}}
  producer: {{linger: 5ms, batch-size: 8 MiB}}
kafka:
  bootstrap-servers: {servers}
  topics: [{TOPIC}]
  group-id: {name}
  max-batch: 3
  max-record-bytes: 256 KiB
  dlq-topic: {dlq}
  {extra}
"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn every_value_format_becomes_an_event_and_the_rest_dead_letters() {
    let Some(cluster) = local_cluster("every_value_format_becomes_an_event_and_the_rest_dead_letters") else { return };
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks", 1);

    let png = png();
    let jpeg = fvision_tests::data_files("imagenet-sample").remove(0).1;
    let event = serde_json::json!({"id": "own-id", "source": "simulator", "event_time": "2026-01-01T00:00:00Z",
        "data": b64(&jpeg)})
    .to_string();
    let field = serde_json::json!({"image_data": b64(&png), "camera": "gate-3"}).to_string();
    // Ten times `max-record-bytes` (256 KiB).
    let oversized = vec![0xffu8; 2560 * 1024];
    // (value, what it must become): Ok(id) for an event, Err(reason) for a dead letter.
    let values: Vec<(Vec<u8>, Result<&str, RejectReason>)> = vec![
        (png.clone(), Ok("kafka://image-stream/0/0")),
        (b64(&png).into_bytes(), Ok("kafka://image-stream/0/1")),
        (event.into_bytes(), Ok("own-id")),
        (field.into_bytes(), Ok("kafka://image-stream/0/3")),
        (Vec::new(), Err(RejectReason::Empty)),
        (b"{\"id\": \"x\", \"data\": ".to_vec(), Err(RejectReason::MalformedEnvelope)),
        (oversized, Err(RejectReason::TooLarge)),
        (png.clone(), Ok("kafka://image-stream/0/7")),
    ];
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("message.max.bytes", "10000000").create().unwrap();
    for (i, (value, _)) in values.iter().enumerate() {
        let key = format!("key-{i}");
        let headers = OwnedHeaders::new().insert(Header { key: "trace", value: Some("t1") });
        producer.send(BaseRecord::to(TOPIC).key(&key).payload(value).headers(headers)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let group = unique_name("fvt-ks");
    let config = write_config(dir.path(), &group, &servers, &images, &dlq);
    let mut source = start_source(&config, &dir.path().join("run1.log"), &[]);
    // Eight records in batches of at most three: at least three commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster.read_all(&images).len() + cluster.read_all(&dlq).len() < values.len() {
        source.assert_running();
        assert!(std::time::Instant::now() < deadline, "not everything arrived; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    source.wait_log("committed", 3, Duration::from_secs(30));
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    assert!(source.log().contains("stopped: everything read was acknowledged by Fluvio and committed"));

    let events: BTreeMap<String, ImageEvent> = cluster
        .read_all(&images)
        .into_iter()
        .map(|(key, value)| {
            let event: ImageEvent = serde_json::from_slice(&value).unwrap();
            assert_eq!(key, event.meta.id, "events are keyed by id");
            (event.meta.id.clone(), event)
        })
        .collect();
    let dead: Vec<_> = cluster
        .read_all(&dlq)
        .into_iter()
        .map(|(_, value)| match serde_json::from_slice(&value).unwrap() {
            ValidationRecord::Rejected(r) => r,
            other => panic!("not a rejection: {other:?}"),
        })
        .collect();
    for (offset, (value, expected)) in values.iter().enumerate() {
        match expected {
            Ok(id) => {
                let event = events.get(*id).unwrap_or_else(|| panic!("no event {id} in {:?}", events.keys()));
                let position = event.meta.attributes["kafka_offset"].as_i64();
                assert_eq!(position, Some(offset as i64), "{id}");
                assert_eq!(event.meta.attributes["kafka_key"], format!("key-{offset}"));
                assert_eq!(event.meta.attributes["kafka_headers"]["trace"], "t1");
                if *id == "own-id" {
                    assert_eq!(event.meta.source, Source::Simulator);
                    assert_eq!(event.meta.event_time.as_deref(), Some("2026-01-01T00:00:00Z"));
                    assert_eq!(event.data, b64(&jpeg));
                } else {
                    assert_eq!(event.meta.source, Source::Kafka);
                    assert!(event.meta.event_time.is_some(), "the Kafka timestamp");
                    assert_eq!(base64::engine::general_purpose::STANDARD.decode(&event.data).unwrap(), png);
                }
            }
            Err(reason) => {
                let id = format!("kafka://image-stream/0/{offset}");
                let letter = dead.iter().find(|r| r.event.id == id).unwrap_or_else(|| panic!("no dead letter {id}"));
                assert_eq!(letter.reason, *reason, "{id}: {}", letter.detail);
                assert_eq!(letter.event.attributes["kafka_offset"].as_i64(), Some(offset as i64));
                let kept = letter.payload.to_bytes().unwrap();
                if value.len() <= fvision_connector_common::dead_letter::PAYLOAD_CAP {
                    assert_eq!(&kept, value, "the original value is kept");
                } else {
                    assert!(kept.len() < value.len() && letter.payload_truncated, "{}", letter.detail);
                    assert_eq!(letter.payload_size, Some(value.len() as u64));
                }
            }
        }
    }
    assert_eq!(events.len() + dead.len(), values.len(), "nothing else, nothing twice");

    // The group's committed offset is the end of the partition.
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", &group).create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(TOPIC, 0);
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    let offset = committed.find_partition(TOPIC, 0).map(|p| p.offset());
    assert_eq!(offset, Some(Offset::Offset(values.len() as i64)));

    // A restart reads nothing again.
    let mut source = start_source(&config, &dir.path().join("run2.log"), &[]);
    source.wait_log("consuming", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "{}", source.log());
    assert_eq!(cluster.read_all(&images).len(), events.len(), "nothing replayed after a clean stop");

    // A missing dead-letter topic stops the source at start, naming it.
    let config = write_config(dir.path(), "wrong", &servers, &images, "fvt-no-such-dlq");
    let mut source = start_source(&config, &dir.path().join("run3.log"), &[]);
    assert!(!source.wait(Duration::from_secs(30)).success());
    assert!(source.log().contains("topic `fvt-no-such-dlq` does not exist"), "{}", source.log());
}

/// Records committed so far, from the source's debug log (`records=N ... committed` lines).
fn committed_records(log: &str) -> u64 {
    log.lines()
        .filter(|line| line.contains("committed") && line.contains("records="))
        .filter_map(|line| {
            let at = line.find("records=")? + "records=".len();
            line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The default batch (64 records, 32 MiB) of image-sized records (the sample JPEGs as ImageEvent JSON, as
/// `fvision simulate` sends them; a batch is more than one 8 MiB Fluvio producer batch), 300 of them already
/// waiting in Kafka over 16 partitions: every one reaches Fluvio once and is committed.
///
/// This is the run that "stalled after ~90 of 300 records": on one partition it stops at about 31, because
/// librdkafka's mock cluster keeps only 5 MiB per partition and had deleted the older records before the
/// source started (the source read everything that was left). Hence 16 partitions, and the check that the
/// mock kept every record before the source starts.
#[test]
fn large_batches_of_image_sized_records_all_arrive() {
    let Some(cluster) = local_cluster("large_batches_of_image_sized_records_all_arrive") else { return };
    // The mock keeps at most 5 MiB per partition (fvision_tests::kafka): 300 sample images are ~45 MiB.
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-big", 16);

    let samples = fvision_tests::data_files("imagenet-sample");
    const COUNT: usize = 300;
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("message.max.bytes", "10000000").create().unwrap();
    for i in 0..COUNT {
        let (name, bytes) = &samples[i % samples.len()];
        let id = format!("big-{i:04}-{name}");
        let value = serde_json::json!({"id": id, "source": "simulator", "data": b64(bytes)}).to_string();
        loop {
            match producer.send(BaseRecord::to(TOPIC).key(&id).payload(&value)) {
                Ok(()) => break,
                Err((_, _)) => producer.poll(Duration::from_millis(50)),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    fvision_tests::kafka::assert_kept_all(&servers, TOPIC, COUNT);

    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("fvt-ks-big");
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: {name}
  type: kafka-source
  topic: {{meta: {{name: {images}}}}}
kafka:
  bootstrap-servers: {servers}
  topics: [{TOPIC}]
  group-id: {name}
  dlq-topic: {dlq}
"
    );
    let config = dir.path().join("big.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut source = start_source(&config, &dir.path().join("big.log"), &[]);
    // Not a timing assertion: a source that still runs but has made no progress for 60 s has stalled.
    let (mut last, mut since) = (0, std::time::Instant::now());
    loop {
        let done = committed_records(&source.log());
        if done >= COUNT as u64 {
            break;
        }
        if done > last {
            (last, since) = (done, std::time::Instant::now());
        }
        source.assert_running();
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "stalled at {done} of {COUNT} committed records; log:\n{}",
            source.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let events = cluster.read_all(&images);
    assert!(cluster.read_all(&dlq).is_empty(), "no dead letters");
    let ids: std::collections::BTreeSet<String> = events.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!((events.len(), ids.len()), (COUNT, COUNT), "each record once");
}

/// The group's committed offset of partition 0, if any.
fn committed_offset(servers: &str, group: &str) -> Option<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", servers).set("group.id", group).create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(TOPIC, 0);
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    match committed.find_partition(TOPIC, 0).map(|p| p.offset()) {
        Some(Offset::Offset(offset)) => Some(offset),
        _ => None,
    }
}

/// Where a crash test's records end up.
#[derive(Clone, Copy, PartialEq)]
enum Written {
    /// On `images` (valid records).
    Events,
    /// On `images-dlq` (hostile records).
    DeadLetters,
}

/// Writes `values` to a Kafka mock topic, runs the source until the crash hook aborts it after Fluvio
/// acknowledged its second batch and before the Kafka commit, checks that Fluvio holds records beyond the
/// committed offset, restarts it until every record is committed, stops it with SIGTERM, and checks that the
/// restart skipped exactly the records it read again (its exit line's `replay_skipped`). Returns the names
/// of the `images` and `images-dlq` topics it wrote.
fn crash_then_resume(
    cluster: &fvision_tests::cluster::LocalCluster,
    prefix: &str,
    values: &[Vec<u8>],
    written: Written,
) -> (String, String) {
    let Ends { mock: _broker, servers, images, dlq } = ends(cluster, prefix, 1);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    for value in values {
        producer.send(BaseRecord::<(), _>::to(TOPIC).payload(value)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let group = unique_name(prefix);
    let config = write_config(dir.path(), &group, &servers, &images, &dlq);
    let target = if written == Written::Events { &images } else { &dlq };
    let count = values.len() as i64;

    let crash = [("FVISION_CRASH_BEFORE_COMMIT", "2")];
    let mut source = start_source(&config, &dir.path().join("crash.log"), &crash);
    assert!(!source.wait(Duration::from_secs(60)).success(), "run 1 aborts:\n{}", source.log());
    assert!(source.log().contains("aborting after Fluvio acknowledged, before the commit"), "{}", source.log());
    let committed = committed_offset(&servers, &group).unwrap_or(0);
    let held = cluster.read_all(target).len() as i64;
    assert!(held > committed, "Fluvio holds records beyond the committed offset ({held} vs {committed})");

    let mut source = start_source(&config, &dir.path().join("restart.log"), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed_offset(&servers, &group) != Some(count) {
        source.assert_running();
        assert!(std::time::Instant::now() < deadline, "not everything was committed; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let replayed = held - committed;
    assert!(
        source.log().contains(&format!("replay_skipped={replayed}")),
        "the {replayed} records read again were skipped:\n{}",
        source.log()
    );
    (images, dlq)
}

/// A crash at the worst moment (Fluvio acknowledged the second batch, its offsets not yet committed): nothing
/// is lost, and the restart reads again exactly the records Fluvio held beyond the committed offset but does
/// not write them again (the replay guard read their ids back from `images`): every record once.
#[test]
fn a_crash_between_the_acknowledgement_and_the_commit_writes_nothing_twice() {
    let test = "a_crash_between_the_acknowledgement_and_the_commit_writes_nothing_twice";
    let Some(cluster) = local_cluster(test) else { return };
    let png = png();
    const COUNT: i64 = 9;
    let values = vec![png; COUNT as usize];
    let (images, _) = crash_then_resume(&cluster, "fvt-ks-crash", &values, Written::Events);
    let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
    for (key, value) in cluster.read_all(&images) {
        let event: ImageEvent = serde_json::from_slice(&value).unwrap();
        assert_eq!(key, event.meta.id);
        *copies.entry(event.meta.attributes["kafka_offset"].as_i64().unwrap()).or_default() += 1;
    }
    let expected: BTreeMap<i64, usize> = (0..COUNT).map(|offset| (offset, 1)).collect();
    assert_eq!(copies, expected, "every record once, also those acknowledged but not committed before the crash");
}

/// The Kafka broker goes down under the running source and comes back: the source keeps running (it logs the
/// client's errors), then reads what was written after the outage, and nothing is read twice or lost.
#[test]
fn the_broker_going_down_and_up_under_the_source_loses_nothing() {
    let Some(cluster) = local_cluster("the_broker_going_down_and_up_under_the_source_loses_nothing") else { return };
    let Ends { mock, servers, images, dlq } = ends(&cluster, "fvt-ks-down", 1);
    let png = png();
    let send = |n: usize| {
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
        for _ in 0..n {
            producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png)).unwrap();
        }
        producer.flush(Duration::from_secs(60)).unwrap_or_else(|e| panic!("producing after the outage: {e}"));
    };
    send(3);
    let dir = tempfile::tempdir().unwrap();
    let group = unique_name("fvt-ks-down");
    let config = write_config(dir.path(), &group, &servers, &images, &dlq);
    let mut source = start_source(&config, &dir.path().join("down.log"), &[]);
    let wait_for = |source: &mut Process, count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while cluster.read_all(&images).len() < count {
            source.assert_running();
            assert!(std::time::Instant::now() < deadline, "{count} events did not arrive; log:\n{}", source.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&mut source, 3);
    mock.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    source.assert_running();
    mock.broker_up(1).unwrap();
    send(3);
    wait_for(&mut source, 6);
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let offsets: Vec<i64> = cluster
        .read_all(&images)
        .into_iter()
        .map(|(_, value)| {
            let event: ImageEvent = serde_json::from_slice(&value).unwrap();
            event.meta.attributes["kafka_offset"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(offsets, (0..6).collect::<Vec<i64>>(), "each record once, in order");
    assert_eq!(committed_offset(&servers, &group), Some(6));
}

/// The fault campaign's stall: kafka-source SIGKILLed every few seconds and restarted a second later (as its
/// supervisor does), with the deployed config's session timeout (10 s). With `assignment: group` each restart
/// waited in a rebalance for the killed member (librdkafka's mock cluster even elects the dead member leader,
/// so the SyncGroup fails until its session expires): no restart read anything, and the last one only after
/// about 20 s (docs/decisions.md). With `assignment: all` (the default) every restart reads at once, and
/// after the last one every record is on Fluvio exactly once (the replays of the kills are skipped).
#[test]
fn repeated_sigkills_do_not_stall_the_source_and_write_each_record_once() {
    let test = "repeated_sigkills_do_not_stall_the_source_and_write_each_record_once";
    let Some(cluster) = local_cluster(test) else { return };
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-kills", 4);
    let png = png();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    let mut sent = 0usize;
    let mut send = |n: usize| {
        for _ in 0..n {
            producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        sent += n;
        sent
    };
    let dir = tempfile::tempdir().unwrap();
    let group = unique_name("fvt-ks-kills");
    let config =
        write_config_with(dir.path(), &group, &servers, &images, &dlq, "client: {session.timeout.ms: \"10000\"}");
    for round in 0..6 {
        send(5);
        let mut source = start_source(&config, &dir.path().join(format!("run{round}.log")), &[]);
        // Every restarted run reads and commits before its SIGKILL. Not a fixed delay (a start takes seconds
        // on a loaded machine: with 4 s, 3 of 6 runs had not committed yet); the bound is below what
        // `assignment: group` needs on the mock cluster (at least two 10 s sessions per restart, docs/decisions.md).
        source.wait_log("committed", 1, Duration::from_secs(15));
        source.signal("-KILL");
        source.wait(Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(1));
    }
    let total = send(5);
    let started = std::time::Instant::now();
    let mut source = start_source(&config, &dir.path().join("last.log"), &[]);
    let deadline = started + Duration::from_secs(120);
    while cluster.read_all(&images).len() < total {
        source.assert_running();
        assert!(std::time::Instant::now() < deadline, "not everything arrived; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{test}: each of the 6 killed runs committed; all {total} records on Fluvio {:.1} s after the last restart",
        started.elapsed().as_secs_f64()
    );
    source.wait_log("committed", 1, Duration::from_secs(30));
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for (key, _) in cluster.read_all(&images) {
        *copies.entry(key).or_default() += 1;
    }
    assert_eq!(copies.len(), total, "every record reached Fluvio");
    assert!(
        copies.values().all(|&n| n == 1),
        "no record twice: {:?}",
        copies.iter().filter(|(_, &n)| n > 1).collect::<Vec<_>>()
    );
}

/// The replay guard never drops a new image: `images` already holds (from before the source started, so read
/// back) a record under the id `kafka://image-stream/0/0` (a Kafka topic deleted and created again restarts its
/// offsets), and two Kafka records bring their own event id `camera-1` (ids a producer reuses); every one of
/// them is a different image and is written. Only the same record read again is a replay.
#[test]
fn a_new_image_under_an_id_already_written_is_never_skipped() {
    let test = "a_new_image_under_an_id_already_written_is_never_skipped";
    let Some(cluster) = local_cluster(test) else { return };
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-reused", 1);
    let png = png();
    // What an earlier incarnation of the Kafka topic left on `images` at the id of offset 0.
    let earlier = ImageEvent {
        meta: fvision_records::EventMeta { id: format!("kafka://{TOPIC}/0/0"), ..Default::default() },
        data: b64(b"an earlier image"),
    };
    cluster.produce(&images, &[(earlier.meta.id.clone(), serde_json::to_vec(&earlier).unwrap())]);
    let values: Vec<Vec<u8>> = vec![
        png.clone(),
        format!(r#"{{"id": "camera-1", "data": "{}"}}"#, b64(&png)).into_bytes(),
        format!(r#"{{"id": "camera-1", "data": "{}"}}"#, b64(b"another frame")).into_bytes(),
    ];
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    for value in &values {
        producer.send(BaseRecord::<(), _>::to(TOPIC).payload(value)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let group = unique_name("fvt-ks-reused");
    let config = write_config(dir.path(), &group, &servers, &images, &dlq);
    let mut source = start_source(&config, &dir.path().join("run.log"), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed_offset(&servers, &group) != Some(values.len() as i64) {
        source.assert_running();
        assert!(std::time::Instant::now() < deadline, "not everything was committed; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    assert!(source.log().contains("replay_skipped=0"), "nothing skipped:\n{}", source.log());
    let written: Vec<(String, i64)> = cluster
        .read_all(&images)
        .into_iter()
        .skip(1)
        .map(|(key, value)| {
            let event: ImageEvent = serde_json::from_slice(&value).unwrap();
            (key, event.meta.attributes["kafka_offset"].as_i64().unwrap())
        })
        .collect();
    let expected = vec![(format!("kafka://{TOPIC}/0/0"), 0), ("camera-1".to_string(), 1), ("camera-1".to_string(), 2)];
    assert_eq!(written, expected, "every new image written, under its id, in order");
}

/// Two sources with the default `assignment: all` on one group-id each read every partition (each image is
/// written twice): the one that finds the other's commit over its own says so in an error naming the cure.
#[test]
fn two_sources_with_assignment_all_on_one_group_id_are_reported() {
    let test = "two_sources_with_assignment_all_on_one_group_id_are_reported";
    let Some(cluster) = local_cluster(test) else { return };
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-twoall", 1);
    let png = png();
    let dir = tempfile::tempdir().unwrap();
    let group = unique_name("fvt-ks-twoall");
    let config = write_config(dir.path(), &group, &servers, &images, &dlq);
    let env = [("RUST_LOG", "info,fluvio=warn")];
    let reported = "another process commits offsets under this group-id";
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    // Alone, through several of its checks (every 5 s), committing all the time: no false alarm.
    let mut first = start_source(&config, &dir.path().join("first.log"), &env);
    for _ in 0..120 {
        producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png)).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    first.assert_running();
    assert!(!first.log().contains(reported), "a source alone is not reported:\n{}", first.log());
    let mut second = start_source(&config, &dir.path().join("second.log"), &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(first.log().contains(reported) || second.log().contains(reported)) {
        first.assert_running();
        second.assert_running();
        assert!(
            std::time::Instant::now() < deadline,
            "neither source reported the other:\n{}\n---\n{}",
            first.log(),
            second.log()
        );
        producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png)).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    for source in [&mut first, &mut second] {
        source.signal("-TERM");
        assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    }
    assert!(first.log().contains("assignment: group") || second.log().contains("assignment: group"));
}

/// Dead letters get the same guard: hostile records (empty values, broken JSON) read again after a crash at the
/// worst moment are not written to `images-dlq` a second time, and none is lost.
#[test]
fn a_crash_at_the_worst_moment_writes_each_dead_letter_once() {
    let test = "a_crash_at_the_worst_moment_writes_each_dead_letter_once";
    let Some(cluster) = local_cluster(test) else { return };
    const COUNT: i64 = 9;
    let values: Vec<Vec<u8>> = (0..COUNT)
        .map(|n| if n % 2 == 0 { b"  ".to_vec() } else { format!("{{\"broken\": {n}").into_bytes() })
        .collect();
    let (images, dlq) = crash_then_resume(&cluster, "fvt-ks-crashdlq", &values, Written::DeadLetters);
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for (key, value) in cluster.read_all(&dlq) {
        let ValidationRecord::Rejected(rejected) = serde_json::from_slice(&value).unwrap() else {
            panic!("not a rejection: {}", String::from_utf8_lossy(&value))
        };
        assert_eq!(key, rejected.event.id);
        *copies.entry(key).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        (0..COUNT).map(|offset| (format!("kafka://{TOPIC}/0/{offset}"), 1)).collect();
    assert_eq!(copies, expected, "every dead letter once, also those acknowledged but not committed before the crash");
    assert!(cluster.read_all(&images).is_empty());
}

/// The dead letters on `dlq`, parsed.
fn dead_letters(cluster: &LocalCluster, dlq: &str) -> Vec<fvision_records::RejectedImage> {
    cluster
        .read_all(dlq)
        .into_iter()
        .map(|(_, value)| match serde_json::from_slice(&value).unwrap() {
            ValidationRecord::Rejected(rejected) => rejected,
            other => panic!("not a dead letter: {other:?}"),
        })
        .collect()
}

/// Runs the source on `config` until the group committed `offset` on partition 0, then stops it with SIGTERM;
/// returns its log.
fn run_until_committed(servers: &str, group: &str, config: &Path, log: &Path, offset: i64) -> String {
    let mut source = start_source(config, log, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed_offset(servers, group) != Some(offset) {
        source.assert_running();
        assert!(std::time::Instant::now() < deadline, "offset {offset} not committed; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    source.log()
}

/// Issue 28: a Kafka key, header, or an event's own `id` of 600 KB became an event whose id is copied into the
/// prediction and its Kafka key (librdkafka refuses 1 MB). The source dead-letters them as `malformed_envelope`
/// (small dead letters) and goes on with the partition.
#[test]
fn huge_envelope_fields_from_kafka_are_dead_letters_and_the_partition_goes_on() {
    let test = "huge_envelope_fields_from_kafka_are_dead_letters_and_the_partition_goes_on";
    let Some(cluster) = local_cluster(test) else { return };
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-huge", 1);
    let png = png();
    let huge = "h".repeat(600_000);
    let own_id = format!(r#"{{"id": "{huge}", "data": "{}"}}"#, b64(&png)).into_bytes();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("message.max.bytes", "10000000").create().unwrap();
    producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&own_id)).unwrap();
    producer.send(BaseRecord::to(TOPIC).key(huge.as_str()).payload(&png)).unwrap();
    let headers = OwnedHeaders::new().insert(Header { key: "trace", value: Some(huge.as_str()) });
    producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png).headers(headers)).unwrap();
    producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let group = unique_name("fvt-ks-huge");
    let config = write_config(dir.path(), &group, &servers, &images, &dlq);
    run_until_committed(&servers, &group, &config, &dir.path().join("run.log"), 4);
    let events = cluster.read_all(&images);
    let keys: Vec<&str> = events.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, [format!("kafka://{TOPIC}/0/3")], "the image behind is written");
    let dead = cluster.read_all(&dlq);
    assert_eq!(dead.len(), 3);
    for (key, value) in &dead {
        assert!(value.len() < 80 * 1024 && key.len() <= 1024, "a small dead letter ({} bytes)", value.len());
        let ValidationRecord::Rejected(r) = serde_json::from_slice(value).unwrap() else { panic!() };
        assert_eq!(r.reason, RejectReason::MalformedEnvelope, "{}", r.detail);
        assert!(r.detail.contains("max_envelope_field_bytes = 4096"), "{}", r.detail);
    }
}

/// Issue 28: with `auto.offset.reset: earliest` librdkafka jumped silently over records that retention deleted
/// before the source read them. The mock cluster keeps 5 MiB per partition: records produced while the source is
/// stopped push its committed offset out of the partition. The restart writes one `expired` dead letter naming
/// the lost range and its count, logs an error, counts them, reads on from the partition's start, and a second
/// restart reports nothing again.
#[test]
fn records_deleted_by_retention_are_reported_as_expired_and_reading_goes_on() {
    let test = "records_deleted_by_retention_are_reported_as_expired_and_reading_goes_on";
    let Some(cluster) = local_cluster(test) else { return };
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-expired", 1);
    let png = png();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("message.max.bytes", "10000000").create().unwrap();
    let send = |value: &[u8]| {
        producer.send(BaseRecord::<(), _>::to(TOPIC).payload(value)).unwrap();
        // One message set per record: the mock deletes whole message sets.
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    send(&png);
    send(&png);
    let dir = tempfile::tempdir().unwrap();
    let group = unique_name("fvt-ks-expired");
    let metrics_port = fvision_tests::emulators::free_port();
    let config =
        write_config_with(dir.path(), &group, &servers, &images, &dlq, &format!("metrics-port: {metrics_port}"));
    run_until_committed(&servers, &group, &config, &dir.path().join("run1.log"), 2);

    // 12 records of 600 KB while the source is stopped: the mock keeps 5 MiB, so offset 2 and more are deleted.
    // Those that survive are above `max-record-bytes` (256 KiB): `too_large` dead letters, read all the same.
    let filler = vec![b'A'; 600_000];
    for _ in 0..12 {
        send(&filler);
    }
    send(&png);
    let watermarks = fvision_tests::kafka::reader(&servers, TOPIC);
    let (low, high) = watermarks.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)).unwrap();
    assert!(low > 2 && high == 15, "retention deleted the committed offset: {low}..{high}");

    let mut source = start_source(&config, &dir.path().join("run2.log"), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed_offset(&servers, &group) != Some(high) {
        source.assert_running();
        assert!(std::time::Instant::now() < deadline, "not resumed to the end; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = fvision_tests::browser::http_get(metrics_port, "/metrics").unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let log = source.log();
    assert!(log.contains("ERROR") && log.contains("Kafka records lost before they were read"), "{log}");

    let dead = dead_letters(&cluster, &dlq);
    let expired: Vec<_> = dead.iter().filter(|r| r.reason == RejectReason::Expired).collect();
    assert_eq!(expired.len(), 1, "one dead letter per lost range: {dead:?}");
    let range = format!("kafka://{TOPIC}/0@2..{low}");
    assert_eq!((expired[0].record.as_deref(), expired[0].event.id.as_str()), (Some(range.as_str()), range.as_str()));
    assert_eq!(expired[0].event.attributes["count"], low - 2);
    assert!(expired[0].detail.starts_with(&format!("{} records of Kafka {TOPIC}/0", low - 2)), "{}", expired[0].detail);
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("fvision_source_expired_records_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(counted, Some((low - 2) as f64), "{metrics}");
    // What the partition still held was read: the fillers that survived (dead letters) and the last image.
    let events: Vec<i64> = cluster
        .read_all(&images)
        .into_iter()
        .map(|(_, v)| {
            serde_json::from_slice::<ImageEvent>(&v).unwrap().meta.attributes["kafka_offset"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(events, [0, 1, high - 1], "the images before the loss and the one after it, in order");
    let too_large = dead.iter().filter(|r| r.reason == RejectReason::TooLarge).count() as i64;
    assert_eq!(too_large, high - 1 - low, "every surviving filler read once: {dead:?}");

    // The lost range was committed past: a restart reports nothing more.
    send(&png);
    run_until_committed(&servers, &group, &config, &dir.path().join("run3.log"), high + 1);
    let again = dead_letters(&cluster, &dlq);
    assert_eq!(again.len(), dead.len(), "no dead letter again: {again:?}");
}

/// A committed offset past the partition's end (the topic deleted and created again, which the mock cluster
/// cannot do, so the commit is made by hand): reported as `expired` from that offset on, then the new partition
/// is read from its start instead of waiting for offset 50 (librdkafka's silent reset did the same, unreported).
#[test]
fn a_committed_offset_past_the_end_is_reported_and_the_partition_read_from_its_start() {
    let test = "a_committed_offset_past_the_end_is_reported_and_the_partition_read_from_its_start";
    let Some(cluster) = local_cluster(test) else { return };
    let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-past", 1);
    let png = png();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
    for _ in 0..2 {
        producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let group = unique_name("fvt-ks-past");
    let committer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", &group).create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(TOPIC, 0, Offset::Offset(50)).unwrap();
    committer.commit(&list, rdkafka::consumer::CommitMode::Sync).unwrap();
    assert_eq!(committed_offset(&servers, &group), Some(50));

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &group, &servers, &images, &dlq);
    run_until_committed(&servers, &group, &config, &dir.path().join("run.log"), 2);
    let expired = dead_letters(&cluster, &dlq);
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].reason, RejectReason::Expired);
    assert_eq!(expired[0].record.as_deref(), Some(format!("kafka://{TOPIC}/0@50..").as_str()));
    assert!(expired[0].detail.contains("recreated"), "{}", expired[0].detail);
    assert_eq!(cluster.read_all(&images).len(), 2, "the new partition's records are read");
}

/// The `kafka_offset` of every event on `images`, in order.
fn event_offsets(cluster: &LocalCluster, images: &str) -> Vec<i64> {
    cluster
        .read_all(images)
        .into_iter()
        .map(|(_, v)| {
            serde_json::from_slice::<ImageEvent>(&v).unwrap().meta.attributes["kafka_offset"].as_i64().unwrap()
        })
        .collect()
}

/// Issue 28: with `auto.offset.reset: error` a new consumer group (no committed offset) read nothing, ever (the
/// partition stopped and could not be sought). Every partition is now assigned at an offset the source chose:
/// for each `assignment` (`all`, and the group protocol), a new group with `start: earliest` reads what the
/// topic holds, one with `start: latest` what is produced after it joined, no `expired` dead letter is written
/// for either, and a reopen of the group reads nothing already committed.
#[test]
fn a_new_group_reads_from_its_configured_start_and_a_reopen_reads_nothing_again() {
    let test = "a_new_group_reads_from_its_configured_start_and_a_reopen_reads_nothing_again";
    let Some(cluster) = local_cluster(test) else { return };
    let png = png();
    for assignment in ["all", "group"] {
        for start in ["earliest", "latest"] {
            let Ends { mock: _broker, servers, images, dlq } = ends(&cluster, "fvt-ks-new", 1);
            let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &servers).create().unwrap();
            let send = || {
                producer.send(BaseRecord::<(), _>::to(TOPIC).payload(&png)).unwrap();
                producer.flush(Duration::from_secs(10)).unwrap();
            };
            send();
            send();
            let dir = tempfile::tempdir().unwrap();
            let group = unique_name("fvt-ks-new");
            let extra = format!(
                "assignment: {assignment}\n  start: {start}\n  client: {{session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\"}}"
            );
            let config = write_config_with(dir.path(), &group, &servers, &images, &dlq, &extra);
            let case = format!("assignment {assignment}, start {start}");
            let mut source = start_source(&config, &dir.path().join("run1.log"), &[]);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let assigned = if assignment == "all" { "assigned" } else { "assigned by the group" };
            while !source.log().contains(assigned) {
                source.assert_running();
                assert!(std::time::Instant::now() < deadline, "{case}: never assigned; log:\n{}", source.log());
                std::thread::sleep(Duration::from_millis(100));
            }
            send();
            while committed_offset(&servers, &group) != Some(3) {
                source.assert_running();
                assert!(std::time::Instant::now() < deadline, "{case}: offset 3 not committed; log:\n{}", source.log());
                std::thread::sleep(Duration::from_millis(100));
            }
            source.signal("-TERM");
            assert!(source.wait(Duration::from_secs(30)).success(), "{case}: SIGTERM exits 0:\n{}", source.log());
            let expected: Vec<i64> = if start == "earliest" { vec![0, 1, 2] } else { vec![2] };
            assert_eq!(event_offsets(&cluster, &images), expected, "{case}: {}", source.log());
            assert!(cluster.read_all(&dlq).is_empty(), "{case}: a new group has lost nothing");

            // Reopened: the committed records are not read again, the new one is.
            send();
            run_until_committed(&servers, &group, &config, &dir.path().join("run2.log"), 4);
            let mut expected = expected;
            expected.push(3);
            assert_eq!(event_offsets(&cluster, &images), expected, "{case}: reopened");
            assert!(cluster.read_all(&dlq).is_empty(), "{case}: reopened");
        }
    }
}
