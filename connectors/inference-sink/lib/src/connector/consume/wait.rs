//! Waiting: every await of the loop (a fetch, a cluster call, the pipeline taking a record, the outputs
//! confirming) is bounded by a timeout and, once the connector is stopping, by a grace period. The stop is
//! awaited, not checked on a timer.

use std::future::Future;
use std::time::Duration;

use fluvio_future::timer::sleep;
use futures_util::future::{select, Either};
use fvision_connector_common::Stop;

/// How long a stopping connector still waits for a cluster call in progress.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why [`wait_for`] gave up.
pub(super) enum Waited {
    /// The timeout passed.
    Timeout,
    /// Stopping, and the grace passed.
    Stopping,
}

/// Awaits `future` for at most `timeout` (if any), and once `stop` is requested for at most `grace` more. A
/// fetch in progress when the stop comes is still awaited, so its record is delivered and committed like the
/// others (it holds the stream's lock, so no commit could run before it).
pub(super) async fn wait_for<T>(
    future: impl Future<Output = T>,
    stop: &Stop,
    timeout: Option<Duration>,
    grace: Duration,
) -> Result<T, Waited> {
    let timeout = async {
        match timeout {
            Some(timeout) => sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    let stopping = async {
        stop.requested().await;
        sleep(grace).await;
    };
    let future = std::pin::pin!(future);
    let stopping = std::pin::pin!(stopping);
    let timeout = std::pin::pin!(timeout);
    match select(future, select(stopping, timeout)).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right((Either::Left(_), _)) => Err(Waited::Stopping),
        Either::Right((Either::Right(_), _)) => Err(Waited::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_stop_ends_the_wait_after_the_grace_and_a_timeout_without_a_stop() {
        fluvio_future::task::run_block_on(async {
            let stop = Arc::new(Stop::default());
            let waited = wait_for(std::future::pending::<()>(), &stop, Some(Duration::from_millis(50)), STOP_GRACE);
            assert!(matches!(waited.await, Err(Waited::Timeout)));
            let requester = {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    stop.request();
                })
            };
            let waited = wait_for(std::future::pending::<()>(), &stop, None, Duration::from_millis(10)).await;
            assert!(matches!(waited, Err(Waited::Stopping)), "no timeout: only the stop ends it");
            assert!(stop.is_requested());
            requester.join().unwrap();
            assert!(matches!(wait_for(async { 7 }, &stop, None, Duration::ZERO).await, Ok(7)), "ready wins");
        });
    }
}
