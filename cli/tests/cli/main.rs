//! The `fvision` binary's integration tests, one binary: its commands as users run them ([`commands`]), the
//! status page and the Grafana queries ([`dashboard`]), `models import` with real TensorFlow
//! ([`import_tf`]) and `run --config` into the external sinks ([`run_sinks`]).

mod commands;
mod dashboard;
mod import_tf;
mod run_sinks;
