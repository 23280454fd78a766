//! Plumbing shared by the fluvio-vision connectors and the embedded pipeline.
//!
//! Connector configuration ([`config`], Fluvio's connector YAML 0.2.0), and running SmartModules in-process ([`engine`]) and the `image-validate` SmartModule on top of
//! it ([`validator`]): the same `.wasm` that an SPU runs, so the embedded pipeline and a cluster
//! deployment validate identically.
#![deny(missing_docs)]

pub mod backoff;
pub mod binary;
pub mod config;
pub mod dead_letter;
pub mod engine;
pub mod offsets;
pub mod producer;
pub mod replay;
pub mod secret;
pub mod source_metrics;
pub mod source_output;
pub mod standin;
pub mod stop;
pub mod validator;

pub use config::{CheckSection, CheckedConfig, ConfigError, ConnectorConfig, MetaConfig, TransformStep};
pub use engine::{EngineError, RunnerBuilder, SmartModuleRunner, DEFAULT_MEMORY_LIMIT};
pub use producer::{image_producer_config, MAX_EVENT_RECORD, MAX_IMAGE_RECORD};
pub use replay::Sent;
pub use secret::{Secret, Secrets};
pub use source_output::{SourceOutput, SourceOutputError};
pub use stop::Stop;
pub use validator::{locate_beside_smartmodule, locate_smartmodule, ValidatorError, WasmValidator, SMARTMODULE_ENV};
