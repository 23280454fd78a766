//! How commands print outcomes: an aligned table with paths relative to the current directory, or the
//! JSON lines of the JSONL output (one shape for `classify --json`, `run --output` and the connector).

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;
use fvision_outputs::jsonl::write_line;
use fvision_pipeline::Outcome;

/// Width of the image column; longer names are printed whole, not cut.
const NAME_WIDTH: usize = 40;

/// Prints outcomes as JSON lines or as an aligned table.
pub struct Table {
    json: bool,
    header_done: bool,
    cwd: Option<PathBuf>,
}

impl Table {
    /// JSON lines when `json`, else a table with a header.
    pub fn new(json: bool) -> Self {
        Self { json, header_done: false, cwd: std::env::current_dir().ok() }
    }

    /// Writes one outcome.
    pub fn write(&mut self, out: &mut impl Write, outcome: &Outcome) -> Result<()> {
        if self.json {
            write_line(out, outcome)?;
            return Ok(());
        }
        if !self.header_done {
            writeln!(out, "{:<NAME_WIDTH$} {:<28} {:>6} {:>9}  runner-up", "image", "label", "conf", "time ms")?;
            self.header_done = true;
        }
        let name = match &self.cwd {
            Some(cwd) => relative_to(Path::new(outcome.name()), cwd),
            None => outcome.name().to_string(),
        };
        match outcome {
            Outcome::Classified { prediction: p, .. } => {
                let runner_up =
                    p.top_k.get(1).map(|c| format!("{} ({:.2})", c.label, c.confidence)).unwrap_or_default();
                writeln!(
                    out,
                    "{name:<NAME_WIDTH$} {:<28} {:>6.3} {:>9.1}  {runner_up}",
                    p.label, p.confidence, p.processing_time_ms
                )?;
            }
            Outcome::Rejected { rejected, .. } => {
                writeln!(out, "{name:<NAME_WIDTH$} REJECTED {}: {}", rejected.reason, rejected.detail)?;
            }
        }
        Ok(())
    }
}

/// `path` relative to `base` (`../` where it lies outside), or as given when it is relative already or
/// shares no root with `base` (a name like `-:3` or `topic/0@12` is not a path and stays as it is).
pub fn relative_to(path: &Path, base: &Path) -> String {
    if !path.is_absolute() || !base.is_absolute() {
        return path.display().to_string();
    }
    let (path_parts, base_parts): (Vec<Component>, Vec<Component>) =
        (path.components().collect(), base.components().collect());
    let common = path_parts.iter().zip(&base_parts).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return path.display().to_string(); // only the root in common: the absolute path is clearer
    }
    let mut relative = PathBuf::new();
    for _ in common..base_parts.len() {
        relative.push("..");
    }
    relative.extend(&path_parts[common..]);
    relative.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_to_the_current_directory_and_never_cut() {
        let cwd = Path::new("/work/repo");
        assert_eq!(
            relative_to(Path::new("/work/repo/data/demo-images/chelsea.jpg"), cwd),
            "data/demo-images/chelsea.jpg"
        );
        assert_eq!(relative_to(Path::new("/work/other/x.jpg"), cwd), "../other/x.jpg");
        assert_eq!(relative_to(Path::new("/srv/x.jpg"), cwd), "/srv/x.jpg");
        assert_eq!(relative_to(Path::new("data/x.jpg"), cwd), "data/x.jpg");
        assert_eq!(relative_to(Path::new("-:3"), cwd), "-:3");
        let long = "/work/repo/data/a-directory-with-a-rather-long-name/and-a-long-file-name-too.jpeg";
        let mut table = Table { json: false, header_done: true, cwd: Some(cwd.to_path_buf()) };
        let rejected = fvision_records::RejectedImage::new(
            fvision_records::RejectReason::Empty,
            "empty",
            fvision_records::Stage::Validate,
            b"",
        );
        let outcome = Outcome::Rejected { name: long.into(), position: None, rejected: Box::new(rejected) };
        let mut out = Vec::new();
        table.write(&mut out, &outcome).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("data/a-directory-with-a-rather-long-name/and-a-long-file-name-too.jpeg "), "{line}");
    }
}
