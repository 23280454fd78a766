//! `gcs-source`: a Fluvio source connector for GCS uploads announced by Pub/Sub. It pulls the
//! subscription, reads `OBJECT_FINALIZE` notifications, downloads each object pinned to its generation, and
//! writes an ImageEvent (`id = gs://bucket/object#generation`, attributes `bucket` and `object_name`) to the
//! Fluvio topic `images`.
//!
//! A message is acked only after Fluvio acknowledged what it became, so a crash leaves it un-acked and
//! Pub/Sub redelivers it; duplicate deliveries give the same id. Objects deleted before the download or
//! larger than the limit go to the dead-letter topic with their reason, and are acked.
#![deny(missing_docs)]

pub mod config;
pub mod events;
pub mod notification;
pub mod source;

pub use config::{load, GcsConfig, GcsSettings, SourceConfig};
pub use notification::{finalize_message, read_notice, Notice, ObjectRef};
pub use source::{GcsSource, RunReport, SourceError};
