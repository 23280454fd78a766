//! The inference sink's connector YAML as the tests write it: one builder instead of a format string per
//! test file.

use std::path::{Path, PathBuf};

/// A sink config (apiVersion 0.2.0) reading `images` under the consumer id `name`, committing every second
/// from the beginning of the topic, writing `predictions` and `dlq`; the rest is the test's.
#[derive(Debug, Clone, Default)]
pub struct SinkYaml<'a> {
    /// The connector's name, also its consumer id and the file's stem.
    pub name: &'a str,
    /// The input topic.
    pub images: &'a str,
    /// The predictions topic.
    pub predictions: &'a str,
    /// The dead-letter topic.
    pub dlq: &'a str,
    /// `meta.consumer.max-bytes`, when set.
    pub max_bytes: Option<&'a str>,
    /// More `meta.consumer` lines, each starting with a line break and four spaces (`\n    partition: 1`).
    pub consumer: &'a str,
    /// `meta.producer`, inline (`{linger: 5ms}`), when set.
    pub producer: Option<&'a str>,
    /// More `inference` lines, each indented by two spaces.
    pub inference: &'a str,
    /// Anything after the `inference` section (`transforms:`).
    pub transforms: &'a str,
}

impl SinkYaml<'_> {
    /// The YAML text.
    pub fn render(&self) -> String {
        let max_bytes = self.max_bytes.map(|m| format!("    max-bytes: {m}\n")).unwrap_or_default();
        let producer = self.producer.map(|p| format!("  producer: {p}\n")).unwrap_or_default();
        let (name, images, consumer) = (self.name, self.images, self.consumer);
        format!(
            "apiVersion: 0.2.0\nmeta:\n  version: 0.1.0\n  name: {name}\n  type: inference-sink\n  \
             topic: {{meta: {{name: {images}}}}}\n  consumer:\n    id: {name}\n{max_bytes}    \
             offset: {{start: beginning, strategy: manual, flush-period: {{secs: 1, nanos: 0}}}}{consumer}\n\
             {producer}inference:\n  predictions-topic: {}\n  dlq-topic: {}\n{}\n{}\n",
            self.predictions, self.dlq, self.inference, self.transforms
        )
    }

    /// Writes it to `dir/<name>.yaml`; the path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.yaml", self.name));
        std::fs::write(&path, self.render()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}
