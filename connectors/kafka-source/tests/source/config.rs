//! The source's connector YAML: the shipped file, the bad fixtures beside it, secrets.

use fvision_kafka_source::{load, KafkaSource, StartFrom, ValueFormat};

use fvision_tests::fixtures::connectors_dir as config_dir;

#[test]
fn the_shipped_config_reads_as_documented() {
    let config = load(&config_dir().join("kafka-source.yaml"), None).unwrap();
    assert_eq!((config.meta.topic.name(), config.meta.kind.as_str()), ("images", "kafka-source"));
    let kafka = &config.custom;
    assert_eq!(kafka.topics, ["image-stream"]);
    assert_eq!((kafka.group_id.as_str(), kafka.start), ("fluvio-vision-kafka-source", StartFrom::Earliest));
    assert_eq!((kafka.value_format, kafka.data_field.as_str()), (ValueFormat::Auto, "image_data"));
    assert_eq!((kafka.dlq_topic.as_str(), kafka.max_batch), ("images-dlq", 64));
    assert_eq!(kafka.max_record_bytes.as_u64(), 15 << 20);
    assert_eq!(kafka.max_batch_bytes.as_u64(), 32 << 20);
    assert_eq!(kafka.envelope_field_cap().bytes(), fvision_records::DEFAULT_ENVELOPE_FIELD_CAP);
    // The connector owns the offset settings, whatever the pass-through says.
    let source = KafkaSource::new(config);
    let client = source.client_config();
    assert_eq!(client.get("enable.auto.commit"), Some("false"));
    assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
    assert_eq!(client.get("session.timeout.ms"), Some("10000"));
    // No silent jump over lost records: the source assigns every partition at an offset it chose.
    assert_eq!(client.get("auto.offset.reset"), Some("error"));
}

#[test]
fn secrets_fill_client_properties() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k.yaml");
    let text = std::fs::read_to_string(config_dir().join("test-data/kafka-source-error-missing-secret.yaml")).unwrap();
    std::fs::write(&config, text).unwrap();
    let secrets = dir.path().join("secrets.env");
    std::fs::write(&secrets, "KAFKA_PASSWORD=s3cret\n").unwrap();
    let loaded = load(&config, Some(&secrets)).unwrap();
    assert_eq!(loaded.custom.client["sasl.password"], "s3cret");
}

#[test]
fn every_bad_fixture_fails_with_the_error_it_names() {
    fvision_tests::fixtures::check_bad_fixtures("kafka-source-error-", 5, |path| load(path, None));
}
