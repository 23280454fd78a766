//! The connector YAML files in `fluvio-config/connectors` and their bad fixtures in `test-data/`, shared by
//! every connector's config tests: each bad fixture names, on its first line (`# expect: ...`), the error it
//! must give.

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// `fluvio-config/connectors` of this checkout.
pub fn connectors_dir() -> PathBuf {
    crate::repo_root().join("fluvio-config/connectors")
}

/// Loads every `test-data/<prefix>*.yaml` (at least `at_least` of them) with `load` and asserts the error names
/// the file and contains what the fixture's first line expects.
pub fn check_bad_fixtures<T, E: Display>(prefix: &str, at_least: usize, load: impl Fn(&Path) -> Result<T, E>) {
    let dir = connectors_dir().join("test-data");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= at_least, "{} fixtures `{prefix}*`", fixtures.len());
    for path in fixtures {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("first line: # expect: ...");
        let err = match load(&path) {
            Ok(_) => panic!("{}: loaded without an error", path.display()),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with(&path.display().to_string()), "the error names the file: {err}");
        assert!(err.contains(expect), "{}:\n  expected `{expect}`\n  got      `{err}`", path.display());
    }
}
