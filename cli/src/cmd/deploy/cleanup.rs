//! `fvision cleanup FILE [--yes]`: stops the connectors (SIGTERM to each supervisor, which passes it on and
//! waits for the connector's drain), deletes the sinks' consumer offsets, then deletes what `deploy`
//! created (its ledger), newest first. Deleting data (topics, dataset, bucket) is asked for first unless
//! `--yes`; without a terminal to ask on, it refuses and says to pass `--yes`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::file::{ConnectorKind, Deployment};
use super::resources::{self, Resource};
use super::supervisor::{self, Files};
use super::{state_dir, Ledger};

/// Stop the connectors and delete what deploy created.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision cleanup fluvio-config/deploy/local.yaml          # asks before deleting data
  fvision cleanup fluvio-config/deploy/local.yaml --yes    # no question (scripts, CI)")]
pub struct CleanupArgs {
    /// The deployment file.
    file: PathBuf,
    /// The state directory (as given to deploy).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Delete topics, dataset and bucket with their data without asking.
    #[arg(long, short)]
    yes: bool,
    /// How long each connector may drain after SIGTERM.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,
}

/// `fvision cleanup`.
pub fn run(args: CleanupArgs) -> Result<ExitCode> {
    let deployment = Deployment::load(&args.file)?;
    let config = &deployment.config;
    let dir = state_dir(&deployment, args.state_dir.as_deref());
    let ledger = Ledger::load(&dir)?;
    let data: Vec<String> = ledger.created.iter().filter(|r| r.holds_data()).map(Resource::describe).collect();
    if !data.is_empty() && !args.yes {
        let list = data.join(", ");
        if !std::io::stdin().is_terminal() {
            bail!("cleanup deletes data ({list}); pass --yes to confirm (stdin is not a terminal, so it cannot ask)");
        }
        print!("Delete {list}? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("cleanup: nothing deleted");
            return Ok(ExitCode::FAILURE);
        }
    }

    let mut failures = 0usize;
    for entry in &config.connectors {
        let files = Files::new(&dir, &entry.name);
        let supervisor_pid =
            supervisor::read_pid(&files.supervisor_pid).filter(|p| supervisor::alive_as(*p, "supervise"));
        let child = supervisor::read_pid(&files.pid).filter(|p| supervisor::alive_as(*p, entry.kind.binary()));
        match supervisor_pid {
            Some(pid) => {
                supervisor::signal(pid, "TERM");
                if supervisor::wait_gone(pid, args.stop_timeout + Duration::from_secs(10)) {
                    println!("stopped  connector {} (drained: {})", entry.name, drained(&files));
                } else {
                    supervisor::stop(pid, Duration::from_secs(1));
                    println!("killed   connector {} (it did not stop within {:?})", entry.name, args.stop_timeout);
                    failures += 1;
                }
            }
            None => println!("stopped  connector {} (was not running)", entry.name),
        }
        // A connector left behind by a supervisor that was itself killed.
        if let Some(pid) = child.filter(|p| supervisor::alive(*p)) {
            supervisor::stop(pid, args.stop_timeout);
        }
        for file in [&files.pid, &files.supervisor_pid, &files.restarts, &files.config] {
            let _ = std::fs::remove_file(file);
        }
    }

    let fluvio = resources::connect();
    if let Ok(fluvio) = &fluvio {
        let partitions: Vec<u32> = resources::end_offsets(fluvio, &config.topics.images.name)
            .map(|ends| ends.iter().map(|e| e.0).collect())
            .unwrap_or_default();
        for entry in config.connectors.iter().filter(|c| c.kind == ConnectorKind::InferenceSink) {
            resources::delete_consumer(fluvio, &deployment.consumer_id(entry), &config.topics.images.name, &partitions);
        }
    }
    let mut left = Vec::new();
    for resource in ledger.created.iter().rev() {
        let result = delete(&deployment, resource);
        match result {
            Ok(()) => println!("deleted  {}", resource.describe()),
            Err(e) => {
                println!("left     {}: {e:#}", resource.describe());
                left.push(resource.clone());
            }
        }
    }
    for topic in [&config.topics.images, &config.topics.predictions, &config.topics.dlq] {
        let _ = std::fs::remove_file(dir.join(format!("topic-{}.yaml", topic.name)));
    }
    let kept_only_unremovable = left.iter().all(|r| matches!(r, Resource::KafkaTopic { .. }));
    Ledger { created: left.clone() }.save(&dir)?;
    if left.is_empty() {
        let _ = std::fs::remove_file(dir.join("ledger.json"));
    }
    println!("cleanup: done; connector logs kept in {}", dir.display());
    if !left.is_empty() && kept_only_unremovable {
        println!("cleanup: the Kafka broker cannot delete topics (librdkafka's mock cluster has no DeleteTopics); `fvision dev down` discards them");
    }
    Ok(if failures == 0 && kept_only_unremovable { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Whether the connector's log says it drained (the supervisor's `stopped (exit status: 0)`).
fn drained(files: &Files) -> &'static str {
    let tail = super::status::log_tail(&files.log, 3);
    if tail.contains("stopped (exit status: 0)") {
        "yes"
    } else {
        "no, see its log"
    }
}

fn delete(deployment: &Deployment, resource: &Resource) -> Result<()> {
    let config = &deployment.config;
    match resource {
        Resource::FluvioTopic { name } => resources::fluvio(&["topic", "delete", name]).map(|_| ()),
        Resource::SmartModule { name } => resources::fluvio(&["smartmodule", "delete", name]).map(|_| ()),
        Resource::KafkaTopic { servers, name } => resources::delete_kafka_topic(servers, name),
        Resource::BigQueryDataset { project, dataset } => {
            let mut bq = config
                .bigquery
                .clone()
                .ok_or_else(|| anyhow::anyhow!("the deployment file has no bigquery section now"))?;
            bq.project = project.clone();
            bq.dataset = dataset.clone();
            resources::delete_bigquery_dataset(&bq)
        }
        Resource::GcsBucket { bucket } => {
            let gcs =
                config.gcs.as_ref().ok_or_else(|| anyhow::anyhow!("the deployment file has no gcs section now"))?;
            Ok(resources::gcs(gcs)?.delete_bucket(bucket)?)
        }
        Resource::PubSubTopic { topic, .. } => {
            let pubsub = config.pubsub.as_ref().ok_or_else(|| anyhow::anyhow!("no pubsub section now"))?;
            resources::delete_pubsub(pubsub, topic, false)
        }
        Resource::PubSubSubscription { subscription, .. } => {
            let pubsub = config.pubsub.as_ref().ok_or_else(|| anyhow::anyhow!("no pubsub section now"))?;
            resources::delete_pubsub(pubsub, subscription, true)
        }
    }
}
