//! The fault campaign (docs/reliability.md): the deployed job under SIGKILLs, outages of every server it
//! talks to and a 10x burst, nothing lost. Not part of the suite (they run for many minutes); run with
//!
//! ```text
//! FVISION_CAMPAIGN_IMAGES=10000 cargo test --release -p fvision-tests --test e2e fault_campaign -- --ignored --nocapture
//! FVISION_FAILOVER_REPLACES_CLUSTER=1 cargo test --release -p fvision-tests --test e2e fault_campaign_failover -- --ignored --nocapture
//! ```
//!
//! `fault_campaign`: `fvision deploy` starts the three connectors under their supervisors against the local
//! Fluvio cluster, the Kafka mock cluster hosted here and the emulators. Three phases:
//!
//! 1. Faults: `fvision simulate --mode both` sends the main stream (10% hostile) at `FVISION_CAMPAIGN_RATE`
//!    while a connector, chosen in turn, is SIGKILLed every `FVISION_CAMPAIGN_KILL_EVERY` seconds and
//!    restarted by its supervisor, and, after `FVISION_CAMPAIGN_WARMUP` seconds, each server of
//!    `FVISION_CAMPAIGN_OUTAGES` (default `bigquery,gcs,pubsub,kafka,spu`) is down in turn: the emulators
//!    and the shared cluster's SPU are frozen with SIGSTOP (connections hang, as when a host is unreachable;
//!    what they hold in memory survives) for `FVISION_CAMPAIGN_OUTAGE` seconds (60; the SPU
//!    `FVISION_CAMPAIGN_SPU_OUTAGE`, 30), the Kafka broker (in this process) is taken down.
//! 2. Settle: no more faults; waits for the main stream to end and the sink's lag to fall to a few seconds
//!    of stream.
//! 3. Burst: a steady stream at the sustained rate for 60 s, then a second simulator adds 9x that rate for
//!    `FVISION_CAMPAIGN_BURST` seconds (60), so the input runs at 10x; the steady stream goes on for
//!    `FVISION_CAMPAIGN_WATCH` seconds (300) after the burst.
//!
//! At the end every acknowledged image must have an outcome (a prediction or a dead letter), BigQuery and the
//! GCS NDJSON objects must hold each prediction above the threshold exactly once, the sink's RSS must have
//! stayed under `FVISION_CAMPAIGN_SINK_RSS_MIB` (512), and the p99 of `processed_at - event_time` (10 s
//! windows of `predictions`) must have come back to its pre-burst level; the figures are printed on one
//! `CAMPAIGN ...` line.
//!
//! `fault_campaign_failover` replaces the shared local cluster with one of 3 SPUs (it deletes the running
//! cluster, so it refuses to run unless `FVISION_FAILOVER_REPLACES_CLUSTER=1`), deploys with its three
//! topics at replication 2, SIGKILLs the SPU leading `images` mid-stream, checks that nothing is lost or
//! duplicated, prints how long each connector stalled, and leaves a fresh 1-SPU local cluster behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use fvision_gcp::storage::Download;
use fvision_records::{Prediction, ValidationRecord};
use fvision_tests::cluster::{local_cluster, local_spus, replace_local_cluster, unique_name, LocalCluster, SpuProcess};
use fvision_tests::emulators::{self, free_ports, Emulator, PubSub, PROJECT};
use fvision_tests::process::{kill_pid, rss_kib, target_binary, Frozen, Process};
use fvision_tests::repo_root;
use rdkafka::mocking::MockCluster;

const CONNECTORS: [&str; 3] = ["sink", "kafka", "gcs"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env_u64(name, default))
}

fn start_fvision(dir: &Path, log: &str, args: &[&str]) -> Process {
    let models = repo_root().join("models/presets");
    let env = [
        ("FVISION_MODELS_DIR", models.to_str().unwrap()),
        ("RUST_LOG", "warn,inference_sink=info,fvision_inference_sink=info,fvision_pipeline=info,fvision_outputs=info,fvision_status=info,kafka_source=info,fvision_kafka_source=info,gcs_source=info,fvision_gcs_source=info"),
    ];
    Process::start(&target_binary("fvision"), args, &env, &dir.join(log))
}

fn pid_of(state: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(state.join(format!("{name}.pid"))).ok()?.trim().parse().ok()
}

/// Every NDJSON line of the objects under `prefix` in `bucket`: (object, prediction_id).
fn gcs_lines(url: &str, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    let gcs = fvision_gcp::storage::BlockingClient::anonymous(url, Duration::from_secs(60)).unwrap();
    let mut lines = Vec::new();
    for name in gcs.list(bucket, prefix).unwrap() {
        let Download::Bytes(bytes) = gcs.download(bucket, &name, None, 1 << 30).unwrap() else {
            panic!("gs://{bucket}/{name} listed but not downloadable")
        };
        for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            lines.push((name.clone(), value["prediction_id"].as_str().unwrap_or_default().to_string()));
        }
    }
    lines
}

/// A running simulator and the file it writes the acknowledged ids to.
struct Simulator {
    what: &'static str,
    process: Process,
    ids: PathBuf,
    started: SystemTime,
    ended: Option<SystemTime>,
}

impl Simulator {
    /// Polls the process; true once it has exited.
    fn done(&mut self) -> bool {
        if self.ended.is_none() && self.process.try_wait().is_some() {
            self.ended = Some(SystemTime::now());
            let log = self.process.log();
            let report = log.lines().find(|l| l.starts_with("simulate:")).unwrap_or_default();
            eprintln!("simulator {}: {report}", self.what);
        }
        self.ended.is_some()
    }

    fn acknowledged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.ids).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The hostile inputs it sent, from its report line (`N images (H hostile) ...`).
    fn hostile(&self) -> usize {
        let log = self.process.log();
        let before = log.split(" hostile)").next().unwrap_or_default();
        before.rsplit('(').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// The achieved rate from its report line (`... X images/s achieved ...`).
    fn achieved_rate(&self) -> f64 {
        let log = self.process.log();
        let before = log.split(" images/s achieved").next().unwrap_or_default();
        before.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0.0)
    }
}

/// One deployment of the job on the cluster the test is given, with its own topics, emulators and Kafka.
struct Job {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    state: PathBuf,
    file: String,
    base: String,
    predictions: String,
    dlq: String,
    images: String,
    dataset: String,
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    servers: String,
    bigquery: Emulator,
    gcs: Emulator,
    pubsub: PubSub,
    metrics_ports: [u16; 3],
}

impl Job {
    /// Deploys the job with `fvision deploy`; its three topics get `replication`.
    fn deploy(replication: u32) -> Job {
        let base = unique_name("fvt-camp");
        let (images, predictions, dlq) =
            (format!("{base}-images"), format!("{base}-predictions"), format!("{base}-dlq"));
        let dataset = base.replace('-', "_");
        let mock = MockCluster::new(1).unwrap();
        // librdkafka's mock broker keeps at most 5 MiB per partition and drops the oldest messages beyond it;
        // the 4 partitions of an auto-created topic hold about 200 images, less than a Kafka outage and a
        // source restart leave unread. 32 partitions hold a few minutes of the stream (the shipped topic name).
        mock.create_topic("image-stream", 32, 1).unwrap();
        let servers = mock.bootstrap_servers();
        let bigquery = emulators::bigquery_persistent();
        let gcs = emulators::gcs_on_disk();
        let pubsub = emulators::pubsub();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let state = dir.join("state");
        let file = dir.join("deploy.yaml");
        let cfg = repo_root().join("fluvio-config");
        let topic_config = |name: &str| {
            let shipped = cfg.join(format!("topics/{name}.yaml"));
            if replication == 1 {
                return shipped;
            }
            let text = std::fs::read_to_string(&shipped).unwrap();
            assert!(text.contains("replication: 1"), "{} sets `replication: 1`", shipped.display());
            let copy = dir.join(format!("{name}.yaml"));
            std::fs::write(&copy, text.replace("replication: 1", &format!("replication: {replication}"))).unwrap();
            copy
        };
        let c = cfg.display();
        let metrics_ports = free_ports();
        let [p1, p2, p3] = metrics_ports;
        let yaml = format!(
            "name: {base}\nstate-dir: {state}\ntopics:\n  images: {{name: {images}, config: {ti}}}\n  \
             predictions: {{name: {predictions}, config: {tp}}}\n  dlq: {{name: {dlq}, config: {td}}}\n\
             smartmodule:\n  name: image-validate-{base}\nkafka:\n  bootstrap-servers: {servers}\n\
             bigquery:\n  project: {PROJECT}\n  dataset: {dataset}\n  endpoint: {bq}\ngcs:\n  project: {PROJECT}\n  bucket: {base}\n  \
             endpoint: {gcs_url}\npubsub:\n  project: {PROJECT}\n  ack-deadline-seconds: 20\n  emulator-host: {grpc}\nconnectors:\n\
             \x20 - {{name: sink, type: inference-sink, config: {c}/connectors/inference-sink.yaml, metrics-port: {p1}}}\n\
             \x20 - {{name: kafka, type: kafka-source, config: {c}/connectors/kafka-source.yaml, metrics-port: {p2}}}\n\
             \x20 - {{name: gcs, type: gcs-source, config: {c}/connectors/gcs-source.yaml, metrics-port: {p3}}}\n",
            state = state.display(),
            ti = topic_config("images").display(),
            tp = topic_config("predictions").display(),
            td = topic_config("images-dlq").display(),
            bq = bigquery.url(),
            gcs_url = gcs.url(),
            grpc = pubsub.grpc_host(),
        );
        std::fs::write(&file, yaml).unwrap();
        let file = file.to_str().unwrap().to_string();
        let mut deploy = start_fvision(&dir, "deploy.log", &["deploy", &file]);
        assert!(deploy.wait(Duration::from_secs(300)).success(), "deploy:\n{}", deploy.log());
        Job {
            _dir: tmp,
            dir,
            state,
            file,
            base,
            predictions,
            dlq,
            images,
            dataset,
            mock,
            servers,
            bigquery,
            gcs,
            pubsub,
            metrics_ports,
        }
    }

    /// Starts `fvision simulate --mode both`: `count` images at `rate`, 10% hostile, ids prefixed `camp-{what}`.
    fn simulate(&self, what: &'static str, count: u64, rate: f64) -> Simulator {
        self.simulate_with(what, "both", count, rate, &[])
    }

    /// Starts `fvision simulate --mode {mode}` with `extra` arguments.
    fn simulate_with(&self, what: &'static str, mode: &str, count: u64, rate: f64, extra: &[&str]) -> Simulator {
        let ids = self.dir.join(format!("ids-{what}"));
        let (count, rate, run_id, gcs_url, grpc) =
            (count.to_string(), rate.to_string(), format!("camp-{what}"), self.gcs.url(), self.pubsub.grpc_host());
        let mut args = vec![
            "simulate",
            "--mode",
            mode,
            "--count",
            &count,
            "--rate",
            &rate,
            "--bad-ratio",
            "0.1",
            "--run-id",
            &run_id,
            "--ids",
            ids.to_str().unwrap(),
            "--kafka-servers",
            &self.servers,
            "--gcs-bucket",
            &self.base,
            "--gcs-endpoint",
            &gcs_url,
            "--pubsub-project",
            PROJECT,
            "--pubsub-emulator-host",
            &grpc,
            "--notify",
        ];
        args.extend_from_slice(extra);
        let process = start_fvision(&self.dir, &format!("simulate-{what}.log"), &args);
        Simulator { what, process, ids, started: SystemTime::now(), ended: None }
    }

    fn pid(&self, name: &str) -> Option<u32> {
        pid_of(&self.state, name)
    }

    /// The sum of `metric` on the `/metrics` page of connector `index` (0 sink, 1 kafka, 2 gcs).
    fn metric(&self, index: usize, metric: &str) -> Option<f64> {
        let port = self.metrics_ports[index];
        let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().new_agent();
        let page =
            agent.get(&format!("http://127.0.0.1:{port}/metrics")).call().ok()?.body_mut().read_to_string().ok()?;
        let sum = page
            .lines()
            .filter(|l| l.starts_with(metric) && matches!(l.as_bytes().get(metric.len()), Some(b'{' | b' ')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        Some(sum)
    }

    /// The predictions and dead letters so far, and how many of `acknowledged` have neither.
    fn outcomes(&self, cluster: &LocalCluster, acknowledged: &BTreeSet<String>) -> Outcomes {
        let predictions: Vec<Prediction> =
            cluster.read_all(&self.predictions).into_iter().map(|(_, v)| serde_json::from_slice(&v).unwrap()).collect();
        let dead: Vec<fvision_records::RejectedImage> = cluster
            .read_all(&self.dlq)
            .into_iter()
            .filter_map(|(_, v)| match serde_json::from_slice(&v).unwrap() {
                ValidationRecord::Rejected(r) => Some(r),
                _ => None,
            })
            .collect();
        let seen: BTreeSet<&str> =
            predictions.iter().map(|p| p.image_id.as_str()).chain(dead.iter().map(|d| d.event.id.as_str())).collect();
        let missing_ids: Vec<String> =
            acknowledged.iter().filter(|id| !seen.contains(id.as_str())).take(50).cloned().collect();
        let missing = acknowledged.iter().filter(|id| !seen.contains(id.as_str())).count();
        Outcomes { predictions, dead, missing, missing_ids }
    }

    /// Waits until every acknowledged image has an outcome, or until the count of those without one has not
    /// moved for `stall` (the caller reports them as lost), sampling the connectors' RSS meanwhile.
    fn wait_outcomes(
        &self,
        cluster: &LocalCluster,
        acknowledged: &BTreeSet<String>,
        began: Instant,
        stall: Duration,
        rss: &mut RssPeaks,
    ) -> Outcomes {
        let mut last_change = (usize::MAX, Instant::now());
        loop {
            rss.sample(self);
            let outcomes = self.outcomes(cluster, acknowledged);
            if outcomes.missing != last_change.0 {
                last_change = (outcomes.missing, Instant::now());
            }
            if outcomes.missing == 0 || last_change.1.elapsed() >= stall {
                if outcomes.missing > 0 {
                    eprintln!("without an outcome (first 50): {}", outcomes.missing_ids.join(" "));
                }
                return outcomes;
            }
            eprintln!(
                "{:.0?}: {} of {} images still without an outcome",
                began.elapsed(),
                outcomes.missing,
                acknowledged.len()
            );
            for _ in 0..10 {
                rss.sample(self);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// What BigQuery and the GCS objects hold, checked against the predictions; the cleanup result.
    fn downstream(&self, outcomes: &Outcomes, acknowledged: &BTreeSet<String>) -> Downstream {
        let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
        for id in outcomes
            .predictions
            .iter()
            .map(|p| p.image_id.as_str())
            .chain(outcomes.dead.iter().map(|d| d.event.id.as_str()))
        {
            *per_id.entry(id).or_default() += 1;
        }
        let fluvio_replays: usize = per_id.values().map(|n| n - 1).sum();
        let unknown = per_id.keys().filter(|id| !acknowledged.contains(**id)).count();
        let above: BTreeSet<String> =
            outcomes.predictions.iter().filter(|p| p.above_threshold).map(|p| p.prediction_id.clone()).collect();
        let rows = {
            use fvision_gcp::bigquery::{first_column, query};
            use fvision_outputs::bigquery::{client, BigQueryConfig};
            let config: BigQueryConfig = serde_json::from_value(serde_json::json!({
                "project": PROJECT, "dataset": self.dataset, "table": "image_predictions", "endpoint": self.bigquery.url()}))
            .unwrap();
            let settings = config.settings(Path::new("campaign"), "images").unwrap();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let client = client(&settings).await.unwrap();
                first_column(
                    &query(&client, PROJECT, &format!("SELECT prediction_id FROM {}", settings.table_ref()))
                        .await
                        .unwrap(),
                )
            })
        };
        let lines: Vec<String> =
            gcs_lines(&self.gcs.url(), &self.base, "outputs/predictions/").into_iter().map(|l| l.1).collect();
        Downstream { fluvio_replays, unknown, above, rows, lines }
    }

    /// `fvision cleanup --yes`; whether it succeeded, and its log.
    fn cleanup(&self) -> (bool, String) {
        let mut cleanup = start_fvision(&self.dir, "cleanup.log", &["cleanup", &self.file, "--yes"]);
        // The GCS emulator rewrites its whole metadata file for every object it deletes: emptying the buckets of
        // a 10,000-image run takes it over 13 minutes.
        let ok = cleanup.wait(Duration::from_secs(1800)).success();
        (ok, cleanup.log())
    }

    fn restarts(&self) -> String {
        CONNECTORS
            .iter()
            .map(|n| {
                let count = std::fs::read_to_string(self.state.join(format!("{n}.restarts"))).unwrap_or("0".into());
                format!("{n} {}", count.trim())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Outcomes {
    predictions: Vec<Prediction>,
    dead: Vec<fvision_records::RejectedImage>,
    missing: usize,
    /// The first of the acknowledged images without an outcome, for the report.
    missing_ids: Vec<String>,
}

struct Downstream {
    fluvio_replays: usize,
    unknown: usize,
    above: BTreeSet<String>,
    rows: Vec<String>,
    lines: Vec<String>,
}

impl Downstream {
    fn duplicates(ids: &[String]) -> usize {
        ids.len() - ids.iter().collect::<BTreeSet<_>>().len()
    }

    /// `key=value` figures for the report line.
    fn figures(&self) -> String {
        format!(
            "unknown={} fluvio_replays={} bigquery_rows={} bigquery_duplicates={} gcs_lines={} gcs_duplicates={} \
             above_threshold={}",
            self.unknown,
            self.fluvio_replays,
            self.rows.len(),
            Self::duplicates(&self.rows),
            self.lines.len(),
            Self::duplicates(&self.lines),
            self.above.len()
        )
    }

    /// The checks every campaign makes downstream.
    fn check(&self) {
        assert_eq!(self.unknown, 0, "outcomes for images that were not simulated");
        assert_eq!(Self::duplicates(&self.rows), 0, "duplicate BigQuery rows");
        assert_eq!(Self::duplicates(&self.lines), 0, "duplicate GCS lines");
        let rows: BTreeSet<String> = self.rows.iter().cloned().collect();
        let lines: BTreeSet<String> = self.lines.iter().cloned().collect();
        assert_eq!(rows, self.above, "BigQuery holds each prediction above the threshold");
        assert_eq!(lines, self.above, "GCS holds each prediction above the threshold");
    }
}

/// Peak RSS of every connector process (whichever process holds its pid file over time).
#[derive(Default)]
struct RssPeaks(BTreeMap<&'static str, u64>);

impl RssPeaks {
    fn sample(&mut self, job: &Job) {
        for name in CONNECTORS {
            if let Some(kib) = job.pid(name).and_then(rss_kib) {
                let peak = self.0.entry(name).or_default();
                *peak = (*peak).max(kib);
            }
        }
    }

    fn mib(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0) / 1024
    }

    fn figure(&self) -> String {
        CONNECTORS.iter().map(|n| format!("{n}:{}", self.mib(n))).collect::<Vec<_>>().join(",")
    }
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix("+00:00").map(|t| format!("{t}Z")).unwrap_or_else(|| text.to_string());
    humantime::parse_rfc3339_weak(&text).ok()
}

fn p99(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64) * 0.99).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Latency `processed_at - event_time` around the burst, from the first prediction of each image.
struct BurstLatency {
    /// p99 over the `pre` seconds before the burst.
    pre_p99: f64,
    /// The highest 10 s window p99 from the burst on.
    peak_p99: f64,
    /// Seconds from the end of the burst to the end of the first window (holding at least half the steady
    /// stream's images) whose p99 is back at the pre-burst level (at most 1.5 x the pre-burst p99, or 1 s
    /// above it); `None` when it never came back.
    recovery: Option<f64>,
    /// (window start relative to the burst start, predictions, p99) for every 10 s window.
    windows: Vec<(i64, usize, f64)>,
}

const WINDOW: f64 = 10.0;

fn burst_latency(
    predictions: &[Prediction],
    start: SystemTime,
    end: SystemTime,
    pre: Duration,
    min_window: usize,
) -> BurstLatency {
    let secs = |t: SystemTime| match t.duration_since(start) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let mut first: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for p in predictions {
        let (Some(event), Some(processed)) =
            (p.event_time.as_deref().and_then(parse_time), parse_time(&p.processed_at))
        else {
            continue;
        };
        let at = secs(processed);
        let latency = processed.duration_since(event).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let entry = first.entry(&p.image_id).or_insert((at, latency));
        if at < entry.0 {
            *entry = (at, latency);
        }
    }
    let mut pre_values: Vec<f64> =
        first.values().filter(|(at, _)| *at < 0.0 && *at >= -pre.as_secs_f64()).map(|v| v.1).collect();
    let pre_p99 = p99(&mut pre_values);
    let mut windows: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (at, latency) in first.values() {
        if *at >= -pre.as_secs_f64() {
            windows.entry((at / WINDOW).floor() as i64).or_default().push(*latency);
        }
    }
    let windows: Vec<(i64, usize, f64)> =
        windows.into_iter().map(|(w, mut v)| (w * WINDOW as i64, v.len(), p99(&mut v))).collect();
    let level = (pre_p99 * 1.5).max(pre_p99 + 1.0);
    let burst_end = secs(end);
    let peak_p99 = windows.iter().filter(|w| w.0 >= 0).map(|w| w.2).fold(0.0, f64::max);
    let recovery = windows
        .iter()
        .filter(|w| w.0 as f64 >= burst_end - WINDOW && w.1 >= min_window)
        .find(|w| w.2 <= level)
        .map(|w| (w.0 as f64 + WINDOW - burst_end).max(0.0));
    BurstLatency { pre_p99, peak_p99, recovery, windows }
}

/// A server taken down for the campaign.
enum Down {
    Frozen(Frozen),
    KafkaBroker,
}

#[test]
#[ignore = "the long fault campaign: see docs/reliability.md"]
fn fault_campaign() {
    let test = "fault_campaign";
    let Some(cluster) = local_cluster(test) else { return };
    let total = env_u64("FVISION_CAMPAIGN_IMAGES", 10_000);
    let rate = env_u64("FVISION_CAMPAIGN_RATE", 6).max(1);
    let kill_every = env_secs("FVISION_CAMPAIGN_KILL_EVERY", 15);
    let outage = env_secs("FVISION_CAMPAIGN_OUTAGE", 60);
    let spu_outage = env_secs("FVISION_CAMPAIGN_SPU_OUTAGE", 30);
    let warmup = env_secs("FVISION_CAMPAIGN_WARMUP", 30);
    let burst = env_secs("FVISION_CAMPAIGN_BURST", 60);
    let watch = env_secs("FVISION_CAMPAIGN_WATCH", 300);
    let pre = Duration::from_secs(60);
    let rss_limit_mib = env_u64("FVISION_CAMPAIGN_SINK_RSS_MIB", 512);
    let outages_env =
        std::env::var("FVISION_CAMPAIGN_OUTAGES").unwrap_or_else(|_| "bigquery,gcs,pubsub,kafka,spu".into());
    let mut plan: Vec<String> =
        outages_env.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    for what in &plan {
        assert!(["bigquery", "gcs", "pubsub", "kafka", "spu"].contains(&what.as_str()), "unknown outage {what}");
    }
    // The burst phase's images: the steady stream around it and the 9x on top; the main stream the rest.
    let steady_count = rate * (pre + burst + watch).as_secs();
    let burst_count = 9 * rate * burst.as_secs();
    let main_count = total.saturating_sub(steady_count + burst_count).max(rate * 60);

    let job = Job::deploy(1);
    let began = Instant::now();
    let mut main = job.simulate("main", main_count, rate as f64);
    let mut steady: Option<Simulator> = None;
    let mut bursting: Vec<Simulator> = Vec::new();
    // The steady stream goes on until `watch` after the burst's last image, however long the burst took to
    // send (GCS uploads may fall behind its rate): a second steady simulator covers the rest.
    let mut tail: Option<Simulator> = None;

    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    let mut survived: Vec<String> = Vec::new();
    let mut rss = RssPeaks::default();
    let mut next_kill = Instant::now() + kill_every;
    let mut next_outage = Instant::now() + warmup;
    let mut turn = 0usize;
    let mut up_since: BTreeMap<&str, (u32, Instant)> = BTreeMap::new();
    let mut current: Option<(String, Instant, Down)> = None;
    let mut settled_at: Option<Instant> = None;
    let mut next_lag_check = Instant::now();
    let mut spu_back = Duration::ZERO;
    #[derive(PartialEq, Debug)]
    enum Phase {
        Faults,
        Settle,
        Burst,
        Drain,
    }
    let mut phase = Phase::Faults;
    loop {
        rss.sample(&job);
        let main_done = main.done();
        for name in CONNECTORS {
            if let Some(pid) = job.pid(name) {
                if up_since.get(name).is_none_or(|(known, _)| *known != pid) {
                    up_since.insert(name, (pid, Instant::now()));
                }
            }
        }
        match phase {
            Phase::Faults => {
                if Instant::now() >= next_kill {
                    // The next connector in turn that has been up a while (one that just came back is left to work).
                    let name = CONNECTORS[turn % 3];
                    turn += 1;
                    if let Some((pid, since)) = up_since.get(name).copied() {
                        if since.elapsed() >= Duration::from_secs(5) && kill_pid(pid) {
                            *kills.entry(name).or_default() += 1;
                            next_kill = Instant::now() + kill_every;
                        }
                    }
                }
                match current.take() {
                    None if !plan.is_empty() && Instant::now() >= next_outage => {
                        let what = plan.remove(0);
                        eprintln!("{:.0?}: {what} down", began.elapsed());
                        let down = match what.as_str() {
                            "bigquery" => Down::Frozen(job.bigquery.freeze()),
                            "gcs" => Down::Frozen(job.gcs.freeze()),
                            "pubsub" => Down::Frozen(job.pubsub.emulator.freeze()),
                            "spu" => {
                                let pids: Vec<u32> = local_spus().into_iter().flat_map(|s| s.pids).collect();
                                Down::Frozen(Frozen::freeze("spu", pids))
                            }
                            _ => {
                                job.mock.broker_down(1).unwrap();
                                Down::KafkaBroker
                            }
                        };
                        current = Some((what, Instant::now(), down));
                    }
                    Some((what, since, down)) => {
                        let length = if what == "spu" { spu_outage } else { outage };
                        if since.elapsed() >= length {
                            match down {
                                Down::Frozen(frozen) => frozen.thaw(),
                                Down::KafkaBroker => job.mock.broker_up(1).unwrap(),
                            }
                            if what == "spu" {
                                // The shared cluster must be healthy again before anything goes on.
                                spu_back = cluster
                                    .wait_online(&[&job.images, &job.predictions, &job.dlq], Duration::from_secs(120));
                                eprintln!("{:.0?}: the cluster answered {spu_back:.1?} after SIGCONT", began.elapsed());
                            }
                            eprintln!("{:.0?}: {what} back", began.elapsed());
                            survived.push(format!("{what}:{}s", length.as_secs()));
                            next_outage = Instant::now() + Duration::from_secs(10);
                        } else {
                            current = Some((what, since, down));
                        }
                    }
                    None => {}
                }
                if plan.is_empty() && current.is_none() && main_done {
                    eprintln!("{:.0?}: faults done; settling", began.elapsed());
                    phase = Phase::Settle;
                    settled_at = Some(Instant::now());
                }
            }
            Phase::Settle => {
                // Until the main stream's images all but a few seconds' worth have an outcome (the sink's lag
                // alone misses what the sources still hold back), 5 minutes at most.
                if Instant::now() >= next_lag_check {
                    next_lag_check = Instant::now() + Duration::from_secs(10);
                    let sent: BTreeSet<String> = main.acknowledged().into_iter().collect();
                    let missing = job.outcomes(&cluster, &sent).missing;
                    let waited = settled_at.map(|t| t.elapsed()).unwrap_or_default();
                    eprintln!("{:.0?}: {missing} main-stream images without an outcome", began.elapsed());
                    if missing as u64 <= 3 * rate || waited >= Duration::from_secs(300) {
                        eprintln!("{:.0?}: steady stream, burst in {pre:?}", began.elapsed());
                        steady = Some(job.simulate("steady", steady_count, rate as f64));
                        phase = Phase::Burst;
                    }
                }
            }
            Phase::Burst => {
                let steady_started = steady.as_ref().map(|s| s.started).unwrap_or(SystemTime::now());
                if bursting.is_empty() && steady_started.elapsed().unwrap_or_default() >= pre {
                    // Two simulators, Kafka and GCS, so the slower GCS uploads do not hold the Kafka sends back
                    // (one `--mode both` simulator alternates them); GCS with more parallel uploads.
                    eprintln!("{:.0?}: burst: {burst_count} images at {}/s", began.elapsed(), 9 * rate);
                    let half = 9.0 * rate as f64 / 2.0;
                    bursting.push(job.simulate_with("burst-kafka", "kafka", burst_count / 2, half, &[]));
                    let workers = ["--gcs-workers", "16"];
                    bursting.push(job.simulate_with("burst-gcs", "gcs", burst_count - burst_count / 2, half, &workers));
                }
                if !bursting.is_empty() && bursting.iter_mut().all(Simulator::done) {
                    eprintln!("{:.0?}: burst sent", began.elapsed());
                    phase = Phase::Drain;
                }
            }
            Phase::Drain => {
                if steady.as_mut().is_none_or(Simulator::done) {
                    let burst_end = bursting.iter().filter_map(|s| s.ended).max().unwrap_or_else(SystemTime::now);
                    let watched = burst_end.elapsed().unwrap_or_default();
                    if tail.is_none() && watched + Duration::from_secs(10) < watch {
                        let count = rate * (watch - watched).as_secs();
                        eprintln!("{:.0?}: steady stream goes on: {count} images", began.elapsed());
                        tail = Some(job.simulate("steady-tail", count, rate as f64));
                    }
                    if tail.as_mut().is_none_or(Simulator::done) {
                        break;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let Some(steady) = steady else { unreachable!("the burst phase ran") };
    let all: Vec<&Simulator> = [&main, &steady].into_iter().chain(&tail).chain(&bursting).collect();
    let acknowledged: BTreeSet<String> = all.iter().flat_map(|s| s.acknowledged()).collect();
    // Until every acknowledged image has an outcome, or the count stops moving for `stall` (then the figures
    // are printed with the images still missing, and the test fails).
    let stall = env_secs("FVISION_CAMPAIGN_STALL", 600);
    let outcomes = job.wait_outcomes(&cluster, &acknowledged, began, stall, &mut rss);
    let elapsed = began.elapsed();
    let burst_start = bursting.iter().map(|s| s.started).min().unwrap_or_else(SystemTime::now);
    let burst_end = bursting.iter().filter_map(|s| s.ended).max().unwrap_or_else(SystemTime::now);
    // A window counts once it holds half of what the steady stream alone brings in 10 s.
    let min_window = (rate as usize * WINDOW as usize / 2).max(1);
    let latency = burst_latency(&outcomes.predictions, burst_start, burst_end, pre, min_window);
    let downstream = job.downstream(&outcomes, &acknowledged);
    let windows: Vec<String> = latency.windows.iter().map(|(at, n, p)| format!("{at:+}s:{n}:{p:.1}")).collect();
    eprintln!("burst p99 by 10 s window (start from the burst start : predictions : p99 s): {}", windows.join(" "));
    eprintln!(
        "CAMPAIGN images={} main={} steady={} burst={} elapsed={:.0}s kills={kills:?} restarts=[{}] outages=[{}] \
         spu_back_after={:.1}s hostile={} lost={} {} dead_letters={} peak_rss_mib=[{}] sink_rss_limit_mib={rss_limit_mib} \
         rate={rate} main_rate_achieved={:.1} burst_rate_requested={} burst_rate_achieved={:.1} burst_seconds={:.0} \
         pre_burst_p99={:.1}s burst_peak_p99={:.1}s burst_p99_recovery={}",
        acknowledged.len(),
        main.acknowledged().len(),
        steady.acknowledged().len() + tail.as_ref().map_or(0, |t| t.acknowledged().len()),
        bursting.iter().map(|s| s.acknowledged().len()).sum::<usize>(),
        elapsed.as_secs_f64(),
        job.restarts(),
        survived.join(", "),
        spu_back.as_secs_f64(),
        all.iter().map(|s| s.hostile()).sum::<usize>(),
        outcomes.missing,
        downstream.figures(),
        outcomes.dead.len(),
        rss.figure(),
        main.achieved_rate(),
        10 * rate,
        bursting.iter().map(Simulator::achieved_rate).sum::<f64>() + steady.achieved_rate(),
        burst_end.duration_since(burst_start).unwrap_or_default().as_secs_f64(),
        latency.pre_p99,
        latency.peak_p99,
        latency.recovery.map_or("never".to_string(), |s| format!("{s:.0}s")),
    );
    // Clean up before judging, so a failed check leaves nothing behind.
    let (cleaned, cleanup_log) = job.cleanup();
    assert_eq!(outcomes.missing, 0, "acknowledged images without an outcome after {stall:?} without progress");
    downstream.check();
    assert!(kills.values().sum::<u32>() >= 3, "the campaign killed connectors: {kills:?}");
    assert!(
        rss.mib("sink") <= rss_limit_mib,
        "the sink's RSS reached {} MiB, above the bound of {rss_limit_mib} MiB",
        rss.mib("sink")
    );
    assert!(
        latency.recovery.is_some(),
        "p99 latency did not come back to its pre-burst level ({:.1} s) while the steady stream lasted",
        latency.pre_p99
    );
    assert!(cleaned, "cleanup:\n{cleanup_log}");
}

/// The SPU the failover test killed: when, the leaders it held, who led `images-0` while it was down, when
/// it was started again, and when `images-0` committed again.
struct Killed {
    at: Instant,
    spu: SpuProcess,
    leaders: String,
    new_leader: Option<i32>,
    back: Option<Instant>,
    /// The high watermark of `images-0` last seen, when it last moved, and its longest pause since the kill.
    hw: i64,
    hw_moved_at: Instant,
    longest_pause: Duration,
    /// Whether it moved after the SPU was started again.
    moved_after_back: bool,
}

/// Brings back a 1-SPU local cluster when the failover test ends, however it ends.
struct RestoreOneSpu;

impl Drop for RestoreOneSpu {
    fn drop(&mut self) {
        eprintln!("restoring a 1-SPU local cluster");
        if let Err(e) = replace_local_cluster(1) {
            eprintln!("could not restore the local cluster: {e}; run `fluvio cluster delete --force` and `fluvio cluster start --local`");
        }
    }
}

#[test]
#[ignore = "replaces the shared local cluster with a 3-SPU one: see docs/reliability.md"]
fn fault_campaign_failover() {
    assert!(
        std::env::var("FVISION_FAILOVER_REPLACES_CLUSTER").is_ok_and(|v| v == "1"),
        "fault_campaign_failover deletes the local Fluvio cluster (every topic on it) and starts one of 3 SPUs; \
         run it only when nothing else uses the cluster, with FVISION_FAILOVER_REPLACES_CLUSTER=1"
    );
    let count = env_u64("FVISION_FAILOVER_IMAGES", 1_000);
    let rate = env_u64("FVISION_CAMPAIGN_RATE", 10).max(1);
    let kill_at = env_secs("FVISION_FAILOVER_KILL_AT", 30);
    // How long the killed SPU stays down before it is started again, as a supervisor would.
    let down = env_secs("FVISION_FAILOVER_DOWN", 30);
    let stall = env_secs("FVISION_CAMPAIGN_STALL", 600);
    let _restore = RestoreOneSpu;
    replace_local_cluster(3).unwrap_or_else(|e| panic!("{e}"));
    let Some(cluster) = local_cluster("fault_campaign_failover") else { return };
    let job = Job::deploy(2);
    let began = Instant::now();
    let mut main = job.simulate("failover", count, rate as f64);
    let mut rss = RssPeaks::default();
    // Progress counters of the sink, kafka-source and gcs-source, and when each last moved.
    let metrics = ["fvision_images_total", "fvision_source_records_total", "fvision_source_records_total"];
    let mut last: [f64; 3] = [0.0; 3];
    let mut killed: Option<Killed> = None;
    let mut stalls: [Option<Duration>; 3] = [None; 3];
    loop {
        rss.sample(&job);
        let now = Instant::now();
        // The stall that matters: how long the killed leader's partition committed nothing (the stream
        // brings it a record every 0.2 s at the default rate).
        if let Some(k) = killed.as_mut() {
            if let Some(hw) = cluster.high_watermark(&job.images, 0).filter(|hw| *hw != k.hw) {
                let paused = now - k.hw_moved_at;
                if paused > Duration::from_secs(5) {
                    eprintln!("{:.0?}: images-0 committed again after {paused:.1?} without a commit", began.elapsed());
                }
                k.longest_pause = k.longest_pause.max(paused);
                k.moved_after_back |= k.back.is_some();
                (k.hw, k.hw_moved_at) = (hw, now);
            }
        }
        for (i, metric) in metrics.iter().enumerate() {
            let Some(value) = job.metric(i, metric) else { continue };
            // A restarted connector starts its counters at 0: any rise counts as progress.
            if value > last[i] {
                if let (Some(k), None) = (&killed, stalls[i]) {
                    stalls[i] = Some(now - k.at);
                    eprintln!(
                        "{:.0?}: {} moved again {:.1?} after the SPU kill",
                        began.elapsed(),
                        CONNECTORS[i],
                        now - k.at
                    );
                }
            }
            last[i] = value;
        }
        match &mut killed {
            None if began.elapsed() >= kill_at => {
                let leader = cluster.partition_leader(&job.images, 0).expect("images-0 has a leader");
                let spu = local_spus().into_iter().find(|s| s.id == leader).expect("the leader's processes");
                let hw = cluster.high_watermark(&job.images, 0).unwrap_or_default();
                let leaders = format!(
                    "predictions-0: {:?}, consumer-offset-0: {:?}",
                    cluster.partition_leader(&job.predictions, 0),
                    cluster.partition_leader("consumer-offset", 0)
                );
                for pid in spu.pids.iter().rev() {
                    kill_pid(*pid);
                }
                eprintln!("{:.0?}: SIGKILLed SPU {leader}, leader of images-0 ({leaders})", began.elapsed());
                killed = Some(Killed {
                    at: Instant::now(),
                    spu,
                    leaders,
                    new_leader: None,
                    back: None,
                    hw,
                    hw_moved_at: Instant::now(),
                    longest_pause: Duration::ZERO,
                    moved_after_back: false,
                });
            }
            Some(k) if k.back.is_none() && k.at.elapsed() >= down => {
                k.new_leader = cluster.partition_leader(&job.images, 0);
                k.spu.start_again().unwrap_or_else(|e| panic!("{e}"));
                k.back = Some(Instant::now());
                eprintln!(
                    "{:.0?}: SPU {} started again after {down:?} down (images-0 led by {:?} meanwhile)",
                    began.elapsed(),
                    k.spu.id,
                    k.new_leader
                );
            }
            _ => {}
        }
        // Done once the SPU is back and images-0 commits again (or has not for `stall` after that).
        let recovered = |k: &Killed| k.moved_after_back || k.back.is_some_and(|back| back.elapsed() >= stall);
        if main.done() && killed.as_ref().is_some_and(|k| k.back.is_some() && recovered(k)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let Some(killed) = killed else { unreachable!("the SPU was killed") };
    let acknowledged: BTreeSet<String> = main.acknowledged().into_iter().collect();
    let outcomes = job.wait_outcomes(&cluster, &acknowledged, began, stall, &mut rss);
    let downstream = job.downstream(&outcomes, &acknowledged);
    // What the images felt: processed_at - event_time, the longest and how many waited over 10 s.
    let latencies: Vec<f64> = outcomes
        .predictions
        .iter()
        .filter_map(|p| {
            let event = parse_time(p.event_time.as_deref()?)?;
            Some(parse_time(&p.processed_at)?.duration_since(event).ok()?.as_secs_f64())
        })
        .collect();
    let slowest = latencies.iter().copied().fold(0.0, f64::max);
    let over_10s = latencies.iter().filter(|l| **l > 10.0).count();
    let stalled = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
    eprintln!(
        "FAILOVER images={} elapsed={:.0}s killed_spu={} down={:.0}s images_leader_meanwhile={:?} leaders_before=[{}] \
         images_0_longest_commit_pause={:.1}s restarts=[{}] first_progress_sink={} first_progress_kafka_source={} \
         first_progress_gcs_source={} slowest_image={slowest:.1}s images_over_10s={over_10s} lost={} {} dead_letters={} peak_rss_mib=[{}]",
        acknowledged.len(),
        began.elapsed().as_secs_f64(),
        killed.spu.id,
        down.as_secs_f64(),
        killed.new_leader,
        killed.leaders,
        killed.longest_pause.as_secs_f64(),
        job.restarts(),
        stalled(stalls[0]),
        stalled(stalls[1]),
        stalled(stalls[2]),
        outcomes.missing,
        downstream.figures(),
        outcomes.dead.len(),
        rss.figure(),
    );
    let (cleaned, cleanup_log) = job.cleanup();
    assert!(
        killed.new_leader.is_some_and(|leader| leader != killed.spu.id),
        "images-0 got a new leader while SPU {} was down",
        killed.spu.id
    );
    assert_eq!(outcomes.missing, 0, "acknowledged images without an outcome after {stall:?} without progress");
    downstream.check();
    assert!(killed.moved_after_back, "images-0 committed again after SPU {} came back", killed.spu.id);
    assert!(cleaned, "cleanup:\n{cleanup_log}");
}

/// The campaign finds the SPUs it stops (SPU outage) or kills (failover) among this machine's processes:
/// the same ids as `fluvio cluster spu list`, each with its processes.
#[test]
fn the_local_clusters_spus_are_found_among_the_processes() {
    let Some(cluster) = local_cluster("the_local_clusters_spus_are_found_among_the_processes") else { return };
    let listed: Vec<i32> = cluster
        .cli_ok(&["cluster", "spu", "list"])
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    let found = local_spus();
    assert!(!listed.is_empty(), "`fluvio cluster spu list` lists an SPU");
    assert_eq!(found.iter().map(|s| s.id).collect::<Vec<_>>(), listed);
    for spu in &found {
        assert!(!spu.pids.is_empty(), "SPU {} has processes", spu.id);
        assert!(fvision_tests::process::process_tree(spu.pids[0]).len() >= spu.pids.len());
    }
}
