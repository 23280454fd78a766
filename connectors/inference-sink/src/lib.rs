//! The inference stage of fluvio-vision: its connector configuration ([`config`]), the concurrent
//! pipeline ([`pipeline`]: validation, parallel decode workers, a micro-batcher and one shared model,
//! connected by bounded queues) that `fvision run` embeds, and the Fluvio sink connector around it
//! ([`connector`]: consumer, producers, commit-after-delivery, graceful stop).
#![deny(missing_docs)]

pub mod config;
pub mod connector;
pub mod dashboard;
pub mod endpoint;
pub mod events;
pub mod memory;
pub mod outputs;
pub mod pipeline;
pub mod summary;
pub mod tally;

pub use config::{BelowThreshold, InferenceConfig, SinkConfig, SinkSettings, ValidateAt};
pub use pipeline::{run_pipeline, Item, Outcome, PipelineError, PipelineSettings, PipelineStats, Validate};
pub use tally::Tally;
