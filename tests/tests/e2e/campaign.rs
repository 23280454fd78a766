//! The fault campaign (docs/reliability.md): the deployed job under SIGKILLs and outages, nothing lost.
//! Not part of the suite (it runs for many minutes); run it with
//!
//! ```text
//! FVISION_CAMPAIGN_IMAGES=10000 cargo test --release -p fvision-tests --test e2e fault_campaign -- --ignored --nocapture
//! ```
//!
//! `fvision deploy` starts the three connectors under their supervisors against the local Fluvio cluster,
//! the Kafka mock cluster hosted here and the emulators (BigQuery and GCS persistent, so they can be stopped
//! and started again with their data). `fvision simulate --mode both` sends the images (10% hostile) while
//! a connector, chosen in turn, is SIGKILLed every `FVISION_CAMPAIGN_KILL_EVERY` seconds (default 15) and
//! restarted by its supervisor; then, while the sink works through the backlog, BigQuery, GCS and the Kafka
//! broker are each down for `FVISION_CAMPAIGN_OUTAGE` seconds (default 60; which ones:
//! `FVISION_CAMPAIGN_OUTAGES`, default `bigquery,gcs,kafka`). At the end every acknowledged
//! image must have exactly one outcome by id (a prediction or a dead letter), BigQuery and the GCS NDJSON
//! objects must hold each prediction above the threshold exactly once, and the figures are printed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fvision_records::{Prediction, ValidationRecord};
use fvision_tests::cluster::{local_cluster, unique_name};
use fvision_tests::emulators::{self, free_ports, PROJECT};
use fvision_tests::process::{kill_pid, target_binary, Process};
use fvision_tests::repo_root;
use rdkafka::mocking::MockCluster;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn start_fvision(dir: &Path, log: &str, args: &[&str]) -> Process {
    let models = repo_root().join("models/presets");
    let env = [
        ("FVISION_MODELS_DIR", models.to_str().unwrap()),
        ("RUST_LOG", "warn,inference_sink=info,kafka_source=info,gcs_source=info"),
    ];
    Process::start(&target_binary("fvision"), args, &env, &dir.join(log))
}

fn pid_of(state: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(state.join(format!("{name}.pid"))).ok()?.trim().parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Every NDJSON line of the objects under `prefix` in `bucket`: (object, prediction_id).
fn gcs_lines(url: &str, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut names = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut list = format!("{url}/storage/v1/b/{bucket}/o?prefix={prefix}");
        if let Some(token) = &page {
            list.push_str(&format!("&pageToken={token}"));
        }
        let body: serde_json::Value =
            serde_json::from_str(&agent.get(&list).call().unwrap().body_mut().read_to_string().unwrap()).unwrap();
        names.extend(
            body["items"].as_array().into_iter().flatten().filter_map(|o| o["name"].as_str().map(str::to_string)),
        );
        match body["nextPageToken"].as_str() {
            Some(token) if !token.is_empty() => page = Some(token.to_string()),
            _ => break,
        }
    }
    let mut lines = Vec::new();
    for name in names {
        let object = gcs_source::gcs::encode_segment(&name);
        let text = agent
            .get(&format!("{url}/storage/v1/b/{bucket}/o/{object}?alt=media"))
            .call()
            .unwrap()
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            lines.push((name.clone(), value["prediction_id"].as_str().unwrap_or_default().to_string()));
        }
    }
    lines
}

#[test]
#[ignore = "the long fault campaign: see docs/reliability.md"]
fn fault_campaign() {
    let test = "fault_campaign";
    let Some(cluster) = local_cluster(test) else { return };
    let count = env_u64("FVISION_CAMPAIGN_IMAGES", 10_000);
    let kill_every = Duration::from_secs(env_u64("FVISION_CAMPAIGN_KILL_EVERY", 15));
    let outage = Duration::from_secs(env_u64("FVISION_CAMPAIGN_OUTAGE", 60));
    let rate = env_u64("FVISION_CAMPAIGN_RATE", 100);
    let base = unique_name("fvt-camp");
    let (images, predictions, dlq) = (format!("{base}-images"), format!("{base}-predictions"), format!("{base}-dlq"));
    let dataset = base.replace('-', "_");
    let mock = MockCluster::new(1).unwrap();
    let servers = mock.bootstrap_servers();
    let mut bigquery = emulators::bigquery_persistent();
    let mut gcs = emulators::gcs_on_disk();
    let pubsub = emulators::pubsub();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let state = dir.join("state");
    let file = dir.join("deploy.yaml");
    let cfg = repo_root().join("fluvio-config");
    let c = cfg.display();
    let [p1, p2, p3] = free_ports();
    let yaml = format!(
        "name: {base}\nstate-dir: {state}\ntopics:\n  images: {{name: {images}, config: {c}/topics/images.yaml}}\n  \
         predictions: {{name: {predictions}, config: {c}/topics/predictions.yaml}}\n  dlq: {{name: {dlq}, config: \
         {c}/topics/images-dlq.yaml}}\nsmartmodule:\n  name: image-validate-{base}\nkafka:\n  bootstrap-servers: {servers}\n\
         bigquery:\n  project: {PROJECT}\n  dataset: {dataset}\n  endpoint: {bq}\ngcs:\n  project: {PROJECT}\n  bucket: {base}\n  \
         endpoint: {gcs_url}\npubsub:\n  project: {PROJECT}\n  ack-deadline-seconds: 20\n  emulator-host: {grpc}\nconnectors:\n\
         \x20 - {{name: sink, type: inference-sink, config: {c}/connectors/inference-sink.yaml, metrics-port: {p1}}}\n\
         \x20 - {{name: kafka, type: kafka-source, config: {c}/connectors/kafka-source.yaml, metrics-port: {p2}}}\n\
         \x20 - {{name: gcs, type: gcs-source, config: {c}/connectors/gcs-source.yaml, metrics-port: {p3}}}\n",
        state = state.display(),
        bq = bigquery.url(),
        gcs_url = gcs.url(),
        grpc = pubsub.grpc_host(),
    );
    std::fs::write(&file, yaml).unwrap();
    let file_arg = file.to_str().unwrap().to_string();
    let mut deploy = start_fvision(dir, "deploy.log", &["deploy", &file_arg]);
    assert!(deploy.wait(Duration::from_secs(300)).success(), "deploy:\n{}", deploy.log());

    let began = Instant::now();
    let ids_file = dir.join("ids");
    let mut simulate = start_fvision(
        dir,
        "simulate.log",
        &[
            "simulate",
            "--mode",
            "both",
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
            "--bad-ratio",
            "0.1",
            "--run-id",
            "camp",
            "--ids",
            ids_file.to_str().unwrap(),
            "--kafka-servers",
            &servers,
            "--gcs-bucket",
            &base,
            "--gcs-endpoint",
            &gcs.url(),
            "--pubsub-project",
            PROJECT,
            "--pubsub-emulator-host",
            &pubsub.grpc_host(),
            "--notify",
        ],
    );

    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    let mut outages: Vec<String> = Vec::new();
    let mut peak_rss = 0u64;
    let mut next_kill = Instant::now() + kill_every;
    let mut turn = 0usize;
    let mut up_since: BTreeMap<&str, (u32, Instant)> = BTreeMap::new();
    let mut simulated_done = false;
    // Phase 2 plan: after the simulator is done, one outage after another, kills continuing.
    let outages_env = std::env::var("FVISION_CAMPAIGN_OUTAGES").unwrap_or_else(|_| "bigquery,gcs,kafka".into());
    let mut plan: Vec<&str> = outages_env.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let mut current: Option<(&str, Instant)> = None;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let outcome = loop {
        if let Some(pid) = pid_of(&state, "sink") {
            peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
        }
        if !simulated_done {
            if let Some(status) = simulate.try_wait() {
                simulated_done = true;
                eprintln!("simulate finished after {:?} ({status})", began.elapsed());
            }
        }
        for name in ["sink", "kafka", "gcs"] {
            if let Some(pid) = pid_of(&state, name) {
                if up_since.get(name).is_none_or(|(known, _)| *known != pid) {
                    up_since.insert(name, (pid, Instant::now()));
                }
            }
        }
        if Instant::now() >= next_kill {
            // The next connector in turn that has been up a while (one that just came back is left to work).
            let name = ["sink", "kafka", "gcs"][turn % 3];
            turn += 1;
            if let Some((pid, since)) = up_since.get(name).copied() {
                if since.elapsed() >= Duration::from_secs(5) && kill_pid(pid) {
                    *kills.entry(name).or_default() += 1;
                    next_kill = Instant::now() + kill_every;
                }
            }
        }
        match current {
            None if simulated_done && !plan.is_empty() => {
                let what = plan.remove(0);
                match what {
                    "bigquery" => bigquery.stop(),
                    "gcs" => gcs.stop(),
                    _ => mock.broker_down(1).unwrap(),
                }
                current = Some((what, Instant::now()));
            }
            Some((what, since)) if since.elapsed() >= outage => {
                match what {
                    "bigquery" => bigquery.start(),
                    "gcs" => gcs.start(),
                    _ => mock.broker_up(1).unwrap(),
                }
                outages.push(format!("{what} {}s", outage.as_secs()));
                current = None;
            }
            _ => {}
        }
        if simulated_done && current.is_none() && plan.is_empty() {
            let simulated: BTreeSet<String> =
                std::fs::read_to_string(&ids_file).unwrap_or_default().lines().map(str::to_string).collect();
            let predictions_seen: Vec<Prediction> =
                cluster.read_all(&predictions).into_iter().map(|(_, v)| serde_json::from_slice(&v).unwrap()).collect();
            let dead: Vec<fvision_records::RejectedImage> = cluster
                .read_all(&dlq)
                .into_iter()
                .filter_map(|(_, v)| match serde_json::from_slice(&v).unwrap() {
                    ValidationRecord::Rejected(r) => Some(r),
                    _ => None,
                })
                .collect();
            let seen: BTreeSet<&str> = predictions_seen
                .iter()
                .map(|p| p.image_id.as_str())
                .chain(dead.iter().map(|d| d.event.id.as_str()))
                .collect();
            let missing = simulated.iter().filter(|id| !seen.contains(id.as_str())).count();
            if missing == 0 {
                break (simulated, predictions_seen, dead);
            }
            assert!(Instant::now() < deadline, "{missing} images without an outcome after an hour");
            eprintln!("{:?}: {missing} of {} images still without an outcome", began.elapsed(), simulated.len());
            std::thread::sleep(Duration::from_secs(5));
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let elapsed = began.elapsed();
    let (simulated, predictions_seen, dead) = outcome;

    // Figures.
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for id in predictions_seen.iter().map(|p| p.image_id.as_str()).chain(dead.iter().map(|d| d.event.id.as_str())) {
        *per_id.entry(id).or_default() += 1;
    }
    let replayed: usize = per_id.values().map(|n| n - 1).sum();
    let unknown = per_id.keys().filter(|id| !simulated.contains(**id)).count();
    let above: BTreeSet<&str> =
        predictions_seen.iter().filter(|p| p.above_threshold).map(|p| p.prediction_id.as_str()).collect();
    let rows = {
        use inference_sink::outputs::bigquery::{client, first_column, query, BigQueryConfig};
        let config: BigQueryConfig = serde_json::from_value(serde_json::json!({
            "project": PROJECT, "dataset": dataset, "table": "image_predictions", "endpoint": bigquery.url()}))
        .unwrap();
        let settings = config.settings(Path::new("campaign"), "images").unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = client(&settings).await.unwrap();
            first_column(
                &query(&client, PROJECT, &format!("SELECT prediction_id FROM {}", settings.table_ref())).await.unwrap(),
            )
        })
    };
    let bq_distinct: BTreeSet<&str> = rows.iter().map(String::as_str).collect();
    let lines = gcs_lines(&gcs.url(), &base, "outputs/predictions/");
    let gcs_distinct: BTreeSet<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    let restarts: Vec<String> = ["sink", "kafka", "gcs"]
        .iter()
        .map(|n| {
            format!("{n} {}", std::fs::read_to_string(state.join(format!("{n}.restarts"))).unwrap_or("0".into()).trim())
        })
        .collect();
    let hostile = simulated.len() / 10;
    eprintln!(
        "CAMPAIGN images={} elapsed={:.0}s kills={kills:?} restarts=[{}] outages=[{}] hostile={hostile} lost=0 unknown={unknown} \
         fluvio_replays={replayed} bigquery_rows={} bigquery_duplicates={} gcs_lines={} gcs_duplicates={} above_threshold={} \
         dead_letters={} peak_sink_rss_mib={}",
        simulated.len(),
        elapsed.as_secs_f64(),
        restarts.join(", "),
        outages.join(", "),
        rows.len(),
        rows.len() - bq_distinct.len(),
        lines.len(),
        lines.len() - gcs_distinct.len(),
        above.len(),
        dead.len(),
        peak_rss / 1024,
    );
    // Clean up before judging, so a failed check leaves nothing behind.
    let mut cleanup = start_fvision(dir, "cleanup.log", &["cleanup", &file_arg, "--yes"]);
    let cleaned = cleanup.wait(Duration::from_secs(900)).success();
    assert_eq!(unknown, 0, "outcomes for images that were not simulated");
    assert_eq!(rows.len(), bq_distinct.len(), "duplicate BigQuery rows");
    assert_eq!(lines.len(), gcs_distinct.len(), "duplicate GCS lines");
    assert_eq!(bq_distinct, above, "BigQuery holds each prediction above the threshold");
    assert_eq!(gcs_distinct, above, "GCS holds each prediction above the threshold");
    let kills_total: u32 = kills.values().sum();
    assert!(kills_total >= 3, "the campaign killed connectors: {kills:?}");
    assert!(cleaned, "cleanup:\n{}", cleanup.log());
}
