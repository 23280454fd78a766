//! The shipped topic files (`fluvio-config/topics/*.yaml`) the way a Fluvio user applies them: `fluvio topic
//! create --config FILE`, then `fluvio topic describe -O json`: every setting the file makes is in force on
//! the live cluster (a key Fluvio does not know, such as `segment_size`, would be ignored silently; the
//! project's parser refuses it, `fvision_connector_common::config::TopicConfig`).

use fvision_connector_common::config::{TopicCompression, TopicConfig};
use fvision_tests::cluster::{local_cluster, unique_name};
use fvision_tests::repo_root;

#[test]
fn every_topic_file_creates_its_topic_with_every_setting_in_force() {
    let Some(cluster) = local_cluster("every_topic_file_creates_its_topic_with_every_setting_in_force") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("fluvio-config/topics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    for file in files {
        let config = TopicConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
        // The file as shipped, with only its name made unique to this run.
        let name = unique_name(&format!("fvt-{}", config.meta.name));
        let text = std::fs::read_to_string(&file).unwrap();
        let renamed = text.replace(&format!("  name: {}\n", config.meta.name), &format!("  name: {name}\n"));
        assert_ne!(renamed, text, "{}: meta.name is on a line of its own", file.display());
        let copy = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&copy, renamed).unwrap();
        cluster.create_topic_from_file(&name, &copy);

        let described: serde_json::Value =
            serde_json::from_str(&cluster.cli_ok(&["topic", "describe", &name, "-O", "json"]))
                .unwrap_or_else(|e| panic!("fluvio topic describe -O json: {e}"));
        let spec = &described[0]["spec"];
        let what = file.display();
        let partition = &config.partition;
        assert_eq!(
            spec["replicas"]["computed"]["partitions"].as_u64(),
            partition.count.map(u64::from),
            "{what}: count"
        );
        assert_eq!(
            spec["replicas"]["computed"]["replicationFactor"].as_u64(),
            partition.replication.map(u64::from),
            "{what}: replication"
        );
        let retention = &config.retention;
        let time = retention.time.unwrap_or_else(|| panic!("{what}: sets retention.time"));
        assert_eq!(spec["cleanupPolicy"]["segment"]["timeInSeconds"].as_u64(), Some(time.as_secs()), "{what}: time");
        let segment = retention.segment_size.unwrap_or_else(|| panic!("{what}: sets retention.segment-size"));
        assert_eq!(spec["storage"]["segmentSize"].as_u64(), Some(segment.as_u64()), "{what}: segment-size");
        assert_eq!(
            spec["storage"]["maxPartitionSize"].as_u64(),
            partition.max_size.map(|s| s.as_u64()),
            "{what}: max-size"
        );
        let compression = match config.compression.kind {
            TopicCompression::Any => "Any",
            TopicCompression::None => "None",
            TopicCompression::Gzip => "Gzip",
            TopicCompression::Snappy => "Snappy",
            TopicCompression::Lz4 => "Lz4",
            TopicCompression::Zstd => "Zstd",
        };
        assert_eq!(spec["compressionType"].as_str(), Some(compression), "{what}: compression");
        let unread =
            config.deduplication.is_some() || partition.maps.is_some() || partition.ignore_rack_assignment.is_some();
        assert!(!unread, "{what}: a setting this test does not read back");
    }
}
