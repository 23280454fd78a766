//! Checks of a scraped Prometheus exposition (`/metrics` of a running `fvision run` or sink) for what
//! Prometheus and Triton users expect of it, shared by the tests that scrape one.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line: its metric name, its labels and its value.
#[derive(Debug)]
pub struct Sample {
    /// The sample's name (`fvision_stage_seconds_bucket`).
    pub name: String,
    /// Its labels, unescaped values.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// The samples of an exposition (comment lines skipped). Panics on a line that is not a sample: a test
/// helper, and a malformed exposition is a failure.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(sample).collect()
}

fn sample(line: &str) -> Sample {
    let (head, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
    let value = value.parse().unwrap_or_else(|_| panic!("not a sample value: {line}"));
    let Some((name, rest)) = head.split_once('{') else {
        return Sample { name: head.to_string(), labels: BTreeMap::new(), value };
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
    while !rest.is_empty() {
        let (key, tail) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in: {line}"));
        let mut value = String::new();
        let mut chars = tail.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c })),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in: {line}"),
            }
        };
        labels.insert(key.to_string(), value);
        rest = tail[end + 1..].trim_start_matches(',');
    }
    Sample { name: name.to_string(), labels, value }
}

/// The family a sample belongs to: its name without a histogram's or summary's suffix, when the exposition
/// declares that family.
pub fn family<'a>(name: &'a str, declared: &BTreeSet<String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if declared.contains(base) {
                return base;
            }
        }
    }
    name
}

/// The families named by `# kind NAME ...` lines (`kind` is `HELP` or `TYPE`).
pub fn declared(text: &str, kind: &str) -> BTreeSet<String> {
    let prefix = format!("# {kind} ");
    text.lines().filter_map(|l| l.strip_prefix(&prefix)?.split(' ').next().map(str::to_string)).collect()
}

/// The metrics whose series must carry Triton's `model` and `version` labels: per-stage time, end-to-end
/// processing time and batch size.
pub const MODEL_SERIES: [&str; 3] = ["fvision_stage_seconds", "fvision_processing_seconds", "fvision_batch_size"];

/// What Prometheus and Triton users expect of an exposition, as a list of problems (empty when all is
/// well): every family has `# HELP` and `# TYPE` lines; `fvision_build_info` is one series of value 1 with
/// non-empty `version`, `commit`, `runtime` and `runtime_version` labels; every series of [`MODEL_SERIES`]
/// (which must be exported) carries non-empty `model` and `version` labels, and so do the classified
/// images of `fvision_images_total`.
pub fn problems(text: &str) -> Vec<String> {
    let (help, types) = (declared(text, "HELP"), declared(text, "TYPE"));
    let all = samples(text);
    let mut problems = Vec::new();
    let families: BTreeSet<&str> = all.iter().map(|s| family(&s.name, &types)).collect();
    for f in &families {
        if !help.contains(*f) {
            problems.push(format!("{f} has no # HELP line"));
        }
        if !types.contains(*f) {
            problems.push(format!("{f} has no # TYPE line"));
        }
    }
    let build: Vec<&Sample> = all.iter().filter(|s| s.name == "fvision_build_info").collect();
    match build.as_slice() {
        [info] => {
            if info.value != 1.0 {
                problems.push(format!("fvision_build_info is {}, not 1", info.value));
            }
            for label in ["version", "commit", "runtime", "runtime_version"] {
                if info.labels.get(label).is_none_or(String::is_empty) {
                    problems.push(format!("fvision_build_info has no {label} label: {:?}", info.labels));
                }
            }
        }
        other => problems.push(format!("{} fvision_build_info series, not 1", other.len())),
    }
    for name in MODEL_SERIES {
        if !families.contains(name) {
            problems.push(format!("{name} is not exported"));
        }
    }
    let classified = |s: &&Sample| {
        s.name == "fvision_images_total" && s.labels.get("status").map(String::as_str) == Some("classified")
    };
    for s in all.iter().filter(|s| MODEL_SERIES.contains(&family(&s.name, &types))).chain(all.iter().filter(classified))
    {
        for label in ["model", "version"] {
            if s.labels.get(label).is_none_or(String::is_empty) {
                problems.push(format!("{} {:?} has no {label} label", s.name, s.labels));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP fvision_build_info Always 1.\n# TYPE fvision_build_info gauge\n\
        fvision_build_info{version=\"0.1.0\",commit=\"abc\",runtime=\"onnxruntime\",runtime_version=\"1.32.0\"} 1\n\
        # HELP fvision_stage_seconds Per stage.\n# TYPE fvision_stage_seconds histogram\n\
        fvision_stage_seconds_bucket{stage=\"decode\",model=\"m\",version=\"1\",le=\"+Inf\"} 3\n\
        fvision_stage_seconds_sum{stage=\"decode\",model=\"m\",version=\"1\"} 0.5\n\
        fvision_stage_seconds_count{stage=\"decode\",model=\"m\",version=\"1\"} 3\n\
        # HELP fvision_processing_seconds End to end.\n# TYPE fvision_processing_seconds histogram\n\
        fvision_processing_seconds_count{model=\"m\",version=\"1\"} 3\n\
        # HELP fvision_batch_size Batch.\n# TYPE fvision_batch_size histogram\n\
        fvision_batch_size_count{model=\"m\",version=\"1\"} 1\n\
        # HELP fvision_images_total Images.\n# TYPE fvision_images_total counter\n\
        fvision_images_total{status=\"classified\",reason=\"\",stage=\"\",model=\"m\",version=\"1\"} 3\n\
        fvision_images_total{status=\"rejected\",reason=\"not_an_image\",stage=\"decode\",model=\"\",version=\"\"} 1\n";

    #[test]
    fn a_complete_exposition_has_no_problems_and_each_gap_is_named() {
        assert_eq!(problems(GOOD), Vec::<String>::new());
        let samples = samples(GOOD);
        assert_eq!(samples[0].labels["runtime_version"], "1.32.0");
        assert_eq!(samples.last().map(|s| s.value), Some(1.0));

        let no_help = GOOD.replace("# HELP fvision_batch_size Batch.\n", "");
        assert_eq!(problems(&no_help), vec!["fvision_batch_size has no # HELP line"]);
        let no_version = GOOD.replace(
            "fvision_processing_seconds_count{model=\"m\",version=\"1\"}",
            "fvision_processing_seconds_count{model=\"m\"}",
        );
        assert_eq!(
            problems(&no_version),
            vec!["fvision_processing_seconds_count {\"model\": \"m\"} has no version label"]
        );
        let no_build = GOOD.replace("fvision_build_info{", "fvision_other_info{");
        assert!(
            problems(&no_build).contains(&"0 fvision_build_info series, not 1".to_string()),
            "{:?}",
            problems(&no_build)
        );
        let escaped = sample(r#"x{a="q\"uote",b="back\\slash"} 2.5"#);
        assert_eq!(
            (escaped.labels["a"].as_str(), escaped.labels["b"].as_str(), escaped.value),
            ("q\"uote", "back\\slash", 2.5)
        );
    }
}
