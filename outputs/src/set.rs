//! The set of outputs the connector (and `fvision run`) delivers to: every outcome is routed once and
//! handed to every output; [`OutputSet::acknowledge`] waits for all of them, then dead-letters the rows
//! they refused one by one, so the offset commit that follows covers only what is stored somewhere.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::join_all;

use std::path::Path;

use fvision_connector_common::ConfigError;
use fvision_pipeline::{Outcome, SourcePosition};

use crate::bigquery::{BigQueryConfig, BigQueryOutput};
use crate::gcs::{GcsConfig, GcsOutput};
use crate::kafka::{KafkaConfig, KafkaOutput};
use crate::metrics;
use crate::{route, BelowThreshold, Delivery, Destination, JsonlOutput, Output, OutputError, Routed, SinkRejection};

/// What a run adds to the outputs its YAML configures: the connector has Fluvio topics and appends to
/// its JSONL file, `fvision run` has neither topics nor the console output (its table is its console) and
/// truncates the file it is given. Everything else comes from the YAML, through [`OutputSet::build`].
pub struct LocalOutputs {
    /// The connector's Fluvio topics; they take the dead letters of every output.
    pub topics: Option<Box<dyn Output>>,
    /// Whether to print predictions with [`crate::ConsoleOutput`].
    pub console: bool,
    /// The JSONL file, already opened by the caller. Without topics it takes the dead letters.
    pub jsonl: Option<JsonlOutput>,
    /// How predictions below the threshold are routed (`fvision run` has no review topic).
    pub below: BelowThreshold,
    /// The consumed topic, written into BigQuery's `source_topic` column (empty for `fvision run`).
    pub source_topic: String,
}

/// The external sinks' sections of a connector YAML (any of them may be absent), as serde read them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExternalConfigs<'a> {
    /// `bigquery:`.
    pub bigquery: Option<&'a BigQueryConfig>,
    /// `kafka:`.
    pub kafka: Option<&'a KafkaConfig>,
    /// `gcs:`.
    pub gcs: Option<&'a GcsConfig>,
}

impl ExternalConfigs<'_> {
    /// Checks every section without connecting, so a bad value stops the start before any I/O.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(bigquery) = self.bigquery {
            bigquery.settings(path, "")?;
        }
        if let Some(kafka) = self.kafka {
            kafka.settings(path)?;
        }
        if let Some(gcs) = self.gcs {
            gcs.settings(path)?;
        }
        Ok(())
    }

    /// The sinks, connected and checked, in the order BigQuery, Kafka, GCS. `path` names the config file in
    /// errors; `topic` is the consumed topic.
    fn connect(&self, path: &Path, topic: &str) -> Result<Vec<Box<dyn Output>>, ConfigError> {
        let names = [
            self.bigquery.map(|_| crate::bigquery::NAME),
            self.kafka.map(|_| crate::kafka::NAME),
            self.gcs.map(|_| crate::gcs::NAME),
        ];
        for name in names.into_iter().flatten() {
            metrics::sink_added(name);
        }
        let mut outputs: Vec<Box<dyn Output>> = Vec::new();
        if let Some(config) = self.bigquery {
            outputs.push(Box::new(BigQueryOutput::connect(config.settings(path, topic)?)?));
        }
        if let Some(config) = self.kafka {
            outputs.push(Box::new(KafkaOutput::connect(config.settings(path)?)?));
        }
        if let Some(config) = self.gcs {
            outputs.push(Box::new(GcsOutput::connect(config.settings(path)?)?));
        }
        Ok(outputs)
    }
}

/// An outcome could not be delivered or confirmed: offsets must not be committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The outcome could not be serialised into its record.
    #[error("serialising an outcome")]
    Serialize(#[from] serde_json::Error),
    /// An output failed as a whole.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// An output refused rows and no output takes dead letters.
    #[error("{output} refused {count} records and no dead-letter output is configured")]
    NoDeadLetterOutput {
        /// The output that refused them.
        output: String,
        /// How many.
        count: usize,
    },
    /// The dead-letter output refused a dead letter itself: there is nowhere left to put it.
    #[error("the dead-letter output `{output}` refused the dead letter of `{key}`")]
    DeadLetterRefused {
        /// The dead-letter output.
        output: String,
        /// The refused record's key.
        key: String,
    },
}

/// Every output of a run, one of which may take dead letters (the rows other outputs refuse).
pub struct OutputSet {
    outputs: Vec<Box<dyn Output>>,
    /// Index in `outputs` of the one that takes dead letters.
    dead_letters: Option<usize>,
    below: BelowThreshold,
    delivered: AtomicU64,
    /// Woken at every delivery, for [`OutputSet::delivered_reach`].
    delivered_changed: tokio::sync::Notify,
}

impl OutputSet {
    /// No outputs yet; predictions below the threshold are routed by `below`.
    pub fn new(below: BelowThreshold) -> Self {
        Self {
            outputs: Vec::new(),
            dead_letters: None,
            below,
            delivered: AtomicU64::new(0),
            delivered_changed: tokio::sync::Notify::new(),
        }
    }

    /// Every output of a run, in one place for the connector and `fvision run` (so `fvision run --config`
    /// writes where the connector would): the topics, the console, the JSONL file, then the external sinks
    /// the `inference` section configures (BigQuery, Kafka, GCS), each connected and checked now, so a
    /// missing table or bucket stops the start with an error naming the file and the field. The topics
    /// take the dead letters; without them, the JSONL file does; without either, a row an external sink
    /// refuses stops the run (it is never dropped).
    pub fn build(path: &Path, external: ExternalConfigs<'_>, local: LocalOutputs) -> Result<Self, ConfigError> {
        let mut outputs = Self::new(local.below);
        let jsonl_takes_dead_letters = local.topics.is_none();
        if let Some(topics) = local.topics {
            outputs = outputs.with_dead_letters(topics);
        }
        if local.console {
            outputs = outputs.with(Box::new(crate::ConsoleOutput));
        }
        if let Some(jsonl) = local.jsonl {
            outputs = match jsonl_takes_dead_letters {
                true => outputs.with_dead_letters(Box::new(jsonl)),
                false => outputs.with(Box::new(jsonl)),
            };
        }
        for external in external.connect(path, &local.source_topic)? {
            outputs = outputs.with(external);
        }
        Ok(outputs)
    }

    /// Adds an output.
    pub fn with(mut self, output: Box<dyn Output>) -> Self {
        metrics::output_added(output.name());
        self.outputs.push(output);
        self
    }

    /// Adds the output that also takes the rows other outputs refuse (the Fluvio topics output, whose
    /// dead-letter topic is where every rejected record goes).
    pub fn with_dead_letters(mut self, output: Box<dyn Output>) -> Self {
        self.dead_letters = Some(self.outputs.len());
        self.with(output)
    }

    /// The outputs' names, for logs.
    pub fn names(&self) -> Vec<&str> {
        self.outputs.iter().map(|o| o.name()).collect()
    }

    /// Each output's name and health.
    pub fn health(&self) -> Vec<(String, crate::OutputHealth)> {
        self.outputs.iter().map(|o| (o.name().to_string(), o.health())).collect()
    }

    /// Each output's name, health and backlog, also set as the `fvision_output_retrying` and
    /// `fvision_output_backlog` gauges (so whoever polls for the page or the summary keeps `/metrics`
    /// current too).
    pub fn reports(&self) -> Vec<crate::OutputReport> {
        self.outputs
            .iter()
            .map(|o| {
                let report =
                    crate::OutputReport { name: o.name().to_string(), health: o.health(), backlog: o.backlog() };
                metrics::output_state(&report.name, report.health != crate::OutputHealth::Healthy, report.backlog);
                report
            })
            .collect()
    }

    /// Calls [`Output::prepare`] on every output, before the first delivery.
    pub fn prepare(&self, window: &crate::ReplayWindow) -> Result<(), DeliveryError> {
        for output in &self.outputs {
            output.prepare(window)?;
        }
        Ok(())
    }

    /// Outcomes handed to every output (or dropped by rule) so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Resolves once [`OutputSet::delivered`] is at least `count`: the commit barrier awaits it instead of
    /// polling the count.
    pub async fn delivered_reach(&self, count: u64) {
        loop {
            // Registered before the check, so a delivery between the check and the await still wakes it.
            let changed = self.delivered_changed.notified();
            if self.delivered() >= count {
                return;
            }
            changed.await;
        }
    }

    /// Routes one outcome and hands it to every output. Blocks only while an output's buffer is full.
    pub fn deliver(&self, outcome: &Outcome, position: Option<SourcePosition>) -> Result<Destination, DeliveryError> {
        let routed = route(outcome, self.below)?;
        let delivery = Delivery { outcome, routed: &routed, position };
        for output in &self.outputs {
            output.send(&delivery).inspect_err(|_| metrics::output_failed(output.name()))?;
        }
        // Counted only after every send, so an acknowledgement that sees the count also covers this outcome.
        self.delivered.fetch_add(1, Ordering::AcqRel);
        self.delivered_changed.notify_waiters();
        Ok(routed.destination)
    }

    /// Waits until every output acknowledged everything sent before the call, then sends the rows they
    /// refused to the dead-letter output and waits for that too.
    pub async fn acknowledge(&self) -> Result<(), DeliveryError> {
        let mut refused = Vec::new();
        for (output, acknowledged) in
            self.outputs.iter().zip(join_all(self.outputs.iter().map(|o| o.acknowledge())).await)
        {
            let rejections = acknowledged.inspect_err(|_| metrics::output_failed(output.name()))?;
            if !rejections.is_empty() {
                metrics::output_refused(output.name(), rejections.len());
                tracing::warn!(output = output.name(), count = rejections.len(), "rows refused; dead-lettering them");
                refused.push((output.name(), rejections));
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        let Some(dead_letters) = self.dead_letters.and_then(|i| self.outputs.get(i)) else {
            let (output, rejections) = &refused[0];
            return Err(DeliveryError::NoDeadLetterOutput { output: output.to_string(), count: rejections.len() });
        };
        for rejection in refused.into_iter().flat_map(|(_, rejections)| rejections) {
            let SinkRejection { key, position, rejected } = rejection;
            let outcome = Outcome::Rejected { name: key.clone(), position, rejected: Box::new(rejected) };
            let Routed { value, .. } = route(&outcome, self.below)?;
            let routed = Routed { destination: Destination::DeadLetter, key, value };
            dead_letters.send(&Delivery { outcome: &outcome, routed: &routed, position })?;
        }
        if let Some(refused) = dead_letters.acknowledge().await?.into_iter().next() {
            return Err(DeliveryError::DeadLetterRefused { output: dead_letters.name().to_string(), key: refused.key });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::task::{Context, Poll};

    use fluvio_future::task::run_block_on;
    use futures_util::task::noop_waker;
    use fvision_records::{Prediction, RejectReason, RejectedImage, Stage, ValidationRecord};

    use super::*;
    use crate::AckFuture;

    /// A test double of our own trait: records what it was sent, acknowledges once its gate opens (when it
    /// has one), and refuses the rows it was told to.
    #[derive(Default)]
    struct Recording {
        name: &'static str,
        sent: Mutex<Vec<(Destination, String, Vec<u8>)>>,
        gate: Option<async_channel::Receiver<()>>,
        refuse: Mutex<Vec<SinkRejection>>,
        acknowledged: AtomicUsize,
    }

    impl Recording {
        fn named(name: &'static str) -> Self {
            Self { name, ..Self::default() }
        }
    }

    /// Lets a test keep looking at an output the set owns.
    struct Shared(std::sync::Arc<Recording>);

    impl Output for Shared {
        fn name(&self) -> &str {
            self.0.name
        }

        fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError> {
            let routed = delivery.routed;
            self.0.sent.lock().unwrap().push((routed.destination, routed.key.clone(), routed.value.clone()));
            Ok(())
        }

        fn acknowledge(&self) -> AckFuture<'_> {
            Box::pin(async move {
                if let Some(gate) = &self.0.gate {
                    let _ = gate.recv().await;
                }
                self.0.acknowledged.fetch_add(1, Ordering::AcqRel);
                Ok(std::mem::take(&mut *self.0.refuse.lock().unwrap()))
            })
        }
    }

    fn shared(recording: Recording) -> (std::sync::Arc<Recording>, Box<dyn Output>) {
        let recording = std::sync::Arc::new(recording);
        (std::sync::Arc::clone(&recording), Box::new(Shared(recording)))
    }

    fn classified(id: &str, above_threshold: bool) -> Outcome {
        let prediction = Prediction { image_id: id.into(), above_threshold, ..Prediction::default() };
        Outcome::Classified { name: format!("images/0@{id}"), position: None, prediction: Box::new(prediction) }
    }

    #[test]
    fn every_output_gets_every_outcome_routed_once() {
        let (topics, topics_output) = shared(Recording::named("fluvio"));
        let (file, file_output) = shared(Recording::named("jsonl"));
        let outputs = OutputSet::new(BelowThreshold::Drop).with_dead_letters(topics_output).with(file_output);
        assert_eq!(outputs.names(), ["fluvio", "jsonl"]);
        let at = Some(SourcePosition { partition: 0, offset: 7 });
        assert_eq!(outputs.deliver(&classified("a", true), at).unwrap(), Destination::Predictions);
        assert_eq!(outputs.deliver(&classified("b", false), None).unwrap(), Destination::Dropped);
        assert_eq!(outputs.delivered(), 2, "a dropped outcome counts as delivered");
        for recording in [&topics, &file] {
            let sent = recording.sent.lock().unwrap();
            let keys: Vec<_> = sent.iter().map(|(d, k, _)| (*d, k.as_str())).collect();
            assert_eq!(keys, [(Destination::Predictions, "a"), (Destination::Dropped, "b")]);
        }
    }

    #[test]
    fn acknowledge_waits_for_every_output() {
        let (open_first, first_gate) = async_channel::bounded(1);
        let (open_second, second_gate) = async_channel::bounded(1);
        let (first, first_output) = shared(Recording { gate: Some(first_gate), ..Recording::named("first") });
        let (second, second_output) = shared(Recording { gate: Some(second_gate), ..Recording::named("second") });
        let outputs = OutputSet::new(BelowThreshold::Flag).with(first_output).with(second_output);
        outputs.deliver(&classified("a", true), None).unwrap();

        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut acknowledged = pin!(outputs.acknowledge());
        assert!(acknowledged.as_mut().poll(&mut cx).is_pending());
        open_second.try_send(()).unwrap();
        assert!(acknowledged.as_mut().poll(&mut cx).is_pending(), "the first output has not acknowledged yet");
        assert_eq!(second.acknowledged.load(Ordering::Acquire), 1);
        open_first.try_send(()).unwrap();
        assert!(matches!(acknowledged.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(first.acknowledged.load(Ordering::Acquire), 1);
    }

    #[test]
    fn refused_rows_reach_the_dead_letter_output_before_acknowledge_resolves() {
        let (topics, topics_output) = shared(Recording::named("fluvio"));
        let (table, table_output) = shared(Recording::named("bigquery"));
        let payload = br#"{"prediction_id":"p-1"}"#;
        let rejected = RejectedImage::new(RejectReason::SinkError, "no such column", Stage::Sink, payload);
        let position = Some(SourcePosition { partition: 1, offset: 42 });
        table.refuse.lock().unwrap().push(SinkRejection { key: "img-1".into(), position, rejected });
        let outputs = OutputSet::new(BelowThreshold::Flag).with_dead_letters(topics_output).with(table_output);
        outputs.deliver(&classified("img-1", true), position).unwrap();

        run_block_on(outputs.acknowledge()).unwrap();
        let sent = topics.sent.lock().unwrap();
        let (destination, key, value) = sent.last().unwrap();
        assert_eq!((*destination, key.as_str()), (Destination::DeadLetter, "img-1"));
        let ValidationRecord::Rejected(letter) = serde_json::from_slice(value).unwrap() else {
            panic!("not a dead letter")
        };
        assert_eq!((letter.reason, letter.stage), (RejectReason::SinkError, Stage::Sink));
        assert_eq!(letter.payload.to_bytes().unwrap(), payload);
        assert_eq!(topics.acknowledged.load(Ordering::Acquire), 2, "the dead letters were acknowledged too");
        assert_eq!(table.acknowledged.load(Ordering::Acquire), 1);

        // Without a dead-letter output a refused row is an error, never dropped.
        let (table, table_output) = shared(Recording::named("bigquery"));
        let rejected = RejectedImage::new(RejectReason::SinkError, "no", Stage::Sink, b"");
        table.refuse.lock().unwrap().push(SinkRejection { key: "k".into(), position: None, rejected });
        let outputs = OutputSet::new(BelowThreshold::Flag).with(table_output);
        let err = run_block_on(outputs.acknowledge()).unwrap_err();
        assert!(matches!(err, DeliveryError::NoDeadLetterOutput { count: 1, .. }), "{err}");
    }
}
