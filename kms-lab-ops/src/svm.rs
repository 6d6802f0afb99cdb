//! `kms-lab migrate --via svm`: the in-tree way to rewrite every object after a KEK rotation or
//! a provider change, StorageVersionMigration (KEP-4192, `storagemigration.k8s.io`). One
//! `StorageVersionMigration` per resource (`spec.resource: {group, resource}`); the
//! `storage-version-migrator-controller` of kube-controller-manager then re-writes every object
//! the apiserver reports stale, and sets the condition `Succeeded` (or `Failed`). This module
//! creates them and waits, bounded, for each outcome.
//!
//! The API is `storagemigration.k8s.io/v1` from Kubernetes v1.37 (GA, on by default), and
//! `v1beta1` on v1.35–v1.36, where the apiserver needs `--feature-gates=StorageVersionMigrator=true`
//! and `--runtime-config=storagemigration.k8s.io/v1beta1=true`, and kube-controller-manager the
//! same feature gate. The controller waits for the garbage collector's informers to catch up
//! with the resource ("GC cache is not up to date"), so a migration of an idle resource may wait
//! for the apiserver's next watch bookmark (about a minute) before it starts.

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use crate::error::OpsError;
use crate::resource::Resource;

/// The API group of StorageVersionMigration.
pub const GROUP: &str = "storagemigration.k8s.io";
/// How long one migration may take by default, creation to `Succeeded`: long enough for the
/// controller's wait on the garbage collector's cache (a watch bookmark, about a minute, plus
/// its retry backoff) and the rewrite itself.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// How often a migration's status is read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// The served version of the StorageVersionMigration API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmVersion {
    /// `storagemigration.k8s.io/v1`: Kubernetes v1.37 and later (on by default).
    V1,
    /// `storagemigration.k8s.io/v1beta1`: Kubernetes v1.35–v1.36 (off by default).
    V1beta1,
}

impl SvmVersion {
    /// The version string, e.g. `v1`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1beta1 => "v1beta1",
        }
    }

    /// The `apiVersion`, e.g. `storagemigration.k8s.io/v1`.
    pub fn api_version(self) -> String {
        format!("{GROUP}/{}", self.name())
    }

    /// The API resource `storageversionmigrations` at this version (cluster-scoped).
    pub fn api_resource(self) -> ApiResource {
        ApiResource {
            group: GROUP.to_owned(),
            version: self.name().to_owned(),
            api_version: self.api_version(),
            kind: "StorageVersionMigration".to_owned(),
            plural: "storageversionmigrations".to_owned(),
        }
    }

    /// The version the cluster serves (v1 preferred), found by discovery; an error that says how
    /// to turn the API on when it serves neither.
    pub async fn discover(client: &kube::Client) -> Result<Self, OpsError> {
        let served = client
            .list_api_groups()
            .await
            .map_err(|source| OpsError::Api { what: "list the API groups (to find storagemigration.k8s.io)".into(), source })?;
        let versions: Vec<String> =
            served.groups.iter().filter(|g| g.name == GROUP).flat_map(|g| g.versions.iter().map(|v| v.version.clone())).collect();
        Self::choose(&versions).ok_or(OpsError::SvmUnavailable)
    }

    /// v1 if served, else v1beta1 if served.
    fn choose(served: &[String]) -> Option<Self> {
        [Self::V1, Self::V1beta1].into_iter().find(|v| served.iter().any(|s| s == v.name()))
    }
}

/// The StorageVersionMigration object for `resource`, named by the server from `generate_name`.
pub fn manifest(version: SvmVersion, generate_name: &str, resource: &Resource) -> Value {
    json!({
        "apiVersion": version.api_version(),
        "kind": "StorageVersionMigration",
        "metadata": {"generateName": generate_name},
        "spec": {"resource": {"group": resource.group, "resource": resource.plural}},
    })
}

/// Where a migration is, from its `status.conditions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvmState {
    /// No condition yet: the controller has not picked it up (or waits for the garbage
    /// collector's cache).
    Pending,
    /// `Running` is true.
    Running,
    /// `Succeeded` is true.
    Succeeded,
    /// `Failed` is true, with the condition's message.
    Failed(String),
}

impl SvmState {
    /// The state the object's `status` says (a terminal condition wins over `Running`).
    pub fn of(object: &Value) -> Self {
        let conditions = object.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        let is_true = |kind: &str| {
            conditions
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind) && c.get("status").and_then(Value::as_str) == Some("True"))
        };
        if let Some(failed) = is_true("Failed") {
            let text = |key: &str| failed.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
            let message = [text("reason"), text("message")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(": ");
            return Self::Failed(if message.is_empty() { "no message".to_owned() } else { message });
        }
        if is_true("Succeeded").is_some() {
            return Self::Succeeded;
        }
        if is_true("Running").is_some() { Self::Running } else { Self::Pending }
    }
}

impl std::fmt::Display for SvmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending => f.write_str("no condition yet (not picked up by the controller)"),
            Self::Running => f.write_str("Running"),
            Self::Succeeded => f.write_str("Succeeded"),
            Self::Failed(message) => write!(f, "Failed ({message})"),
        }
    }
}

/// What to migrate and how.
#[derive(Debug, Clone)]
pub struct SvmOptions {
    /// The resources, one migration each, in order (default: secrets).
    pub resources: Vec<Resource>,
    /// How long each migration may take, creation to `Succeeded`.
    pub deadline: Duration,
}

impl Default for SvmOptions {
    fn default() -> Self {
        Self { resources: vec![Resource::secrets()], deadline: DEFAULT_DEADLINE }
    }
}

/// What one migration did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SvmResource {
    /// The resource, e.g. `secrets`.
    pub resource: String,
    /// The StorageVersionMigration's name.
    pub name: String,
    /// Objects of the resource the API listed when the migration was created (the controller
    /// visits each; it re-writes those the apiserver reports stale, which the API does not count).
    pub objects: u64,
    /// Seconds from creation to `Succeeded`.
    pub seconds: f64,
}

/// What a `--via svm` migration did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SvmReport {
    /// The API version used.
    pub api_version: String,
    /// Per resource.
    pub resources: Vec<SvmResource>,
    /// Wall time of all migrations.
    pub seconds: f64,
}

/// Creates one StorageVersionMigration per resource and waits until each has `Succeeded`;
/// `progress` hears each resource's state as it changes. A `Failed` migration, or one not
/// done within the deadline, is an error naming it, its state and what to check.
pub async fn migrate_via_svm(
    client: &kube::Client,
    options: &SvmOptions,
    progress: &mut (dyn FnMut(&Resource, &SvmState) + Send),
) -> Result<SvmReport, OpsError> {
    let version = SvmVersion::discover(client).await?;
    let migrations: Api<DynamicObject> = Api::all_with(client.clone(), &version.api_resource());
    let started = Instant::now();
    let mut report = SvmReport { api_version: version.api_version(), resources: Vec::new(), seconds: 0.0 };
    for resource in &options.resources {
        let objects = count(client, resource).await?;
        let generate_name = format!("kms-lab-{}-", resource.to_string().replace('.', "-"));
        let object: DynamicObject = serde_json::from_value(manifest(version, &generate_name, resource))
            .map_err(|e| OpsError::Request(format!("a StorageVersionMigration for {resource}: {e}")))?;
        let one = Instant::now();
        let created = migrations
            .create(&PostParams::default(), &object)
            .await
            .map_err(|source| OpsError::Api { what: format!("create a StorageVersionMigration for {resource}"), source })?;
        let name = created.metadata.name.clone().unwrap_or_default();
        let mut last = SvmState::Pending;
        progress(resource, &last);
        loop {
            let current = migrations
                .get(&name)
                .await
                .map_err(|source| OpsError::Api { what: format!("read StorageVersionMigration `{name}`"), source })?;
            let state = SvmState::of(&serde_json::to_value(&current).unwrap_or_default());
            if state != last {
                progress(resource, &state);
                last = state.clone();
            }
            match state {
                SvmState::Succeeded => break,
                SvmState::Failed(message) => {
                    return Err(OpsError::SvmFailed { name, resource: resource.to_string(), message });
                }
                SvmState::Pending | SvmState::Running if one.elapsed() >= options.deadline => {
                    return Err(OpsError::SvmTimeout {
                        name,
                        resource: resource.to_string(),
                        seconds: options.deadline.as_secs(),
                        state: last.to_string(),
                    });
                }
                SvmState::Pending | SvmState::Running => tokio::time::sleep(POLL).await,
            }
        }
        report.resources.push(SvmResource { resource: resource.to_string(), name, objects, seconds: one.elapsed().as_secs_f64() });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// How many objects of `resource` the API lists (metadata only, in pages).
async fn count(client: &kube::Client, resource: &Resource) -> Result<u64, OpsError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource.api_resource(client).await?);
    let mut total = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(500);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = api.list_metadata(&params).await.map_err(|source| OpsError::Api { what: format!("list {resource}"), source })?;
        total += page.items.len() as u64;
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_names_the_resource_by_group_and_plural() {
        let object = manifest(SvmVersion::V1, "kms-lab-secrets-", &Resource::secrets());
        assert_eq!(
            object,
            json!({
                "apiVersion": "storagemigration.k8s.io/v1",
                "kind": "StorageVersionMigration",
                "metadata": {"generateName": "kms-lab-secrets-"},
                "spec": {"resource": {"group": "", "resource": "secrets"}},
            })
        );
        let widgets = Resource::parse("widgets.example.com").unwrap();
        let object = manifest(SvmVersion::V1beta1, "w-", &widgets);
        assert_eq!(object["apiVersion"], "storagemigration.k8s.io/v1beta1");
        assert_eq!(object["spec"]["resource"], json!({"group": "example.com", "resource": "widgets"}));
        let api = SvmVersion::V1beta1.api_resource();
        assert_eq!((api.api_version.as_str(), api.plural.as_str()), ("storagemigration.k8s.io/v1beta1", "storageversionmigrations"));
    }

    #[test]
    fn v1_is_preferred_and_neither_means_unavailable() {
        let served = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(SvmVersion::choose(&served(&["v1beta1", "v1"])), Some(SvmVersion::V1));
        assert_eq!(SvmVersion::choose(&served(&["v1beta1"])), Some(SvmVersion::V1beta1));
        assert_eq!(SvmVersion::choose(&served(&["v1alpha1"])), None);
        let message = OpsError::SvmUnavailable.to_string();
        assert!(message.contains("StorageVersionMigrator=true") && message.contains("v1.37"), "{message}");
    }

    #[test]
    fn the_state_follows_the_conditions() {
        let with = |conditions: Value| json!({"status": {"conditions": conditions}});
        assert_eq!(SvmState::of(&json!({})), SvmState::Pending);
        assert_eq!(SvmState::of(&with(json!([{"type": "Running", "status": "True"}]))), SvmState::Running);
        assert_eq!(
            SvmState::of(&with(json!([{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}]))),
            SvmState::Succeeded
        );
        let failed = with(json!([{"type": "Failed", "status": "True", "reason": "ResourceNotFound", "message": "no secrets2"}]));
        assert_eq!(SvmState::of(&failed), SvmState::Failed("ResourceNotFound: no secrets2".into()));
        assert_eq!(SvmState::of(&with(json!([{"type": "Succeeded", "status": "False"}]))), SvmState::Pending);
        let timeout = OpsError::SvmTimeout {
            name: "kms-lab-secrets-x".into(),
            resource: "secrets".into(),
            seconds: 300,
            state: SvmState::Pending.to_string(),
        };
        let text = timeout.to_string();
        assert!(text.contains("kms-lab-secrets-x") && text.contains("kube-controller-manager") && text.contains("300 s"), "{text}");
    }
}
