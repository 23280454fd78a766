//! The micro-batcher, adaptive: a batch takes what is already queued, and waits (at most `max_wait` after
//! its first item) only for items the stage before is working on right now. An image arriving at an idle
//! pipeline runs at once; under load the queue and the busy workers fill the batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often a waiting batch looks again at whether anything is still on its way.
const RECHECK: Duration = Duration::from_millis(1);

/// Receives the next batch: blocks for a first item, then takes every queued item up to `max_size`; while
/// `upstream` (items the previous stage is preparing) is not zero it waits for them, until `max_wait` has
/// passed since the first arrived. `None` when the channel is closed and drained.
pub fn next_batch<T>(rx: &Receiver<T>, max_size: usize, max_wait: Duration, upstream: &AtomicUsize) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let deadline = Instant::now() + max_wait;
    let mut batch = Vec::with_capacity(max_size);
    batch.push(first);
    while batch.len() < max_size.max(1) {
        if let Ok(item) = rx.try_recv() {
            batch.push(item);
            continue;
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        if timeout.is_zero() || upstream.load(Ordering::Acquire) == 0 {
            break;
        }
        match rx.recv_timeout(timeout.min(RECHECK)) {
            Ok(item) => batch.push(item),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    static IDLE: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn closes_on_size() {
        let (tx, rx) = sync_channel(16);
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        assert_eq!(next_batch(&rx, 4, Duration::from_secs(10), &IDLE).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(next_batch(&rx, 4, Duration::from_secs(10), &IDLE).unwrap(), vec![4, 5, 6, 7]);
    }

    #[test]
    fn does_not_wait_when_nothing_is_on_its_way() {
        let (tx, rx) = sync_channel(16);
        tx.send(1).unwrap();
        // Nothing upstream: the lone item goes at once, well before an hour-long max_wait.
        assert_eq!(next_batch(&rx, 8, Duration::from_secs(3600), &IDLE).unwrap(), vec![1]);
    }

    #[test]
    fn waits_for_items_being_prepared_until_the_deadline() {
        let (tx, rx) = sync_channel(16);
        let upstream = AtomicUsize::new(1);
        tx.send(1).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(2).unwrap();
            });
            // One item is being prepared: the batch waits for it (a lone item would not).
            let started = Instant::now();
            let batch = next_batch(&rx, 2, Duration::from_secs(3600), &upstream).unwrap();
            assert_eq!(batch, vec![1, 2]);
            assert!(started.elapsed() < Duration::from_secs(600));
        });
        // Still "being prepared" but never sent: the deadline closes the batch.
        tx.send(3).unwrap();
        let started = Instant::now();
        assert_eq!(next_batch(&rx, 8, Duration::from_millis(30), &upstream).unwrap(), vec![3]);
        assert!(started.elapsed() >= Duration::from_millis(30), "waited for more until the deadline");
    }

    #[test]
    fn drains_then_ends_when_senders_are_gone() {
        let (tx, rx) = sync_channel(16);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        drop(tx);
        assert_eq!(next_batch(&rx, 8, Duration::from_secs(10), &IDLE).unwrap(), vec![1, 2]);
        assert_eq!(next_batch::<i32>(&rx, 8, Duration::from_secs(10), &IDLE), None);
    }
}
