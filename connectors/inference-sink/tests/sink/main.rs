//! The sink's integration tests, one binary: its connector YAML ([`config`]), and the `inference-sink`
//! binary against the shared local Fluvio cluster ([`live`], [`dashboard_live`]).

mod config;
mod dashboard_live;
mod live;
