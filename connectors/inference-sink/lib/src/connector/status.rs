//! What the connector tells the metrics and the status page about its progress, polled every
//! [`INTERVAL`] while it runs: per partition the committed offset (under the consumer id), the end offset
//! and the lag between them; per output whether it is retrying and its backlog. Read from the cluster, so
//! the figures are what a restart would see.

use std::collections::BTreeMap;
use std::time::Duration;

use fluvio::Fluvio;
use fluvio_future::task::run_block_on;
use fvision_connector_common::offsets::{partition_offsets, OffsetsError, OffsetsQuery};
use fvision_connector_common::Stop;

use fvision_outputs::OutputSet;
use fvision_status::dashboard::{lag, Dashboard};

use super::metrics as events;

/// Time between two polls.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// What to poll.
pub(super) struct Poll<'a> {
    pub fluvio: &'a Fluvio,
    pub topic: &'a str,
    pub partitions: &'a [u32],
    pub consumer_id: &'a str,
    pub outputs: &'a OutputSet,
    pub dashboard: Option<&'a Dashboard>,
}

impl Poll<'_> {
    /// Polls every [`INTERVAL`] until `done` is requested (which ends the wait at once).
    pub fn run(&self, done: &Stop) {
        while !done.is_requested() {
            self.once();
            let interval = std::pin::pin!(fluvio_future::timer::sleep(INTERVAL));
            run_block_on(futures_util::future::select(interval, std::pin::pin!(done.requested())));
        }
    }

    fn once(&self) {
        // Sets each output's retrying and backlog gauges.
        let _ = self.outputs.reports();
        match run_block_on(offsets(self.fluvio, self.topic, self.partitions, self.consumer_id)) {
            Ok(offsets) => {
                for (partition, (committed, end)) in offsets {
                    if let Some(lag) = lag(committed, end) {
                        events::consumer_lag(partition, lag);
                    }
                    if let Some(dashboard) = self.dashboard {
                        dashboard.set_partition(partition, committed, end);
                    }
                }
            }
            // The next poll tries again; the figures are only for people and scrapers.
            Err(e) => tracing::debug!("reading the offsets of `{}`: {e:#}", self.topic),
        }
    }
}

/// Per partition: the offset committed under `consumer_id` and the end offset.
async fn offsets(
    fluvio: &Fluvio,
    topic: &str,
    partitions: &[u32],
    consumer_id: &str,
) -> Result<BTreeMap<u32, (Option<i64>, Option<i64>)>, OffsetsError> {
    let admin = fluvio.admin().await;
    let query = OffsetsQuery { topic, partitions: Some(partitions), consumer_id: Some(consumer_id) };
    let offsets = partition_offsets(fluvio, &admin, query).await?;
    Ok(partitions.iter().map(|&p| (p, offsets.get(&p).map_or((None, None), |o| (o.committed, Some(o.end))))).collect())
}
