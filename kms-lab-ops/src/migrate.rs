//! `kms-lab migrate`: the documented rewrite (`kubectl get … -o json | kubectl replace -f -`)
//! done well. Every object of the selected resources is written back unchanged through the API,
//! so the apiserver re-encrypts it with the first provider: in pages, a bounded number in flight,
//! conflicts and throttling retried with backoff, a checkpoint after each page (resumable), and
//! every object that fails listed by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::error::OpsError;
use crate::resource::Resource;

/// What to migrate and how.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The resources (default: secrets).
    pub resources: Vec<Resource>,
    /// Only this namespace (default: all).
    pub namespace: Option<String>,
    /// Objects per list page (and per checkpoint).
    pub page_size: u32,
    /// Updates in flight at once.
    pub in_flight: usize,
    /// Attempts per object before it is listed as failed.
    pub max_attempts: u32,
    /// The checkpoint file: written after each page, read at start to skip what is done.
    pub checkpoint: Option<PathBuf>,
    /// Only list what would be rewritten.
    pub dry_run: bool,
    /// Stop (checkpoint written) once at least this many objects were rewritten in this run.
    pub stop_after: Option<u64>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            resources: vec![Resource::secrets()],
            namespace: None,
            page_size: 250,
            in_flight: 8,
            max_attempts: 8,
            checkpoint: None,
            dry_run: false,
            stop_after: None,
        }
    }
}

/// An object that could not be rewritten: why (an unreadable object, e.g. its key is lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedObject {
    /// `namespace/name` (or `name` for cluster-scoped objects).
    pub object: String,
    /// The last error the apiserver gave (never the object's value).
    pub error: String,
}

/// What a migration did for one resource.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceMigration {
    /// The resource.
    pub resource: String,
    /// Objects the API listed in this run.
    pub listed: u64,
    /// Objects rewritten in this run (or, with `--dry-run`, that would be).
    pub rewritten: u64,
    /// Objects skipped because the checkpoint says an earlier run did them.
    pub already_done: u64,
    /// Objects that failed after every attempt.
    pub failed: Vec<FailedObject>,
    /// Conflicts retried (the object changed between read and write).
    pub conflicts: u64,
    /// Throttling or unavailability retried (429, 5xx, timeouts).
    pub throttled: u64,
}

/// What a migration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// Per resource.
    pub resources: Vec<ResourceMigration>,
    /// Whether it stopped early at `stop_after` (run it again with the same checkpoint to finish).
    pub stopped_early: bool,
    /// Wall time of this run.
    pub seconds: f64,
    /// Objects rewritten per second in this run.
    pub objects_per_second: f64,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

impl MigrateReport {
    /// Every object that failed, over all resources.
    pub fn failed(&self) -> impl Iterator<Item = &FailedObject> {
        self.resources.iter().flat_map(|r| &r.failed)
    }

    /// Objects rewritten in this run, over all resources.
    pub fn rewritten(&self) -> u64 {
        self.resources.iter().map(|r| r.rewritten).sum()
    }
}

/// The checkpoint file: per resource, the last object (in the API's key order) of the last page
/// finished, and whether the resource is done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Per resource (`secrets`, `widgets.example.com`): the last `namespace/name` finished.
    pub done_through: BTreeMap<String, String>,
    /// Resources finished completely.
    pub finished: Vec<String>,
    /// Objects that failed in earlier runs (kept so a resumed run still reports them).
    pub failed: BTreeMap<String, Vec<FailedObject>>,
}

impl Checkpoint {
    fn load(path: &Path) -> Result<Self, OpsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| OpsError::Checkpoint { path: path.to_owned(), reason: format!("is not a kms-lab migrate checkpoint ({e})") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(OpsError::Io { what: "read", path: path.to_owned(), source: e }),
        }
    }

    /// Replaces the file atomically, and only if it is a checkpoint (or absent).
    fn save(&self, path: &Path) -> Result<(), OpsError> {
        const CHECKPOINT: kms_lab_cli_common::files::FileKind = kms_lab_cli_common::files::FileKind::public(
            "`kms-lab migrate` checkpoint",
            // What `load` accepts, exactly: a file it refuses is not replaced either.
            kms_lab_cli_common::files::Recognise::By(|bytes| serde_json::from_slice::<Checkpoint>(bytes).is_ok()),
        );
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        Ok(kms_lab_cli_common::files::replace(path, &CHECKPOINT, text.as_bytes())?)
    }
}

/// The object's place in the API's (etcd key) order: `namespace/name`.
fn object_key(object: &DynamicObject) -> String {
    let name = object.metadata.name.clone().unwrap_or_default();
    match &object.metadata.namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name,
    }
}

/// Progress: the resource, objects done in this run, objects listed so far.
pub type Progress<'a> = &'a mut (dyn FnMut(&Resource, u64, u64) + Send);

/// Rewrites every object of `options.resources` through `client` (see the module doc).
pub async fn migrate(client: &kube::Client, options: &MigrateOptions, progress: Progress<'_>) -> Result<MigrateReport, OpsError> {
    let started = Instant::now();
    let mut checkpoint = match &options.checkpoint {
        Some(path) => Checkpoint::load(path)?,
        None => Checkpoint::default(),
    };
    let mut report = MigrateReport { dry_run: options.dry_run, ..Default::default() };
    'resources: for resource in &options.resources {
        let name = resource.to_string();
        let mut done = ResourceMigration {
            resource: name.clone(),
            failed: checkpoint.failed.get(&name).cloned().unwrap_or_default(),
            ..Default::default()
        };
        if checkpoint.finished.contains(&name) {
            report.resources.push(done);
            continue;
        }
        let api_resource = resource.api_resource(client).await?;
        let api: Api<DynamicObject> = match &options.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &api_resource),
            None => Api::all_with(client.clone(), &api_resource),
        };
        let through = checkpoint.done_through.get(&name).cloned();
        let mut continue_token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(options.page_size);
            if let Some(token) = &continue_token {
                params = params.continue_token(token);
            }
            let page = with_retries(options.max_attempts, &mut done, || api.list(&params))
                .await
                .map_err(|source| OpsError::Api { what: format!("list {name} (a page of {})", options.page_size), source })?;
            continue_token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
            let objects: Vec<DynamicObject> = page.items;
            done.listed += objects.len() as u64;
            let (skipped, todo): (Vec<_>, Vec<_>) =
                objects.into_iter().partition(|o| through.as_deref().is_some_and(|t| object_key(o).as_str() <= t));
            done.already_done += skipped.len() as u64;
            let last_key = todo.last().map(object_key);
            if options.dry_run {
                done.rewritten += todo.len() as u64;
            } else {
                let api_resource = &api_resource;
                let results: Vec<(String, Result<RetryCounts, String>)> = futures::stream::iter(todo)
                    .map(|object| async move { (object_key(&object), rewrite(client, api_resource, object, options.max_attempts).await) })
                    .buffer_unordered(options.in_flight.max(1))
                    .collect()
                    .await;
                for (key, result) in results {
                    match result {
                        Ok(counts) => {
                            done.rewritten += 1;
                            done.conflicts += counts.conflicts;
                            done.throttled += counts.throttled;
                        }
                        Err(error) => done.failed.push(FailedObject { object: key, error }),
                    }
                }
                if let (Some(path), Some(last)) = (&options.checkpoint, &last_key) {
                    checkpoint.done_through.insert(name.clone(), last.clone());
                    checkpoint.failed.insert(name.clone(), done.failed.clone());
                    checkpoint.save(path)?;
                }
            }
            progress(resource, done.rewritten + done.failed.len() as u64, done.listed);
            if continue_token.is_none() {
                break;
            }
            if options.stop_after.is_some_and(|n| report.rewritten() + done.rewritten >= n) {
                report.stopped_early = true;
                report.resources.push(done);
                break 'resources;
            }
        }
        if let (Some(path), false) = (&options.checkpoint, options.dry_run) {
            checkpoint.finished.push(name.clone());
            checkpoint.save(path)?;
        }
        report.resources.push(done);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.objects_per_second = if report.seconds > 0.0 { report.rewritten() as f64 / report.seconds } else { 0.0 };
    Ok(report)
}

/// Retries of one object.
#[derive(Debug, Default)]
struct RetryCounts {
    conflicts: u64,
    throttled: u64,
}

/// Whether an error is worth retrying after a pause: throttling, unavailability, timeouts.
fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504) && !unreadable(error),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether the apiserver could not decrypt the stored object (its key is gone): retrying won't help.
fn unreadable(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.message.contains("transform") || status.message.contains("decrypt"))
}

fn conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Exponential backoff with jitter: 100 ms, 200 ms, … capped at 5 s.
fn backoff(attempt: u32) -> Duration {
    use rand::Rng;
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(base / 2 + rand::thread_rng().gen_range(0..=base / 2))
}

async fn with_retries<T, F, Fut>(attempts: u32, done: &mut ResourceMigration, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(error) if transient(&error) && attempt + 1 < attempts => {
                done.throttled += 1;
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Writes one object back unchanged; on a conflict reads it again and writes that.
async fn rewrite(
    client: &kube::Client,
    api_resource: &kube::api::ApiResource,
    mut object: DynamicObject,
    attempts: u32,
) -> Result<RetryCounts, String> {
    let mut counts = RetryCounts::default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let target: Api<DynamicObject> = match &object.metadata.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, api_resource),
        None => Api::all_with(client.clone(), api_resource),
    };
    let mut attempt = 0;
    loop {
        let error = match target.replace(&name, &PostParams::default(), &object).await {
            Ok(_) => return Ok(counts),
            Err(error) => error,
        };
        attempt += 1;
        if attempt >= attempts {
            return Err(describe(&error));
        }
        if conflict(&error) {
            counts.conflicts += 1;
            object = match target.get(&name).await {
                Ok(fresh) => fresh,
                Err(error) if transient(&error) => {
                    counts.throttled += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(error) => return Err(describe(&error)),
            };
        } else if transient(&error) {
            counts.throttled += 1;
            tokio::time::sleep(backoff(attempt)).await;
        } else {
            return Err(describe(&error));
        }
    }
}

/// The apiserver's message (it names the object and the cause, never the value).
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}: {}", status.code, status.reason, status.message),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Checkpoint files as a user's disk may hold them: real ones, near misses of the shape,
    /// other JSON, and bytes.
    fn checkpoint_file() -> impl Strategy<Value = Vec<u8>> {
        let key = "\\PC{0,20}";
        let real = (prop::collection::btree_map(key, key, 0..4), prop::collection::vec(key, 0..3)).prop_map(|(done, finished)| {
            serde_json::to_vec(&serde_json::json!({"done_through": done, "finished": finished, "failed": {}})).expect("JSON")
        });
        let near = prop::sample::select(vec![
            r#"{"done_through": [], "finished": []}"#,
            r#"{"done_through": {"secrets": 7}, "finished": []}"#,
            r#"{"done_through": {}, "finished": [null]}"#,
            r#"{"done_through": {}, "finished": [], "failed": {"secrets": [{}]}}"#,
            r#"{"done_through": {}}"#,
            "[]",
            "null",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec());
        prop_oneof![2 => real, 2 => near, 1 => prop::collection::vec(any::<u8>(), 0..200)]
    }

    /// The generator's counterexample: a file with the checkpoint's keys that the loader
    /// refuses was once overwritten by a save; now it is refused and left as it is.
    #[test]
    fn a_checkpoint_the_loader_refuses_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("migrate.checkpoint");
        let bytes = br#"{"done_through": {"secrets": 7}, "finished": []}"#;
        std::fs::write(&path, bytes).expect("write the file");
        assert!(Checkpoint::load(&path).is_err());
        let error = Checkpoint::default().save(&path).expect_err("not a checkpoint").to_string();
        assert!(error.contains("is not a `kms-lab migrate` checkpoint") && error.contains("left as it is"), "{error}");
        assert_eq!(std::fs::read(&path).expect("read it back"), bytes);
    }

    proptest! {
        /// Issue 28: whatever `--checkpoint` names, loading it gives a checkpoint or the
        /// checkpoint error naming the file, never a panic; a loaded one saves and loads back the
        /// same; a file that is not a checkpoint is never overwritten.
        #[test]
        fn any_checkpoint_file_loads_or_is_refused_by_name(bytes in checkpoint_file()) {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("migrate.checkpoint");
            std::fs::write(&path, &bytes).expect("write the file");
            match Checkpoint::load(&path) {
                Ok(checkpoint) => {
                    checkpoint.save(&path).expect("a checkpoint saves over itself");
                    prop_assert_eq!(Checkpoint::load(&path).expect("and loads back"), checkpoint);
                }
                Err(error) => {
                    let message = error.to_string();
                    prop_assert!(message.contains("migrate.checkpoint"), "{}", message);
                    prop_assert!(Checkpoint::default().save(&path).is_err(), "a file that is not a checkpoint is not overwritten");
                    prop_assert_eq!(std::fs::read(&path).expect("read it back"), bytes);
                }
            }
        }
    }
}
