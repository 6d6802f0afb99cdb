//! Prometheus text exposition (an apiserver's or a plugin's `/metrics`) parsed once, for tune,
//! scenarios and the lab: [`Metrics::parse`], then [`Metrics::samples`], [`Metrics::sum`] and the
//! apiserver's key-id-hash metrics ([`Metrics::key_id_hash_seen`]).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::StackError;
use crate::stack::Stack;

/// The apiserver metric that carries, per key id hash, when Status last reported that key id.
pub const KEY_ID_HASH_STATUS: &str = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds";
/// The apiserver metric counting DEK operations per key id hash.
pub const KEY_ID_HASH_TOTAL: &str = "apiserver_envelope_encryption_key_id_hash_total";

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with a `_bucket`/`_sum`/`_count` suffix for histogram parts).
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN`, `+Inf` and `-Inf` included).
    pub value: f64,
}

impl std::fmt::Display for Sample {
    /// The sample as the exposition format writes it: `name{label="value",…} value`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let labels: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            write!(f, "{{{}}}", labels.join(","))?;
        }
        write!(f, " {}", self.value)
    }
}

/// Why a `/metrics` text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {problem}: `{text}`")]
pub struct MetricsError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
    /// The line, clipped to 120 characters.
    pub text: String,
}

/// Every sample of one `/metrics` scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: Vec<Sample>,
}

/// The apiserver's label value for `key_id`: `sha256:<hex of SHA-256(key_id)>`.
pub fn key_id_hash(key_id: &str) -> String {
    let digest = Sha256::digest(key_id.as_bytes());
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Metrics {
    /// Parses Prometheus text format 0.0.4 (comments and `# HELP`/`# TYPE` lines skipped).
    pub fn parse(text: &str) -> Result<Self, MetricsError> {
        let mut samples = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error =
                |problem: &str| MetricsError { line: index + 1, problem: problem.to_owned(), text: line.chars().take(120).collect() };
            let (name, labels, rest) = match line.find(['{', ' ']) {
                Some(at) if line.as_bytes()[at] == b'{' => {
                    let (labels, rest) = parse_labels(&line[at + 1..]).map_err(|p| error(&p))?;
                    (&line[..at], labels, rest)
                }
                Some(at) => (&line[..at], BTreeMap::new(), &line[at..]),
                None => return Err(error("no value after the metric name")),
            };
            if name.is_empty() {
                return Err(error("no metric name"));
            }
            let value_text = rest.split_whitespace().next().ok_or_else(|| error("no value"))?;
            let value = match value_text {
                "+Inf" | "Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                other => other.parse().map_err(|_| error("the value is not a number"))?,
            };
            samples.push(Sample { name: name.to_owned(), labels, value });
        }
        Ok(Self { samples })
    }

    /// The samples whose names `wanted` accepts, in scrape order.
    pub fn samples_matching<'a>(&'a self, wanted: impl Fn(&str) -> bool + 'a) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| wanted(&s.name))
    }

    /// The samples named `name`, in scrape order.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of the samples named `name` whose labels include every `(label, value)` of
    /// `labels`; `None` when no sample matches.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching =
            self.samples(name).filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))).peekable();
        matching.peek()?;
        Some(matching.map(|s| s.value).sum())
    }

    /// Whether the apiserver's Status key-id-hash metric shows `key_id`.
    pub fn key_id_hash_seen(&self, key_id: &str) -> bool {
        let hash = key_id_hash(key_id);
        self.samples(KEY_ID_HASH_STATUS).any(|s| s.labels.get("key_id_hash").is_some_and(|h| *h == hash))
    }
}

/// Parses `name="value",…}` and returns the labels and what follows the `}`.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without `=`")?;
        let name = rest[..eq].trim().to_owned();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label `{name}` has no quoted value"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (at, c) in chars {
            match (escaped, c) {
                (true, 'n') => (value.push('\n'), escaped = false).1,
                (true, c) => (value.push(c), escaped = false).1,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + at + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("label `{name}` has an unterminated value"))?;
        labels.insert(name, value);
        rest = &rest[end..];
    }
}

impl Stack {
    /// Scrapes apiserver `apiserver`'s `/metrics` and parses it.
    pub async fn metrics(&self, apiserver: usize) -> Result<Metrics, StackError> {
        let (status, body) = self.apiserver_get(apiserver, "/metrics").await?;
        if status != 200 {
            return Err(StackError::Metrics(format!("GET /metrics on apiserver-{apiserver} answered {status}")));
        }
        Metrics::parse(&body).map_err(|e| StackError::Metrics(format!("apiserver-{apiserver} /metrics: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines in the shape kube-apiserver v1.3x exports them (hand-written, not a captured scrape).
    const TEXT: &str = r#"# HELP apiserver_envelope_encryption_key_id_hash_total [ALPHA] Number of times a keyID is used split by transformation type, provider, and apiserver identity.
# TYPE apiserver_envelope_encryption_key_id_hash_total counter
apiserver_envelope_encryption_key_id_hash_total{apiserver_id_hash="sha256:aa",key_id_hash="sha256:bb",provider_name="kms-lab",transformation_type="from_storage"} 3
apiserver_envelope_encryption_key_id_hash_total{apiserver_id_hash="sha256:aa",key_id_hash="sha256:bb",provider_name="kms-lab",transformation_type="to_storage"} 2
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash="sha256:aa",key_id_hash="KEYHASH",provider_name="kms-lab"} 1.7e+09
apiserver_storage_envelope_transformation_cache_misses_total{transformation_type="from_storage"} 4
weird_metric{path="a \"quoted\" \\ value",x=""} +Inf
plain_metric 12 1700000000000
"#;

    #[test]
    fn samples_sums_and_the_key_id_hash() {
        let text = TEXT.replace("KEYHASH", &key_id_hash("lab-key/v1"));
        let metrics = Metrics::parse(&text).unwrap();
        assert_eq!(metrics.sum(KEY_ID_HASH_TOTAL, &[]), Some(5.0));
        assert_eq!(metrics.sum(KEY_ID_HASH_TOTAL, &[("transformation_type", "to_storage")]), Some(2.0));
        assert_eq!(metrics.sum(KEY_ID_HASH_TOTAL, &[("transformation_type", "nope")]), None);
        assert_eq!(metrics.sum("absent", &[]), None);
        assert!(metrics.key_id_hash_seen("lab-key/v1"));
        assert!(!metrics.key_id_hash_seen("lab-key/v2"));
        let weird: Vec<&Sample> = metrics.samples("weird_metric").collect();
        assert_eq!(weird[0].labels["path"], r#"a "quoted" \ value"#);
        assert_eq!(weird[0].labels["x"], "");
        assert!(weird[0].value.is_infinite());
        assert_eq!(metrics.sum("plain_metric", &[]), Some(12.0));
        assert_eq!(key_id_hash("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn a_broken_line_is_named() {
        let error = Metrics::parse("ok 1\nbroken{a=\"x\" 2\n").unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        assert!(Metrics::parse("name notanumber").unwrap_err().to_string().contains("the value is not a number"));
    }
}
