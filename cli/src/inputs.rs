//! Turning `PATH...` arguments (files, directories, `-`) into named record values.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Files above this size are not read into memory; they are reported as too large.
pub const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;

/// Where inputs come from, resolved from the command line before anything is read.
#[derive(Debug)]
pub enum InputSource {
    /// Files, directories expanded recursively in sorted order.
    Files(Vec<PathBuf>),
    /// Standard input, one record value per line.
    Stdin,
}

/// One input: a display name and its bytes, or why they could not be read.
#[derive(Debug)]
pub struct Input {
    /// The path, or `-:<line>` for standard input.
    pub name: String,
    /// The record value.
    pub value: Result<Vec<u8>, InputError>,
}

/// An input that could not be turned into a record value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Larger than [`MAX_READ_BYTES`].
    #[error("{size} bytes is above the {MAX_READ_BYTES}-byte read limit")]
    TooLarge {
        /// The file's size.
        size: u64,
    },
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl InputSource {
    /// Resolves the arguments: `-` alone means stdin; every path must exist.
    pub fn from_args(paths: &[PathBuf]) -> Result<Self> {
        if paths.iter().any(|p| p.as_os_str() == "-") {
            if paths.len() > 1 {
                bail!("`-` (standard input) cannot be combined with paths");
            }
            return Ok(Self::Stdin);
        }
        let mut files = Vec::new();
        for path in paths {
            let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_dir() {
                let mut found = Vec::new();
                for entry in walkdir::WalkDir::new(path).follow_links(true) {
                    match entry {
                        Ok(entry) if entry.file_type().is_file() && !is_sidecar(entry.path()) => {
                            found.push(entry.into_path())
                        }
                        Ok(_) => {}
                        // A broken link or unreadable entry: keep it, so reading it reports the error
                        // in its place and the rest of the directory is still processed.
                        Err(err) => match err.path() {
                            Some(bad) => found.push(bad.to_path_buf()),
                            None => return Err(err).with_context(|| format!("cannot list {}", path.display())),
                        },
                    }
                }
                found.sort();
                files.extend(found);
            } else {
                files.push(path.clone());
            }
        }
        Ok(Self::Files(files))
    }

    /// How many inputs there will be, when known in advance.
    pub fn len_hint(&self) -> Option<u64> {
        match self {
            Self::Files(files) => Some(files.len() as u64),
            Self::Stdin => None,
        }
    }

    /// The inputs, read lazily one at a time so memory stays bounded by one batch.
    pub fn iter(self) -> Box<dyn Iterator<Item = Input> + Send> {
        match self {
            Self::Files(files) => Box::new(
                files.into_iter().map(|path| Input { name: path.display().to_string(), value: read_file(&path) }),
            ),
            Self::Stdin => {
                Box::new(io::BufReader::new(io::stdin()).split(b'\n').enumerate().filter_map(|(i, line)| {
                    let value = match line {
                        Ok(mut line) => {
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                            if line.iter().all(u8::is_ascii_whitespace) {
                                return None;
                            }
                            Ok(line)
                        }
                        Err(err) => Err(InputError::Io(err)),
                    };
                    Some(Input { name: format!("-:{}", i + 1), value })
                }))
            }
        }
    }
}

/// Groups inputs into batches of `size`, read lazily: memory holds one batch at a time.
pub fn batches(inputs: Box<dyn Iterator<Item = Input> + Send>, size: usize) -> impl Iterator<Item = Vec<Input>> {
    let mut inputs = inputs.peekable();
    std::iter::from_fn(move || inputs.peek().is_some().then(|| inputs.by_ref().take(size.max(1)).collect()))
}

/// The values of a batch that could be read, in order (unreadable inputs are reported by the caller).
pub fn readable(batch: &[Input]) -> Vec<&[u8]> {
    batch.iter().filter_map(|i| i.value.as_ref().ok().map(Vec::as_slice)).collect()
}

/// Documentation and reference files that sit beside images in data folders.
fn is_sidecar(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("md" | "tsv" | "txt"))
}

fn read_file(path: &Path) -> Result<Vec<u8>, InputError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_READ_BYTES {
        return Err(InputError::TooLarge { size });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_READ_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}
