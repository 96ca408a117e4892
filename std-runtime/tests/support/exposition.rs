//! The Prometheus / OpenMetrics text parser the health and metrics tests
//! check `/metrics` with (one copy, included by both).

use std::collections::HashMap;

#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus / OpenMetrics text format: `# HELP`, `# TYPE`,
/// `# EOF` and samples `name{label="value",...} value`; every sample must
/// belong to a family with a `# TYPE`, every line must parse.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "info",
                    "stateset",
                    "unknown"
                ]
                .contains(&kind),
                "{line:?}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line:?}");
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{line:?}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = HashMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(r, line);
            labels = parsed;
            rest = after;
        }
        let value_text = rest.trim();
        let value: f64 = value_text
            .parse()
            .unwrap_or_else(|_| panic!("value {value_text:?} in {line:?}"));
        // A counter's sample ends in `_total`, a histogram's in `_bucket`,
        // `_sum` or `_count`.
        let family = [
            ("_total", "counter"),
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
        ]
        .iter()
        .find_map(|(suffix, kind)| {
            name.strip_suffix(suffix)
                .filter(|f| types.get(*f).is_some_and(|t| t == kind))
        })
        .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {name}");
        if name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "bucket without le: {line:?}");
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    assert!(eof, "no # EOF");
    samples
}

/// Parses `key="value",...}` (after the `{`); returns the labels and what
/// follows the `}`.
fn parse_labels<'a>(mut r: &'a str, line: &str) -> (HashMap<String, String>, &'a str) {
    let mut labels = HashMap::new();
    loop {
        if let Some(after) = r.strip_prefix('}') {
            return (labels, after);
        }
        r = r.strip_prefix(',').unwrap_or(r);
        let (key, after) = r
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without =\" in {line:?}"));
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label name {key:?} in {line:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars
                .next()
                .unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
            match c {
                '"' => break i + 1,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                c => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        r = &after[end..];
    }
}

/// The sample `name` with (at least) `labels`, if exported.
pub fn try_find<'a>(
    samples: &'a [Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

pub fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    try_find(samples, name, labels)
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:#?}"))
}
