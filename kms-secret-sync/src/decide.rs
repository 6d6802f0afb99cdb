//! The reconcile decisions as pure functions: which remote secrets to read ([`plan`]), what a
//! remote answer or error means ([`classify`], [`extract`]), and what to do with the Secret given
//! every answer and the Secret as it is ([`decide`]). The controller only carries them out.
//!
//! What goes into the Secret follows ack-secret-manager (commit 223ebff,
//! `pkg/backend/provider/kms/kms_service.go`, `pkg/utils/util.go`): a `data` entry puts the
//! whole remote value under `name`, or each `jmesPath` result under its `objectAlias` (the value
//! parsed as YAML, which JSON is; strings as they are, numbers and booleans as text, objects and
//! lists as YAML); a `dataProcess` entry puts every top-level key of the YAML/JSON value under
//! its own key (strings as they are, anything else as YAML), renamed by each `replaceRule` in
//! turn; `data` comes first, `dataProcess` after, a later key wins.
//!
//! Where the two differ, on purpose: the Secret is written only when every entry was read and
//! extracted; any failure — a store outage, throttling, a denied call, a deleted remote secret, a
//! JMESPath that selects nothing, a bad regular expression — keeps the last good Secret untouched
//! and is reported as `Ready=False` with a reason and a message naming the field and the fix
//! (ack-secret-manager writes what it could read, dropping the rest). No message carries a value.

use std::collections::BTreeMap;

use mock_kms::api::secrets::VersionStage;
use zeroize::Zeroizing;

use crate::crd::{DataSource, ExternalSecretSpec, SecretStoreRef, SyncedVersion};
use crate::error::StoreError;

/// Why the `Ready` condition is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum Reason {
    /// Every entry is in the Secret.
    Synced,
    /// The spec is wrong in a way the schema cannot see (a bad JMESPath or regular expression, a
    /// reserved stage, a key a Secret cannot hold, …).
    InvalidSpec,
    /// The store the spec names does not exist.
    StoreNotFound,
    /// The store is in another namespace and does not allow this one (its
    /// `alibabacloud.com/allow-namespaces` annotation).
    StoreNotAllowed,
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
    /// The remote value is not JSON/YAML, or a JMESPath selects nothing.
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

/// What a source puts into the Secret, compiled once by [`plan`].
#[derive(Debug, Clone)]
pub enum Extraction {
    /// The whole remote value under this key (a `data` entry without `jmesPath`).
    Whole(String),
    /// Each expression's result under its alias (a `data` entry's `jmesPath`), in spec order.
    Jmes(Vec<(String, jmespath::Expression<'static>)>),
    /// Every top-level key of the remote YAML/JSON value, renamed by these rules (source regular
    /// expression, replacement) in order (a `dataProcess` entry).
    Split(Vec<(regex::Regex, String)>),
}

/// One validated source of the spec: which remote secret to read, with which store, and what
/// goes into the Secret.
#[derive(Debug, Clone)]
pub struct PlannedSource {
    /// Where it is in the spec: `spec.data[0]`, `spec.dataProcess[1].extract`.
    pub field: String,
    /// The store to read with (`None`: the controller's own credential).
    pub store: Option<SecretStoreRef>,
    /// The remote secret.
    pub key: String,
    /// The version to read.
    pub version_id: Option<String>,
    /// The stage to read (none with neither: the current version).
    pub stage: Option<VersionStage>,
    /// What it puts into the Secret.
    pub extraction: Extraction,
}

impl PlannedSource {
    fn field(&self, field: &str) -> String {
        format!("{}.{field}", self.field)
    }
}

/// Whether `key` may be a key of a Secret's data (Kubernetes: `[-._a-zA-Z0-9]+`, at most 253).
pub fn is_secret_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 253 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn secret_key_problem(key: &str) -> String {
    format!("`{key}` cannot be a key of a Secret (letters, digits, `-`, `_` and `.` only, at most 253)")
}

/// Validates the spec (what the CRD schema cannot check) into the remote secrets to read.
pub fn plan(spec: &ExternalSecretSpec) -> Result<Vec<PlannedSource>, Failure> {
    let invalid = |field: String, problem: String| Failure::new(Reason::InvalidSpec, format!("{field}: {problem}"));
    match spec.provider.as_deref() {
        None | Some("kms") => {}
        Some("oos") => {
            return Err(invalid(
                "spec.provider".into(),
                "`oos` (OOS encrypted parameters) is not served by the lab's store: use `kms` (or leave it out)".into(),
            ));
        }
        Some(other) => return Err(invalid("spec.provider".into(), format!("`{other}` is not a provider: use `kms` or `oos`"))),
    }
    if spec.data.is_empty() && spec.data_process.is_empty() {
        return Err(invalid("spec".into(), "neither data nor dataProcess is given: nothing to sync".into()));
    }
    let mut planned = Vec::new();
    for (index, entry) in spec.data.iter().enumerate() {
        let field = format!("spec.data[{index}]");
        let extraction = if entry.jmes_path.is_empty() {
            match entry.name.as_deref() {
                Some(name) if is_secret_key(name) => Extraction::Whole(name.to_owned()),
                Some(name) => return Err(invalid(format!("{field}.name"), secret_key_problem(name))),
                None => {
                    return Err(invalid(
                        format!("{field}.name"),
                        "required without jmesPath: the key the remote value goes under in the Secret".into(),
                    ));
                }
            }
        } else {
            let mut paths = Vec::new();
            for (j, object) in entry.jmes_path.iter().enumerate() {
                let expression = jmespath::compile(&object.path).map_err(|error| {
                    invalid(
                        format!("{field}.jmesPath[{j}].path"),
                        format!("`{}` is not a JMESPath expression ({}): e.g. `password` or `friends[0].name`", object.path, error.reason),
                    )
                })?;
                if !is_secret_key(&object.object_alias) {
                    return Err(invalid(format!("{field}.jmesPath[{j}].objectAlias"), secret_key_problem(&object.object_alias)));
                }
                paths.push((object.object_alias.clone(), expression));
            }
            Extraction::Jmes(paths)
        };
        planned.push(source(field, entry, extraction)?);
    }
    for (index, process) in spec.data_process.iter().enumerate() {
        let Some(entry) = &process.extract else {
            return Err(invalid(format!("spec.dataProcess[{index}].extract"), "required: the remote secret to split into keys".into()));
        };
        let mut rules = Vec::new();
        for (j, rule) in process.replace_rule.iter().enumerate() {
            let regex = regex::Regex::new(&rule.source).map_err(|error| {
                let reason = error.to_string().lines().last().unwrap_or_default().trim().to_owned();
                invalid(
                    format!("spec.dataProcess[{index}].replaceRule[{j}].source"),
                    format!("`{}` is not a regular expression ({reason})", rule.source),
                )
            })?;
            rules.push((regex, rule.target.clone()));
        }
        planned.push(source(format!("spec.dataProcess[{index}].extract"), entry, Extraction::Split(rules))?);
    }
    Ok(planned)
}

fn source(field: String, entry: &DataSource, extraction: Extraction) -> Result<PlannedSource, Failure> {
    let invalid = |name: &str, problem: String| Failure::new(Reason::InvalidSpec, format!("{field}.{name}: {problem}"));
    if entry.version_id.is_some() && entry.version_stage.is_some() {
        return Err(invalid("versionId", "give versionId or versionStage, not both".into()));
    }
    let stage = entry
        .version_stage
        .as_deref()
        .map(|s| s.parse::<VersionStage>())
        .transpose()
        .map_err(|problem| invalid("versionStage", problem))?;
    Ok(PlannedSource {
        store: entry.secret_store_ref.clone(),
        key: entry.key.clone(),
        version_id: entry.version_id.clone(),
        stage,
        extraction,
        field,
    })
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

/// What a store error means for `source`.
pub fn classify(source: &PlannedSource, error: &StoreError) -> Failure {
    let what = match (&source.version_id, &source.stage) {
        (Some(id), _) => format!("version `{id}` of remote secret `{}`", source.key),
        (None, Some(stage)) => format!("stage {stage} of remote secret `{}`", source.key),
        (None, None) => format!("remote secret `{}`", source.key),
    };
    match error {
        StoreError::NotFound { message, .. } => Failure::new(
            Reason::RemoteSecretDeleted,
            format!(
                "{}: {what} is gone ({message}); the Secret keeps its last value: restore the remote secret or change the entry",
                source.field("key")
            ),
        ),
        StoreError::Denied { message, .. } => Failure::new(
            Reason::AccessDenied,
            format!("{}: reading {what} was denied ({message}); the Secret keeps its last value", source.field("key")),
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
        StoreError::Failed { .. } => Failure::new(Reason::StoreError, format!("{}: reading {what}: {error}", source.field("key"))),
    }
}

/// The remote value as ack-secret-manager reads it for `jmesPath` and `dataProcess`: YAML (which
/// JSON is), else JSON.
fn parse_structured(value: &str) -> Option<serde_json::Value> {
    serde_yaml::from_str::<serde_json::Value>(value).ok().or_else(|| serde_json::from_str(value).ok())
}

/// A value as YAML text (what ack-secret-manager's `yaml.Marshal` gives for what is not a string).
fn yaml_text(value: &serde_json::Value) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

/// A JMESPath result as ack-secret-manager writes it: a string as is, a number or boolean as Go's
/// `%v` prints it, an object or list as YAML; `None` for null.
fn jmes_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        }),
        other => Some(yaml_text(other)),
    }
}

/// Keys of a Secret and the bytes each gets.
pub type Extracted = Vec<(String, Zeroizing<Vec<u8>>)>;

/// The keys and bytes `source` puts into the Secret from `fetched`.
pub fn extract(source: &PlannedSource, fetched: &Fetched) -> Result<Extracted, Failure> {
    let not_structured = |field: String| {
        Failure::new(
            Reason::PropertyNotFound,
            format!(
                "{field}: version `{}` of remote secret `{}` is not JSON or YAML{}: store JSON/YAML, or read it whole",
                fetched.version_id,
                source.key,
                if matches!(source.extraction, Extraction::Split(_)) { " with keys at the top" } else { "" }
            ),
        )
    };
    match &source.extraction {
        Extraction::Whole(name) => Ok(vec![(name.clone(), Zeroizing::new(fetched.value.as_bytes().to_vec()))]),
        Extraction::Jmes(paths) => {
            let data = parse_structured(&fetched.value).ok_or_else(|| not_structured(source.field("jmesPath")))?;
            let data: jmespath::Variable = serde_json::from_value(data).map_err(|_| not_structured(source.field("jmesPath")))?;
            let mut out = Vec::new();
            for (j, (alias, expression)) in paths.iter().enumerate() {
                let field = source.field(&format!("jmesPath[{j}].path"));
                let path = expression.as_str();
                let found =
                    expression.search(&data).map_err(|e| Failure::new(Reason::InvalidSpec, format!("{field}: `{path}`: {}", e.reason)))?;
                let found = serde_json::to_value(&*found).unwrap_or(serde_json::Value::Null);
                let text = jmes_text(&found).ok_or_else(|| {
                    Failure::new(
                        Reason::PropertyNotFound,
                        format!(
                            "{field}: `{path}` selects nothing in version `{}` of remote secret `{}`: fix the path or add the property to the remote value",
                            fetched.version_id, source.key
                        ),
                    )
                })?;
                out.push((alias.clone(), Zeroizing::new(text.into_bytes())));
            }
            Ok(out)
        }
        Extraction::Split(rules) => {
            let Some(serde_json::Value::Object(map)) = parse_structured(&fetched.value) else {
                return Err(not_structured(source.field("key")));
            };
            let mut keys: BTreeMap<String, Zeroizing<Vec<u8>>> = map
                .into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(text) => text,
                        other => yaml_text(&other),
                    };
                    (k, Zeroizing::new(text.into_bytes()))
                })
                .collect();
            let process = source.field.trim_end_matches(".extract").to_owned();
            for (j, (regex, target)) in rules.iter().enumerate() {
                let mut renamed = BTreeMap::new();
                for (key, value) in keys {
                    let new = regex.replace_all(&key, target.as_str()).into_owned();
                    if renamed.contains_key(&new) {
                        return Err(Failure::new(
                            Reason::InvalidSpec,
                            format!(
                                "{process}.replaceRule[{j}]: two keys of remote secret `{}` become `{new}`: make the rule tell them apart",
                                source.key
                            ),
                        ));
                    }
                    renamed.insert(new, value);
                }
                keys = renamed;
            }
            if keys.keys().any(|k| !is_secret_key(k)) {
                return Err(Failure::new(
                    Reason::InvalidSpec,
                    format!(
                        "{process}: a key of remote secret `{}` cannot be a key of a Secret (letters, digits, `-`, `_` and `.` only): add a replaceRule",
                        source.key
                    ),
                ));
            }
            Ok(keys.into_iter().collect())
        }
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
}

/// What the Secret must look like besides its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretShape {
    /// Its name (the ExternalSecret's).
    pub name: String,
    /// Its type.
    pub type_: String,
    /// Labels it must carry.
    pub labels: BTreeMap<String, String>,
}

/// What to do with the Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Create or update it with this data (every source, in full).
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
                "metadata.name: a Secret `{}` exists and is not owned by this ExternalSecret; it is left alone (ack-secret-manager would overwrite it): delete or rename that Secret, or rename the ExternalSecret",
                shape.name
            ),
        )
    })
}

/// Decides what to do given each planned source's answer (in the order of `sources`).
pub fn decide(
    sources: &[PlannedSource],
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
    for (source, answer) in sources.iter().zip(answers) {
        match answer.as_ref().map_err(|error| classify(source, error)).and_then(|fetched| extract(source, fetched).map(|v| (fetched, v))) {
            Ok((fetched, values)) => {
                for (key, value) in values {
                    data.insert(key, value.to_vec());
                }
                versions.push(SyncedVersion {
                    entry: source.field.clone(),
                    key: source.key.clone(),
                    version_id: fetched.version_id.clone(),
                });
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
    let up_to_date =
        current.is_some_and(|c| c.data == data && c.type_ == shape.type_ && shape.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)));
    if up_to_date { Decision::UpToDate { versions } } else { Decision::Write { data, versions } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DataProcess, JmesPathObject, ReplaceRule};
    use mock_kms::api::Action;

    /// A `data` entry: the whole value under `name`, or (with `path`) what `path` selects under `name`.
    fn entry(name: &str, key: &str, path: Option<&str>) -> DataSource {
        let jmes_path = path.map(|p| vec![JmesPathObject { path: p.into(), object_alias: name.into() }]).unwrap_or_default();
        DataSource { key: key.into(), name: path.is_none().then(|| name.into()), jmes_path, ..Default::default() }
    }

    fn spec(data: Vec<DataSource>) -> ExternalSecretSpec {
        ExternalSecretSpec { data, ..Default::default() }
    }

    fn split(key: &str, rules: &[(&str, &str)]) -> ExternalSecretSpec {
        let replace_rule =
            rules.iter().map(|(source, target)| ReplaceRule { source: (*source).into(), target: (*target).into() }).collect();
        ExternalSecretSpec {
            data_process: vec![DataProcess { extract: Some(DataSource { key: key.into(), ..Default::default() }), replace_rule }],
            ..Default::default()
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

    fn written(sources: &[PlannedSource], answers: &[Result<Fetched, StoreError>]) -> BTreeMap<String, String> {
        match decide(sources, answers, None, &shape()) {
            Decision::Write { data, .. } => data.into_iter().map(|(k, v)| (k, String::from_utf8(v).unwrap())).collect(),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    const SECRET: &str = "s3cr3t-value";
    /// The remote value of ack-secret-manager's README (`test1`).
    const README_VALUE: &str = r#"{"name":"tom","age":"14","friends":[{"name":"lili"},{"name":"edf"}]}"#;

    #[test]
    fn the_readme_objects_give_the_secrets_ack_secret_manager_gives() {
        let whole = plan(&spec(vec![entry("test1", "test1", None)])).unwrap();
        assert_eq!(written(&whole, &[fetched("v1", README_VALUE)]), BTreeMap::from([("test1".into(), README_VALUE.into())]));

        let mut jmes = entry("name", "test1", Some("name"));
        jmes.jmes_path.push(JmesPathObject { path: "friends[0].name".into(), object_alias: "friendname".into() });
        let jmes = plan(&spec(vec![jmes])).unwrap();
        assert_eq!(
            written(&jmes, &[fetched("v1", README_VALUE)]),
            BTreeMap::from([("name".into(), "tom".into()), ("friendname".into(), "lili".into())])
        );

        // What the code at 223ebff gives (YAML first): the README's listing shows JSON-quoted
        // values from an older release (`"tom"`, `"14"`), a difference the README has not caught up with.
        let extract = plan(&split("test1", &[("^n.*e$", "alibabacloud"), ("^f.*s$", "ack")])).unwrap();
        assert_eq!(
            written(&extract, &[fetched("v1", README_VALUE)]),
            BTreeMap::from([
                ("alibabacloud".into(), "tom".into()),
                ("age".into(), "14".into()),
                ("ack".into(), "- name: lili\n- name: edf\n".into()),
            ])
        );
    }

    #[test]
    fn jmes_results_are_written_as_ack_secret_manager_writes_them() {
        let value = r#"{"port": 5432, "ratio": 1.5, "whole": 100.0, "on": true, "db": {"user": "app"}, "list": [1, 2]}"#;
        let mut source = entry("port", "db", Some("port"));
        for (path, alias) in [("ratio", "ratio"), ("whole", "whole"), ("on", "on"), ("db", "db"), ("list", "list")] {
            source.jmes_path.push(JmesPathObject { path: path.into(), object_alias: alias.into() });
        }
        let got = written(&plan(&spec(vec![source])).unwrap(), &[fetched("v1", value)]);
        let want = [("port", "5432"), ("ratio", "1.5"), ("whole", "100"), ("on", "true"), ("db", "user: app\n"), ("list", "- 1\n- 2\n")];
        assert_eq!(got, want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let yaml = "user: app\npassword: hunter2\n";
        let got = written(&plan(&spec(vec![entry("p", "db", Some("password"))])).unwrap(), &[fetched("v1", yaml)]);
        assert_eq!(got["p"], "hunter2", "a YAML remote value is read as ack-secret-manager reads it");
    }

    #[test]
    fn every_source_read_writes_the_whole_secret_later_keys_win_and_an_equal_secret_is_left_alone() {
        let mut spec = spec(vec![entry("password", "db", Some("password")), entry("raw", "token", None)]);
        spec.data_process = split("more", &[]).data_process;
        let sources = plan(&spec).unwrap();
        let answers =
            [fetched("v1", &format!(r#"{{"user":"app","password":"{SECRET}"}}"#)), fetched("t1", "tok"), fetched("m1", "raw: later")];
        let Decision::Write { data, versions } = decide(&sources, &answers, None, &shape()) else { panic!("expected a write") };
        assert_eq!(data["password"], SECRET.as_bytes());
        assert_eq!(data["raw"], b"later", "dataProcess comes after data and a later key wins, as in ack-secret-manager");
        assert_eq!(
            versions.iter().map(|v| v.entry.as_str()).collect::<Vec<_>>(),
            ["spec.data[0]", "spec.data[1]", "spec.dataProcess[0].extract"]
        );
        let current = owned(&[("password", SECRET), ("raw", "later")]);
        assert!(matches!(decide(&sources, &answers, Some(&current), &shape()), Decision::UpToDate { .. }));
        let stale = owned(&[("password", "old"), ("raw", "later")]);
        assert!(matches!(decide(&sources, &answers, Some(&stale), &shape()), Decision::Write { .. }));
    }

    #[test]
    fn store_errors_keep_the_last_good_secret_with_the_reason() {
        let sources = plan(&spec(vec![entry("password", "db", None)])).unwrap();
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
            let decision = decide(&sources, &[Err(error.clone())], Some(&current), &shape());
            let Decision::Keep(failure) = decision else { panic!("{error:?} must keep the Secret, got {decision:?}") };
            assert_eq!((failure.reason, failure.reason.retry()), (reason, retry), "{error:?}");
            assert!(failure.message.contains("spec.data[0]") || failure.message.contains("remote secret `db`"), "{}", failure.message);
        }
    }

    #[test]
    fn one_failing_source_keeps_the_whole_secret() {
        let sources = plan(&spec(vec![entry("a", "one", None), entry("b", "two", None)])).unwrap();
        let error = StoreError::NotFound { action: Action::GetSecretValue, message: "secret `two` not found".into() };
        let decision = decide(&sources, &[fetched("v2", "new"), Err(error)], Some(&owned(&[("a", "old"), ("b", "old")])), &shape());
        assert!(matches!(decision, Decision::Keep(Failure { reason: Reason::RemoteSecretDeleted, .. })), "{decision:?}");
    }

    #[test]
    fn what_the_schema_cannot_catch_names_the_field_and_never_the_value() {
        let problem = |spec: ExternalSecretSpec| plan(&spec).unwrap_err();
        let bad_path = problem(spec(vec![entry("p", "db", Some("friends[0"))]));
        assert_eq!(bad_path.reason, Reason::InvalidSpec);
        assert!(
            bad_path.message.starts_with("spec.data[0].jmesPath[0].path: `friends[0` is not a JMESPath expression"),
            "{}",
            bad_path.message
        );
        let bad_regex = problem(split("db", &[("^n.*e$", "x"), ("(unclosed", "y")]));
        assert!(
            bad_regex.message.starts_with("spec.dataProcess[0].replaceRule[1].source: `(unclosed` is not a regular expression"),
            "{}",
            bad_regex.message
        );
        let mut staged = entry("p", "db", None);
        staged.version_stage = Some("ACSCurent".into());
        assert!(problem(spec(vec![staged])).message.starts_with("spec.data[0].versionStage: version stage `ACSCurent` is reserved"));
        let nameless = DataSource { key: "db".into(), ..Default::default() };
        assert!(problem(spec(vec![nameless])).message.starts_with("spec.data[0].name: required without jmesPath"));
        assert!(problem(spec(vec![entry("a b", "db", None)])).message.starts_with("spec.data[0].name: `a b` cannot be a key of a Secret"));
        assert!(
            problem(ExternalSecretSpec { provider: Some("oos".into()), ..spec(vec![entry("p", "db", None)]) })
                .message
                .starts_with("spec.provider: `oos`")
        );
        assert!(problem(ExternalSecretSpec::default()).message.starts_with("spec: neither data nor dataProcess"));

        let sources = plan(&spec(vec![entry("p", "db", Some("password"))])).unwrap();
        for value in [format!(r#"{{"pass":"{SECRET}"}}"#), format!("plain {SECRET}"), format!("[\"{SECRET}\"")] {
            let Decision::Keep(failure) = decide(&sources, &[fetched("v1", &value)], None, &shape()) else { panic!("expected keep") };
            assert_eq!(failure.reason, Reason::PropertyNotFound);
            assert!(failure.message.starts_with("spec.data[0].jmesPath"), "{}", failure.message);
            assert!(!failure.message.contains(SECRET), "a value leaked into the message: {}", failure.message);
        }
        let splitting = plan(&split("db", &[(".*", "same")])).unwrap();
        let Decision::Keep(failure) = decide(&splitting, &[fetched("v1", r#"{"a": "1", "b": "2"}"#)], None, &shape()) else { panic!() };
        assert!(
            failure.message.starts_with("spec.dataProcess[0].replaceRule[0]: two keys of remote secret `db` become `same`"),
            "{}",
            failure.message
        );
        let unfit = plan(&split("db", &[])).unwrap();
        let Decision::Keep(failure) = decide(&unfit, &[fetched("v1", &format!("{{\"{SECRET} x\": 1}}"))], None, &shape()) else { panic!() };
        assert!(failure.message.contains("add a replaceRule") && !failure.message.contains(SECRET), "{}", failure.message);
    }

    /// A JMESPath of the shapes users write, and of shapes no one should.
    fn jmes_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            prop::sample::select(vec![
                ".",
                "..",
                "*",
                "[",
                "]",
                "[0]",
                "[-1]",
                "[1:]",
                "[::-1]",
                "[?a > `1`]",
                "[?a == 's3cr3t']",
                "@",
                "'",
                "\"",
                "`",
                "a",
                "db",
                "password",
                "length(@)",
                "[*]",
                "|",
                "&&",
                "||",
                "!",
                "{a: b}",
                "[a, b]",
                " ",
                "\u{0}",
                "é",
                "to_string(@)",
                "sort_by(@, &a)",
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,6}",
            any::<i64>().prop_map(|n| format!("[{n}]")),
        ];
        let soup = prop::collection::vec(piece, 1..8).prop_map(|pieces| pieces.concat());
        let segment = prop::sample::select(vec![".a", ".db", ".password", "[0]", "[-1]", "[*]", "[].a", "[?a]", "[1:3]", "| [0]"]);
        let well_formed = (prop::sample::select(vec!["a", "db", "password", "@"]), prop::collection::vec(segment, 0..5))
            .prop_map(|(head, segments)| format!("{head}{}", segments.concat()));
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
        fn any_jmes_path_over_any_remote_value_extracts_or_fails_without_the_value(path in jmes_path(), value in remote_value()) {
            match plan(&spec(vec![entry("p", "db", Some(&path))])) {
                Err(failure) => proptest::prop_assert_eq!(failure.reason, Reason::InvalidSpec),
                Ok(sources) => {
                    let fetched = Fetched { version_id: "v1".into(), value: Zeroizing::new(value) };
                    if let Err(failure) = extract(&sources[0], &fetched) {
                        proptest::prop_assert!(!failure.message.contains(SECRET), "a remote value in the message: {}", failure.message);
                    }
                }
            }
        }

        /// The same for dataProcess: any rules over any remote value.
        #[test]
        fn any_replace_rule_over_any_remote_value_extracts_or_fails_without_the_value(
            source in "[a-z.*^$()\\[\\]+?|\\\\]{0,8}", target in "[a-z$0-9{}]{0,6}", value in remote_value(),
        ) {
            match plan(&split("db", &[(&source, &target)])) {
                Err(failure) => proptest::prop_assert_eq!(failure.reason, Reason::InvalidSpec),
                Ok(sources) => {
                    let fetched = Fetched { version_id: "v1".into(), value: Zeroizing::new(value) };
                    if let Err(failure) = extract(&sources[0], &fetched) {
                        proptest::prop_assert!(!failure.message.contains(SECRET), "a remote value in the message: {}", failure.message);
                    }
                }
            }
        }
    }

    #[test]
    fn a_secret_of_someone_else_is_never_taken_over() {
        let sources = plan(&spec(vec![entry("p", "db", None)])).unwrap();
        let foreign = CurrentSecret { owned: false, ..owned(&[("p", "theirs")]) };
        let Decision::Keep(failure) = decide(&sources, &[fetched("v1", "mine")], Some(&foreign), &shape()) else { panic!() };
        assert_eq!(failure.reason, Reason::SecretConflict);
        assert!(failure.message.starts_with("metadata.name: a Secret `app` exists"));
        let mut typed = shape();
        typed.type_ = "kubernetes.io/basic-auth".into();
        assert!(needs_recreate(Some(&owned(&[])), &typed));
        assert!(!needs_recreate(Some(&foreign), &typed));
    }
}
