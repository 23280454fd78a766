//! The source's connector YAML: the shipped file and the bad fixtures beside it.

use std::time::Duration;

use fvision_gcs_source::load;

use fvision_tests::fixtures::connectors_dir as config_dir;

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
    fvision_tests::fixtures::check_bad_fixtures("gcs-source-error-", 4, |path| load(path, None));
}
