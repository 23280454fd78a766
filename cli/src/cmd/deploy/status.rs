//! `fvision status FILE [--json]`: one line per component of a deployment. For each connector: its
//! process (and restarts), images/s over one second of its `/metrics`, and its health; for the sink, the
//! lag per partition of `images` (committed offset under its consumer id vs the partition's end offset)
//! and when it last committed; the dead-letter count (records on the DLQ topic) and, with BigQuery, the
//! table's row count.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::file::{ConnectorKind, Deployment};
use super::supervisor::{self, Files};
use super::{resources, state_dir};

/// Show every component of a deployment: processes, rates, lag, dead letters, sink health.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision status fluvio-config/deploy/local.yaml
  fvision status fluvio-config/deploy/local.yaml --json | jq '.connectors[] | {name, up, lag}'")]
pub struct StatusArgs {
    /// The deployment file.
    file: PathBuf,
    /// The state directory (as given to deploy).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// One JSON document instead of lines.
    #[arg(long)]
    json: bool,
    /// Seconds between the two /metrics samples that give images/s.
    #[arg(long, default_value_t = 1.0)]
    sample: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Deployment name.
    pub deployment: String,
    /// The Fluvio topics with their end offsets.
    pub topics: Vec<TopicStatus>,
    /// The connectors.
    pub connectors: Vec<ConnectorStatus>,
    /// Records on the dead-letter topic.
    pub dead_letters: Option<i64>,
    /// Rows in the BigQuery table.
    pub bigquery_rows: Option<u64>,
    /// Errors met while asking (a component that did not answer).
    pub errors: Vec<String>,
}

/// One topic.
#[derive(Debug, Serialize)]
pub struct TopicStatus {
    /// Name.
    pub name: String,
    /// End offset (records written) per partition.
    pub end_offsets: Vec<i64>,
}

/// One connector.
#[derive(Debug, Serialize)]
pub struct ConnectorStatus {
    /// Name in the deployment.
    pub name: String,
    /// Its type.
    pub kind: ConnectorKind,
    /// Whether its process runs.
    pub up: bool,
    /// Its pid.
    pub pid: Option<u32>,
    /// How often its supervisor restarted it.
    pub restarts: u32,
    /// Images (sink) or records (sources) per second over the sample.
    pub rate: Option<f64>,
    /// Total so far (since its last start).
    pub total: Option<f64>,
    /// Per partition of the consumed topic (sink).
    pub partitions: Vec<PartitionLag>,
    /// Sum of the partitions' lag (sink).
    pub lag: Option<i64>,
    /// When it last committed (sink).
    pub last_commit: Option<String>,
    /// `ok`, `retrying <outputs>`, `no metrics`, `down`.
    pub health: String,
}

/// One partition's lag.
#[derive(Debug, Serialize)]
pub struct PartitionLag {
    /// Partition.
    pub partition: u32,
    /// The offset committed under the consumer id (next to read), if any.
    pub committed: Option<i64>,
    /// The partition's end offset.
    pub end: i64,
    /// end - committed.
    pub lag: i64,
}

/// The sum of every sample of `metric` in a Prometheus text page (all label sets), or `None` when absent.
pub fn metric_sum(page: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(metric) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// The `sink` label of every sample of `metric` whose value is not 0.
pub fn labels_set(page: &str, metric: &str, label: &str) -> Vec<String> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v != 0.0))
        .filter_map(|l| {
            let at = l.find(&format!("{label}=\""))? + label.len() + 2;
            Some(l[at..].split('"').next()?.to_string())
        })
        .collect()
}

/// Lag per partition: committed offsets (by partition) against end offsets; a partition without a commit
/// lags by its whole end offset.
pub fn lag(committed: &[(u32, i64)], ends: &[(u32, i64)]) -> Vec<PartitionLag> {
    ends.iter()
        .map(|&(partition, end)| {
            let committed = committed.iter().find(|c| c.0 == partition).map(|c| c.1);
            // Fluvio stores the last offset processed; the next to read is one more.
            let next = committed.map_or(0, |c| c + 1);
            PartitionLag { partition, committed, end, lag: (end - next).max(0) }
        })
        .collect()
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn scrape(port: u16) -> Option<String> {
    let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(3))).build().new_agent();
    agent.get(&format!("http://127.0.0.1:{port}/metrics")).call().ok()?.body_mut().read_to_string().ok()
}

fn counter(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::InferenceSink => "fvision_images_total",
        _ => "fvision_source_records_total",
    }
}

/// Gathers the report.
pub fn gather(deployment: &Deployment, dir: &std::path::Path, sample: Duration) -> Status {
    let config = &deployment.config;
    let mut errors = Vec::new();
    let fluvio = resources::connect().map_err(|e| errors.push(format!("Fluvio cluster: {e:#}"))).ok();
    let mut topics = Vec::new();
    let mut dead_letters = None;
    let mut image_ends = Vec::new();
    if let Some(fluvio) = &fluvio {
        for topic in [&config.topics.images, &config.topics.predictions, &config.topics.dlq] {
            match resources::end_offsets(fluvio, &topic.name) {
                Ok(ends) => {
                    if topic.name == config.topics.dlq.name {
                        dead_letters = Some(ends.iter().map(|e| e.1).sum());
                    }
                    if topic.name == config.topics.images.name {
                        image_ends = ends.clone();
                    }
                    topics.push(TopicStatus {
                        name: topic.name.clone(),
                        end_offsets: ends.iter().map(|e| e.1).collect(),
                    });
                }
                Err(e) => errors.push(format!("topic {}: {e:#}", topic.name)),
            }
        }
    }
    let ports: Vec<Option<u16>> = config
        .connectors
        .iter()
        .map(|entry| {
            let rendered = std::fs::read_to_string(Files::new(dir, &entry.name).config).unwrap_or_default();
            super::file::metrics_port(entry.kind, &rendered)
        })
        .collect();
    let first: Vec<Option<String>> = ports.iter().map(|p| p.and_then(scrape)).collect();
    let started = std::time::Instant::now();
    if first.iter().any(Option::is_some) {
        std::thread::sleep(sample);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut connectors = Vec::new();
    for ((entry, port), first) in config.connectors.iter().zip(&ports).zip(first) {
        let files = Files::new(dir, &entry.name);
        let pid = supervisor::read_pid(&files.pid).filter(|pid| supervisor::alive(*pid));
        let supervised =
            supervisor::read_pid(&files.supervisor_pid).is_some_and(|p| supervisor::alive_as(p, "supervise"));
        let restarts = std::fs::read_to_string(&files.restarts).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        let second = port.and_then(scrape);
        let metric = counter(entry.kind);
        // A page without the counter yet counts 0 (the counter appears with the first record).
        let total = second.as_deref().map(|page| metric_sum(page, metric).unwrap_or(0.0));
        let before = first.as_deref().map(|page| metric_sum(page, metric).unwrap_or(0.0));
        let rate = match (before, total) {
            (Some(a), Some(b)) if elapsed > 0.0 => Some((b - a).max(0.0) / elapsed),
            _ => None,
        };
        let up = pid.is_some() && supervised;
        let health = match (&second, up) {
            (_, false) => "down".to_string(),
            (None, true) => "no metrics".to_string(),
            (Some(page), true) => {
                let retrying = labels_set(page, "fvision_output_retrying", "sink");
                if retrying.is_empty() {
                    "ok".to_string()
                } else {
                    format!("retrying {}", retrying.join(","))
                }
            }
        };
        let (mut partitions, mut last_commit, mut total_lag) = (Vec::new(), None, None);
        if entry.kind == ConnectorKind::InferenceSink {
            if let Some(fluvio) = &fluvio {
                let consumer = deployment.consumer_id(entry);
                match resources::committed_offsets(fluvio, &consumer, &config.topics.images.name) {
                    Ok(committed) => {
                        let mine: Vec<(u32, i64)> = match entry.partition {
                            Some(p) => image_ends.iter().copied().filter(|e| e.0 == p).collect(),
                            None => image_ends.clone(),
                        };
                        let pairs: Vec<(u32, i64)> = committed.iter().map(|c| (c.0, c.1)).collect();
                        partitions = lag(&pairs, &mine);
                        total_lag = Some(partitions.iter().map(|p| p.lag).sum());
                        last_commit = committed
                            .iter()
                            .filter_map(|c| c.2)
                            .max()
                            .map(|t: SystemTime| humantime::format_rfc3339_seconds(t).to_string());
                    }
                    Err(e) => errors.push(format!("{}: {e:#}", entry.name)),
                }
            }
        }
        connectors.push(ConnectorStatus {
            name: entry.name.clone(),
            kind: entry.kind,
            up,
            pid,
            restarts,
            rate,
            total,
            partitions,
            lag: total_lag,
            last_commit,
            health,
        });
    }
    let bigquery_rows = config.bigquery.as_ref().and_then(|bq| {
        let bq = bq.clone();
        resources::within(Duration::from_secs(20), "BigQuery", move || resources::bigquery_rows(&bq))
            .map_err(|e| errors.push(format!("BigQuery: {e:#}")))
            .ok()
    });
    Status { deployment: config.name.clone(), topics, connectors, dead_letters, bigquery_rows, errors }
}

/// Lines for people.
pub fn lines(status: &Status) -> Vec<String> {
    let mut out = Vec::new();
    for c in &status.connectors {
        let mut line = format!("{:<22} {:<15} {:<5}", c.name, c.kind.binary(), if c.up { "up" } else { "DOWN" });
        if let Some(pid) = c.pid {
            line.push_str(&format!(" pid {pid}"));
        }
        if c.restarts > 0 {
            line.push_str(&format!(" restarts {}", c.restarts));
        }
        match c.rate {
            Some(rate) => line.push_str(&format!("  {rate:.1}/s")),
            None => line.push_str("  -/s"),
        }
        if let Some(total) = c.total {
            line.push_str(&format!(" ({total:.0} so far)"));
        }
        if c.kind == ConnectorKind::InferenceSink {
            let parts: Vec<String> = c
                .partitions
                .iter()
                .map(|p| format!("p{} {}/{} lag {}", p.partition, p.committed.map_or(0, |c| c + 1), p.end, p.lag))
                .collect();
            line.push_str(&format!("  [{}]", parts.join(", ")));
            if let Some(at) = &c.last_commit {
                line.push_str(&format!(" last commit {at}"));
            }
        }
        line.push_str(&format!("  {}", c.health));
        out.push(line);
    }
    for t in &status.topics {
        out.push(format!("topic {:<32} end offsets {:?}", t.name, t.end_offsets));
    }
    if let Some(n) = status.dead_letters {
        out.push(format!("dead letters {n}"));
    }
    if let Some(n) = status.bigquery_rows {
        out.push(format!("bigquery rows {n}"));
    }
    for e in &status.errors {
        out.push(format!("error: {e}"));
    }
    out
}

/// `fvision status`.
pub fn run(args: StatusArgs) -> Result<ExitCode> {
    let deployment = Deployment::load(&args.file)?;
    let dir = state_dir(&deployment, args.state_dir.as_deref());
    let status = gather(&deployment, &dir, Duration::from_secs_f64(args.sample.clamp(0.0, 60.0)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        for line in lines(&status) {
            println!("{line}");
        }
    }
    let healthy = status.connectors.iter().all(|c| c.up) && status.errors.is_empty();
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE fvision_images_total counter\n\
        fvision_images_total{status=\"classified\",model=\"m\"} 40\n\
        fvision_images_total{status=\"rejected\",reason=\"truncated\"} 2\n\
        fvision_images_total_other 9\n\
        fvision_output_retrying{sink=\"bigquery\"} 1\n\
        fvision_output_retrying{sink=\"gcs\"} 0\n";

    #[test]
    fn metrics_are_summed_over_labels_and_retrying_outputs_named() {
        assert_eq!(metric_sum(PAGE, "fvision_images_total"), Some(42.0));
        assert_eq!(metric_sum(PAGE, "fvision_consumed_total"), None);
        assert_eq!(labels_set(PAGE, "fvision_output_retrying", "sink"), ["bigquery"]);
    }

    #[test]
    fn lag_counts_from_the_committed_offset_and_a_partition_without_a_commit_lags_entirely() {
        let lags = lag(&[(0, 9)], &[(0, 10), (1, 5)]);
        assert_eq!(lags.iter().map(|l| (l.partition, l.lag)).collect::<Vec<_>>(), [(0, 0), (1, 5)]);
        assert_eq!(lag(&[(0, 4)], &[(0, 10)])[0].lag, 5);
    }
}
