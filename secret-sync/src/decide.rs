//! The reconcile decisions as pure functions: which entries to read ([`plan`]), what a remote
//! answer or error means ([`classify`], [`extract`]), and what to do with the Secret given every
//! answer and the Secret as it is ([`decide`]). The controller only carries them out.
//!
//! The rules a user relies on: the Secret is written only when every entry was read and
//! extracted; any failure — a store outage, throttling, a denied call, a deleted remote secret,
//! a missing property — keeps the last good Secret untouched and is reported as `Ready=False`
//! with a reason and a message naming the field and the fix. No message carries a value.

use std::collections::{BTreeMap, BTreeSet};

use jsonpath_rust::JsonPath;
use mock_kms::api::secrets::VersionStage;
use zeroize::Zeroizing;

use crate::crd::{ExternalSecretSpec, SyncedVersion};
use crate::error::StoreError;

/// Why the `Ready` condition is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum Reason {
    /// Every entry is in the Secret.
    Synced,
    /// The spec is wrong in a way the schema cannot see (a bad JSON path, a reserved stage, …).
    InvalidSpec,
    /// The store the spec names does not exist.
    StoreNotFound,
    /// The store exists but cannot be used (no endpoint, a missing credential Secret).
    StoreMisconfigured,
    /// The store does not answer (connection refused, timeout, 5xx).
    StoreUnavailable,
    /// The store throttled the controller.
    Throttled,
    /// The store's access policy refused the call.
    AccessDenied,
    /// The remote secret (or the version or stage named) is gone or scheduled for deletion.
    RemoteSecretDeleted,
    /// The remote value is not JSON, or the JSON path selects nothing (or several values).
    PropertyNotFound,
    /// A Secret of the target name exists and is not this ExternalSecret's.
    SecretConflict,
    /// The store refused the call for another reason.
    StoreError,
}

impl Reason {
    /// Every reason (generated from the variants).
    pub const ALL: &'static [Reason] = <Self as strum::VariantArray>::VARIANTS;

    /// The reason named `name` (as [`Reason::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// The reason as the condition and the events show it.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// When to try again: soon with backoff (the store may come back), or at the next poll.
    pub fn retry(self) -> Retry {
        match self {
            Self::StoreUnavailable | Self::Throttled | Self::StoreError => Retry::Backoff,
            _ => Retry::Poll,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// When a failed reconcile is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// After a jittered exponential backoff (transient store errors).
    Backoff,
    /// At the next polling interval, or when the object changes (the user must act).
    Poll,
}

/// Why the Secret was not written: the `Ready=False` reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The reason.
    pub reason: Reason,
    /// What happened and what to do; never a value.
    pub message: String,
}

impl Failure {
    /// A failure for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// One validated entry of the spec: what to read and what to extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    /// `spec.data[index]`.
    pub index: usize,
    /// The key in the Secret.
    pub name: String,
    /// The remote secret.
    pub key: String,
    /// The version to read.
    pub version_id: Option<String>,
    /// The stage to read (none with neither: the current version).
    pub stage: Option<VersionStage>,
    /// The JSON path, normalised to start with `$`.
    pub path: Option<String>,
}

impl PlannedEntry {
    fn field(&self, field: &str) -> String {
        format!("spec.data[{}].{field}", self.index)
    }
}

/// Validates the spec's entries (what the CRD schema cannot check) into what to read.
pub fn plan(spec: &ExternalSecretSpec) -> Result<Vec<PlannedEntry>, Failure> {
    let mut seen = BTreeSet::new();
    let mut planned = Vec::new();
    for (index, entry) in spec.data.iter().enumerate() {
        let invalid = |field: &str, problem: String| Failure::new(Reason::InvalidSpec, format!("spec.data[{index}].{field}: {problem}"));
        if !seen.insert(entry.name.clone()) {
            return Err(invalid(
                "name",
                format!("`{}` is used by an earlier entry too: give each entry its own key in the Secret", entry.name),
            ));
        }
        if entry.version_id.is_some() && entry.version_stage.is_some() {
            return Err(invalid("versionId", "give versionId or versionStage, not both".into()));
        }
        let stage = entry
            .version_stage
            .as_deref()
            .map(|s| s.parse::<VersionStage>())
            .transpose()
            .map_err(|problem| invalid("versionStage", problem))?;
        let path = entry
            .property
            .as_deref()
            .map(|p| {
                let path = if p.starts_with('$') { p.to_owned() } else { format!("$.{p}") };
                jsonpath_rust::parser::parse_json_path(&path)
                    .map(|_| path.clone())
                    .map_err(|e| invalid("property", format!("`{p}` is not a JSON path ({e}): write e.g. `$.password` or `password`")))
            })
            .transpose()?;
        planned.push(PlannedEntry {
            index,
            name: entry.name.clone(),
            key: entry.key.clone(),
            version_id: entry.version_id.clone(),
            stage,
            path,
        });
    }
    Ok(planned)
}

/// One remote value read: its version and text.
#[derive(Clone)]
pub struct Fetched {
    /// The version read.
    pub version_id: String,
    /// The value.
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched").field("version_id", &self.version_id).finish_non_exhaustive()
    }
}

/// What a store error means for `entry`.
pub fn classify(entry: &PlannedEntry, error: &StoreError) -> Failure {
    let what = match (&entry.version_id, &entry.stage) {
        (Some(id), _) => format!("version `{id}` of remote secret `{}`", entry.key),
        (None, Some(stage)) => format!("stage {stage} of remote secret `{}`", entry.key),
        (None, None) => format!("remote secret `{}`", entry.key),
    };
    match error {
        StoreError::NotFound { message, .. } => Failure::new(
            Reason::RemoteSecretDeleted,
            format!(
                "{}: {what} is gone ({message}); the Secret keeps its last value: restore the remote secret or change the entry",
                entry.field("key")
            ),
        ),
        StoreError::Denied { message, .. } => Failure::new(
            Reason::AccessDenied,
            format!("{}: reading {what} was denied ({message}); the Secret keeps its last value", entry.field("key")),
        ),
        StoreError::Throttled { .. } => {
            Failure::new(Reason::Throttled, format!("reading {what}: {error}; retrying with backoff, the Secret keeps its last value"))
        }
        StoreError::Unavailable { .. } => Failure::new(
            Reason::StoreUnavailable,
            format!("reading {what}: {error}; retrying with backoff, the Secret keeps its last value"),
        ),
        StoreError::Failed { retryable: true, .. } | StoreError::Protocol { .. } => {
            Failure::new(Reason::StoreError, format!("reading {what}: {error}; retrying with backoff, the Secret keeps its last value"))
        }
        StoreError::Failed { .. } => Failure::new(Reason::StoreError, format!("{}: reading {what}: {error}", entry.field("key"))),
    }
}

/// The bytes `entry` puts into the Secret from `fetched`: the whole value, or what its JSON path selects.
pub fn extract(entry: &PlannedEntry, fetched: &Fetched) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let Some(path) = &entry.path else {
        return Ok(Zeroizing::new(fetched.value.as_bytes().to_vec()));
    };
    let field = entry.field("property");
    let json: serde_json::Value = serde_json::from_str(&fetched.value).map_err(|_| {
        Failure::new(
            Reason::PropertyNotFound,
            format!(
                "{field}: version `{}` of remote secret `{}` is not JSON, so `{path}` cannot select from it: drop the property or store JSON",
                fetched.version_id, entry.key
            ),
        )
    })?;
    let selected = json.query(path).map_err(|e| Failure::new(Reason::InvalidSpec, format!("{field}: `{path}`: {e}")))?;
    match selected.as_slice() {
        [serde_json::Value::String(text)] => Ok(Zeroizing::new(text.as_bytes().to_vec())),
        [other] => Ok(Zeroizing::new(other.to_string().into_bytes())),
        [] => Err(Failure::new(
            Reason::PropertyNotFound,
            format!(
                "{field}: `{path}` selects nothing in version `{}` of remote secret `{}`: fix the path or add the property to the remote JSON",
                fetched.version_id, entry.key
            ),
        )),
        many => Err(Failure::new(
            Reason::PropertyNotFound,
            format!("{field}: `{path}` selects {} values in remote secret `{}`: narrow it to one", many.len(), entry.key),
        )),
    }
}

/// The Secret as it is now, as far as the decision needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentSecret {
    /// Whether it carries an owner reference to this ExternalSecret.
    pub owned: bool,
    /// Its data.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Its type.
    pub type_: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

/// What the Secret must look like besides its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretShape {
    /// Its name.
    pub name: String,
    /// Its type.
    pub type_: String,
    /// Labels it must carry.
    pub labels: BTreeMap<String, String>,
    /// Annotations it must carry.
    pub annotations: BTreeMap<String, String>,
}

/// What to do with the Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Create or update it with this data (every entry, in full).
    Write {
        /// The data.
        data: BTreeMap<String, Vec<u8>>,
        /// The versions the entries came from.
        versions: Vec<SyncedVersion>,
    },
    /// It already holds exactly this: write nothing.
    UpToDate {
        /// The versions the entries came from.
        versions: Vec<SyncedVersion>,
    },
    /// Leave it as it is (or absent) and report the failure.
    Keep(Failure),
}

/// Whether a Secret must be deleted and created again (its type is immutable).
pub fn needs_recreate(current: Option<&CurrentSecret>, shape: &SecretShape) -> bool {
    current.is_some_and(|c| c.owned && c.type_ != shape.type_)
}

/// A Secret that exists and is not this ExternalSecret's is never taken over.
pub fn conflict(current: Option<&CurrentSecret>, shape: &SecretShape) -> Option<Failure> {
    current.filter(|c| !c.owned).map(|_| {
        Failure::new(
            Reason::SecretConflict,
            format!(
                "spec.target.name: a Secret `{}` exists and is not owned by this ExternalSecret; it is left alone: pick another target name, or delete that Secret",
                shape.name
            ),
        )
    })
}

/// Decides what to do given each planned entry's answer (in the order of `entries`).
pub fn decide(
    entries: &[PlannedEntry],
    answers: &[Result<Fetched, StoreError>],
    current: Option<&CurrentSecret>,
    shape: &SecretShape,
) -> Decision {
    if let Some(failure) = conflict(current, shape) {
        return Decision::Keep(failure);
    }
    let mut data = BTreeMap::new();
    let mut versions = Vec::new();
    let mut failures = Vec::new();
    for (entry, answer) in entries.iter().zip(answers) {
        match answer.as_ref().map_err(|error| classify(entry, error)).and_then(|fetched| extract(entry, fetched).map(|v| (fetched, v))) {
            Ok((fetched, value)) => {
                data.insert(entry.name.clone(), value.to_vec());
                versions.push(SyncedVersion { name: entry.name.clone(), key: entry.key.clone(), version_id: fetched.version_id.clone() });
            }
            Err(failure) => failures.push(failure),
        }
    }
    if let Some(first) = failures.first() {
        let mut failure = first.clone();
        if failures.len() > 1 {
            failure.message.push_str(&format!(" (and {} more failing entries)", failures.len() - 1));
        }
        return Decision::Keep(failure);
    }
    let up_to_date = current.is_some_and(|c| {
        c.data == data
            && c.type_ == shape.type_
            && shape.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v))
            && shape.annotations.iter().all(|(k, v)| c.annotations.get(k) == Some(v))
    });
    if up_to_date { Decision::UpToDate { versions } } else { Decision::Write { data, versions } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DataEntry, DeletionPolicy, StoreRef};
    use mock_kms::api::Action;

    fn entry(name: &str, key: &str, property: Option<&str>) -> DataEntry {
        DataEntry { key: key.into(), name: name.into(), version_stage: None, version_id: None, property: property.map(Into::into) }
    }

    fn spec(data: Vec<DataEntry>) -> ExternalSecretSpec {
        ExternalSecretSpec {
            secret_store_ref: StoreRef { name: "store".into(), kind: Default::default() },
            data,
            target: None,
            refresh_interval: None,
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    fn fetched(version: &str, value: &str) -> Result<Fetched, StoreError> {
        Ok(Fetched { version_id: version.into(), value: Zeroizing::new(value.into()) })
    }

    fn shape() -> SecretShape {
        SecretShape { name: "app".into(), type_: "Opaque".into(), ..Default::default() }
    }

    fn owned(data: &[(&str, &str)]) -> CurrentSecret {
        CurrentSecret {
            owned: true,
            data: data.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
            type_: "Opaque".into(),
            ..Default::default()
        }
    }

    const SECRET: &str = "s3cr3t-value";

    #[test]
    fn every_entry_read_writes_the_whole_secret_and_an_equal_secret_is_left_alone() {
        let entries = plan(&spec(vec![entry("password", "db", Some("password")), entry("raw", "token", None)])).unwrap();
        let answers = [fetched("v1", &format!(r#"{{"user":"app","password":"{SECRET}"}}"#)), fetched("t1", "tok")];
        let Decision::Write { data, versions } = decide(&entries, &answers, None, &shape()) else { panic!("expected a write") };
        assert_eq!(data["password"], SECRET.as_bytes());
        assert_eq!(data["raw"], b"tok");
        assert_eq!(versions[0].version_id, "v1");
        let current = owned(&[("password", SECRET), ("raw", "tok")]);
        assert!(matches!(decide(&entries, &answers, Some(&current), &shape()), Decision::UpToDate { .. }));
        let stale = owned(&[("password", "old"), ("raw", "tok")]);
        assert!(matches!(decide(&entries, &answers, Some(&stale), &shape()), Decision::Write { .. }));
    }

    #[test]
    fn store_errors_keep_the_last_good_secret_with_the_reason() {
        let entries = plan(&spec(vec![entry("password", "db", None)])).unwrap();
        let current = owned(&[("password", SECRET)]);
        let cases = [
            (
                StoreError::Unavailable { action: Action::GetSecretValue, endpoint: "http://kms".into(), problem: "cannot connect".into() },
                Reason::StoreUnavailable,
                Retry::Backoff,
            ),
            (StoreError::Throttled { action: Action::GetSecretValue, retry_after: None }, Reason::Throttled, Retry::Backoff),
            (
                StoreError::Denied { action: Action::GetSecretValue, message: "access key `sync` is not allowed".into() },
                Reason::AccessDenied,
                Retry::Poll,
            ),
            (
                StoreError::NotFound { action: Action::GetSecretValue, message: "secret `db` not found".into() },
                Reason::RemoteSecretDeleted,
                Retry::Poll,
            ),
        ];
        for (error, reason, retry) in cases {
            let decision = decide(&entries, &[Err(error.clone())], Some(&current), &shape());
            let Decision::Keep(failure) = decision else { panic!("{error:?} must keep the Secret, got {decision:?}") };
            assert_eq!((failure.reason, failure.reason.retry()), (reason, retry), "{error:?}");
            assert!(failure.message.contains("spec.data[0]") || failure.message.contains("remote secret `db`"), "{}", failure.message);
        }
    }

    #[test]
    fn one_failing_entry_keeps_the_whole_secret() {
        let entries = plan(&spec(vec![entry("a", "one", None), entry("b", "two", None)])).unwrap();
        let error = StoreError::NotFound { action: Action::GetSecretValue, message: "secret `two` not found".into() };
        let decision = decide(&entries, &[fetched("v2", "new"), Err(error)], Some(&owned(&[("a", "old"), ("b", "old")])), &shape());
        assert!(matches!(decision, Decision::Keep(Failure { reason: Reason::RemoteSecretDeleted, .. })), "{decision:?}");
    }

    #[test]
    fn what_the_schema_cannot_catch_names_the_field_and_never_the_value() {
        let bad_path = plan(&spec(vec![entry("p", "db", Some("$.[unclosed"))])).unwrap_err();
        assert_eq!(bad_path.reason, Reason::InvalidSpec);
        assert!(bad_path.message.starts_with("spec.data[0].property: `$.[unclosed` is not a JSON path"), "{}", bad_path.message);
        let mut staged = entry("p", "db", None);
        staged.version_stage = Some("ACSCurent".into());
        assert!(
            plan(&spec(vec![staged])).unwrap_err().message.starts_with("spec.data[0].versionStage: version stage `ACSCurent` is reserved")
        );
        let duplicate = plan(&spec(vec![entry("p", "a", None), entry("p", "b", None)])).unwrap_err();
        assert!(duplicate.message.starts_with("spec.data[1].name"), "{}", duplicate.message);

        let entries = plan(&spec(vec![entry("p", "db", Some("password"))])).unwrap();
        for value in [format!(r#"{{"pass":"{SECRET}"}}"#), format!("plain {SECRET}")] {
            let Decision::Keep(failure) = decide(&entries, &[fetched("v1", &value)], None, &shape()) else { panic!("expected keep") };
            assert_eq!(failure.reason, Reason::PropertyNotFound);
            assert!(failure.message.starts_with("spec.data[0].property"), "{}", failure.message);
            assert!(!failure.message.contains(SECRET), "a value leaked into the message: {}", failure.message);
        }
        let nested = plan(&spec(vec![entry("p", "db", Some("$.db"))])).unwrap();
        let Decision::Write { data, .. } = decide(&nested, &[fetched("v1", r#"{"db":{"port":5432}}"#)], None, &shape()) else { panic!() };
        assert_eq!(data["p"], br#"{"port":5432}"#);
    }

    /// A JSON path of the shapes users write, and of shapes no one should.
    fn json_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            prop::sample::select(vec![
                "$",
                ".",
                "..",
                "*",
                "[",
                "]",
                "[0]",
                "[-1]",
                "[1:]",
                "[::-1]",
                "['a']",
                "[\"b\"]",
                "[?(@.a > 1)]",
                "[?(@.a == 's3cr3t')]",
                "@",
                "'",
                "\"",
                "a",
                "db",
                "password",
                "length()",
                "[*]",
                " ",
                "\u{0}",
                "é",
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,6}",
            any::<i64>().prop_map(|n| format!("[{n}]")),
        ];
        let soup = prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat());
        let segment =
            prop::sample::select(vec![".a", ".db", ".password", "[0]", "[-1]", "[*]", "..a", "..*", "['password']", "[?(@.a)]", "[1:3]"]);
        let well_formed = prop::collection::vec(segment, 0..5).prop_map(|segments| format!("${}", segments.concat()));
        prop_oneof![1 => soup, 2 => well_formed]
    }

    /// A remote value: JSON holding the secret at various depths, or text that is not JSON.
    fn remote_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::from(SECRET)),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            "[a-z]{0,6}".prop_map(serde_json::Value::from),
        ];
        let json = leaf
            .prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(prop::sample::select(vec!["a", "db", "password", "b", ""]), inner, 0..4)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
                ]
            })
            .prop_map(|v| v.to_string());
        prop_oneof![
            4 => json,
            1 => "\\PC{0,40}".prop_map(|t| format!("{t}{SECRET}")),
            1 => (1usize..3_000).prop_map(|n| format!("{}\"{SECRET}\"{}", "[".repeat(n), "]".repeat(n))),
        ]
    }

    proptest::proptest! {
        /// Issue 28: whatever path the spec gives and whatever the remote store holds, planning
        /// and extracting end with bytes or a Failure, and no Failure quotes the remote value.
        #[test]
        fn any_path_over_any_remote_value_extracts_or_fails_without_the_value(path in json_path(), value in remote_value()) {
            match plan(&spec(vec![entry("p", "db", Some(&path))])) {
                Err(failure) => proptest::prop_assert_eq!(failure.reason, Reason::InvalidSpec),
                Ok(entries) => {
                    let fetched = Fetched { version_id: "v1".into(), value: Zeroizing::new(value) };
                    if let Err(failure) = extract(&entries[0], &fetched) {
                        proptest::prop_assert!(!failure.message.contains(SECRET), "a remote value in the message: {}", failure.message);
                    }
                }
            }
        }
    }

    #[test]
    fn a_secret_of_someone_else_is_never_taken_over() {
        let entries = plan(&spec(vec![entry("p", "db", None)])).unwrap();
        let foreign = CurrentSecret { owned: false, ..owned(&[("p", "theirs")]) };
        let Decision::Keep(failure) = decide(&entries, &[fetched("v1", "mine")], Some(&foreign), &shape()) else { panic!() };
        assert_eq!(failure.reason, Reason::SecretConflict);
        assert!(failure.message.starts_with("spec.target.name: a Secret `app` exists"));
        let mut typed = shape();
        typed.type_ = "kubernetes.io/basic-auth".into();
        assert!(needs_recreate(Some(&owned(&[])), &typed));
        assert!(!needs_recreate(Some(&foreign), &typed));
    }
}
