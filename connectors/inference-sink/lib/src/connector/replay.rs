//! The replay window: which records of the consumed partitions a previous run may already have delivered
//! (read, sent, but not committed before it stopped). Read once at start-up, before the first record, and
//! handed to every output's [`fvision_outputs::Output::prepare`].

use std::collections::BTreeMap;

use fluvio::{Fluvio, FluvioAdmin};
use fvision_connector_common::offsets::{partition_offsets, OffsetsError, OffsetsQuery};
use fvision_outputs::ReplayWindow;

/// Per partition: from the first offset this run reads (after the offset committed under `consumer_id`;
/// 0 when nothing was committed, since a previous run may have delivered from the start without committing)
/// up to the partition's end offset now.
pub async fn replay_window(
    fluvio: &Fluvio,
    admin: &FluvioAdmin,
    topic: &str,
    partitions: &[u32],
    consumer_id: &str,
) -> Result<ReplayWindow, OffsetsError> {
    let query = OffsetsQuery { topic, partitions: Some(partitions), consumer_id: Some(consumer_id) };
    let offsets = partition_offsets(fluvio, admin, query).await?;
    let committed: BTreeMap<u32, i64> = offsets.iter().filter_map(|(&p, o)| Some((p, o.committed?))).collect();
    Ok(window(partitions, &committed, |p| offsets.get(&p).map(|o| o.end)))
}

/// The window from the committed offsets (the last record delivered, as Fluvio stores it) and the end
/// offsets (the next offset to be written); partitions whose end is unknown are left out.
fn window(partitions: &[u32], committed: &BTreeMap<u32, i64>, end: impl Fn(u32) -> Option<i64>) -> ReplayWindow {
    let partitions = partitions
        .iter()
        .filter_map(|&p| {
            let first = committed.get(&p).map_or(0, |last| last + 1);
            end(p).map(|end| (p, first..end.max(first)))
        })
        .collect();
    ReplayWindow { partitions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fvision_pipeline::SourcePosition;

    #[test]
    fn the_window_starts_after_the_commit_and_ends_at_the_end_offset() {
        let committed = BTreeMap::from([(0, 9), (1, 4)]);
        let window = window(&[0, 1, 2, 3], &committed, |p| (p != 3).then_some(12));
        assert_eq!(window.partitions, BTreeMap::from([(0, 10..12), (1, 5..12), (2, 0..12)]));
        let at = |partition, offset| SourcePosition { partition, offset };
        assert!(!window.contains(at(0, 9)), "committed: delivered and known to be");
        assert!(window.contains(at(0, 10)) && window.contains(at(2, 0)));
        assert!(!window.contains(at(0, 12)), "written after the start: new");
        assert!(!window.contains(at(3, 0)), "unknown partition");
        // A commit at the end: nothing to replay.
        assert!(super::window(&[0], &BTreeMap::from([(0, 11)]), |_| Some(12)).partitions[&0].is_empty());
    }
}
