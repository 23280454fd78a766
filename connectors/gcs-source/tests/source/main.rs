//! The GCS source's integration tests, one binary: its connector YAML ([`config`]), and the
//! `gcs-source` binary between the GCS and Pub/Sub emulators and the shared local Fluvio cluster ([`live`]).

mod config;
mod live;
