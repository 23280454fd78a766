//! The micro-batcher: closes a batch when it is full or when its first item has waited `max_wait`
//! (Triton's dynamic batching), so a lone image is not held back and a burst is run in large batches.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Receives the next batch: blocks for a first item, then takes more until `max_size` items or until
/// `max_wait` has passed since the first arrived. `None` when the channel is closed and drained.
pub fn next_batch<T>(rx: &Receiver<T>, max_size: usize, max_wait: Duration) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let deadline = Instant::now() + max_wait;
    let mut batch = Vec::with_capacity(max_size);
    batch.push(first);
    while batch.len() < max_size.max(1) {
        let now = Instant::now();
        let timeout = deadline.saturating_duration_since(now);
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) if timeout.is_zero() => break,
            Err(_) => match rx.recv_timeout(timeout) {
                Ok(item) => batch.push(item),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            },
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn closes_on_size() {
        let (tx, rx) = sync_channel(16);
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        assert_eq!(next_batch(&rx, 4, Duration::from_secs(10)).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(next_batch(&rx, 4, Duration::from_secs(10)).unwrap(), vec![4, 5, 6, 7]);
    }

    #[test]
    fn closes_on_time_when_items_trickle_in() {
        let (tx, rx) = sync_channel(16);
        tx.send(1).unwrap();
        let started = Instant::now();
        let batch = next_batch(&rx, 8, Duration::from_millis(30)).unwrap();
        assert_eq!(batch, vec![1]);
        assert!(started.elapsed() >= Duration::from_millis(30), "waited for more until the deadline");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn drains_then_ends_when_senders_are_gone() {
        let (tx, rx) = sync_channel(16);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        drop(tx);
        assert_eq!(next_batch(&rx, 8, Duration::from_secs(10)).unwrap(), vec![1, 2]);
        assert_eq!(next_batch::<i32>(&rx, 8, Duration::from_secs(10)), None);
    }
}
