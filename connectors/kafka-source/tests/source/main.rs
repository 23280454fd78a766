//! The Kafka source's integration tests, one binary: its connector YAML ([`config`]), and the
//! `kafka-source` binary between librdkafka's mock cluster and the shared local Fluvio cluster ([`live`]).

mod config;
mod live;
