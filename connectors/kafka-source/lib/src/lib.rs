//! `kafka-source`: a Fluvio source connector that reads images from Kafka topics (a consumer group) and
//! writes them to the Fluvio topic `images` as ImageEvents.
//!
//! Offsets are committed to Kafka only after Fluvio acknowledged every record of the batch, so a crash
//! replays at most the uncommitted batch and never loses a record; the ids (`kafka://topic/partition/offset`,
//! or the id of a wrapped ImageEvent) make the replay idempotent downstream. A value that cannot become an
//! event goes to the dead-letter topic with its reason and Kafka position.
#![deny(missing_docs)]

pub mod config;
pub mod convert;
pub mod events;
pub mod source;

pub use config::{load, KafkaConfig, KafkaSettings, SourceConfig, StartFrom, ValueFormat};
pub use convert::{convert, Converted, KafkaRecord};
pub use source::{KafkaSource, RunReport, SourceError};
