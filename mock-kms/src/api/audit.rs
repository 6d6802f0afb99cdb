//! The audit log's one record, as the server stores it, serves it (`GET /admin/audit`, JSON
//! lines) and appends it to its file, and as a client reads it: [`AuditRecord`] with its
//! [`Outcome`] and [`AuditAction`]; the [`AuditQuery`] filter; the [`Counters`] per (key, action,
//! outcome). Server-free, like the rest of [`crate::api`].

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::sign::percent_encode;
use super::{Action, Caller, ErrorCode, UnknownName};
use crate::dialects::Dialect;

/// How a KMS call ended, as the audit log names it: `Ok`, the [`ErrorCode`] it was refused with
/// (by its name: `Forbidden`, `Throttling`, …), or `Abandoned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered successfully.
    Ok,
    /// Answered with this error.
    Refused(ErrorCode),
    /// The client went away before the call was answered (e.g. during a hang).
    Abandoned,
}

impl Outcome {
    /// Every outcome: `Ok`, each error code in declaration order, `Abandoned`.
    pub fn all() -> impl Iterator<Item = Outcome> {
        std::iter::once(Self::Ok)
            .chain(<ErrorCode as strum::VariantArray>::VARIANTS.iter().map(|code| Self::Refused(*code)))
            .chain(std::iter::once(Self::Abandoned))
    }

    /// The outcome's name, as in the audit log (an error code's own name for a refusal).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "Ok",
            Self::Refused(code) => code.name(),
            Self::Abandoned => "Abandoned",
        }
    }

    /// Every outcome's name, in the order of [`Outcome::all`].
    pub fn names() -> &'static [&'static str] {
        static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| Self::all().map(Self::name).collect())
    }

    /// Parses an outcome name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::all().find(|o| o.name() == name)
    }

    /// The error code of a refused call (`None` for `Ok` and `Abandoned`).
    pub fn error_code(self) -> Option<ErrorCode> {
        match self {
            Self::Refused(code) => Some(code),
            Self::Ok | Self::Abandoned => None,
        }
    }
}

impl From<ErrorCode> for Outcome {
    fn from(code: ErrorCode) -> Self {
        Self::Refused(code)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Outcome {
    type Err = UnknownName;

    /// Parses an outcome name; the error lists every outcome.
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        Self::from_name(name).ok_or_else(|| UnknownName::new("outcome", name, Self::all().map(Outcome::name)))
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::from_name(&name).ok_or_else(|| serde::de::Error::unknown_variant(&name, Self::names()))
    }
}

/// The action an audit record names: a native [`Action`], or the name a call gave that is none
/// (an unknown `/v1/<name>`, or a dialect operation no action maps to), kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A native action.
    Known(Action),
    /// A name that is no action.
    Unknown(String),
}

impl AuditAction {
    /// `action`, or `name` (what the call gave) when it is none.
    pub fn new(action: Option<Action>, name: &str) -> Self {
        action.map_or_else(|| Self::Unknown(name.to_owned()), Self::Known)
    }

    /// The name, as in the audit log.
    pub fn name(&self) -> &str {
        match self {
            Self::Known(action) => action.name(),
            Self::Unknown(name) => name,
        }
    }

    /// The native action, if it is one.
    pub fn action(&self) -> Option<Action> {
        match self {
            Self::Known(action) => Some(*action),
            Self::Unknown(_) => None,
        }
    }
}

impl From<Action> for AuditAction {
    fn from(action: Action) -> Self {
        Self::Known(action)
    }
}

impl PartialEq<Action> for AuditAction {
    fn eq(&self, other: &Action) -> bool {
        *self == Self::Known(*other)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for AuditAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for AuditAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::new(Action::from_name(&name), &name))
    }
}

/// One KMS call in the audit log: a line of `GET /admin/audit` and of the audit file. Records
/// hold ids and outcomes only, never key material or data; fields a reader does not know are
/// ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number in the mock KMS process, from 1 (0 until the log adds the record).
    pub seq: u64,
    /// When the call finished, RFC 3339 with milliseconds (UTC).
    #[serde(default)]
    pub time: String,
    /// The same time as Unix milliseconds (what typed readers use; 0 in files written before it existed).
    #[serde(default)]
    pub time_unix_ms: u64,
    /// The id sent back in `x-kms-request-id`.
    pub request_id: String,
    /// The access key the request claimed (verified or not); `None` if it had none.
    #[serde(default)]
    pub access_key: Option<String>,
    /// The native action the call maps to (or the name it gave, if none).
    pub action: AuditAction,
    /// The key named by the request (or by its ciphertext blob), if any.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The key version used (or named by the blob), if any.
    #[serde(default)]
    pub key_version_id: Option<String>,
    /// The secret named by a secrets-manager call, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// How the call ended.
    pub outcome: Outcome,
    /// Time from receiving the request to answering it, injected latency included.
    pub latency_ms: f64,
    /// The node that served it.
    pub node: String,
    /// Why the client made the call, from [`crate::api::HEADER_CALLER`]; `None` when it did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// The API the call came in on.
    #[serde(default)]
    pub dialect: Dialect,
    /// The operation as the dialect names it (`TrentService.Encrypt`, `transit/encrypt`, …); the
    /// native action name on the native API (empty in records written before dialects existed).
    #[serde(default)]
    pub operation: String,
}

impl AuditRecord {
    /// The record of a call of `operation` in `dialect` (cut to 64 characters), mapped to
    /// `action` (`None`: the operation is no action), served by `node`, before it ends: no
    /// sequence number or time yet (the log adds them), outcome `Abandoned` until it ends.
    pub fn started(request_id: &str, node: &str, dialect: Dialect, operation: &str, action: Option<Action>) -> Self {
        let operation: String = operation.chars().take(64).collect();
        Self {
            seq: 0,
            time: String::new(),
            time_unix_ms: 0,
            request_id: request_id.to_owned(),
            access_key: None,
            action: AuditAction::new(action, &operation),
            key_id: None,
            key_version_id: None,
            secret_name: None,
            outcome: Outcome::Abandoned,
            latency_ms: 0.0,
            node: node.to_owned(),
            caller: None,
            dialect,
            operation,
        }
    }

    /// When the call finished.
    pub fn finished_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.time_unix_ms)
    }
}

/// Parses the JSON lines of `GET /admin/audit` (or an audit file); the error names the line.
pub fn parse_audit_lines(text: &str) -> Result<Vec<AuditRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|e| format!("audit line {} is not an audit record: {e}: `{}`", index + 1, line.trim()))
        })
        .collect()
}

/// A filter over the audit log (`GET /admin/audit?…`, [`AuditQuery::to_query`]); every field that
/// is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<Action>,
    /// Only this key.
    pub key_id: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only this caller. `Request` also matches calls that named no caller: a plugin that does
    /// not send [`crate::api::HEADER_CALLER`] (any third-party plugin) cannot tell its health
    /// probes apart, so every call of it counts as serving a request.
    pub caller: Option<Caller>,
    /// Only this node.
    pub node: Option<String>,
    /// Only records after this sequence number (exclusive: pass the last `seq` you saw).
    pub since_seq: Option<u64>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<String>,
    /// At most this many (the oldest matching first).
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// The query string (without `?`), percent-encoding values.
    pub fn to_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(action) = self.action {
            pairs.push(("action", action.name().to_owned()));
        }
        if let Some(key_id) = &self.key_id {
            pairs.push(("key_id", key_id.clone()));
        }
        if let Some(outcome) = self.outcome {
            pairs.push(("outcome", outcome.name().to_owned()));
        }
        if let Some(caller) = self.caller {
            pairs.push(("caller", caller.name().to_owned()));
        }
        if let Some(node) = &self.node {
            pairs.push(("node", node.clone()));
        }
        if let Some(since_seq) = self.since_seq {
            pairs.push(("since_seq", since_seq.to_string()));
        }
        if let Some(since) = &self.since {
            pairs.push(("since", since.clone()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        pairs.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&")
    }

    /// Whether `record` matches every filter but `since` (a time the caller parses) and `limit`.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.action.is_none_or(|a| record.action == a)
            && self.key_id.as_ref().is_none_or(|k| Some(k) == record.key_id.as_ref())
            && self.outcome.is_none_or(|o| o == record.outcome)
            && self.node.as_ref().is_none_or(|n| *n == record.node)
            && self.caller.is_none_or(|c| Some(c) == record.caller || (c == Caller::Request && record.caller.is_none()))
            && self.since_seq.is_none_or(|s| record.seq > s)
    }
}

/// One counter: how many calls had this (key, action, outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The key (empty for calls that named none).
    pub key_id: String,
    /// The action.
    pub action: AuditAction,
    /// The outcome.
    pub outcome: Outcome,
    /// The count.
    pub count: u64,
}

/// `GET /admin/counters`: calls since start per (key, action, outcome), not bounded by the
/// in-memory audit window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Counters {
    /// Every non-zero counter.
    pub counters: Vec<Counter>,
}

impl Counters {
    /// Calls of `action` with `outcome` on any key.
    pub fn count(&self, action: Action, outcome: Outcome) -> u64 {
        self.counters.iter().filter(|c| c.action == action && c.outcome == outcome).map(|c| c.count).sum()
    }

    /// Calls of `action` with `outcome` on `key_id` (empty: calls that named no key).
    pub fn count_on(&self, key_id: &str, action: Action, outcome: Outcome) -> u64 {
        self.counters.iter().filter(|c| c.key_id == key_id && c.action == action && c.outcome == outcome).map(|c| c.count).sum()
    }

    /// Calls of `action` whatever their outcome, on any key.
    pub fn total(&self, action: Action) -> u64 {
        self.counters.iter().filter(|c| c.action == action).map(|c| c.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_parse_by_name_and_list_the_known_ones() {
        assert_eq!(Outcome::all().count(), 16);
        for outcome in Outcome::all() {
            assert_eq!(outcome.name().parse::<Outcome>(), Ok(outcome));
            assert_eq!(serde_json::to_string(&outcome).unwrap(), format!("\"{}\"", outcome.name()));
            assert_eq!(serde_json::from_str::<Outcome>(&format!("\"{}\"", outcome.name())).unwrap(), outcome);
        }
        for (outcome, name) in [
            (Outcome::Ok, "Ok"),
            (Outcome::Refused(ErrorCode::Forbidden), "Forbidden"),
            (Outcome::Refused(ErrorCode::Throttling), "Throttling"),
            (Outcome::Abandoned, "Abandoned"),
        ] {
            assert_eq!(outcome.name(), name);
        }
        // An error code's outcome is named as the code serialises.
        for code in <ErrorCode as strum::VariantArray>::VARIANTS {
            assert_eq!(serde_json::to_value(Outcome::from(*code)).unwrap(), serde_json::to_value(code).unwrap());
        }
        let error = "KeyNotEnabeld".parse::<Outcome>().unwrap_err().to_string();
        assert!(error.starts_with("unknown outcome `KeyNotEnabeld` (known: Ok, InvalidParameter,"), "{error}");
        assert!(error.contains("KeyNotEnabled") && error.ends_with("ServiceUnavailable, Abandoned)"), "{error}");
        // As serde names an unknown variant (what a scenario's load error shows).
        let error = serde_json::from_str::<Outcome>("\"Throttled\"").unwrap_err().to_string();
        assert!(error.starts_with("unknown variant `Throttled`, expected one of `Ok`, `InvalidParameter`,"), "{error}");
        assert_eq!(Outcome::Refused(ErrorCode::Throttling).error_code(), Some(ErrorCode::Throttling));
        assert_eq!(Outcome::Abandoned.error_code(), None);
    }

    #[test]
    fn an_audit_line_parses_typed_and_ignores_fields_it_does_not_know() {
        let line = r#"{"seq":7,"time":"2026-01-01T00:00:00.123Z","time_unix_ms":1767225600123,"request_id":"r","access_key":"AK","action":"Decrypt","key_id":"k","key_version_id":"v1","outcome":"KeyNotEnabled","latency_ms":1.5,"node":"node-0","caller":"health-probe","dialect":"vault","operation":"transit/decrypt","region":"eu"}"#;
        let records = parse_audit_lines(&format!("{line}\n\n")).unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(
            (record.seq, record.action.action(), record.outcome, record.caller),
            (7, Some(Action::Decrypt), Outcome::Refused(ErrorCode::KeyNotEnabled), Some(Caller::HealthProbe))
        );
        assert_eq!((record.dialect, record.operation.as_str()), (Dialect::Vault, "transit/decrypt"));
        assert_eq!(record.finished_at(), SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123));
        // Written back, the line is the same but for the field this type does not know.
        assert_eq!(serde_json::to_string(record).unwrap(), line.replace(r#","region":"eu""#, ""));
        let without_caller = line.replace(r#","caller":"health-probe""#, "");
        assert_eq!(parse_audit_lines(&without_caller).unwrap()[0].caller, None);
        // A call to an unknown action is kept by its name.
        let unknown = parse_audit_lines(&line.replace(r#""action":"Decrypt""#, r#""action":"Decrpyt""#)).unwrap();
        assert_eq!(unknown[0].action, AuditAction::Unknown("Decrpyt".into()));
        let error = parse_audit_lines(&format!("{line}\n{}", line.replace("KeyNotEnabled", "KeyNotEnabeld"))).unwrap_err();
        assert!(error.starts_with("audit line 2 is not an audit record: unknown variant `KeyNotEnabeld`"), "{error}");
    }

    #[test]
    fn audit_queries_encode_typed_filters_and_parse_them_back() {
        let query = AuditQuery {
            action: Some(Action::Decrypt),
            outcome: Some(Outcome::Ok),
            caller: Some(Caller::Request),
            key_id: Some("a b/c".into()),
            since_seq: Some(3),
            ..AuditQuery::default()
        };
        assert_eq!(query.to_query(), "action=Decrypt&key_id=a%20b%2Fc&outcome=Ok&caller=request&since_seq=3");
        assert_eq!(AuditQuery::default().to_query(), "");
    }
}
