//! One module per subcommand.

pub mod bench;
pub mod classify;
pub mod models;
pub mod run;
pub mod simulate;
pub mod validate;
