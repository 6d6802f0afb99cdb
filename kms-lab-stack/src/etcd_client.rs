//! The one reader of raw etcd: its v3 JSON gateway (`POST /v3/kv/range`) over plain HTTP or
//! mutual TLS (`--cacert/--cert/--key` as etcdctl takes them), with several endpoints tried in
//! order, and paged listing (`limit`, pinned to one revision) for stores of any size. The stack's
//! [`crate::Stack::etcd_list`] and `kms-lab inspect` both read through it. Read-only: it sends
//! range requests and nothing else.

use std::path::Path;
use std::time::Duration;

use base64::Engine;

use crate::error::StackError;

/// How long one range request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Client credentials for an etcd that requires mutual TLS (PEM).
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA that signed etcd's serving certificate.
    pub ca_pem: String,
    /// The client certificate.
    pub cert_pem: String,
    /// The client key.
    pub key_pem: String,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// Reads the three PEM files (etcdctl's `--cacert`, `--cert`, `--key`).
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, StackError> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path)
                .map_err(StackError::io(format!("read the etcd {what} {} (check the path and that you may read it)", path.display())))
        };
        Ok(Self { ca_pem: read(ca, "CA certificate")?, cert_pem: read(cert, "client certificate")?, key_pem: read(key, "client key")? })
    }
}

/// One key and its raw value, as etcd stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/secrets/default/db`.
    pub key: Vec<u8>,
    /// The stored bytes (an encrypted envelope or, under identity, the object itself).
    pub value: Vec<u8>,
}

impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value: it may be a plaintext object.
        f.debug_struct("KeyValue").field("key", &String::from_utf8_lossy(&self.key)).field("value_len", &self.value.len()).finish()
    }
}

/// One page of a range.
#[derive(Debug, Clone)]
pub struct RangePage {
    /// The keys and values, in key order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys follow in the range.
    pub more: bool,
    /// The store revision the page was read at.
    pub revision: i64,
    /// How many keys the whole range holds at that revision.
    pub count: u64,
}

/// A read-only etcd client over its JSON gateway.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    endpoints: Vec<String>,
    http: reqwest::Client,
}

/// The end of the range of every key starting with `prefix` (etcdctl's `--prefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdClient {
    /// A client for `endpoints` (e.g. `https://10.0.0.1:2379`), tried in order; `tls` for mutual TLS.
    pub fn new(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Self, StackError> {
        if endpoints.is_empty() {
            return Err(StackError::Etcd("no etcd endpoint given (e.g. --endpoints https://127.0.0.1:2379)".into()));
        }
        let mut builder = reqwest::Client::builder().use_rustls_tls().timeout(REQUEST_TIMEOUT);
        if let Some(tls) = tls {
            let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes())
                .map_err(|e| StackError::Etcd(format!("the etcd CA certificate is not PEM: {e}")))?;
            let identity = reqwest::Identity::from_pem(format!("{}\n{}", tls.cert_pem, tls.key_pem).as_bytes()).map_err(|_| {
                StackError::Etcd("the etcd client certificate and key do not form a PEM identity (check --cert and --key)".into())
            })?;
            builder = builder.add_root_certificate(ca).tls_built_in_root_certs(false).identity(identity);
        }
        let http = builder.build().map_err(|e| StackError::Etcd(format!("cannot build the etcd HTTP client: {e}")))?;
        Ok(Self { endpoints: endpoints.iter().map(|e| e.trim_end_matches('/').to_owned()).collect(), http })
    }

    /// The endpoints, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// One range request: keys from `key` to `range_end` (exclusive; `None`: `key` alone), at most
    /// `limit` of them (0: all), at `revision` (0: the current one).
    pub async fn range(&self, key: &[u8], range_end: Option<&[u8]>, limit: u64, revision: i64) -> Result<RangePage, StackError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut request = serde_json::json!({ "key": b64.encode(key) });
        if let Some(end) = range_end {
            request["range_end"] = b64.encode(end).into();
        }
        if limit > 0 {
            request["limit"] = limit.to_string().into();
        }
        if revision > 0 {
            request["revision"] = revision.to_string().into();
        }
        let response = self.post("/v3/kv/range", &request).await?;
        let number = |field: &serde_json::Value| field.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| field.as_i64());
        let revision =
            number(&response["header"]["revision"]).ok_or_else(|| StackError::Etcd("a range answer has no header revision".into()))?;
        let decode = |field: &serde_json::Value| b64.decode(field.as_str().unwrap_or_default()).unwrap_or_default();
        let kvs = response["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(|kv| KeyValue { key: decode(&kv["key"]), value: decode(&kv["value"]) }).collect())
            .unwrap_or_default();
        Ok(RangePage {
            kvs,
            more: response["more"].as_bool().unwrap_or(false),
            revision,
            count: number(&response["count"]).unwrap_or_default().max(0) as u64,
        })
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, StackError> {
        let request = serde_json::json!({ "key": "AA==", "count_only": true });
        let response = self.post("/v3/kv/range", &request).await?;
        response["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| StackError::Etcd("a range answer has no header revision".into()))
    }

    /// Every key under `prefix`, read in pages of `page_size` at one revision; `on_page` sees each
    /// page as it arrives (with the running total and the range's count) and may keep what it needs.
    pub async fn scan_prefix(
        &self,
        prefix: &[u8],
        page_size: u64,
        mut on_page: impl FnMut(&[KeyValue], u64, u64),
    ) -> Result<i64, StackError> {
        let end = prefix_end(prefix);
        let mut start = prefix.to_vec();
        let mut revision = 0;
        let mut seen = 0u64;
        loop {
            let page = self.range(&start, Some(&end), page_size, revision).await?;
            revision = page.revision;
            seen += page.kvs.len() as u64;
            let total = if revision > 0 { page.count.max(seen) } else { seen };
            on_page(&page.kvs, seen, total);
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => {
                    start = last.key.clone();
                    start.push(0);
                }
                _ => return Ok(revision),
            }
        }
    }

    /// Every key and value under `prefix` (paged underneath).
    pub async fn list_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StackError> {
        let mut all = Vec::new();
        self.scan_prefix(prefix, 500, |page, _, _| all.extend_from_slice(page)).await?;
        Ok(all)
    }

    /// POSTs `body` to each endpoint in turn until one answers; the JSON answer.
    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, StackError> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}{path}");
            match self.http.post(&url).json(body).send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.map_err(|e| StackError::Etcd(format!("reading etcd's answer from {url}: {e}")))?;
                    if !status.is_success() {
                        // An error answer names the problem, never a stored value.
                        return Err(StackError::Etcd(format!("{url} answered {status}: {}", text.chars().take(300).collect::<String>())));
                    }
                    return serde_json::from_str(&text).map_err(|e| StackError::Etcd(format!("{url} answered {status} with no JSON: {e}")));
                }
                Err(error) => failures.push(format!("{url}: {}", error_chain(&error))),
            }
        }
        Err(StackError::Etcd(format!(
            "no etcd endpoint answered ({}); check --endpoints and, for https, --cacert/--cert/--key",
            failures.join("; ")
        )))
    }
}

/// An error with its causes (reqwest hides TLS failures in the source chain).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/registry/secrets/"), b"/registry/secrets0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
