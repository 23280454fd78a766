//! Pub/Sub over gRPC (`gcloud-pubsub`): the client the source pulls with, and the admin and publish calls
//! `fvision deploy`, `fvision cleanup`, the simulator and the tests make.

use std::collections::HashMap;
use std::path::Path;

use crate::auth::{GoogleAuth, GoogleAuthError, SCOPE_PUBSUB};
use crate::emulator::pubsub_emulator_from_env;
use crate::Change;

use gcloud_gax::conn::Environment;
use gcloud_googleapis::pubsub::v1::PubsubMessage;
use gcloud_pubsub::client::ClientConfig;
use gcloud_pubsub::subscription::SubscriptionConfig;

pub use gcloud_gax::grpc::Status;
pub use gcloud_pubsub::client::Client;
pub use gcloud_pubsub::subscription::Subscription;

/// A Pub/Sub call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// The client could not be created.
    #[error("connecting to Pub/Sub: {0}")]
    Connect(String),
    /// Google Cloud credentials could not be read.
    #[error("Pub/Sub credentials: {0}")]
    Credentials(#[source] GoogleAuthError),
    /// A call failed.
    #[error("{action}: {status}")]
    Call {
        /// What was being done.
        action: String,
        /// The gRPC status.
        status: Box<Status>,
    },
}

fn call(action: impl Into<String>) -> impl FnOnce(Status) -> PubSubError {
    let action = action.into();
    move |status| PubSubError::Call { action, status: Box::new(status) }
}

/// A client for `project`; `emulator` is a `host:port` of an emulator (plain gRPC, no credentials); without
/// it `$PUBSUB_EMULATOR_HOST` is honoured, else Google Cloud is used with the key in `credentials_file`, or
/// the application default credentials.
pub async fn client(
    project: &str,
    emulator: Option<&str>,
    credentials_file: Option<&Path>,
) -> Result<Client, PubSubError> {
    let mut config = ClientConfig { project_id: Some(project.to_string()), ..ClientConfig::default() };
    config.environment = match pubsub_emulator_from_env(emulator) {
        Some(host) => Environment::Emulator(host),
        None => {
            let auth = GoogleAuth::new(credentials_file, &[SCOPE_PUBSUB]).await.map_err(PubSubError::Credentials)?;
            Environment::GoogleCloud(Box::new(auth))
        }
    };
    Client::new(config).await.map_err(|e| PubSubError::Connect(e.to_string()))
}

/// Creates `topic` if it does not exist.
pub async fn ensure_topic(client: &Client, topic: &str) -> Result<Change, PubSubError> {
    let handle = client.topic(topic);
    if handle.exists(None).await.map_err(call(format!("looking up topic {topic}")))? {
        return Ok(Change::Exists);
    }
    handle.create(None, None).await.map_err(call(format!("creating topic {topic}")))?;
    Ok(Change::Created)
}

/// Creates `subscription` on `topic` (and the topic) if it does not exist, with `ack_deadline_seconds`; the
/// change is the subscription's.
pub async fn ensure_subscription(
    client: &Client,
    topic: &str,
    subscription: &str,
    ack_deadline_seconds: i32,
) -> Result<Change, PubSubError> {
    ensure_topic(client, topic).await?;
    let handle = client.subscription(subscription);
    if handle.exists(None).await.map_err(call(format!("looking up subscription {subscription}")))? {
        return Ok(Change::Exists);
    }
    let config = SubscriptionConfig { ack_deadline_seconds, ..SubscriptionConfig::default() };
    client
        .create_subscription(subscription, topic, config, None)
        .await
        .map_err(call(format!("creating subscription {subscription}")))?;
    Ok(Change::Created)
}

/// Deletes `topic`; a missing one is fine.
pub async fn delete_topic(client: &Client, topic: &str) -> Result<(), PubSubError> {
    let handle = client.topic(topic);
    if handle.exists(None).await.map_err(call(format!("looking up topic {topic}")))? {
        handle.delete(None).await.map_err(call(format!("deleting topic {topic}")))?;
    }
    Ok(())
}

/// Deletes `subscription`; a missing one is fine.
pub async fn delete_subscription(client: &Client, subscription: &str) -> Result<(), PubSubError> {
    let handle = client.subscription(subscription);
    if handle.exists(None).await.map_err(call(format!("looking up subscription {subscription}")))? {
        handle.delete(None).await.map_err(call(format!("deleting subscription {subscription}")))?;
    }
    Ok(())
}

/// Publishes messages (attributes, data) to `topic` and waits until Pub/Sub accepted them.
pub async fn publish(
    client: &Client,
    topic: &str,
    messages: Vec<(HashMap<String, String>, Vec<u8>)>,
) -> Result<(), PubSubError> {
    let publisher = client.topic(topic).new_publisher(None);
    let messages = messages
        .into_iter()
        .map(|(attributes, data)| PubsubMessage { data, attributes, ..Default::default() })
        .collect();
    publisher.publish_immediately(messages, None).await.map_err(call(format!("publishing to {topic}")))?;
    Ok(())
}
