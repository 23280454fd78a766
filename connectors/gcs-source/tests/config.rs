//! The source's connector YAML: the shipped file and the bad fixtures beside it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gcs_source::load;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fluvio-config/connectors")
}

#[test]
fn the_shipped_config_reads_as_documented() {
    let config = load(&config_dir().join("gcs-source.yaml"), None).unwrap();
    assert_eq!((config.meta.topic.name(), config.meta.kind.as_str()), ("images", "gcs-source"));
    let gcs = &config.custom;
    assert_eq!((gcs.subscription.as_str(), gcs.prefix.as_str()), ("image-stream-sub", "input-images/"));
    assert_eq!(gcs.gcs_endpoint, "https://storage.googleapis.com");
    assert_eq!((gcs.pubsub_emulator_host.as_deref(), gcs.access_token.as_deref()), (None, None));
    assert_eq!(gcs.content_types.len(), 5);
    assert_eq!((gcs.max_object_bytes.as_u64(), gcs.max_messages), (11 << 20, 16));
    assert_eq!((gcs.ack_deadline, gcs.dlq_topic.as_str()), (Duration::from_secs(60), "images-dlq"));
}

#[test]
fn every_bad_fixture_fails_with_the_error_it_names() {
    let dir = config_dir().join("test-data");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("gcs-source-error-")))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 4);
    for path in fixtures {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("first line: # expect: ...");
        let err = load(&path, None).expect_err(&path.display().to_string()).to_string();
        assert!(err.starts_with(&path.display().to_string()), "the error names the file: {err}");
        assert!(err.contains(expect), "{}:\n  expected `{expect}`\n  got      `{err}`", path.display());
    }
}
