//! Reading a process's Prometheus endpoint in the tests: one scrape, one sample, the names a query uses.

use std::collections::BTreeSet;

/// `GET /metrics` on 127.0.0.1:`port` (a connector's or `fvision run`'s endpoint); panics unless it is a 200.
pub fn scrape(port: u16) -> String {
    let (status, body) = crate::browser::http_get(port, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(status, 200, "GET /metrics");
    String::from_utf8(body).unwrap_or_else(|e| panic!("/metrics is not UTF-8: {e}"))
}

/// The value of the first sample whose line starts with `line_start` (a name, with labels if they matter);
/// panics, showing the scrape, when there is none.
pub fn metric(scraped: &str, line_start: &str) -> f64 {
    scraped
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{line_start}` in /metrics:\n{scraped}"))
}

/// The metric names a PromQL expression uses (`fvision_*`): what the Grafana dashboard needs exported.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("fvision_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}
