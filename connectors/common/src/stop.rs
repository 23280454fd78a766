//! A stop request that async code awaits: the run loops wait for a fetch or a delivery and for the stop at
//! once, so they notice a SIGTERM the moment it comes instead of checking a flag on a timer.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once (by the signal handlers or a test); never cleared.
#[derive(Debug, Default)]
pub struct Stop {
    requested: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Stop {
    /// Asks every loop holding this to stop, and wakes those awaiting [`Stop::requested`].
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Resolves once a stop is asked for (at once if it was).
    pub async fn requested(&self) {
        loop {
            // Registered before the check, so a request between the check and the await still wakes it.
            let changed = self.changed.notified();
            if self.is_requested() {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn a_request_from_another_thread_wakes_a_waiter() {
        let stop = Arc::new(Stop::default());
        let waiter = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || block_on(stop.requested()))
        };
        assert!(!stop.is_requested());
        stop.request();
        waiter.join().unwrap();
        assert!(stop.is_requested());
        block_on(stop.requested()); // at once when already requested
    }
}
