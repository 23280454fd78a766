//! Helpers for what the CLI prints.

use std::io;

use indicatif::{ProgressBar, ProgressStyle};

/// True when the error chain holds a broken pipe (`fvision ... | head`), which is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<io::Error>()).any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// A progress bar on stderr; invisible when stderr is not a terminal, so logs and CI stay clean.
pub fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}"
    } else {
        "{prefix} {spinner} {pos} {per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}
