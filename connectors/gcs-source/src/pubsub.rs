//! Pub/Sub over gRPC (`gcloud-pubsub`): the client the source pulls with, and the few admin and publish
//! calls the simulator and the tests make against an emulator.

use std::collections::HashMap;
use std::path::Path;

use fvision_connector_common::google::{GoogleAuth, GoogleAuthError, SCOPE_PUBSUB};

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
/// it `$PUBSUB_EMULATOR_HOST` is honoured, else Google Cloud is used with the service-account key in
/// `credentials_file`, or the application default credentials.
pub async fn client(
    project: &str,
    emulator: Option<&str>,
    credentials_file: Option<&Path>,
) -> Result<Client, PubSubError> {
    let mut config = ClientConfig { project_id: Some(project.to_string()), ..ClientConfig::default() };
    if let Some(host) = emulator {
        config.environment = Environment::Emulator(host.to_string());
    } else if !matches!(config.environment, Environment::Emulator(_)) {
        let auth = GoogleAuth::new(credentials_file, &[SCOPE_PUBSUB]).await.map_err(PubSubError::Credentials)?;
        config.environment = Environment::GoogleCloud(Box::new(auth));
    }
    Client::new(config).await.map_err(|e| PubSubError::Connect(e.to_string()))
}

/// Creates `topic` if it does not exist.
pub async fn ensure_topic(client: &Client, topic: &str) -> Result<(), PubSubError> {
    let handle = client.topic(topic);
    if !handle.exists(None).await.map_err(call(format!("looking up topic {topic}")))? {
        handle.create(None, None).await.map_err(call(format!("creating topic {topic}")))?;
    }
    Ok(())
}

/// Creates `subscription` on `topic` (and the topic) if it does not exist, with `ack_deadline_seconds`.
pub async fn ensure_subscription(
    client: &Client,
    topic: &str,
    subscription: &str,
    ack_deadline_seconds: i32,
) -> Result<(), PubSubError> {
    ensure_topic(client, topic).await?;
    let handle = client.subscription(subscription);
    if !handle.exists(None).await.map_err(call(format!("looking up subscription {subscription}")))? {
        let config = SubscriptionConfig { ack_deadline_seconds, ..SubscriptionConfig::default() };
        client
            .create_subscription(subscription, topic, config, None)
            .await
            .map_err(call(format!("creating subscription {subscription}")))?;
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
