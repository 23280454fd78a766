//! The Kafka output: predictions as JSON messages (the same value as the `predictions` topic), key = image
//! id, through an idempotent producer (`enable.idempotence`: librdkafka's retries never duplicate or
//! reorder a message). [`Output::acknowledge`] awaits the delivery report of every message sent before it,
//! so the Fluvio offset is committed only after Kafka stored them.
//!
//! A crash between the delivery and the commit replays the window: those messages are produced again with
//! the same key and `prediction_id`, and consumers de-duplicate on it (docs/decisions.md). librdkafka runs
//! the I/O on its own threads; its queue (`queue` messages) is the bound: a full queue blocks
//! [`Output::send`] (back-pressure) until the broker takes messages again, and a message not delivered
//! within `max-retry-time` (`message.timeout.ms`) fails the acknowledgement.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fvision_connector_common::ConfigError;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;
use serde::Deserialize;

use crate::metrics as events;
use crate::toolkit::{check_common, default_max_retry_time, Health, Include, Origin};
use crate::{AckFuture, Delivery, Output, OutputError, OutputHealth};

/// The `sink` label and name of this output.
pub const NAME: &str = "kafka";

/// librdkafka properties this output sets itself; the YAML may not override them.
const OWNED_PROPERTIES: [&str; 5] =
    ["bootstrap.servers", "enable.idempotence", "message.timeout.ms", "queue.buffering.max.messages", "acks"];

/// `inference.kafka`: the topic predictions are produced to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of the brokers.
    pub brokers: String,
    /// The topic (it must exist).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `above-threshold` (default, as the job this replaces) or `predictions`.
    #[serde(default)]
    pub include: Include,
    /// How long the producer waits to fill a batch (`linger.ms`).
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// How long a message may stay undelivered (`message.timeout.ms`): past it the connector stops (exit 1,
    /// nothing unacknowledged committed).
    #[serde(default = "default_max_retry_time", with = "humantime_serde")]
    pub max_retry_time: Duration,
    /// Messages the producer holds before sends block (back-pressure).
    #[serde(default = "default_kafka_queue")]
    pub queue: usize,
    /// Further librdkafka properties, passed through: `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `sasl.password` (from secrets), `ssl.ca.location`, `compression.type`, ...
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_topic() -> String {
    "image-stream-results".into()
}
fn default_linger() -> Duration {
    Duration::from_millis(5)
}
fn default_kafka_queue() -> usize {
    10_000
}

/// [`KafkaConfig`] checked: the producer's properties and the output's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// The topic.
    pub topic: String,
    /// Which outcomes.
    pub include: Include,
    /// Every librdkafka property of the producer.
    pub properties: BTreeMap<String, String>,
    /// How long to wait for the brokers' metadata at start-up.
    pub connect_timeout: Duration,
    /// The config file and section, for start-up errors.
    pub origin: Origin,
}

impl KafkaConfig {
    /// Checks the section read from `path`.
    pub fn settings(&self, path: &Path) -> Result<KafkaSettings, ConfigError> {
        let origin = Origin { path: path.to_owned(), section: format!("{}.kafka", crate::SECTION) };
        if self.brokers.split(',').any(|b| {
            b.trim().rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        }) {
            return Err(origin.error("brokers", format!("host:port[,host:port...], not `{}`", self.brokers)));
        }
        let valid_topic = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid_topic {
            return Err(origin
                .error("topic", format!("a Kafka topic name (letters, digits, `.`, `_`, `-`), not `{}`", self.topic)));
        }
        if self.linger > Duration::from_secs(5) {
            return Err(origin.error("linger", "at most 5s"));
        }
        check_common(&origin, self.max_retry_time, self.queue)?;
        if let Some(owned) = self.properties.keys().find(|k| OWNED_PROPERTIES.contains(&k.as_str())) {
            return Err(origin.error(
                &format!("properties.{owned}"),
                "a property the output does not set itself (brokers, idempotence, timeouts and the queue have their own fields)",
            ));
        }
        let mut properties = self.properties.clone();
        for (key, value) in [
            ("bootstrap.servers", self.brokers.clone()),
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            ("message.timeout.ms", self.max_retry_time.as_millis().to_string()),
            ("queue.buffering.max.messages", self.queue.to_string()),
            ("linger.ms", self.linger.as_millis().to_string()),
        ] {
            properties.insert(key.into(), value);
        }
        Ok(KafkaSettings {
            topic: self.topic.clone(),
            include: self.include,
            properties,
            connect_timeout: Duration::from_secs(10),
            origin,
        })
    }
}

/// Records librdkafka's client-level errors (all brokers down, ...) as the output's health.
struct HealthContext {
    health: Health,
}

impl ClientContext for HealthContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(sink = NAME, "librdkafka: {error}: {reason}");
        events::sink_error(NAME, "transient");
        self.health.failed(&format!("{error}: {reason}"));
    }
}

/// A message sent and not yet confirmed.
struct InFlight {
    delivery: DeliveryFuture,
    bytes: u64,
    sent: Instant,
}

/// The Kafka output.
pub struct KafkaOutput {
    settings: KafkaSettings,
    producer: FutureProducer<HealthContext>,
    health: Health,
    in_flight: Mutex<Vec<InFlight>>,
    /// Messages sent and not yet confirmed by a delivery report: the backlog.
    unconfirmed: std::sync::atomic::AtomicU64,
}

impl KafkaOutput {
    /// Creates the producer and checks that the brokers answer and have the topic (errors name the field).
    pub fn connect(settings: KafkaSettings) -> Result<Self, ConfigError> {
        let mut config = ClientConfig::new();
        for (key, value) in &settings.properties {
            config.set(key, value);
        }
        let health = Health::default();
        let producer: FutureProducer<HealthContext> = config
            .create_with_context(HealthContext { health: health.clone() })
            .map_err(|e| settings.origin.error("properties", format!("properties librdkafka accepts: {e}")))?;
        // All topics, not just ours: asking for one topic may make a broker create it (auto-create).
        let metadata = producer.client().fetch_metadata(None, settings.connect_timeout).map_err(|e| {
            settings.origin.error("brokers", format!("brokers that answer within {:?}: {e}", settings.connect_timeout))
        })?;
        let found = metadata.topics().iter().find(|t| t.name() == settings.topic);
        if found.is_none_or(|t| t.error().is_some() || t.partitions().is_empty()) {
            return Err(settings
                .origin
                .error("topic", format!("an existing topic: `{}` is not on the brokers", settings.topic)));
        }
        health.healthy();
        Ok(Self {
            settings,
            producer,
            health,
            in_flight: Mutex::new(Vec::new()),
            unconfirmed: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

impl Output for KafkaOutput {
    fn name(&self) -> &str {
        NAME
    }

    /// Hands the message to librdkafka; while its queue is full, waits (back-pressure).
    fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError> {
        if !self.settings.include.takes(delivery) {
            return Ok(());
        }
        let value = &delivery.routed.value;
        let mut record =
            FutureRecord::to(&self.settings.topic).key(delivery.routed.key.as_str()).payload(value.as_slice());
        let mut waiting: Option<Instant> = None;
        let sent = loop {
            match self.producer.send_result(record) {
                Ok(sent) => break sent,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    waiting.get_or_insert_with(Instant::now);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    events::sink_error(NAME, "fatal");
                    return Err(OutputError::Failed {
                        output: NAME.into(),
                        action: "producing".into(),
                        source: Box::new(error),
                    });
                }
            }
        };
        if let Some(since) = waiting {
            events::sink_backpressure(NAME, since.elapsed().as_secs_f64());
        }
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.push(InFlight { delivery: sent, bytes: value.len() as u64, sent: Instant::now() });
        }
        self.unconfirmed.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Awaits the delivery report of every message sent before the call.
    fn acknowledge(&self) -> AckFuture<'_> {
        let in_flight = self.in_flight.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        Box::pin(async move {
            let (mut rows, mut bytes) = (0u64, 0u64);
            let started = Instant::now();
            for message in in_flight {
                let report = message.delivery.await;
                self.unconfirmed.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                match report {
                    Ok(Ok(_)) => {
                        rows += 1;
                        bytes += message.bytes;
                        metrics::histogram!(events::SINK_WRITE_SECONDS, "sink" => NAME)
                            .record(message.sent.elapsed().as_secs_f64());
                    }
                    Ok(Err((error, _))) => {
                        let timed_out =
                            matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
                        events::sink_error(NAME, if timed_out { "gave_up" } else { "fatal" });
                        if timed_out {
                            return Err(OutputError::GaveUp {
                                output: NAME.into(),
                                failing_for: message.sent.elapsed(),
                                last_error: error.to_string(),
                            });
                        }
                        return Err(OutputError::Failed {
                            output: NAME.into(),
                            action: "delivering".into(),
                            source: Box::new(error),
                        });
                    }
                    Err(_canceled) => {
                        return Err(OutputError::Failed {
                            output: NAME.into(),
                            action: "delivering".into(),
                            source: "the producer was dropped before the delivery report".into(),
                        })
                    }
                }
            }
            if rows > 0 {
                self.health.healthy();
                metrics::counter!(events::SINK_ROWS_TOTAL, "sink" => NAME).increment(rows);
                metrics::counter!(events::SINK_BYTES_TOTAL, "sink" => NAME).increment(bytes);
                tracing::debug!(sink = NAME, rows, ms = started.elapsed().as_millis() as u64, "delivered");
            }
            Ok(Vec::new())
        })
    }

    fn health(&self) -> OutputHealth {
        self.health.get()
    }

    /// Messages sent whose delivery report has not arrived (or not been collected) yet.
    fn backlog(&self) -> u64 {
        self.unconfirmed.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_is_idempotent_and_bounded_whatever_the_yaml_adds() {
        let config: KafkaConfig = serde_yaml::from_str(
            "brokers: 127.0.0.1:9092,k2:9093\nmax-retry-time: 2m\nqueue: 500\nproperties: {security.protocol: SASL_SSL, sasl.username: u}",
        )
        .unwrap();
        let settings = config.settings(Path::new("s.yaml")).unwrap();
        assert_eq!(settings.topic, "image-stream-results");
        let p = &settings.properties;
        assert_eq!((p["enable.idempotence"].as_str(), p["acks"].as_str()), ("true", "all"));
        assert_eq!((p["message.timeout.ms"].as_str(), p["queue.buffering.max.messages"].as_str()), ("120000", "500"));
        assert_eq!(
            (p["security.protocol"].as_str(), p["bootstrap.servers"].as_str()),
            ("SASL_SSL", "127.0.0.1:9092,k2:9093")
        );
    }

    #[test]
    fn the_config_is_checked_field_by_field() {
        let settings = |text: &str| serde_yaml::from_str::<KafkaConfig>(text).unwrap().settings(Path::new("s.yaml"));
        for (text, field) in [
            ("brokers: localhost", "inference.kafka.brokers"),
            ("brokers: ':9092'", "inference.kafka.brokers"),
            ("brokers: h:1\ntopic: 'a b'", "inference.kafka.topic"),
            (
                "brokers: h:1\nproperties: {enable.idempotence: 'false'}",
                "inference.kafka.properties.enable.idempotence",
            ),
            ("brokers: h:1\nmax-retry-time: 10ms", "inference.kafka.max-retry-time"),
        ] {
            let err = settings(text).unwrap_err().to_string();
            assert!(err.starts_with("s.yaml: field `") && err.contains(field), "{text}: {err}");
        }
    }
}
