//! The audit log: one [`AuditRecord`] per KMS call, refused ones included.
//!
//! Records are kept in memory (the newest [`DEFAULT_CAPACITY`] by default) for [`AuditLog::query`],
//! counted per (key, action, outcome) for [`AuditLog::counters`], and appended as JSON lines to a
//! file if one is given: one `write` per record on a file opened for appending, before the call is
//! answered, so a record survives even `kill -9` (it is in the page cache; there is no fsync).
//! Sequence numbers continue from the last record already in the file. Records hold ids and
//! outcomes only, never key material or data.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How many records are kept in memory by default.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// The outcome of a successful call.
pub const OUTCOME_OK: &str = "Ok";
/// The outcome of a call whose client went away before it was answered (e.g. during a hang).
pub const OUTCOME_ABANDONED: &str = "Abandoned";

/// One KMS call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number in this process, from 1.
    pub seq: u64,
    /// When the call finished, RFC 3339 with milliseconds (UTC).
    pub time: String,
    /// The same time as Unix milliseconds (what typed readers use; 0 in files written before it existed).
    #[serde(default)]
    pub time_unix_ms: u64,
    /// The id sent back in `x-kms-request-id`.
    pub request_id: String,
    /// The access key the request claimed (verified or not); `None` if it had none.
    pub access_key: Option<String>,
    /// The action, as named in the path (may be an unknown name).
    pub action: String,
    /// The key named by the request (or by its ciphertext blob), if any.
    pub key_id: Option<String>,
    /// The key version used (or named by the blob), if any.
    pub key_version_id: Option<String>,
    /// The secret named by a secrets-manager call, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `Ok`, an [`crate::api::ErrorCode`] name, or `Abandoned`.
    pub outcome: String,
    /// Time from receiving the request to answering it, injected latency included.
    pub latency_ms: f64,
    /// The node that served it.
    pub node: String,
    /// Why the client made the call, from [`crate::api::HEADER_CALLER`]; `None` when it did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<crate::api::Caller>,
    /// The API the call came in on (`native`, `aws`, `gcp`, `vault`, `jdcloud`, `aliyun`; see
    /// [`crate::dialects::Dialect`]).
    #[serde(default = "native")]
    pub dialect: String,
    /// The operation as the dialect names it (`TrentService.Encrypt`, `transit/encrypt`, …); the
    /// native action name on the native API. `action` is the native action it maps to.
    #[serde(default)]
    pub operation: String,
    #[serde(skip, default = "epoch")]
    at: SystemTime,
}

fn native() -> String {
    crate::dialects::Dialect::Native.name().to_owned()
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

/// The fields of a record that the caller supplies; the log adds `seq` and `time`.
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    /// See [`AuditRecord::request_id`].
    pub request_id: String,
    /// See [`AuditRecord::access_key`].
    pub access_key: Option<String>,
    /// See [`AuditRecord::action`].
    pub action: String,
    /// See [`AuditRecord::key_id`].
    pub key_id: Option<String>,
    /// See [`AuditRecord::key_version_id`].
    pub key_version_id: Option<String>,
    /// See [`AuditRecord::secret_name`].
    pub secret_name: Option<String>,
    /// See [`AuditRecord::outcome`].
    pub outcome: String,
    /// See [`AuditRecord::latency_ms`].
    pub latency_ms: f64,
    /// See [`AuditRecord::node`].
    pub node: String,
    /// See [`AuditRecord::caller`].
    pub caller: Option<crate::api::Caller>,
    /// See [`AuditRecord::dialect`] (empty: `native`).
    pub dialect: String,
    /// See [`AuditRecord::operation`] (empty: the action).
    pub operation: String,
}

/// A filter over the in-memory records; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<String>,
    /// Only this key.
    pub key_id: Option<String>,
    /// Only this outcome (`Ok` or an error code).
    pub outcome: Option<String>,
    /// Only this node.
    pub node: Option<String>,
    /// Only this caller (`health-probe`, `request`); `request` also matches records that name no
    /// caller (a plugin that does not send the header cannot tell its health probes apart).
    pub caller: Option<crate::api::Caller>,
    /// Only records after this sequence number (exclusive: pass the last `seq` you saw).
    pub since_seq: Option<u64>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<String>,
    /// At most this many (the oldest matching first).
    pub limit: Option<usize>,
}

/// One counter: how many calls had this (key, action, outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The key (empty for calls that named none).
    pub key_id: String,
    /// The action.
    pub action: String,
    /// The outcome.
    pub outcome: String,
    /// The count.
    pub count: u64,
}

struct Inner {
    next_seq: u64,
    records: VecDeque<AuditRecord>,
    counters: BTreeMap<(String, String, String), u64>,
    file: Option<File>,
    write_failed: bool,
}

/// The audit log of one process (all of its nodes).
pub struct AuditLog {
    capacity: usize,
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("capacity", &self.capacity).field("path", &self.path).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// A log kept in memory only (the newest `capacity` records).
    pub fn in_memory(capacity: usize) -> Self {
        Self::build(capacity, None, None, 1)
    }

    fn build(capacity: usize, path: Option<PathBuf>, file: Option<File>, next_seq: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner { next_seq, records: VecDeque::new(), counters: BTreeMap::new(), file, write_failed: false }),
            path,
        }
    }

    /// A log that also appends JSON lines to `path` (created with mode 0600 if missing), numbering
    /// on from the last record already there.
    pub fn with_file(path: &Path, capacity: usize) -> std::io::Result<Self> {
        let mut file = OpenOptions::new().create(true).append(true).read(true).mode(0o600).open(path)?;
        let next_seq = last_seq_in(&mut file).map_or(1, |seq| seq + 1);
        Ok(Self::build(capacity, Some(path.to_owned()), Some(file), next_seq))
    }

    /// The file records are appended to, if any.
    pub fn file(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Adds a record; returns it with its sequence number and time.
    pub fn record(&self, new: NewRecord) -> AuditRecord {
        let at = SystemTime::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let operation = if new.operation.is_empty() { new.action.clone() } else { new.operation };
        let record = AuditRecord {
            seq: inner.next_seq,
            time: humantime::format_rfc3339_millis(at).to_string(),
            time_unix_ms: at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default(),
            request_id: new.request_id,
            access_key: new.access_key,
            action: new.action,
            key_id: new.key_id,
            key_version_id: new.key_version_id,
            secret_name: new.secret_name,
            outcome: new.outcome,
            latency_ms: (new.latency_ms * 1000.0).round() / 1000.0,
            node: new.node,
            caller: new.caller,
            dialect: if new.dialect.is_empty() { native() } else { new.dialect },
            operation,
            at,
        };
        inner.next_seq += 1;
        let counter = (record.key_id.clone().unwrap_or_default(), record.action.clone(), record.outcome.clone());
        *inner.counters.entry(counter).or_default() += 1;
        if inner.records.len() == self.capacity {
            inner.records.pop_front();
        }
        inner.records.push_back(record.clone());
        // Written under the lock so lines reach the file in sequence order.
        if let Some(file) = inner.file.as_mut()
            && let Ok(mut line) = serde_json::to_string(&record)
        {
            line.push('\n');
            if let Err(error) = file.write_all(line.as_bytes()) {
                if !inner.write_failed {
                    tracing::error!(path = ?self.path, %error, "cannot append to the audit log; records stay in memory");
                }
                inner.write_failed = true;
            }
        }
        record
    }

    /// The records that match `query`, oldest first.
    pub fn query(&self, query: &AuditQuery) -> Vec<AuditRecord> {
        let since = query.since.as_deref().and_then(|s| humantime::parse_rfc3339_weak(s).ok());
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let matches = |r: &&AuditRecord| {
            query.action.as_ref().is_none_or(|a| *a == r.action)
                && query.key_id.as_ref().is_none_or(|k| Some(k) == r.key_id.as_ref())
                && query.outcome.as_ref().is_none_or(|o| *o == r.outcome)
                && query.node.as_ref().is_none_or(|n| *n == r.node)
                && query.caller.is_none_or(|c| Some(c) == r.caller || (c == crate::api::Caller::Request && r.caller.is_none()))
                && query.since_seq.is_none_or(|s| r.seq > s)
                && since.is_none_or(|t| r.at >= t)
        };
        inner.records.iter().filter(matches).take(query.limit.unwrap_or(usize::MAX)).cloned().collect()
    }

    /// Every record in memory, oldest first.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.query(&AuditQuery::default())
    }

    /// The sequence number of the newest record (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).next_seq - 1
    }

    /// Counters per (key, action, outcome) since start (not bounded by the in-memory capacity).
    pub fn counters(&self) -> Vec<Counter> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .counters
            .iter()
            .map(|((key_id, action, outcome), count)| Counter {
                key_id: key_id.clone(),
                action: action.clone(),
                outcome: outcome.clone(),
                count: *count,
            })
            .collect()
    }

    /// One counter's value.
    pub fn count(&self, key_id: &str, action: &str, outcome: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.counters.get(&(key_id.to_owned(), action.to_owned(), outcome.to_owned())).copied().unwrap_or_default()
    }

    /// Closes the file (records after this stay in memory only). Every record written so far
    /// is already in the file.
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).file = None;
    }
}

/// The `seq` of the last complete record in an audit file, if any.
fn last_seq_in(file: &mut File) -> Option<u64> {
    const TAIL: u64 = 64 * 1024;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines().rev().find_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()?.get("seq")?.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(action: &str, key: Option<&str>, outcome: &str) -> NewRecord {
        NewRecord {
            request_id: "r".into(),
            access_key: Some("AK".into()),
            action: action.into(),
            key_id: key.map(Into::into),
            outcome: outcome.into(),
            node: "n0".into(),
            ..NewRecord::default()
        }
    }

    #[test]
    fn queries_filter_and_counters_count() {
        let log = AuditLog::in_memory(3);
        log.record(new("Encrypt", Some("k"), "Ok"));
        log.record(new("Decrypt", Some("k"), "InvalidCiphertext"));
        log.record(new("Encrypt", Some("k"), "Ok"));
        log.record(new("ListKeys", None, "Ok"));
        assert_eq!(log.records().len(), 3, "bounded");
        assert_eq!(log.records()[0].seq, 2);
        let encrypts = log.query(&AuditQuery { action: Some("Encrypt".into()), ..Default::default() });
        assert_eq!(encrypts.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(log.query(&AuditQuery { since_seq: Some(3), ..Default::default() }).len(), 1);
        assert_eq!(log.count("k", "Encrypt", "Ok"), 2, "counters outlive the in-memory window");
        assert_eq!(log.count("", "ListKeys", "Ok"), 1);
        assert_eq!(log.last_seq(), 4);
        let all = log.query(&AuditQuery { since: Some("2000-01-01T00:00:00Z".into()), limit: Some(2), ..Default::default() });
        assert_eq!(all.len(), 2);
        assert!(log.query(&AuditQuery { since: Some("2999-01-01T00:00:00Z".into()), ..Default::default() }).is_empty());
    }

    #[test]
    fn a_call_that_names_no_caller_counts_as_a_request_never_as_a_health_probe() {
        use crate::api::Caller;
        let log = AuditLog::in_memory(10);
        log.record(new("Encrypt", Some("k"), "Ok"));
        log.record(NewRecord { caller: Some(Caller::HealthProbe), ..new("Encrypt", Some("k"), "Ok") });
        log.record(NewRecord { caller: Some(Caller::Request), ..new("Encrypt", Some("k"), "Ok") });
        let seqs = |caller| log.query(&AuditQuery { caller: Some(caller), ..Default::default() }).iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(Caller::Request), [1, 3]);
        assert_eq!(seqs(Caller::HealthProbe), [2]);
    }

    #[test]
    fn the_file_gets_one_json_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::with_file(&path, 10).unwrap();
        log.record(new("Encrypt", Some("k"), "Ok"));
        log.record(NewRecord { caller: Some(crate::api::Caller::Request), ..new("Decrypt", Some("k"), "Ok") });
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<AuditRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for field in ["time", "request_id", "access_key", "action", "key_id", "key_version_id", "outcome", "latency_ms", "node"] {
            assert!(first.get(field).is_some(), "missing {field}: {first}");
        }
        assert!(first["time"].as_str().unwrap().ends_with('Z') && first["time"].as_str().unwrap().contains('.'));
        assert!(first["time_unix_ms"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000), "{first}");

        // Every line is what the typed admin API reads.
        let typed = crate::api::admin::parse_audit_lines(&text).unwrap();
        assert_eq!(typed[1].action, crate::api::Action::Decrypt);
        assert_eq!(typed[1].outcome, crate::api::admin::Outcome::Ok);
        assert_eq!(typed[1].caller, Some(crate::api::Caller::Request));
        assert!(typed[0].time_unix_ms > 1_600_000_000_000 && typed[0].caller.is_none());

        // A new log on the same file numbers on.
        let reopened = AuditLog::with_file(&path, 10).unwrap();
        assert_eq!(reopened.record(new("Encrypt", None, "Ok")).seq, 3);
    }
}
