//! The emulator harness itself: each server starts on a free loopback port, answers, and is gone after
//! its handle drops.

use fvision_tests::emulators::{self, http_get_status, PROJECT};

#[test]
fn each_emulator_starts_answers_and_stops() {
    let bq = emulators::bigquery();
    let gcs = emulators::gcs();
    let pubsub = emulators::pubsub();
    let checks = [
        (bq.port, format!("/bigquery/v2/projects/{PROJECT}/datasets")),
        (gcs.port, "/storage/v1/b".to_string()),
        (pubsub.emulator.port, format!("/v1/projects/{PROJECT}/topics")),
    ];
    for (port, path) in &checks {
        assert_eq!(http_get_status(*port, path), Some(200), "GET {path} on port {port}");
    }
    drop((bq, gcs, pubsub));
    for (port, path) in &checks {
        assert_eq!(http_get_status(*port, path), None, "port {port} still answers after the emulator stopped");
    }
}

/// The campaign's outage model: a frozen server (SIGSTOP) accepts connections but answers nothing, and after
/// SIGCONT it answers again with its in-memory state intact (cloudbox loses its topics on a restart).
#[test]
fn a_frozen_emulator_hangs_then_answers_with_its_state() {
    let pubsub = emulators::pubsub();
    let port = pubsub.emulator.port;
    let topic = format!("/v1/projects/{PROJECT}/topics/frozen-test");
    let created = ureq::put(&format!("{}{topic}", pubsub.rest_url())).send_empty().unwrap().status();
    assert_eq!(created.as_u16(), 200, "PUT {topic}");
    let frozen = pubsub.emulator.freeze();
    assert!(!frozen.pids().is_empty());
    assert_eq!(http_get_status(port, &topic), None, "a frozen emulator answered");
    frozen.thaw();
    assert_eq!(http_get_status(port, &topic), Some(200), "the topic survived the freeze");
}
