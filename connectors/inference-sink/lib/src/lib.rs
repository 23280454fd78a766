//! The inference sink: the Fluvio connector around the embedded pipeline ([`connector`]: consumer,
//! producers, commit-after-delivery, graceful stop). The pipeline is `fvision-pipeline`, the outputs
//! `fvision-outputs`, the endpoint and status page `fvision-status`, the YAML `fvision-sink-config`.
#![deny(missing_docs)]

pub mod connector;
