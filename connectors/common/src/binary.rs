//! What every fluvio-vision binary does the same way at its edges: log to stderr (plain text when stderr is
//! not a terminal, every loaded secret redacted), stop gracefully on SIGTERM/SIGINT, and turn the outcome
//! into an exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::Stop;

/// The arguments every connector takes, as `cdk deploy start` passes them; flattened into each binary's own.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The connector config (YAML, apiVersion 0.2.0).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// NAME=value lines for `${{ secrets.NAME }}` references in the config.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
}

/// The log filter of the connectors when `RUST_LOG` is unset: our progress at `info`, the Fluvio client's
/// chatter only when it warns.
pub const CONNECTOR_LOG_FILTER: &str = "info,fluvio=warn,fluvio_socket=warn";

/// Starts logging to stderr with `RUST_LOG`, else `default_filter`.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(crate::secret::redacting_stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A flag that SIGTERM and SIGINT set: the run loops stop reading, deliver what they hold, commit and return.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, SignalsError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(SignalsError)?;
    }
    Ok(stop)
}

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("installing the signal handlers")]
pub struct SignalsError(#[source] std::io::Error);

/// A [`Stop`] that SIGTERM and SIGINT request, for loops that await the stop rather than check a flag: a
/// thread waits for the signals (the handlers only write to a pipe) and requests the stop.
pub fn stop_signal() -> Result<Arc<Stop>, SignalsError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(SignalsError)?;
    let stop = Arc::new(Stop::default());
    let requested = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                requested.request();
            }
        })
        .map_err(SignalsError)?;
    Ok(stop)
}

/// Exit 0 on success; otherwise log the error with its causes (redacted like every log line) and exit 1.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
