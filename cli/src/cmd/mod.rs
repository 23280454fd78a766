//! One module per subcommand.

pub mod bench;
pub mod classify;
pub mod deploy;
pub mod dev;
pub mod models;
pub mod run;
pub mod simulate;
pub mod validate;
