//! The `gcs-source` binary between the GCS and Pub/Sub emulators and the local Fluvio cluster: a finalize
//! notification becomes an ImageEvent with the BigQuery attributes, a duplicate notification is written once, objects deleted
//! or too large reach the dead-letter topic with their reason, other notifications are ignored, and every
//! message is acked (nothing comes back after a restart).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fvision_gcp::pubsub;
use fvision_gcp::storage::BlockingClient;
use fvision_gcs_source::{finalize_message, ObjectRef};
use fvision_records::{ImageEvent, RejectReason, ValidationRecord};
use fvision_tests::cluster::{local_cluster, LocalCluster};
use fvision_tests::emulators::{self, PROJECT};
use fvision_tests::process::Process;

const BUCKET: &str = "fvt-bucket";
const TOPIC: &str = "gcs-image-notifications";
const SUBSCRIPTION: &str = "image-stream-sub";

/// What every test here starts from: the Fluvio topics, the bucket on the GCS emulator and the subscription
/// on the Pub/Sub emulator.
struct Stand {
    images: String,
    dlq: String,
    gcs: BlockingClient,
    runtime: tokio::runtime::Runtime,
    client: pubsub::Client,
}

impl Stand {
    fn new(cluster: &LocalCluster, prefix: &str, gcs_url: &str, pubsub_host: &str) -> Self {
        let (images, dlq) = cluster.create_source_topics(prefix);
        let gcs = BlockingClient::anonymous(gcs_url, Duration::from_secs(30)).unwrap();
        gcs.create_bucket(PROJECT, BUCKET).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime.block_on(pubsub::client(PROJECT, Some(pubsub_host), None)).unwrap();
        runtime.block_on(pubsub::ensure_subscription(&client, TOPIC, SUBSCRIPTION, 10)).unwrap();
        Self { images, dlq, gcs, runtime, client }
    }
}

fn object(name: &str, generation: i64, size: usize) -> ObjectRef {
    ObjectRef {
        bucket: BUCKET.into(),
        name: name.into(),
        generation,
        size: Some(size as u64),
        content_type: Some("image/jpeg".into()),
        event_time: Some("2026-12-01T10:00:00.000Z".into()),
    }
}

#[test]
fn notifications_become_events_dead_letters_or_nothing_and_are_acked() {
    let Some(cluster) = local_cluster("notifications_become_events_dead_letters_or_nothing_and_are_acked") else {
        return;
    };
    let gcs_emulator = emulators::gcs();
    let pubsub_emulator = emulators::pubsub();
    let Stand { images, dlq, gcs, runtime, client } =
        Stand::new(&cluster, "fvt-gs", &gcs_emulator.url(), &pubsub_emulator.grpc_host());

    let jpeg = fvision_tests::data_files("imagenet-sample").remove(0).1;
    let mut messages = Vec::new();
    let upload = |name: &str, bytes: &[u8]| {
        let generation = gcs.upload(BUCKET, name, bytes, "image/jpeg").unwrap();
        object(name, generation, bytes.len())
    };
    let good = upload("input-images/cat.jpg", &jpeg);
    messages.push(finalize_message(&good));
    messages.push(finalize_message(&good)); // Pub/Sub is at-least-once: a duplicate notification
    let big = upload("input-images/big.jpg", &vec![0xffu8; 2560 * 1024]); // ten times max-object-bytes
    messages.push(finalize_message(&big));
    // The same without a size in the notification: decided by reading at most the limit.
    let unsized_big = ObjectRef { size: None, ..upload("input-images/big-unsized.jpg", &vec![0xffu8; 2560 * 1024]) };
    messages.push(finalize_message(&unsized_big));
    let empty = upload("input-images/empty.jpg", b"");
    messages.push(finalize_message(&empty));
    let gone = upload("input-images/gone.jpg", &jpeg);
    gcs.delete(BUCKET, &gone.name).unwrap();
    messages.push(finalize_message(&gone));
    let outside = upload("elsewhere/dog.jpg", &jpeg);
    messages.push(finalize_message(&outside));
    let (mut deleted, data) = finalize_message(&good);
    deleted.insert("eventType".into(), "OBJECT_DELETE".into());
    messages.push((deleted, data));
    let mut broken = HashMap::new();
    broken.insert("eventType".to_string(), "OBJECT_FINALIZE".to_string());
    messages.push((broken, b"not json".to_vec()));
    runtime.block_on(pubsub::publish(&client, TOPIC, messages)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: fvt-gcs-source
  type: gcs-source
  topic: {{meta: {{name: {images}}}}}
gcs:
  project: {PROJECT}
  subscription: {SUBSCRIPTION}
  buckets: [{BUCKET}]
  pubsub-emulator-host: {host}
  gcs-endpoint: {endpoint}
  max-object-bytes: 256 KiB
  max-messages: 3
  ack-deadline: 10s
  dlq-topic: {dlq}
",
        host = pubsub_emulator.grpc_host(),
        endpoint = gcs_emulator.url(),
    );
    let config = dir.path().join("gcs-source.yaml");
    std::fs::write(&config, yaml).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gcs-source"));
    let env = [("RUST_LOG", "info,gcs_source=debug,fvision_gcs_source=debug,fluvio=warn")];
    let args = ["--config", config.to_str().unwrap()];
    let mut source = Process::start(bin, &args, &env, &dir.path().join("run1.log"));
    // 1 event (the duplicate notification is acked without writing it again), 5 dead letters; 2 ignored.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.read_all(&images).is_empty() || cluster.read_all(&dlq).len() < 5 {
        source.assert_running();
        assert!(Instant::now() < deadline, "not everything arrived; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let log = source.log();
    assert!(log.contains("ignored=2") && log.contains("acked=9") && log.contains("replay_skipped=1"), "{log}");

    let events: Vec<ImageEvent> =
        cluster.read_all(&images).into_iter().map(|(_, v)| serde_json::from_slice(&v).unwrap()).collect();
    assert_eq!(events.len(), 1, "a duplicate notification is not written twice");
    for event in &events {
        assert_eq!(event.meta.id, good.id());
        assert_eq!(event.meta.attribute("bucket"), Some(BUCKET));
        assert_eq!(event.meta.attribute("object_name"), Some("input-images/cat.jpg"));
        assert_eq!(event.meta.event_time.as_deref(), Some("2026-12-01T10:00:00.000Z"));
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&event.data).unwrap(), jpeg);
    }
    let dead: BTreeMap<String, RejectReason> = cluster
        .read_all(&dlq)
        .into_iter()
        .map(|(_, value)| match serde_json::from_slice(&value).unwrap() {
            ValidationRecord::Rejected(r) => (r.event.id.clone(), r.reason),
            other => panic!("not a rejection: {other:?}"),
        })
        .collect();
    assert_eq!(dead.get(&big.id()), Some(&RejectReason::TooLarge), "{dead:?}");
    assert_eq!(dead.get(&unsized_big.id()), Some(&RejectReason::TooLarge), "{dead:?}");
    assert_eq!(dead.get(&empty.id()), Some(&RejectReason::Empty), "{dead:?}");
    assert_eq!(dead.get(&gone.id()), Some(&RejectReason::NotFound), "{dead:?}");
    assert!(
        dead.iter().any(|(id, r)| id.starts_with("pubsub://") && *r == RejectReason::MalformedEnvelope),
        "{dead:?}"
    );

    // Everything was acked: a restart past the ack deadline receives nothing.
    std::thread::sleep(Duration::from_secs(11));
    let mut source = Process::start(bin, &args, &env, &dir.path().join("run2.log"));
    source.wait_log("consuming", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "{}", source.log());
    assert!(source.log().contains("pulled=0"), "{}", source.log());
    assert_eq!(cluster.read_all(&images).len(), 1);
}

/// Messages acked so far, from the source's debug log (`count=N ... acked` lines).
fn acked(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("acked") && line.contains("count="))
        .filter_map(|line| {
            let at = line.find("count=")? + "count=".len();
            line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()
        })
        .sum()
}

/// A crash at the worst moment (Fluvio acknowledged the second pull's events, its messages not yet acked):
/// Pub/Sub redelivers exactly those messages after the ack deadline, with the same ids; the restarted source
/// acks them without writing their events again (the replay guard read the ids back from `images`). Nothing
/// is lost, nothing is written twice.
#[test]
fn a_crash_between_the_acknowledgement_and_the_ack_is_redelivered_and_written_once() {
    let test = "a_crash_between_the_acknowledgement_and_the_ack_is_redelivered_and_written_once";
    let Some(cluster) = local_cluster(test) else { return };
    let gcs_emulator = emulators::gcs();
    let pubsub_emulator = emulators::pubsub();
    let Stand { images, dlq, gcs, runtime, client } =
        Stand::new(&cluster, "fvt-gs-crash", &gcs_emulator.url(), &pubsub_emulator.grpc_host());
    let png = std::fs::read(fvision_tests::data("bad-inputs").join("valid-1x1.png")).unwrap();
    let objects: Vec<ObjectRef> = (0..6)
        .map(|i| {
            let name = format!("input-images/crash-{i}.png");
            let generation = gcs.upload(BUCKET, &name, &png, "image/png").unwrap();
            object(&name, generation, png.len())
        })
        .collect();
    runtime.block_on(pubsub::publish(&client, TOPIC, objects.iter().map(finalize_message).collect())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: fvt-gcs-crash
  type: gcs-source
  topic: {{meta: {{name: {images}}}}}
gcs:
  project: {PROJECT}
  subscription: {SUBSCRIPTION}
  buckets: [{BUCKET}]
  pubsub-emulator-host: {host}
  gcs-endpoint: {endpoint}
  content-types: []
  max-messages: 2
  ack-deadline: 10s
  dlq-topic: {dlq}
",
        host = pubsub_emulator.grpc_host(),
        endpoint = gcs_emulator.url(),
    );
    let config = dir.path().join("gcs-crash.yaml");
    std::fs::write(&config, yaml).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gcs-source"));
    let args = ["--config", config.to_str().unwrap()];
    let crash = [
        ("RUST_LOG", "info,gcs_source=debug,fvision_gcs_source=debug,fluvio=warn"),
        ("FVISION_CRASH_BEFORE_COMMIT", "2"),
    ];
    let mut source = Process::start(bin, &args, &crash, &dir.path().join("crash.log"));
    assert!(!source.wait(Duration::from_secs(60)).success(), "run 1 aborts:\n{}", source.log());
    assert!(source.log().contains("aborting after Fluvio acknowledged, before the commit"), "{}", source.log());
    let acked_before = acked(&source.log());
    let held = cluster.read_all(&images).len();
    assert!(held > acked_before, "Fluvio holds events whose messages were not acked ({held} vs {acked_before})");

    let env = [("RUST_LOG", "info,gcs_source=debug,fvision_gcs_source=debug,fluvio=warn")];
    let mut source = Process::start(bin, &args, &env, &dir.path().join("restart.log"));
    // Everything arrives, and the redelivered messages of the crashed pull are acked too.
    let deadline = Instant::now() + Duration::from_secs(90);
    while cluster.read_all(&images).len() < objects.len() || acked(&source.log()) < objects.len() - acked_before {
        source.assert_running();
        assert!(Instant::now() < deadline, "not everything arrived and was acked; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let replayed = held - acked_before;
    assert!(
        source.log().contains(&format!("replay_skipped={replayed}")),
        "the {replayed} redelivered messages were acked without writing their events again:\n{}",
        source.log()
    );
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for (_, value) in cluster.read_all(&images) {
        let event: ImageEvent = serde_json::from_slice(&value).unwrap();
        *copies.entry(event.meta.id).or_default() += 1;
    }
    assert_eq!(copies.len(), objects.len(), "every object once by id: {copies:?}");
    assert!(objects.iter().all(|o| copies.contains_key(&o.id())), "{copies:?}");
    assert!(copies.values().all(|&n| n == 1), "no event twice, also for the redelivered pull: {copies:?}");
}

/// The GCS emulator stopped under the source: downloads fail, the messages are left un-acked (not dead
/// letters), and once GCS answers again their redelivery brings every object, once.
#[test]
fn gcs_stopped_under_the_source_delays_but_loses_nothing() {
    let Some(cluster) = local_cluster("gcs_stopped_under_the_source_delays_but_loses_nothing") else { return };
    let mut gcs_emulator = emulators::gcs_on_disk();
    let pubsub_emulator = emulators::pubsub();
    let Stand { images, dlq, gcs, runtime, client } =
        Stand::new(&cluster, "fvt-gs-down", &gcs_emulator.url(), &pubsub_emulator.grpc_host());
    let png = std::fs::read(fvision_tests::data("bad-inputs").join("valid-1x1.png")).unwrap();
    let objects: Vec<ObjectRef> = (0..3)
        .map(|i| {
            let name = format!("input-images/down-{i}.png");
            let generation = gcs.upload(BUCKET, &name, &png, "image/png").unwrap();
            object(&name, generation, png.len())
        })
        .collect();
    runtime.block_on(pubsub::publish(&client, TOPIC, objects.iter().map(finalize_message).collect())).unwrap();
    gcs_emulator.stop();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: fvt-gcs-down
  type: gcs-source
  topic: {{meta: {{name: {images}}}}}
gcs:
  project: {PROJECT}
  subscription: {SUBSCRIPTION}
  buckets: [{BUCKET}]
  pubsub-emulator-host: {host}
  gcs-endpoint: {endpoint}
  content-types: []
  ack-deadline: 10s
  dlq-topic: {dlq}
",
        host = pubsub_emulator.grpc_host(),
        endpoint = gcs_emulator.url(),
    );
    let config = dir.path().join("gcs-down.yaml");
    std::fs::write(&config, yaml).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gcs-source"));
    let env = [("RUST_LOG", "info,gcs_source=debug,fvision_gcs_source=debug,fluvio=warn")];
    let mut source = Process::start(bin, &["--config", config.to_str().unwrap()], &env, &dir.path().join("down.log"));
    source.wait_log("left un-acked for redelivery", 1, Duration::from_secs(60));
    source.assert_running();
    assert!(cluster.read_all(&dlq).is_empty(), "a failed download is not a dead letter");
    gcs_emulator.start();
    let deadline = Instant::now() + Duration::from_secs(90);
    while cluster.read_all(&images).len() < objects.len() {
        source.assert_running();
        assert!(Instant::now() < deadline, "not everything arrived; log:\n{}", source.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let mut ids: Vec<String> = cluster
        .read_all(&images)
        .into_iter()
        .map(|(_, value)| serde_json::from_slice::<ImageEvent>(&value).unwrap().meta.id)
        .collect();
    ids.sort();
    let mut expected: Vec<String> = objects.iter().map(ObjectRef::id).collect();
    expected.sort();
    assert_eq!(ids, expected, "every object once");
    assert!(cluster.read_all(&dlq).is_empty(), "no dead letters");
}

/// Pub/Sub stopped under the running source: the source keeps running and says why it cannot pull, and
/// SIGTERM still stops it cleanly (exit 0) while Pub/Sub is unreachable.
#[test]
fn pubsub_stopped_under_the_source_keeps_it_running_and_stoppable() {
    let Some(cluster) = local_cluster("pubsub_stopped_under_the_source_keeps_it_running_and_stoppable") else { return };
    let gcs_emulator = emulators::gcs();
    let mut pubsub_emulator = emulators::pubsub();
    let (images, dlq) = cluster.create_source_topics("fvt-gs-psdown");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(pubsub::client(PROJECT, Some(&pubsub_emulator.grpc_host()), None)).unwrap();
    runtime.block_on(pubsub::ensure_subscription(&client, TOPIC, SUBSCRIPTION, 10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: fvt-gcs-psdown
  type: gcs-source
  topic: {{meta: {{name: {images}}}}}
gcs:
  project: {PROJECT}
  subscription: {SUBSCRIPTION}
  buckets: [{BUCKET}]
  pubsub-emulator-host: {host}
  gcs-endpoint: {endpoint}
  dlq-topic: {dlq}
",
        host = pubsub_emulator.grpc_host(),
        endpoint = gcs_emulator.url(),
    );
    let config = dir.path().join("gcs-psdown.yaml");
    std::fs::write(&config, yaml).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gcs-source"));
    let env = [("RUST_LOG", "info,gcs_source=debug,fvision_gcs_source=debug,fluvio=warn")];
    let mut source = Process::start(bin, &["--config", config.to_str().unwrap()], &env, &dir.path().join("psdown.log"));
    source.wait_log("consuming", 1, Duration::from_secs(60));
    pubsub_emulator.emulator.stop();
    source.wait_log(&format!("pulling {SUBSCRIPTION}"), 1, Duration::from_secs(60));
    source.assert_running();
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0 with Pub/Sub down:\n{}", source.log());
}

/// Issue 28: a download that fails the same way every time (a permanent status, or too slow) was left un-acked
/// forever, and a notification for any bucket was read. Here, against the real emulators: the emulator stalled
/// (its one thread held by a client that never finishes its request) makes every download time out, and the
/// object becomes a `download_failed` dead letter after `download-attempts` tries and is acked. (Which statuses
/// count as permanent is `fvision_gcp::storage`'s unit test: the emulator answers none of them to a download.) A notification for a bucket not in `buckets` and one whose field is
/// above `max-envelope-field-bytes` are dead letters without a download; the good object is written.
#[test]
fn failing_downloads_and_foreign_or_hostile_notifications_become_dead_letters_and_are_acked() {
    let test = "failing_downloads_and_foreign_or_hostile_notifications_become_dead_letters_and_are_acked";
    let Some(cluster) = local_cluster(test) else { return };
    let gcs_emulator = emulators::gcs();
    let pubsub_emulator = emulators::pubsub();
    let Stand { images, dlq, gcs, runtime, client } =
        Stand::new(&cluster, "fvt-gs-fail", &gcs_emulator.url(), &pubsub_emulator.grpc_host());
    let png = std::fs::read(fvision_tests::data("bad-inputs").join("valid-1x1.png")).unwrap();
    let upload = |name: &str| object(name, gcs.upload(BUCKET, name, &png, "image/png").unwrap(), png.len());
    let good = upload("input-images/good.png");
    let slow = upload("input-images/slow.png");
    let foreign = ObjectRef { bucket: "fvt-foreign".into(), ..good.clone() };
    let (attributes, data) = finalize_message(&ObjectRef { event_time: None, ..good.clone() });
    let mut payload: serde_json::Value = serde_json::from_slice(&data).unwrap();
    payload["timeCreated"] = "9".repeat(2 << 20).into();
    let hostile = (attributes, serde_json::to_vec(&payload).unwrap());
    let messages = vec![finalize_message(&good), finalize_message(&foreign), hostile];
    runtime.block_on(pubsub::publish(&client, TOPIC, messages)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  version: 0.1.0
  name: fvt-gcs-fail
  type: gcs-source
  topic: {{meta: {{name: {images}}}}}
gcs:
  project: {PROJECT}
  subscription: {SUBSCRIPTION}
  buckets: [{BUCKET}]
  pubsub-emulator-host: {host}
  gcs-endpoint: {endpoint}
  download-attempts: 2
  download-timeout: 2s
  ack-deadline: 10s
  dlq-topic: {dlq}
",
        host = pubsub_emulator.grpc_host(),
        endpoint = gcs_emulator.url(),
    );
    let config = dir.path().join("gcs-fail.yaml");
    std::fs::write(&config, yaml).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gcs-source"));
    let env = [("RUST_LOG", "info,gcs_source=debug,fvision_gcs_source=debug,fluvio=warn")];
    let mut source = Process::start(bin, &["--config", config.to_str().unwrap()], &env, &dir.path().join("run.log"));
    let dead_letters = |cluster: &LocalCluster| -> BTreeMap<String, (RejectReason, String, usize)> {
        cluster
            .read_all(&dlq)
            .into_iter()
            .map(|(_, value)| match serde_json::from_slice(&value).unwrap() {
                ValidationRecord::Rejected(r) => (r.event.id.clone(), (r.reason, r.detail.clone(), value.len())),
                other => panic!("not a rejection: {other:?}"),
            })
            .collect()
    };
    let wait_for = |source: &mut Process, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while dead_letters(&cluster).len() < count {
            source.assert_running();
            assert!(Instant::now() < deadline, "{count} dead letters expected; log:\n{}", source.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(&mut source, 2);
    let dead = dead_letters(&cluster);
    assert_eq!(dead[&foreign.id()].0, RejectReason::BucketNotAllowed, "{dead:?}");
    let (reason, detail, size) = &dead[&good.id()];
    assert_eq!(*reason, RejectReason::MalformedEnvelope, "{detail}");
    assert!(detail.contains("`event_time` is 2097152 bytes") && *size < 80 * 1024, "{detail} ({size} bytes)");
    let events = cluster.read_all(&images);
    assert_eq!(events.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>(), [good.id()]);

    // The emulator serves one request at a time: a client that never finishes its request stalls it.
    let mut stall = std::net::TcpStream::connect(("127.0.0.1", gcs_emulator.port)).unwrap();
    std::io::Write::write_all(&mut stall, b"GET /storage/v1/b HTTP/1.1\r\n").unwrap();
    runtime.block_on(pubsub::publish(&client, TOPIC, vec![finalize_message(&slow)])).unwrap();
    wait_for(&mut source, 3);
    drop(stall);
    let (reason, detail, _) = &dead_letters(&cluster)[&slow.id()];
    assert_eq!(*reason, RejectReason::DownloadFailed, "{detail}");
    assert!(detail.contains("2 downloads failed") && detail.contains("timed out"), "{detail}");
    source.signal("-TERM");
    assert!(source.wait(Duration::from_secs(30)).success(), "SIGTERM exits 0:\n{}", source.log());
    let log = source.log();
    assert!(
        log.contains("acked=4") && log.contains("retried=1"),
        "every message acked, the slow object's first try retried:\n{log}"
    );
}
