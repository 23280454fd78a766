//! No code: this crate only names dependency features (see its Cargo.toml and scripts/feature-union.py), so
//! a connector built alone, as `cdk deploy start` builds it, reuses the workspace build.
