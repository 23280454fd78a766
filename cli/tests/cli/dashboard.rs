//! The live status page of `fvision run --dashboard`, in a real browser, and the Grafana dashboard's queries
//! against what the endpoint really exports.

use fvision_tests::repo_root as repo;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use fvision_tests::browser::{http_get, Browser};
use fvision_tests::metrics::metric_names;
use serde_json::Value;

/// `fvision run --dashboard 0 ...`, stopped on drop; its page stays up once the run is over.
struct Run {
    child: Child,
    port: u16,
    stdout: String,
}

impl Run {
    /// Starts the run and waits until it is over (every outcome delivered), so the counts are final.
    fn until_done(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fvision"))
            .args(["run", "--dashboard", "0"])
            .args(args)
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fvision runs");
        let lines = |pipe: Box<dyn std::io::Read + Send>| -> Receiver<String> {
            let (tx, rx) = channel();
            std::thread::spawn(move || BufReader::new(pipe).lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
            rx
        };
        let stderr = lines(Box::new(child.stderr.take().expect("stderr")));
        let stdout = lines(Box::new(child.stdout.take().expect("stdout")));
        let mut port = None;
        let mut log = Vec::new();
        loop {
            let line = stderr
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("fvision run ended or hung before the run was over:\n{}", log.join("\n")));
            if let Some(url) = line.strip_prefix("status page on http://") {
                port = url.trim_end_matches('/').rsplit(':').next().and_then(|p| p.parse().ok());
            }
            let over = line.starts_with("the run is over");
            log.push(line);
            if over {
                break;
            }
        }
        // The summary is printed before the run says it is over; its reader may still be behind.
        let mut printed = Vec::new();
        while !printed.last().is_some_and(|l: &String| l.contains(" inference batches")) {
            let line = stdout.recv_timeout(Duration::from_secs(30)).expect("the run's summary line");
            printed.push(line);
        }
        let port = port.unwrap_or_else(|| panic!("no status page address in:\n{}", log.join("\n")));
        Self { child, port, stdout: printed.join("\n") }
    }

    fn get(&self, path: &str) -> String {
        let (status, body) = http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}");
        String::from_utf8(body).expect("UTF-8")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every sample of `name` whose labels contain `filter`, in a Prometheus exposition.
fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_status_page_shows_what_metrics_export_and_the_newest_predictions_in_a_real_browser() {
    let test = "the_status_page_shows_what_metrics_export_and_the_newest_predictions_in_a_real_browser";
    let Some(browser) = Browser::start(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("outcomes.jsonl");
    let run = Run::until_done(&[
        "--confidence-threshold",
        "0.5",
        "--output",
        jsonl.to_str().unwrap(),
        "data/imagenet-sample",
        "data/bad-inputs",
    ]);
    let metrics = run.get("/metrics");
    let classified = metric_sum(&metrics, "fvision_images_total", "status=\"classified\"");
    let rejected = metric_sum(&metrics, "fvision_images_total", "status=\"rejected\"");
    let below = metric_sum(&metrics, "fvision_below_threshold_total", "");
    assert!(classified >= 100.0 && rejected >= 5.0 && below >= 1.0, "{metrics}");
    assert!(run.stdout.contains(&format!("{} classified", classified as u64)), "{}", run.stdout);

    browser.goto(&format!("http://127.0.0.1:{}/", run.port));
    browser.wait_for("return Number(document.body.dataset.polls || 0) >= 2", Duration::from_secs(30));
    browser.wait_for(
        "return [...document.images].every((i) => i.complete && i.naturalWidth > 0)",
        Duration::from_secs(30),
    );
    let page = browser.execute(
        "const t = (id) => document.getElementById(id).textContent;
         const cards = [...document.querySelectorAll('#grid .card')];
         return {
           images: t('images'), classified: t('classified'), rejected: t('rejected'), below: t('below-threshold'),
           connection: t('connection'), model: t('model'),
           cards: cards.map((c) => ({
             id: c.dataset.imageId, label: c.querySelector('.label').textContent,
             low: c.classList.contains('low'), flagged: !!c.querySelector('.flag'),
             thumbnail: c.querySelector('img.thumb') ? c.querySelector('img.thumb').naturalWidth : 0,
           })),
           rejects: [...document.querySelectorAll('#rejects tr[data-reason]')]
             .map((r) => [r.dataset.reason, Number(r.cells[1].textContent)]),
           dead: [...document.querySelectorAll('#dead-letters tr')].slice(1).map((r) => r.cells[2].textContent),
           charts: document.querySelectorAll('#chart-rate polyline, #chart-latency polyline').length,
           nodes: document.getElementsByTagName('*').length,
         };",
    );
    // The counters are the ones /metrics exports.
    let number = |key: &str| page[key].as_str().and_then(|s| s.parse::<f64>().ok());
    assert_eq!(number("classified"), Some(classified), "{page}");
    assert_eq!(number("rejected"), Some(rejected), "{page}");
    assert_eq!(number("below"), Some(below), "{page}");
    assert_eq!(number("images"), Some(classified + rejected), "{page}");
    assert_eq!(page["connection"], "live");
    assert!(page["model"].as_str().unwrap().contains("efficientnet-lite0"), "{page}");
    let rejects: BTreeMap<String, f64> =
        serde_json::from_value::<Vec<(String, f64)>>(page["rejects"].clone()).unwrap().into_iter().collect();
    for (reason, count) in &rejects {
        let exported = metric_sum(&metrics, "fvision_images_total", &format!("reason=\"{reason}\""));
        assert_eq!(*count, exported, "rejects of {reason}");
    }
    assert_eq!(rejects.values().sum::<f64>(), rejected);

    // The grid holds the newest predictions, newest first, as the JSONL output recorded them in delivery
    // order, each with its label, its below-threshold flag and a thumbnail the browser decoded.
    let lines: Vec<Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let newest: Vec<&Value> = lines.iter().filter(|l| l.get("label").is_some()).rev().take(24).collect();
    let cards = page["cards"].as_array().unwrap();
    assert_eq!(cards.len(), newest.len());
    for (card, line) in cards.iter().zip(&newest) {
        assert_eq!(card["id"], line["image_id"], "{card} vs {line}");
        assert_eq!(card["label"], line["label"]);
        let low = line["above_threshold"] == false;
        assert_eq!((card["low"].as_bool(), card["flagged"].as_bool()), (Some(low), Some(low)), "{card}");
        let width = card["thumbnail"].as_u64().unwrap();
        assert!(width > 0 && width <= 96, "thumbnail of {card}");
    }
    // The dead letters are the newest rejections, with their reasons.
    let newest_rejected: Vec<&str> = lines
        .iter()
        .filter(|l| l["status"] == "rejected")
        .rev()
        .take(12)
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    let dead: Vec<&str> = page["dead"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(dead, newest_rejected);
    assert_eq!(page["charts"].as_u64(), Some(4), "two lines in each chart");

    // Polling again redraws in place: the page does not grow.
    let polls = browser.execute("return Number(document.body.dataset.polls)").as_u64().unwrap();
    browser.wait_for(&format!("return Number(document.body.dataset.polls) >= {}", polls + 3), Duration::from_secs(30));
    let nodes = browser.execute("return document.getElementsByTagName('*').length");
    assert_eq!(nodes, page["nodes"], "DOM nodes after three more polls");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    browser.screenshot(&shot);
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
    eprintln!("screenshot: {}", shot.display());
}

/// Metrics only the connector exports (it reads a topic and commits offsets); checked against a running
/// connector by the live-cluster test in `connectors/inference-sink/tests/sink/dashboard_live.rs`.
const CONNECTOR_ONLY: [&str; 6] = [
    "fvision_consumer_lag",
    "fvision_consumed_total",
    "fvision_delivered_total",
    "fvision_in_flight",
    "fvision_offset_commits_total",
    "fvision_reread_total",
];

#[test]
fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let path = repo().join("fluvio-config/grafana/fluvio-vision.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("every target has a PromQL expr").to_string())
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();

    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("outcomes.jsonl");
    // With a JSONL output and an external sink (Kafka, a real broker in process), so the outputs' series
    // and the sinks' (rows, errors by kind, write latency, retries, back-pressure, backlog) are exported too.
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    kafka.create_topic("image-stream-results", 1, 1).unwrap();
    let config = dir.path().join("sink.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: 0.2.0\nmeta: {{version: 0.1.0, name: s, type: inference-sink, topic: {{meta: {{name: images}}}}}}\n\
             inference:\n  kafka: {{brokers: '{}', include: predictions}}\n",
            kafka.bootstrap_servers()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--output", jsonl.to_str().unwrap()];
    let run = Run::until_done(&[&args[..], &["data/demo-images", "data/bad-inputs"]].concat());
    let scraped = run.get("/metrics");
    let exported: BTreeSet<String> = scraped
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> =
        used.iter().filter(|n| !exported.contains(*n) && !CONNECTOR_ONLY.contains(&n.as_str())).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\n{scraped}");
    // As Prometheus and Triton users expect: HELP and TYPE for every family, fvision_build_info, and the
    // model and version of every stage, processing-time and batch-size series.
    let problems = fvision_tests::exposition::problems(&scraped);
    assert!(problems.is_empty(), "{problems:#?}\n{scraped}");
    let build =
        fvision_tests::exposition::samples(&scraped).into_iter().find(|s| s.name == "fvision_build_info").unwrap();
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"), "{:?}", build.labels);
    assert_eq!(build.labels["runtime"], "onnxruntime");
    // The per-sink panels are covered: the run had a sink, so each of their series is really exported.
    for name in [
        "fvision_sink_rows_total",
        "fvision_sink_bytes_total",
        "fvision_sink_errors_total",
        "fvision_sink_write_seconds_bucket",
        "fvision_sink_retries_total",
        "fvision_sink_backpressure_seconds_sum",
        "fvision_output_backlog",
    ] {
        assert!(used.contains(name) && exported.contains(name), "{name}: on a panel and exported\n{scraped}");
    }
    // Histograms are queried through their buckets, and every family the embedded run exports is charted.
    assert!(used.contains("fvision_processing_seconds_bucket") && used.contains("fvision_stage_seconds_bucket"));
    let families: BTreeSet<&str> = exported
        .iter()
        .map(|n| n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count"))
        .collect();
    for family in families {
        assert!(used.iter().any(|u| u.starts_with(family)), "{family} is exported but on no panel");
    }
    // The names the connector adds are documented metrics of this crate.
    let docs = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    for name in CONNECTOR_ONLY {
        assert!(used.contains(name), "{name} is on no panel");
        assert!(docs.contains(&format!("`{name}`")), "{name} is not in docs/metrics.md");
    }
}
