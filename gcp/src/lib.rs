//! `fvision-gcp`: everything fluvio-vision says to Google Cloud, in one place. Credentials the way Google's
//! client libraries find them ([`auth`]), the emulator variables they honour ([`emulator`]), the one GCS
//! JSON API client ([`storage`]), BigQuery ([`bigquery`]) and Pub/Sub ([`pubsub`]). Used by the outputs,
//! `gcs-source`, `fvision simulate` and `fvision deploy`; it knows nothing about their records.
#![deny(missing_docs)]

pub mod auth;
pub mod bigquery;
pub mod emulator;
pub mod pubsub;
pub mod storage;

/// What an idempotent "ensure" did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was missing and is now there.
    Created,
    /// It was already there; nothing done.
    Exists,
}
