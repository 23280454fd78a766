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
