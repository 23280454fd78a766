//! The Fluvio cluster as the loop's [`Source`].

use std::collections::BTreeMap;

use fluvio::{Fluvio, FluvioAdmin, SmartModuleInvocation};
use fvision_connector_common::offsets::{partition_offsets, OffsetsQuery};

use super::{BoxedStream, ClientError, ConsumeError, ConsumeSettings, Position, Source, StreamStart};

/// The Fluvio cluster as a [`Source`]: the connector's consumer stream, re-reads, probes, and partition
/// positions from the SC's partition status (end and first offsets) and the SPU's consumer offsets.
pub struct FluvioSource<'a> {
    /// The client.
    pub fluvio: &'a Fluvio,
    /// The settings.
    pub settings: &'a ConsumeSettings,
    /// The partitions read.
    pub partitions: Vec<u32>,
    /// The SPU-side SmartModule, if validation runs there.
    pub smartmodule: Option<SmartModuleInvocation>,
    admin: Option<FluvioAdmin>,
}

impl<'a> FluvioSource<'a> {
    /// A source for `partitions` of the settings' topic.
    pub fn new(
        fluvio: &'a Fluvio,
        settings: &'a ConsumeSettings,
        partitions: Vec<u32>,
        smartmodule: Option<SmartModuleInvocation>,
    ) -> Self {
        Self { fluvio, settings, partitions, smartmodule, admin: None }
    }

    fn failed<E: Into<ClientError>>(&self, action: &'static str) -> impl Fn(E) -> ConsumeError + '_ {
        move |e| ConsumeError::Client { topic: self.settings.topic.clone(), action, source: e.into() }
    }
}

impl Source for FluvioSource<'_> {
    async fn open(&mut self, start: StreamStart) -> Result<BoxedStream, ConsumeError> {
        let settings = self.settings;
        let config = match start {
            StreamStart::Committed => settings.consumer_config(&self.partitions, self.smartmodule.clone()),
            StreamStart::At { partition, offset } => {
                settings.reread_config(partition, offset, self.smartmodule.clone())
            }
            StreamStart::Probe { partition, offset } => settings.probe_config(partition, offset),
        };
        let config = config.map_err(self.failed("configuring a consumer"))?;
        let stream = self.fluvio.consumer_with_config(config).await.map_err(self.failed("opening a consumer"))?;
        Ok(Box::pin(stream))
    }

    async fn positions(&mut self, committed: bool) -> Result<BTreeMap<u32, Position>, ConsumeError> {
        if self.admin.is_none() {
            self.admin = Some(self.fluvio.admin().await);
        }
        let Some(admin) = &self.admin else { return Ok(BTreeMap::new()) };
        let topic = &self.settings.topic;
        let consumer_id = committed.then_some(self.settings.consumer_id.as_str());
        let query = OffsetsQuery { topic, partitions: None, consumer_id };
        let listed = partition_offsets(self.fluvio, admin, query)
            .await
            .map_err(self.failed("reading the partitions' offsets"))?;
        let mut positions = BTreeMap::new();
        for &partition in &self.partitions {
            let Some(found) = listed.get(&partition) else {
                return Err(ConsumeError::PartitionGone { topic: topic.clone(), partition });
            };
            positions.insert(partition, Position { start: found.start, end: found.end, committed: found.committed });
        }
        Ok(positions)
    }
}
