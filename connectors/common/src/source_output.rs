//! What a source writes to Fluvio: ImageEvents to its topic (keyed by id) and dead letters to the
//! dead-letter topic, with an acknowledgement barrier: [`SourceOutput::acknowledge`] returns only once
//! Fluvio confirmed every record sent since the last call, and only then may a source commit its input
//! (Kafka offset, Pub/Sub ack).

use fluvio::metadata::topic::TopicSpec;
use fluvio::{Fluvio, ProduceOutput, RecordKey, TopicProducerPool};
use fvision_records::{ImageEvent, RejectedImage};

use crate::config::MetaConfig;
use crate::dead_letter;
use crate::producer::image_producer_config;

/// Why records could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// A Fluvio call failed.
    #[error("{action}: {detail}")]
    Fluvio {
        /// What was being done.
        action: String,
        /// The client's error, with its causes.
        detail: String,
    },
    /// A topic the source writes does not exist.
    #[error(
        "topic `{0}` does not exist; create it first (fluvio-config/topics/ has its config: \
         `fluvio topic create --config fluvio-config/topics/<name>.yaml`)"
    )]
    MissingTopic(String),
    /// A record could not be serialised.
    #[error("serialising a record: {0}")]
    Serialize(#[from] serde_json::Error),
}

fn fluvio_error<E: Into<anyhow::Error>>(action: impl Into<String>) -> impl FnOnce(E) -> OutputError {
    let action = action.into();
    move |e| OutputError::Fluvio { action, detail: format!("{:#}", e.into()) }
}

/// Producers for the events topic and the dead-letter topic, and the sends not yet acknowledged.
pub struct SourceOutput {
    events: (String, TopicProducerPool),
    dead_letters: (String, TopicProducerPool),
    pending: Vec<(String, ProduceOutput)>,
}

impl SourceOutput {
    /// Checks the topics (creating `meta.topic` when `meta.create-topic` allows) and opens the producers,
    /// sized for whole images from `meta.producer`.
    pub async fn connect(fluvio: &Fluvio, meta: &MetaConfig, dlq_topic: &str) -> Result<Self, OutputError> {
        let admin = fluvio.admin().await;
        let topic = meta.topic.name().to_string();
        for (name, may_create) in [(topic.as_str(), meta.create_topic), (dlq_topic, false)] {
            let found =
                admin.list::<TopicSpec, _>(vec![name.to_string()]).await.map_err(fluvio_error("listing topics"))?;
            if found.is_empty() {
                if !may_create {
                    return Err(OutputError::MissingTopic(name.to_string()));
                }
                admin
                    .create(name.to_string(), false, TopicSpec::new_computed(1, 1, None))
                    .await
                    .map_err(fluvio_error(format!("creating topic `{name}`")))?;
                tracing::info!(topic = name, "created the topic (meta.create-topic)");
            }
        }
        let config = image_producer_config(&meta.producer.clone().unwrap_or_default())
            .map_err(fluvio_error("configuring the producers"))?;
        let open = |name: String| {
            let config = config.clone();
            async move {
                let producer = fluvio
                    .topic_producer_with_config(name.clone(), config)
                    .await
                    .map_err(fluvio_error(format!("opening a producer for `{name}`")))?;
                Ok::<_, OutputError>((name, producer))
            }
        };
        Ok(Self { events: open(topic).await?, dead_letters: open(dlq_topic.to_string()).await?, pending: Vec::new() })
    }

    /// The events topic.
    pub fn topic(&self) -> &str {
        &self.events.0
    }

    /// Sends an already serialised ImageEvent keyed by its id.
    pub async fn send_event_bytes(&mut self, id: &str, value: Vec<u8>) -> Result<(), OutputError> {
        let (topic, producer) = &self.events;
        let sent = producer
            .send(RecordKey::from(id.to_string()), value)
            .await
            .map_err(fluvio_error(format!("producing to `{topic}`")))?;
        self.pending.push((topic.clone(), sent));
        Ok(())
    }

    /// Sends an ImageEvent keyed by its id.
    pub async fn send_event(&mut self, event: &ImageEvent) -> Result<(), OutputError> {
        let value = serde_json::to_vec(event)?;
        self.send_event_bytes(&event.meta.id, value).await
    }

    /// Sends a dead letter keyed by the id of what it rejects.
    pub async fn send_dead_letter(&mut self, rejected: RejectedImage) -> Result<(), OutputError> {
        let key = rejected.event.id.clone();
        let value = dead_letter::encode(rejected)?;
        let (topic, producer) = &self.dead_letters;
        let sent = producer
            .send(RecordKey::from(key), value)
            .await
            .map_err(fluvio_error(format!("producing to `{topic}`")))?;
        self.pending.push((topic.clone(), sent));
        Ok(())
    }

    /// Records sent and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Flushes both producers and waits for Fluvio's confirmation of every record sent so far.
    pub async fn acknowledge(&mut self) -> Result<(), OutputError> {
        for (topic, producer) in [&self.events, &self.dead_letters] {
            producer.flush().await.map_err(fluvio_error(format!("flushing `{topic}`")))?;
        }
        for (topic, sent) in std::mem::take(&mut self.pending) {
            sent.wait().await.map_err(fluvio_error(format!("confirming a record on `{topic}`")))?;
        }
        Ok(())
    }
}

/// Environment variable of the connectors' crash test hook: with `FVISION_CRASH_BEFORE_COMMIT=N` a connector
/// aborts (no clean-up, like SIGKILL) at its N-th commit point, after what it wrote was acknowledged and before
/// it commits its input (a source's Kafka offsets or Pub/Sub acks, the sink's Fluvio offsets): the worst
/// moment, where a crash replays what the other side already holds. Tests only.
pub const CRASH_BEFORE_COMMIT: &str = "FVISION_CRASH_BEFORE_COMMIT";

/// Aborts the process at the commit point [`CRASH_BEFORE_COMMIT`] names; call it between the acknowledgement
/// (by `acknowledged_by`, named in the log line) and the commit.
pub fn crash_before_commit_if_asked(acknowledged_by: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BATCHES: AtomicU64 = AtomicU64::new(0);
    let Some(at) = std::env::var(CRASH_BEFORE_COMMIT).ok().and_then(|v| v.parse::<u64>().ok()) else { return };
    if BATCHES.fetch_add(1, Ordering::SeqCst) + 1 >= at {
        eprintln!("{CRASH_BEFORE_COMMIT}={at}: aborting after {acknowledged_by} acknowledged, before the commit");
        std::process::abort();
    }
}
