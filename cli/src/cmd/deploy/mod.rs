//! `fvision deploy FILE`, `fvision status FILE`, `fvision cleanup FILE`: the whole pipeline on a Fluvio
//! cluster from one deployment file (`file.rs`): prerequisites checked first and every missing one named,
//! then topics, SmartModule and external resources created when missing, then each connector started under
//! a supervisor (`supervisor.rs`). What deploy created is recorded in the state directory's ledger, so
//! cleanup deletes exactly that.

pub mod cleanup;
pub mod file;
pub mod resources;
pub mod status;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use file::{ConnectorEntry, Deployment};
use resources::{Change, Resource};
use supervisor::Files;

/// Deploy the pipeline described by a deployment file: topics, SmartModule, external resources, connectors.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision dev up && fvision deploy fluvio-config/deploy/local.yaml   # everything on this machine
  fvision deploy fluvio-config/deploy/gcp.yaml                        # real Google Cloud
  fvision deploy local.yaml --state-dir /tmp/fv                       # pid, log and config files there")]
pub struct DeployArgs {
    /// The deployment file (fluvio-config/deploy/*.yaml).
    file: PathBuf,
    /// The state directory [default: the file's `state-dir`, else $FVISION_STATE_DIR/<name>, else
    /// ~/.local/state/fluvio-vision/<name>].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long to wait for each started connector's /metrics endpoint to answer.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    start_timeout: Duration,
}

/// The state directory of a deployment.
pub fn state_dir(deployment: &Deployment, flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag.map(Path::to_path_buf).or_else(|| deployment.config.state_dir.clone()) {
        return dir;
    }
    let base = std::env::var_os("FVISION_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/state/fluvio-vision")
    });
    base.join(&deployment.config.name)
}

/// What deploy created, in order: cleanup deletes it in reverse.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Resources created by deploy.
    pub created: Vec<Resource>,
}

impl Ledger {
    fn path(dir: &Path) -> PathBuf {
        dir.join("ledger.json")
    }

    /// The ledger in `dir` (empty when none).
    pub fn load(dir: &Path) -> Result<Self> {
        match std::fs::read_to_string(Self::path(dir)) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}", Self::path(dir).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("{}", Self::path(dir).display())),
        }
    }

    /// Writes it back.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::write(Self::path(dir), serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", Self::path(dir).display()))
    }

    fn record(&mut self, resource: Resource, dir: &Path) -> Result<()> {
        if !self.created.contains(&resource) {
            self.created.push(resource);
        }
        self.save(dir)
    }
}

/// The binary a connector runs: `binary` in the file, else next to `fvision`, else on PATH.
pub fn connector_binary(entry: &ConnectorEntry) -> Option<PathBuf> {
    if let Some(binary) = &entry.binary {
        return binary.is_file().then(|| binary.clone()).or_else(|| on_path(&binary.to_string_lossy()));
    }
    let name = entry.kind.binary();
    let beside =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(name))).filter(|p| p.is_file());
    beside.or_else(|| on_path(name))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The SmartModule's `.wasm`: the file's, else where every binary looks (`fvision_records::resources`).
pub fn wasm_path(deployment: &Deployment) -> Result<PathBuf, fvision_records::resources::NotFound> {
    fvision_records::resources::SMARTMODULE.locate(deployment.config.smartmodule.wasm.as_deref())
}

/// Every prerequisite deploy needs, checked before anything changes: one line per missing one.
fn check_prerequisites(deployment: &Deployment) -> Vec<String> {
    let mut missing = Vec::new();
    let config = &deployment.config;
    if resources::fluvio_cli().is_none() {
        missing.push(
            "the `fluvio` CLI is not installed (not on PATH, not in ~/.fluvio/bin): install Fluvio (RUNBOOK section 1)"
                .into(),
        );
    }
    if let Err(e) = resources::connect() {
        missing.push(format!(
            "the Fluvio cluster does not answer ({e:#}): start one (`fvision dev up`, or RUNBOOK section 1) and check `fluvio profile`"
        ));
    }
    match wasm_path(deployment) {
        Ok(path) if path.is_file() => {}
        Ok(path) => missing.push(format!(
            "the image-validate .wasm {} does not exist: `smdk build --nowasi` in smartmodule/ builds it",
            path.display()
        )),
        Err(e) => missing.push(format!("{e} (`smdk build --nowasi` in smartmodule/ builds it)")),
    }
    for (key, topic) in
        [("images", &config.topics.images), ("predictions", &config.topics.predictions), ("dlq", &config.topics.dlq)]
    {
        if let Err(e) = std::fs::read_to_string(&topic.config) {
            missing.push(format!("topics.{key}.config: cannot read {}: {e}", topic.config.display()));
        }
    }
    // Fluvio ignores keys it does not know, so a misspelt topic setting would silently do nothing.
    for (key, topic) in
        [("images", &config.topics.images), ("predictions", &config.topics.predictions), ("dlq", &config.topics.dlq)]
    {
        if let Err(e) = fvision_connector_common::config::TopicConfig::load(&topic.config) {
            missing.push(format!("topics.{key}.config: {e}"));
        }
    }
    for (i, entry) in config.connectors.iter().enumerate() {
        if connector_binary(entry).is_none() {
            missing.push(format!(
                "connectors[{i}] ({}): the `{}` binary is not next to fvision nor on PATH: cargo build --release -p {}",
                entry.name,
                entry.kind.binary(),
                entry.kind.binary()
            ));
        }
        match std::fs::read_to_string(&entry.config) {
            Ok(text) => {
                if let Err(e) = file::render_connector(deployment, entry, &text) {
                    missing.push(format!("connectors[{i}].config: {e}"));
                }
            }
            Err(e) => missing.push(format!("connectors[{i}].config: cannot read {}: {e}", entry.config.display())),
        }
        if let Some(secrets) = &entry.secrets {
            if let Err(e) = std::fs::read(secrets) {
                missing.push(format!("connectors[{i}].secrets: cannot read {}: {e}", secrets.display()));
            }
        }
    }
    if let Some(kafka) = &config.kafka {
        let servers = kafka.bootstrap_servers.clone();
        if let Err(e) = resources::within(Duration::from_secs(10), "Kafka", move || resources::kafka_topics(&servers)) {
            missing.push(format!("kafka.bootstrap-servers: {e:#} (`fvision dev up` starts a local broker)"));
        }
    }
    if let Some(bq) = &config.bigquery {
        if let Some(file) = &bq.credentials_file {
            if let Err(e) = std::fs::read(file) {
                missing.push(format!("bigquery.credentials-file: cannot read {}: {e}", file.display()));
            }
        }
        if let Some(endpoint) = &bq.endpoint {
            let url = format!("{}/bigquery/v2/projects/{}/datasets", endpoint.trim_end_matches('/'), bq.project);
            if ureq::get(&url).call().is_err_and(|e| !matches!(e, ureq::Error::StatusCode(_))) {
                missing.push(format!(
                    "bigquery.endpoint: {endpoint} does not answer (`fvision dev up` starts the emulator)"
                ));
            }
        }
    }
    if let Some(gcs) = &config.gcs {
        match resources::gcs(gcs) {
            Ok(client) => {
                if gcs.endpoint.is_some() {
                    if let Err(e) = client.answers(&gcs.project) {
                        missing.push(format!("gcs.endpoint: {e:#} (`fvision dev up` starts the emulator)"));
                    }
                }
            }
            Err(e) => missing.push(format!("{e:#}")),
        }
    }
    if let Some(pubsub) = &config.pubsub {
        match &pubsub.emulator_host {
            Some(host) if !resources::tcp_answers(host) => missing
                .push(format!("pubsub.emulator-host: {host} does not answer (`fvision dev up` starts the emulator)")),
            Some(_) => {}
            None => {
                if let Some(file) = &pubsub.credentials_file {
                    if let Err(e) = fvision_gcp::auth::check_key_file(file) {
                        missing.push(format!("pubsub.credentials-file: {e}"));
                    }
                }
            }
        }
    }
    missing
}

fn say(change: Change, what: &str) -> bool {
    match change {
        Change::Created => println!("created  {what}"),
        Change::Exists => println!("exists   {what}"),
    }
    change == Change::Created
}

/// `fvision deploy`.
pub fn run(args: DeployArgs) -> Result<ExitCode> {
    let deployment = Deployment::load(&args.file)?;
    let config = &deployment.config;
    let dir = state_dir(&deployment, args.state_dir.as_deref());
    let missing = check_prerequisites(&deployment);
    if !missing.is_empty() {
        eprintln!("fvision deploy: {} prerequisite(s) missing; nothing was changed:", missing.len());
        for line in &missing {
            eprintln!("  - {line}");
        }
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating the state directory {}", dir.display()))?;
    let mut ledger = Ledger::load(&dir)?;
    let mut changes = 0usize;
    let fluvio = resources::connect()?;

    for topic in [&config.topics.images, &config.topics.predictions, &config.topics.dlq] {
        let text = std::fs::read_to_string(&topic.config)?;
        let rendered = file::render_topic(&text, &topic.name, topic.partitions)
            .map_err(|e| anyhow::anyhow!("{}: {e}", topic.config.display()))?;
        let path = dir.join(format!("topic-{}.yaml", topic.name));
        supervisor::write_private(&path, &rendered)?;
        let change = resources::ensure_fluvio_topic(&fluvio, &topic.name, &path)?;
        let partitions = file::topic_partitions(&rendered);
        if say(change, &format!("Fluvio topic {} ({partitions} partition(s))", topic.name)) {
            changes += 1;
            ledger.record(Resource::FluvioTopic { name: topic.name.clone() }, &dir)?;
        }
    }
    let wasm = wasm_path(&deployment)?;
    let sm = &config.smartmodule.name;
    if say(resources::ensure_smartmodule(&fluvio, sm, &wasm)?, &format!("SmartModule {sm} ({})", wasm.display())) {
        changes += 1;
        ledger.record(Resource::SmartModule { name: sm.clone() }, &dir)?;
    }
    if let Some(kafka) = &config.kafka {
        for topic in [&kafka.input_topic, &kafka.results_topic] {
            if say(
                resources::ensure_kafka_topic(kafka, topic)?,
                &format!("Kafka topic {topic} on {}", kafka.bootstrap_servers),
            ) {
                changes += 1;
                ledger.record(
                    Resource::KafkaTopic { servers: kafka.bootstrap_servers.clone(), name: topic.clone() },
                    &dir,
                )?;
            }
        }
    }
    if let Some(bq) = &config.bigquery {
        let (dataset, table) = resources::ensure_bigquery(bq)?;
        if say(dataset, &format!("BigQuery dataset {}.{}", bq.project, bq.dataset)) {
            changes += 1;
            ledger
                .record(Resource::BigQueryDataset { project: bq.project.clone(), dataset: bq.dataset.clone() }, &dir)?;
        }
        changes += usize::from(say(table, &format!("BigQuery table {}.{}.{}", bq.project, bq.dataset, bq.table)));
    }
    if let Some(pubsub) = &config.pubsub {
        let (topic, subscription) = resources::ensure_pubsub(pubsub)?;
        if say(topic, &format!("Pub/Sub topic {}", pubsub.topic)) {
            changes += 1;
            ledger
                .record(Resource::PubSubTopic { project: pubsub.project.clone(), topic: pubsub.topic.clone() }, &dir)?;
        }
        if say(
            subscription,
            &format!("Pub/Sub subscription {} (ack deadline {} s)", pubsub.subscription, pubsub.ack_deadline_seconds),
        ) {
            changes += 1;
            ledger.record(
                Resource::PubSubSubscription {
                    project: pubsub.project.clone(),
                    subscription: pubsub.subscription.clone(),
                },
                &dir,
            )?;
        }
    }
    if let Some(gcs) = &config.gcs {
        let client = resources::gcs(gcs)?;
        if say(client.ensure_bucket(&gcs.project, &gcs.bucket)?, &format!("GCS bucket gs://{}", gcs.bucket)) {
            changes += 1;
            ledger.record(Resource::GcsBucket { bucket: gcs.bucket.clone() }, &dir)?;
        }
        if gcs.notify {
            let pubsub = config.pubsub.as_ref().context("gcs.notify needs a pubsub section")?;
            let change = client.ensure_notification(&gcs.bucket, &pubsub.project, &pubsub.topic, &gcs.input_prefix)?;
            changes += usize::from(say(
                change,
                &format!("GCS notification gs://{}/{} -> {}", gcs.bucket, gcs.input_prefix, pubsub.topic),
            ));
        }
    }

    let mut started = Vec::new();
    for entry in &config.connectors {
        let files = Files::new(&dir, &entry.name);
        let text = std::fs::read_to_string(&entry.config)?;
        let rendered = file::render_connector(&deployment, entry, &text)?;
        let running = supervisor::read_pid(&files.supervisor_pid).filter(|pid| supervisor::alive_as(*pid, "supervise"));
        let same = std::fs::read_to_string(&files.config).is_ok_and(|old| old == rendered);
        match running {
            Some(pid) if same => {
                println!("running  connector {} (supervisor pid {pid})", entry.name);
                continue;
            }
            Some(pid) => {
                println!("changed  connector {}: its configuration changed; restarting", entry.name);
                supervisor::stop(pid, Duration::from_secs(90));
            }
            None => {}
        }
        supervisor::write_private(&files.config, &rendered)?;
        let binary = connector_binary(entry).context("the connector binary disappeared")?;
        let mut command = vec![
            "supervise".to_string(),
            "--name".into(),
            entry.name.clone(),
            "--dir".into(),
            dir.display().to_string(),
            "--".into(),
            binary.display().to_string(),
            "--config".into(),
            files.config.display().to_string(),
        ];
        if let Some(secrets) = &entry.secrets {
            command.extend(["--secrets".into(), secrets.display().to_string()]);
        }
        command.extend(entry.args.iter().cloned());
        let _ = std::fs::remove_file(&files.restarts);
        let _ = std::fs::remove_file(&files.supervisor_pid);
        let exe = std::env::current_exe()?;
        supervisor::spawn_detached(&exe, &command, &[], &files.log)?;
        println!("started  connector {} ({}; log {})", entry.name, entry.kind.binary(), files.log.display());
        changes += 1;
        started.push((entry, files, file::metrics_port(entry.kind, &rendered)));
    }
    wait_started(&started, args.start_timeout)?;

    if changes == 0 {
        println!("deploy: nothing changed: every resource exists and every connector is running");
    } else {
        println!("deploy: {changes} change(s); state in {}", dir.display());
    }
    print_next_steps(&deployment);
    Ok(ExitCode::SUCCESS)
}

/// Waits until every started connector answers on its metrics port (or, without one, stays up 3 s); a
/// connector that exits meanwhile fails the deploy with the end of its log.
fn wait_started(started: &[(&ConnectorEntry, Files, Option<u16>)], limit: Duration) -> Result<()> {
    let begin = Instant::now();
    for (entry, files, port) in started {
        loop {
            let restarts: u32 =
                std::fs::read_to_string(&files.restarts).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
            if restarts > 0 {
                bail!(
                    "connector {} exited right after its start (its supervisor restarts it with backoff); the end of {}:\n{}",
                    entry.name,
                    files.log.display(),
                    status::log_tail(&files.log, 15)
                );
            }
            let ready = match port {
                Some(port) => resources::tcp_answers(&format!("127.0.0.1:{port}")),
                None => begin.elapsed() > Duration::from_secs(3),
            };
            if ready {
                break;
            }
            if begin.elapsed() > limit {
                bail!(
                    "connector {} did not answer on its metrics port {port:?} within {limit:?}; the end of {}:\n{}",
                    entry.name,
                    files.log.display(),
                    status::log_tail(&files.log, 15)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

fn print_next_steps(deployment: &Deployment) {
    let config = &deployment.config;
    let file = deployment.path.display();
    println!();
    println!("Watch it:");
    println!("  fvision status {file}");
    println!("  fluvio consume {} -B -d", config.topics.predictions.name);
    println!("  fluvio consume {} -B -d", config.topics.dlq.name);
    println!("  fluvio consumer list");
    println!("Send images:");
    let mut simulate = "  fvision simulate --mode both --rate 20 --duration 60 --bad-ratio 0.1".to_string();
    if let Some(kafka) = &config.kafka {
        simulate.push_str(&format!(" --kafka-servers {} --kafka-topic {}", kafka.bootstrap_servers, kafka.input_topic));
    }
    if let (Some(gcs), Some(pubsub)) = (&config.gcs, &config.pubsub) {
        simulate.push_str(&format!(" --gcs-bucket {} --pubsub-project {}", gcs.bucket, pubsub.project));
        if let Some(endpoint) = &gcs.endpoint {
            simulate.push_str(&format!(" --gcs-endpoint {endpoint}"));
        }
        if let Some(host) = &pubsub.emulator_host {
            simulate.push_str(&format!(" --pubsub-emulator-host {host} --pubsub-topic {} --notify", pubsub.topic));
        }
    }
    println!("{simulate}");
    println!("Stop and delete everything it created:");
    println!("  fvision cleanup {file} --yes");
}
