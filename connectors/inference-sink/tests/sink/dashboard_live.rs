//! The connector's status page on a real local Fluvio cluster: `inference.dashboard: true` serves the page,
//! its JSON shows what the connector knows (counts, per-partition delivered and committed offsets, lag,
//! outputs, thumbnails), and its `/metrics` exports every metric the Grafana dashboard queries. Skipped, with
//! the reason printed, only where Fluvio is not installed (never in CI).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fvision_tests::browser::http_get;
use fvision_tests::cluster::{local_cluster, unique_name};
use fvision_tests::connector_yaml::SinkYaml;
use fvision_tests::data_files;
use fvision_tests::metrics::metric_names;
use serde_json::Value;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    http_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn the_connector_serves_the_status_page_with_lag_and_every_grafana_metric() {
    let test = "the_connector_serves_the_status_page_with_lag_and_every_grafana_metric";
    let Some(cluster) = local_cluster(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (images, predictions, dlq) =
        (unique_name("fvt-page-images"), unique_name("fvt-page-predictions"), unique_name("fvt-page-dlq"));
    for topic in [&images, &predictions, &dlq] {
        cluster.create_topic(topic);
    }
    let records: Vec<(String, Vec<u8>)> = data_files("demo-images")
        .into_iter()
        .chain(data_files("bad-inputs").into_iter().take(4))
        .map(|(name, bytes)| {
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            let id = format!("page-{name}");
            (id.clone(), serde_json::json!({"id": id, "source": "file", "data": data}).to_string().into_bytes())
        })
        .collect();
    cluster.produce(&images, &records);
    let total = records.len() as u64;

    let port = fvision_tests::emulators::free_port();
    let consumer = unique_name("fvt-page-sink");
    // An external sink too, so its series (and the output backlog) are exported for the Grafana check.
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    kafka.create_topic("image-stream-results", 1, 1).unwrap();
    let inference = format!(
        "  validate-at: connector\n  confidence-threshold: 0.5\n  metrics-port: {port}\n  dashboard: true\n  \
         kafka: {{brokers: '{brokers}', include: predictions}}",
        brokers = kafka.bootstrap_servers()
    );
    let config = SinkYaml {
        name: &consumer,
        images: &images,
        predictions: &predictions,
        dlq: &dlq,
        inference: &inference,
        ..SinkYaml::default()
    }
    .write(dir.path());
    let log = dir.path().join("sink.log");
    let _sink = Running(
        Command::new(env!("CARGO_BIN_EXE_inference-sink"))
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Wait until every record is counted and its offset committed (as read back from the cluster).
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Ok((200, body)) = http_get(port, "/api/status") {
            let status: Value = serde_json::from_slice(&body).unwrap();
            let committed = status["partitions"][0]["committed"].as_i64();
            if status["totals"]["images"].as_u64() == Some(total) && committed == Some(total as i64 - 1) {
                break status;
            }
        }
        assert!(Instant::now() < deadline, "the page never showed {total} images committed; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(status["mode"], "connector");
    assert_eq!(status["model"]["name"], "efficientnet-lite0");
    assert!(status["validation"].as_str().unwrap().starts_with("in the connector"), "{status}");
    let partition = &status["partitions"][0];
    assert_eq!((partition["partition"].as_u64(), partition["end"].as_i64()), (Some(0), Some(total as i64)));
    assert_eq!((partition["delivered"].as_i64(), partition["lag"].as_i64()), (Some(total as i64 - 1), Some(0)));
    assert!(
        status["outputs"].as_array().unwrap().iter().all(|o| o["healthy"] == true && o["backlog"] == 0),
        "every output healthy, nothing held back: {status}"
    );
    let recent = status["recent"].as_array().unwrap();
    assert_eq!(Some(recent.len() as u64), status["totals"]["classified"].as_u64(), "{status}");
    assert!(recent.len() >= data_files("demo-images").len() && recent.iter().all(|r| r["has_thumbnail"] == true));
    let seq = recent[0]["seq"].as_u64().unwrap();
    let (code, jpeg) = get(port, &format!("/thumbnails/{}-{seq}.jpg", status["run"].as_str().unwrap()));
    assert!(code == 200 && jpeg.starts_with(&[0xFF, 0xD8, 0xFF]), "thumbnail {seq}: HTTP {code}");
    let (code, page) = get(port, "/");
    assert!(code == 200 && String::from_utf8_lossy(&page).contains("/dashboard.js"));

    // /metrics agrees with the page and exports every metric the Grafana dashboard queries.
    let (_, scraped) = get(port, "/metrics");
    let scraped = String::from_utf8(scraped).unwrap();
    let classified: f64 = scraped
        .lines()
        .filter(|l| l.starts_with("fvision_images_total{status=\"classified\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(Some(classified), status["totals"]["classified"].as_f64(), "{scraped}");
    assert!(scraped.contains("fvision_consumer_lag{partition=\"0\"} 0"), "{scraped}");
    let grafana = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fluvio-config/grafana/fluvio-vision.json");
    let grafana: Value = serde_json::from_str(&std::fs::read_to_string(grafana).unwrap()).unwrap();
    let used: BTreeSet<String> = grafana["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .flat_map(|t| metric_names(t["expr"].as_str().unwrap()))
        .collect();
    let exported: BTreeSet<&str> = scraped
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "the Grafana dashboard queries metrics the connector does not export: {missing:?}");
    let problems = fvision_tests::exposition::problems(&scraped);
    assert!(problems.is_empty(), "{problems:#?}\n{scraped}");
}
