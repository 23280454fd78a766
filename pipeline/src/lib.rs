//! The concurrent inference pipeline of fluvio-vision, as the sink connector and `fvision run` embed it:
//! what flows through a run ([`item`]: an input, its outcome, its source position), the stages
//! ([`stages`]: validation, parallel decode workers, the micro-batcher and one shared model, connected
//! by bounded queues), the [`tally`] and [`summary`] line of a run, and the pipeline's [`metrics`]. No
//! Fluvio, no HTTP, no outputs: those are `fvision-outputs`, `fvision-status` and the connector.
#![deny(missing_docs)]

mod batcher;
pub mod item;
pub mod memory;
pub mod metrics;
pub mod stages;
pub mod summary;
pub mod tally;

pub use item::{Item, Outcome, SourcePosition};
pub use stages::{run_pipeline, run_pipeline_from, PipelineError, PipelineSettings, PipelineStats, Validate};
pub use tally::Tally;
