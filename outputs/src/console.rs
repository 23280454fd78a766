//! The console output: every prediction and dead letter as the JSON record its topic receives, one per
//! line on stdout (`inference.console: true`), for watching a connector by eye.

use std::io::Write;

use super::{AckFuture, Delivery, Destination, Output, OutputError};

/// The output's name in metrics, logs and errors.
pub const NAME: &str = "console";

/// Topic records as JSON lines on stdout.
#[derive(Debug, Default)]
pub struct ConsoleOutput;

fn failed(action: &str, source: std::io::Error) -> OutputError {
    OutputError::Failed { output: NAME.into(), action: action.into(), source: Box::new(source) }
}

impl Output for ConsoleOutput {
    fn name(&self) -> &str {
        NAME
    }

    fn send(&self, delivery: &Delivery<'_>) -> Result<(), OutputError> {
        if delivery.routed.destination == Destination::Dropped {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&delivery.routed.value)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| failed("writing stdout", e))
    }

    fn acknowledge(&self) -> AckFuture<'_> {
        Box::pin(async {
            std::io::stdout().lock().flush().map(|()| Vec::new()).map_err(|e| failed("flushing stdout", e))
        })
    }
}
