//! The audit log: one [`AuditRecord`] (the API's own, [`crate::api::audit`]) per KMS call,
//! refused ones included.
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

use crate::api::{Action, AuditQuery, AuditRecord, Counter, Counters, Outcome};

/// How many records are kept in memory by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

struct Inner {
    next_seq: u64,
    records: VecDeque<AuditRecord>,
    /// By (key, action name, outcome name), so they are served in the order of those names.
    counters: BTreeMap<(String, String, &'static str), Counter>,
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

    /// Adds `record` (made by [`AuditRecord::started`], its outcome and latency set) with the
    /// next sequence number and the time now; returns it as added.
    pub fn record(&self, mut record: AuditRecord) -> AuditRecord {
        let at = SystemTime::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        record.seq = inner.next_seq;
        record.time = humantime::format_rfc3339_millis(at).to_string();
        record.time_unix_ms = at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        record.latency_ms = (record.latency_ms * 1000.0).round() / 1000.0;
        inner.next_seq += 1;
        let key_id = record.key_id.clone().unwrap_or_default();
        let counter = inner
            .counters
            .entry((key_id.clone(), record.action.name().to_owned(), record.outcome.name()))
            .or_insert_with(|| Counter { key_id, action: record.action.clone(), outcome: record.outcome, count: 0 });
        counter.count += 1;
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
        let matches = |r: &&AuditRecord| query.matches(r) && since.is_none_or(|t| r.finished_at() >= t);
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
    pub fn counters(&self) -> Counters {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Counters { counters: inner.counters.values().cloned().collect() }
    }

    /// One counter's value: calls of `action` on `key_id` (empty: calls that named no key) that
    /// ended with `outcome`.
    pub fn count(&self, key_id: &str, action: Action, outcome: Outcome) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.counters.get(&(key_id.to_owned(), action.name().to_owned(), outcome.name())).map_or(0, |c| c.count)
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

    use crate::api::{Caller, ErrorCode};
    use crate::dialects::Dialect;

    fn new(action: Action, key: Option<&str>, outcome: Outcome) -> AuditRecord {
        let mut record = AuditRecord::started("r", "n0", Dialect::Native, action.name(), Some(action));
        record.access_key = Some("AK".into());
        record.key_id = key.map(Into::into);
        record.outcome = outcome;
        record
    }

    #[test]
    fn queries_filter_and_counters_count() {
        let log = AuditLog::in_memory(3);
        log.record(new(Action::Encrypt, Some("k"), Outcome::Ok));
        log.record(new(Action::Decrypt, Some("k"), Outcome::Refused(ErrorCode::InvalidCiphertext)));
        log.record(new(Action::Encrypt, Some("k"), Outcome::Ok));
        log.record(new(Action::ListKeys, None, Outcome::Ok));
        assert_eq!(log.records().len(), 3, "bounded");
        assert_eq!(log.records()[0].seq, 2);
        let encrypts = log.query(&AuditQuery { action: Some(Action::Encrypt), ..Default::default() });
        assert_eq!(encrypts.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(log.query(&AuditQuery { since_seq: Some(3), ..Default::default() }).len(), 1);
        assert_eq!(log.count("k", Action::Encrypt, Outcome::Ok), 2, "counters outlive the in-memory window");
        assert_eq!(log.count("", Action::ListKeys, Outcome::Ok), 1);
        assert_eq!(log.last_seq(), 4);
        let all = log.query(&AuditQuery { since: Some("2000-01-01T00:00:00Z".into()), limit: Some(2), ..Default::default() });
        assert_eq!(all.len(), 2);
        assert!(log.query(&AuditQuery { since: Some("2999-01-01T00:00:00Z".into()), ..Default::default() }).is_empty());
    }

    #[test]
    fn counters_are_served_in_the_order_of_their_names() {
        let log = AuditLog::in_memory(10);
        log.record(new(Action::Encrypt, Some("k"), Outcome::Refused(ErrorCode::Throttling)));
        log.record(new(Action::Encrypt, Some("k"), Outcome::Ok));
        log.record(new(Action::Decrypt, Some("k"), Outcome::Ok));
        log.record(AuditRecord::started("r", "n0", Dialect::Native, "Encrpyt", None));
        let names: Vec<(String, &str)> = log.counters().counters.iter().map(|c| (c.action.to_string(), c.outcome.name())).collect();
        assert_eq!(
            names,
            [("Encrpyt".into(), "Abandoned"), ("Decrypt".into(), "Ok"), ("Encrypt".into(), "Ok"), ("Encrypt".into(), "Throttling")]
        );
        let json = serde_json::to_string(&log.counters()).unwrap();
        assert!(json.starts_with(r#"[{"key_id":"","action":"Encrpyt","outcome":"Abandoned","count":1},"#), "{json}");
    }

    #[test]
    fn a_call_that_names_no_caller_counts_as_a_request_never_as_a_health_probe() {
        let log = AuditLog::in_memory(10);
        log.record(new(Action::Encrypt, Some("k"), Outcome::Ok));
        log.record(AuditRecord { caller: Some(Caller::HealthProbe), ..new(Action::Encrypt, Some("k"), Outcome::Ok) });
        log.record(AuditRecord { caller: Some(Caller::Request), ..new(Action::Encrypt, Some("k"), Outcome::Ok) });
        let seqs = |caller| log.query(&AuditQuery { caller: Some(caller), ..Default::default() }).iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(Caller::Request), [1, 3]);
        assert_eq!(seqs(Caller::HealthProbe), [2]);
    }

    #[test]
    fn the_file_gets_one_json_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::with_file(&path, 10).unwrap();
        log.record(new(Action::Encrypt, Some("k"), Outcome::Ok));
        log.record(AuditRecord { caller: Some(Caller::Request), ..new(Action::Decrypt, Some("k"), Outcome::Ok) });
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<AuditRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(records, log.records(), "the file holds what memory holds");
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for field in ["time", "request_id", "access_key", "action", "key_id", "key_version_id", "outcome", "latency_ms", "node"] {
            assert!(first.get(field).is_some(), "missing {field}: {first}");
        }
        assert!(first["time"].as_str().unwrap().ends_with('Z') && first["time"].as_str().unwrap().contains('.'));
        assert!(first["time_unix_ms"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000), "{first}");

        // Every line is what the typed admin API reads.
        let typed = crate::api::parse_audit_lines(&text).unwrap();
        assert_eq!(typed[1].action, Action::Decrypt);
        assert_eq!(typed[1].outcome, Outcome::Ok);
        assert_eq!(typed[1].caller, Some(Caller::Request));
        assert_eq!((typed[1].dialect, typed[1].operation.as_str()), (Dialect::Native, "Decrypt"));
        assert!(typed[0].time_unix_ms > 1_600_000_000_000 && typed[0].caller.is_none());

        // A new log on the same file numbers on.
        let reopened = AuditLog::with_file(&path, 10).unwrap();
        assert_eq!(reopened.record(new(Action::Encrypt, None, Outcome::Ok)).seq, 3);
    }
}
