//! The things a deployment creates outside its own processes, each with an idempotent `ensure` (says
//! whether it created or found it) and a `delete`: Fluvio topics and the SmartModule (the `fluvio` CLI and
//! the Rust admin client), Kafka topics, the BigQuery dataset and table, the GCS bucket and its
//! notification, the Pub/Sub topic and subscription.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fluvio::metadata::smartmodule::{SmartModuleSpec, SmartModuleWasm};
use fluvio::metadata::topic::TopicSpec;
use fluvio::Fluvio;
use fluvio_future::task::run_block_on;
use fvision_connector_common::offsets::{partition_offsets, OffsetsQuery};
use serde::{Deserialize, Serialize};

use super::file::{smartmodule_package, BigQueryConfig, GcsConfig, KafkaConfig, PubSubConfig};

pub use fvision_gcp::Change;

/// One resource deploy created, as the state directory's ledger keeps it for cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Resource {
    /// A Fluvio topic.
    FluvioTopic {
        /// Name.
        name: String,
    },
    /// A SmartModule on the cluster.
    SmartModule {
        /// Name.
        name: String,
    },
    /// A Kafka topic.
    KafkaTopic {
        /// Bootstrap servers.
        servers: String,
        /// Name.
        name: String,
    },
    /// A BigQuery dataset (with the table in it).
    BigQueryDataset {
        /// Project.
        project: String,
        /// Dataset.
        dataset: String,
    },
    /// A GCS bucket (with every object in it).
    GcsBucket {
        /// Bucket.
        bucket: String,
    },
    /// A Pub/Sub topic.
    PubSubTopic {
        /// Project.
        project: String,
        /// Topic.
        topic: String,
    },
    /// A Pub/Sub subscription.
    PubSubSubscription {
        /// Project.
        project: String,
        /// Subscription.
        subscription: String,
    },
}

impl Resource {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Self::FluvioTopic { name } => format!("Fluvio topic {name}"),
            Self::SmartModule { name } => format!("SmartModule {name}"),
            Self::KafkaTopic { name, servers } => format!("Kafka topic {name} on {servers}"),
            Self::BigQueryDataset { project, dataset } => {
                format!("BigQuery dataset {project}.{dataset} (and its tables)")
            }
            Self::GcsBucket { bucket } => format!("GCS bucket gs://{bucket} (and its objects)"),
            Self::PubSubTopic { project, topic } => format!("Pub/Sub topic projects/{project}/topics/{topic}"),
            Self::PubSubSubscription { project, subscription } => {
                format!("Pub/Sub subscription projects/{project}/subscriptions/{subscription}")
            }
        }
    }

    /// Whether deleting it deletes data (cleanup asks first).
    pub fn holds_data(&self) -> bool {
        !matches!(self, Self::SmartModule { .. } | Self::PubSubSubscription { .. } | Self::PubSubTopic { .. })
    }
}

/// Runs `f` on its own thread; an error after `limit` (clients that retry forever against a dead server).
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).map_err(|_| anyhow!("{what}: no answer within {limit:?}"))?
}

// ---------------------------------------------------------------- Fluvio

/// The `fluvio` CLI: on PATH, else where Fluvio's installer puts it.
pub fn fluvio_cli() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("fluvio"))
        .find(|path| path.is_file());
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(Path::new(&home).join(".fluvio/bin/fluvio")).filter(|p| p.is_file())
    })
}

/// Runs the `fluvio` CLI; its output on failure.
pub fn fluvio(args: &[&str]) -> Result<String> {
    let cli =
        fluvio_cli().ok_or_else(|| anyhow!("the `fluvio` CLI is not installed (not on PATH, not in ~/.fluvio/bin)"))?;
    let out = Command::new(&cli).args(args).output().with_context(|| format!("running {}", cli.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("fluvio {}: {}", args.join(" "), text.trim());
    }
    Ok(text)
}

/// Connects to the cluster of the current Fluvio profile, giving up after 10 s.
pub fn connect() -> Result<Fluvio> {
    within(Duration::from_secs(10), "connecting to the Fluvio cluster", || {
        run_block_on(Fluvio::connect()).map_err(|e| anyhow!("{e}"))
    })
}

/// Whether topic `name` exists.
pub fn fluvio_topic_exists(fluvio: &Fluvio, name: &str) -> Result<bool> {
    run_block_on(async {
        let admin = fluvio.admin().await;
        let listed =
            admin.list::<TopicSpec, _>(vec![name.to_string()]).await.map_err(|e| anyhow!("listing topics: {e}"))?;
        Ok(listed.iter().any(|t| t.name == name))
    })
}

/// Creates topic `name` from the rendered topic file unless it exists.
pub fn ensure_fluvio_topic(fluvio: &Fluvio, name: &str, rendered: &Path) -> Result<Change> {
    if fluvio_topic_exists(fluvio, name)? {
        return Ok(Change::Exists);
    }
    self::fluvio(&["topic", "create", "--config", &rendered.to_string_lossy()])?;
    Ok(Change::Created)
}

/// Whether the cluster has a SmartModule `name` resolves to: the SC's list, filtered by `name`, matches a
/// `group/name@version` as the SPU resolves a consumer's SmartModule.
pub fn smartmodule_exists(fluvio: &Fluvio, name: &str) -> Result<bool> {
    run_block_on(async {
        let admin = fluvio.admin().await;
        let listed = admin
            .list::<SmartModuleSpec, _>(vec![name.to_string()])
            .await
            .map_err(|e| anyhow!("listing SmartModules: {e}"))?;
        Ok(!listed.is_empty())
    })
}

/// Loads the SmartModule unless it is loaded. Under the package's `group/name@version` it is loaded with the
/// package metadata, as `smdk load` does (the cluster lists it under that name); under any other name bare,
/// as `fluvio smartmodule create` does.
pub fn ensure_smartmodule(fluvio: &Fluvio, name: &str, wasm: &Path) -> Result<Change> {
    if smartmodule_exists(fluvio, name)? {
        return Ok(Change::Exists);
    }
    let raw = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let package = smartmodule_package()?;
    let (id, meta) = if package.package.fqdn() == name {
        (package.package.name.clone(), Some(package))
    } else {
        (name.into(), None)
    };
    let wasm = SmartModuleWasm::from_raw_wasm_bytes(&raw).with_context(|| format!("compressing {}", wasm.display()))?;
    let spec = SmartModuleSpec { meta, wasm, ..Default::default() };
    run_block_on(async { fluvio.admin().await.create(id, false, spec).await })
        .map_err(|e| anyhow!("loading SmartModule {name}: {e}"))?;
    Ok(Change::Created)
}

/// Per partition of `topic`: its end offset (high watermark).
pub fn end_offsets(fluvio: &Fluvio, topic: &str) -> Result<Vec<(u32, i64)>> {
    let offsets = run_block_on(async {
        let admin = fluvio.admin().await;
        partition_offsets(fluvio, &admin, OffsetsQuery { topic, partitions: None, consumer_id: None }).await
    })?;
    Ok(offsets.into_iter().map(|(p, o)| (p, o.end)).collect())
}

/// The committed offsets of `consumer_id` on `topic`, by partition, with the time of each commit.
pub fn committed_offsets(
    fluvio: &Fluvio,
    consumer_id: &str,
    topic: &str,
) -> Result<Vec<(u32, i64, Option<std::time::SystemTime>)>> {
    let offsets = run_block_on(async {
        let admin = fluvio.admin().await;
        let query = OffsetsQuery { topic, partitions: None, consumer_id: Some(consumer_id) };
        partition_offsets(fluvio, &admin, query).await
    })?;
    Ok(offsets.into_iter().filter_map(|(p, o)| Some((p, o.committed?, o.committed_at))).collect())
}

/// Deletes a consumer id's offsets on `topic`, partition by partition.
pub fn delete_consumer(fluvio: &Fluvio, consumer_id: &str, topic: &str, partitions: &[u32]) {
    for partition in partitions {
        let _ = run_block_on(fluvio.delete_consumer_offset(consumer_id, (topic.to_string(), *partition)));
    }
}

// ---------------------------------------------------------------- Kafka

fn kafka_client(servers: &str) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", servers).set("socket.timeout.ms", "5000");
    config
}

/// The topics the broker has.
pub fn kafka_topics(servers: &str) -> Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka_client(servers).create().context("a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| anyhow!("the Kafka broker at {servers} does not answer: {e}"))?;
    Ok(metadata.topics().iter().map(|t| t.name().to_string()).collect())
}

/// Creates Kafka topic `name` unless it exists: with the admin API, or, on a broker without it (librdkafka's
/// mock cluster), by the broker's automatic creation on a metadata request.
pub fn ensure_kafka_topic(config: &KafkaConfig, name: &str) -> Result<Change> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let servers = &config.bootstrap_servers;
    if kafka_topics(servers)?.iter().any(|t| t == name) {
        return Ok(Change::Exists);
    }
    let admin: AdminClient<DefaultClientContext> = kafka_client(servers).create().context("a Kafka admin client")?;
    let topic = NewTopic::new(name, config.partitions as i32, TopicReplication::Fixed(1));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let created = run_block_on(admin.create_topics([&topic], &options));
    let ok = matches!(&created, Ok(results) if results.iter().all(Result::is_ok));
    if !ok {
        let consumer: BaseConsumer =
            kafka_client(servers).set("allow.auto.create.topics", "true").create().context("a Kafka client")?;
        let _ = consumer.fetch_metadata(Some(name), Duration::from_secs(5));
        if !kafka_topics(servers)?.iter().any(|t| t == name) {
            bail!("creating Kafka topic {name} on {servers}: {created:?}");
        }
    }
    Ok(Change::Created)
}

/// Deletes Kafka topic `name`; an error when the broker cannot (librdkafka's mock cluster has no DeleteTopics).
pub fn delete_kafka_topic(servers: &str, name: &str) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = kafka_client(servers).create().context("a Kafka admin client")?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(3)));
    let results = run_block_on(admin.delete_topics(&[name], &options)).map_err(|e| anyhow!("{e}"))?;
    for result in results {
        result.map_err(|(topic, code)| anyhow!("deleting Kafka topic {topic}: {code}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- BigQuery

/// A runtime for one BigQuery or Pub/Sub call sequence.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn bigquery_client(config: &BigQueryConfig) -> Result<fvision_gcp::bigquery::Client> {
    let base = config.endpoint.as_deref().map(fvision_gcp::bigquery::v2_base_url);
    fvision_gcp::bigquery::client(base.as_deref(), config.credentials_file.as_deref(), Duration::from_secs(30))
        .await
        .with_context(|| format!("bigquery: {}", config.endpoint.as_deref().unwrap_or("Google Cloud")))
}

/// Creates the dataset and the table (the sink's schema) unless they exist; an existing table must have
/// the sink's columns.
pub fn ensure_bigquery(config: &BigQueryConfig) -> Result<(Change, Change)> {
    use fvision_gcp::bigquery::{ensure_dataset, ensure_table, TableSpec};
    runtime()?.block_on(async {
        let client = bigquery_client(config).await?;
        let dataset = ensure_dataset(&client, &config.project, &config.dataset, true)
            .await
            .with_context(|| format!("BigQuery ({})", config.endpoint.as_deref().unwrap_or("Google Cloud")))?;
        let spec = TableSpec {
            project: &config.project,
            dataset: &config.dataset,
            table: &config.table,
            columns: fvision_outputs::bigquery::columns(),
            description: "fluvio-vision predictions (docs/records.md)",
        };
        let table = ensure_table(&client, spec, true).await.context("BigQuery table")?;
        Ok((dataset, table))
    })
}

/// Deletes the dataset with its tables.
pub fn delete_bigquery_dataset(config: &BigQueryConfig) -> Result<()> {
    runtime()?.block_on(async {
        let client = bigquery_client(config).await?;
        fvision_gcp::bigquery::delete_dataset(&client, &config.project, &config.dataset)
            .await
            .map_err(|e| anyhow!("deleting BigQuery dataset {}.{}: {e}", config.project, config.dataset))
    })
}

/// Rows in the table (`SELECT COUNT(*)`), for status.
pub fn bigquery_rows(config: &BigQueryConfig) -> Result<u64> {
    use fvision_gcp::bigquery::{first_column, query};
    runtime()?.block_on(async {
        let client = bigquery_client(config).await?;
        let table = format!("`{}.{}.{}`", config.project, config.dataset, config.table);
        let rows = query(&client, &config.project, &format!("SELECT COUNT(*) AS n FROM {table}"))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        first_column(&rows).first().and_then(|n| n.parse().ok()).ok_or_else(|| anyhow!("no count in the answer"))
    })
}

// ---------------------------------------------------------------- GCS

/// The GCS client for a deployment's bucket: the config's endpoint (an emulator), else
/// `STORAGE_EMULATOR_HOST`, else Google's with the key file or the application default credentials.
pub fn gcs(config: &GcsConfig) -> Result<fvision_gcp::storage::BlockingClient> {
    use fvision_gcp::auth::SCOPE_STORAGE_FULL;
    let endpoint =
        fvision_gcp::emulator::storage_endpoint_from_env(config.endpoint.as_deref(), config.credentials_file.is_some());
    let key_file = config.credentials_file.as_deref();
    fvision_gcp::storage::BlockingClient::new(&endpoint, None, key_file, SCOPE_STORAGE_FULL, Duration::from_secs(30))
        .context("gcs")
}

// ---------------------------------------------------------------- Pub/Sub

fn pubsub_client(config: &PubSubConfig) -> Result<(tokio::runtime::Runtime, fvision_gcp::pubsub::Client)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let client = runtime.block_on(fvision_gcp::pubsub::client(
        &config.project,
        config.emulator_host.as_deref(),
        config.credentials_file.as_deref(),
    ))?;
    Ok((runtime, client))
}

/// Creates the topic and the subscription unless they exist.
pub fn ensure_pubsub(config: &PubSubConfig) -> Result<(Change, Change)> {
    use fvision_gcp::pubsub::{ensure_subscription, ensure_topic};
    let (runtime, client) = pubsub_client(config)?;
    runtime.block_on(async {
        let topic = ensure_topic(&client, &config.topic).await?;
        let subscription =
            ensure_subscription(&client, &config.topic, &config.subscription, config.ack_deadline_seconds).await?;
        Ok((topic, subscription))
    })
}

/// Deletes a Pub/Sub topic or subscription (`subscription` true); a missing one is fine.
pub fn delete_pubsub(config: &PubSubConfig, name: &str, subscription: bool) -> Result<()> {
    let (runtime, client) = pubsub_client(config)?;
    runtime.block_on(async {
        if subscription {
            fvision_gcp::pubsub::delete_subscription(&client, name).await?;
        } else {
            fvision_gcp::pubsub::delete_topic(&client, name).await?;
        }
        Ok(())
    })
}

/// Whether `host:port` accepts TCP connections within 2 s.
pub fn tcp_answers(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}
