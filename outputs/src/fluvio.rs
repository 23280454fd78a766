//! The Fluvio topics output: predictions, low-confidence reviews and dead letters to their topics, keyed
//! by image id. Sends are asynchronous; [`Output::acknowledge`] flushes every producer and waits for the
//! confirmation of every record sent so far, which is what the offset commit waits for.

use std::sync::Mutex;

use fluvio::{ProduceOutput, TopicProducerPool};

use super::{AckFuture, Delivery, Destination, Output, OutputError};

/// The output's name in metrics, logs and errors.
pub const NAME: &str = "fluvio";

/// A topic and its producer.
pub struct TopicProducer {
    /// The topic name, for errors and logs.
    pub topic: String,
    /// The producer.
    pub producer: TopicProducerPool,
}

/// Predictions, reviews and dead letters to their Fluvio topics.
pub struct FluvioOutput {
    predictions: TopicProducer,
    dead_letters: TopicProducer,
    review: Option<TopicProducer>,
    pending: Mutex<Vec<(String, ProduceOutput)>>,
}

impl FluvioOutput {
    /// The topics; without a review topic, reviews go to the predictions topic.
    pub fn new(predictions: TopicProducer, dead_letters: TopicProducer, review: Option<TopicProducer>) -> Self {
        Self { predictions, dead_letters, review, pending: Mutex::new(Vec::new()) }
    }

    fn topic_for(&self, destination: Destination) -> Option<&TopicProducer> {
        match destination {
            Destination::Predictions => Some(&self.predictions),
            Destination::DeadLetter => Some(&self.dead_letters),
            Destination::Review => self.review.as_ref().or(Some(&self.predictions)),
            Destination::Dropped => None,
        }
    }
}

fn failed(topic: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> OutputError {
    OutputError::Failed { output: NAME.into(), action: format!("producing to `{topic}`"), source: source.into() }
}

impl Output for FluvioOutput {
    fn name(&self) -> &str {
        NAME
    }

    fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError> {
        let Some(target) = self.topic_for(delivery.routed.destination) else { return Ok(()) };
        let routed = delivery.routed;
        let sent = fluvio_future::task::run_block_on(target.producer.send(routed.key.clone(), routed.value.clone()))
            .map_err(|e| failed(&target.topic, e))?;
        if let Ok(mut pending) = self.pending.lock() {
            pending.push((target.topic.clone(), sent));
        }
        Ok(())
    }

    fn acknowledge(&self) -> AckFuture<'_> {
        Box::pin(async move {
            for target in
                [Some(&self.predictions), Some(&self.dead_letters), self.review.as_ref()].into_iter().flatten()
            {
                target.producer.flush().await.map_err(|e| failed(&target.topic, e))?;
            }
            let pending = match self.pending.lock() {
                Ok(mut pending) => std::mem::take(&mut *pending),
                Err(_) => Vec::new(),
            };
            for (topic, sent) in pending {
                sent.wait().await.map_err(|e| failed(&topic, e))?;
            }
            Ok(Vec::new())
        })
    }
}
