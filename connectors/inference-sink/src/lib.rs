//! The inference stage of fluvio-vision. Today: its connector configuration ([`config`]) and the
//! concurrent pipeline ([`pipeline`]) that `fvision run` embeds: validation, parallel decode workers, a micro-batcher and one shared model, connected by bounded
//! queues. The Fluvio sink connector around it (consumer, producers, offsets, metrics) is issue 5's next part.
#![deny(missing_docs)]

pub mod config;
pub mod events;
pub mod pipeline;

pub use config::{BelowThreshold, InferenceSettings, SinkConfig};
pub use pipeline::{run_pipeline, Item, Outcome, PipelineConfig, PipelineError, PipelineStats, Validate};
