//! Reading what pagegate tells an operator: the metrics exposition (scraped over HTTP and parsed
//! into samples) and JSON log lines.

use std::net::SocketAddr;

use http_body_util::Full;
use serde_json::Value;

use super::client::{self, Answer};

/// `GET /metrics` on `addr` (the metrics listener), with a bearer token when given.
pub async fn scrape(addr: SocketAddr, token: Option<&str>) -> Answer {
    scrape_path(addr, "metrics.test", "/metrics", token).await
}

/// `GET path` with this Host and, when given, `Authorization: Bearer <token>`.
pub async fn scrape_path(addr: SocketAddr, host: &str, path: &str, token: Option<&str>) -> Answer {
    let mut req = client::request("GET", host, path);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    client::send(addr, req.body(Full::default()).expect("request")).await
}

/// One sample of the exposition: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of an exposition, comments skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), Vec::new()),
        Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` → pairs, with `\"`, `\\` and `\n` unescaped.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        out.push((key.trim_start_matches(',').to_string(), value));
        rest = &after[end + 1..];
    }
    Some(out)
}

/// The value of the one sample named `name` whose labels include all of `labels`; panics when
/// there is none or more than one.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .collect();
    match found.as_slice() {
        [one] => one.value,
        [] => panic!("no sample {name} {labels:?} in:\n{text}"),
        many => panic!("{} samples {name} {labels:?}: {many:?}", many.len()),
    }
}

/// Every log line parsed as JSON; panics on a line that is not one JSON object.
pub fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
            assert!(v.is_object(), "a log line is not a JSON object: {line}");
            v
        })
        .collect()
}

/// The access log lines (target `pagegate::access`) among parsed log lines: their fields.
pub fn access_lines(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["target"] == "pagegate::access")
        .map(|l| l["fields"].clone())
        .collect()
}

/// Whether `digits` occurs in `text` as a whole run of digits (not inside a longer number).
pub fn contains_number(text: &str, digits: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|run| run == digits)
}
