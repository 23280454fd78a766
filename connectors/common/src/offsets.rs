//! Where every partition of a topic stands: its first and end offsets (from the SC's partition list) and
//! the offset committed under a consumer id (from the SPU's consumer-offset store). One function for the
//! sink's consume loop, its replay window and status page, `fvision deploy status` and the tests.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fluvio::metadata::partition::PartitionSpec;
use fluvio::{Fluvio, FluvioAdmin};

/// One partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The first offset still stored (records before it were removed by retention).
    pub start: i64,
    /// The next offset to be written (the leader's high watermark).
    pub end: i64,
    /// The offset of the last record committed under the consumer id, when one was committed.
    pub committed: Option<i64>,
    /// When that commit was made, when the store says.
    pub committed_at: Option<SystemTime>,
}

/// Why the offsets could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OffsetsError {
    /// The SC did not list the partitions.
    #[error("listing the partitions of `{topic}`")]
    Partitions {
        /// The topic.
        topic: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The consumer offsets could not be read.
    #[error("reading the consumer offsets")]
    ConsumerOffsets(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Which partitions to read, and whose commits.
#[derive(Debug, Clone, Copy)]
pub struct OffsetsQuery<'a> {
    /// The topic.
    pub topic: &'a str,
    /// These partitions only (listed by name), or every partition of the topic (the SC's whole list).
    pub partitions: Option<&'a [u32]>,
    /// Whose commits to read; `None` skips the consumer-offset store.
    pub consumer_id: Option<&'a str>,
}

/// The offsets of the partitions `query` names, by partition; a partition the SC does not list is absent.
pub async fn partition_offsets(
    fluvio: &Fluvio,
    admin: &FluvioAdmin,
    query: OffsetsQuery<'_>,
) -> Result<BTreeMap<u32, PartitionOffsets>, OffsetsError> {
    let topic = query.topic;
    let names: Vec<String> = match query.partitions {
        Some(partitions) => partitions.iter().map(|p| format!("{topic}-{p}")).collect(),
        None => Vec::new(),
    };
    let listed = admin
        .list::<PartitionSpec, String>(names)
        .await
        .map_err(|e| OffsetsError::Partitions { topic: topic.to_string(), source: e.into() })?;
    let mut offsets: BTreeMap<u32, PartitionOffsets> = listed
        .into_iter()
        .filter_map(|p| {
            let partition = partition_of(&p.name, topic)?;
            let wanted = query.partitions.is_none_or(|list| list.contains(&partition));
            let status = &p.status;
            let found = PartitionOffsets {
                start: status.base_offset,
                end: status.leader.hw,
                committed: None,
                committed_at: None,
            };
            wanted.then_some((partition, found))
        })
        .collect();
    if let Some(consumer_id) = query.consumer_id {
        let committed = fluvio.consumer_offsets().await.map_err(|e| OffsetsError::ConsumerOffsets(e.into()))?;
        for commit in committed.into_iter().filter(|c| c.consumer_id == consumer_id && c.topic == topic) {
            if let Some(found) = offsets.get_mut(&commit.partition) {
                found.committed = Some(commit.offset);
                found.committed_at =
                    (commit.modified_time > 0).then(|| UNIX_EPOCH + Duration::from_secs(commit.modified_time));
            }
        }
    }
    Ok(offsets)
}

/// The partition number of `name` (`topic-N`) when it is a partition of `topic`.
fn partition_of(name: &str, topic: &str) -> Option<u32> {
    let (t, n) = name.rsplit_once('-')?;
    if t == topic {
        n.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_topic_dash_number() {
        assert_eq!(partition_of("images-3", "images"), Some(3));
        assert_eq!(partition_of("my-images-0", "my-images"), Some(0));
        assert_eq!(partition_of("my-images-0", "images"), None);
        assert_eq!(partition_of("images", "images"), None);
    }
}
