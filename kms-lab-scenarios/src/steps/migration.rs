//! Rewriting every object so the first provider re-encrypts it: the documented
//! `kubectl get | kubectl replace` procedure, `kms-lab migrate`'s paged rewrite, and
//! StorageVersionMigration (`migrate: {via: svm}`, the in-tree way).

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::objects::shorten;
use super::{Scope, StepFuture, StepKind, StepResult};
use crate::error::StepError;
use crate::model::{Kind, Pattern};
use crate::world::World;

/// How long `kubectl` may take for a rewrite.
const REWRITE_DEADLINE: Duration = Duration::from_secs(300);

/// `rewrite: {kind, apiserver, expect_error}`: the documented procedure after an encryption
/// change, `kubectl get <resource> -A -o json | kubectl replace -f -`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// The rewrite must fail with output matching this (default: it must succeed).
    #[serde(default)]
    pub expect_error: Option<Pattern>,
}

impl StepKind for Rewrite {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        format!("rewrite all {} (kubectl get -A -o json | kubectl replace -f -)", self.kind.resource())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(rewrite(world, self))
    }
}

/// How `migrate` rewrites the objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `kms-lab migrate`'s own paged rewrite through the API (the default).
    #[default]
    Rewrite,
    /// A StorageVersionMigration per resource, done by kube-controller-manager's
    /// `storage-version-migrator-controller` (needs `stack: {controller_manager: true}`).
    Svm,
}

/// `migrate: {kind, apiserver, via}`: the rewrite `kms-lab migrate` does on a real cluster (crate
/// `ops`): every object re-written through the API in pages, a bounded number in flight, retried
/// on conflicts and throttling; an object it cannot rewrite fails the step, named. With
/// `via: svm`, a StorageVersionMigration instead, awaited until `Succeeded` (`Failed`, or not
/// done within its deadline, fails the step); the objects it re-encrypted are counted in etcd
/// (stored values that changed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// `rewrite` (default) or `svm`.
    #[serde(default)]
    pub via: Via,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// A checkpoint (a file in the run directory by this name): a later `migrate` with the same
    /// checkpoint resumes after the last page finished.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Stop once at least this many objects were rewritten (the checkpoint written), as an
    /// operator interrupting the migration would; a later `migrate` with the checkpoint finishes.
    #[serde(default)]
    pub stop_after: Option<u64>,
}

impl StepKind for Migrate {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if self.via == Via::Svm {
            if self.checkpoint.is_some() || self.stop_after.is_some() {
                return Err("`via: svm` has no checkpoint or `stop_after` (the controller finishes what it started): drop them, or use `via: rewrite`".into());
            }
            if self.apiserver != 0 {
                return Err("`via: svm` runs through apiserver-0 (kube-controller-manager talks to it): drop `apiserver`".into());
            }
            if !scope.scenario().stack.controller_manager {
                return Err("`migrate: {via: svm}` needs kube-controller-manager: add `controller_manager: true` under `stack:`".into());
            }
        }
        if self.stop_after.is_some() && self.checkpoint.is_none() {
            return Err("`stop_after` interrupts the migration: add `checkpoint: NAME` so a later `migrate` can resume it".into());
        }
        if let Some(name) = &self.checkpoint
            && !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("checkpoint `{name}`: use letters, digits, `-` and `_` (it names a file in the run directory)"));
        }
        scope.apiserver(self.apiserver)
    }

    fn label(&self) -> String {
        if self.via == Via::Svm {
            return format!("migrate all {} (a StorageVersionMigration, done by kube-controller-manager)", self.kind.resource());
        }
        let mut label = format!("migrate all {} (kms-lab migrate: paged, retried, through the API)", self.kind.resource());
        if let Some(name) = &self.checkpoint {
            label.push_str(&format!(", checkpoint `{name}`"));
        }
        if let Some(n) = self.stop_after {
            label.push_str(&format!(", stopping after {n}"));
        }
        label
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        if self.via == Via::Svm {
            return Box::pin(migrate_via_svm(world, self.kind));
        }
        Box::pin(async move {
            use kms_lab_ops::migrate::{MigrateOptions, migrate};
            let resource = self.kind.ops_resource();
            let client = world.stack.kube_client(self.apiserver).await?;
            let checkpoint = self.checkpoint.as_ref().map(|name| world.stack.run_dir().join(format!("migrate-{name}.checkpoint.json")));
            let options =
                MigrateOptions { resources: vec![resource], checkpoint, stop_after: self.stop_after, ..MigrateOptions::default() };
            let report =
                migrate(&client, &options, &mut |_, _, _| {}).await.map_err(|e| StepError::Failed(format!("kms-lab migrate: {e}")))?;
            let failed: Vec<_> = report.failed().collect();
            if let Some(first) = failed.first() {
                return Err(StepError::Failed(format!(
                    "{} object(s) could not be rewritten, e.g. {}: {}",
                    failed.len(),
                    first.object,
                    first.error
                )));
            }
            let name = self.kind.resource();
            let tracked = world.objects.keys().filter(|o| o.kind == self.kind).count() as u64;
            let rewritten = report.rewritten();
            let already_done: u64 = report.resources.iter().map(|r| r.already_done).sum();
            if report.stopped_early {
                if self.stop_after.is_none_or(|n| rewritten < n) {
                    return Err(StepError::Failed(format!("migrate stopped early after {rewritten} {name} without being asked to")));
                }
            } else if rewritten + already_done < tracked {
                return Err(StepError::Failed(format!(
                    "migrate rewrote {rewritten} {name} (and an earlier run {already_done}), but the scenario wrote {tracked}"
                )));
            }
            world.figure(format!("migrate.{name}.objects_per_second"), (report.objects_per_second * 10.0).round() / 10.0);
            let retried: u64 = report.resources.iter().map(|r| r.conflicts + r.throttled).sum();
            let resumed = if already_done > 0 { format!(", {already_done} done by an earlier run") } else { String::new() };
            let stopped = if report.stopped_early { ", stopped as asked (checkpoint written)" } else { "" };
            Ok(format!(
                "{rewritten} {name} rewritten in {:.1} s ({:.0}/s, {retried} retried, 0 failed{resumed}){stopped}",
                report.seconds, report.objects_per_second
            ))
        })
    }
}

/// `migrate: {via: svm}`: kube-controller-manager running against apiserver-0 as it is now
/// (restarted if the apiserver was), a StorageVersionMigration awaited until `Succeeded`, and the
/// objects it re-encrypted counted in etcd (stored values that changed).
async fn migrate_via_svm(world: &mut World, kind: Kind) -> StepResult {
    use kms_lab_ops::svm::{SvmOptions, migrate_via_svm};
    use sha2::{Digest, Sha256};
    let resource = kind.ops_resource();
    let name = kind.resource();
    let restarted = world.stack.ensure_controller_manager().await?;
    let prefix = resource.etcd_prefix();
    let digests = |values: Vec<(String, Vec<u8>)>| -> std::collections::BTreeMap<String, Vec<u8>> {
        values.into_iter().map(|(key, value)| (key, Sha256::digest(&value).to_vec())).collect()
    };
    let before = digests(world.stack.etcd_list(&prefix).await?);
    let client = world.stack.kube_client(0).await?;
    let options = SvmOptions { resources: vec![resource.clone()], ..SvmOptions::default() };
    let report = migrate_via_svm(&client, &options, &mut |_, _| {})
        .await
        .map_err(|e| StepError::Failed(format!("migrate via StorageVersionMigration: {e}")))?;
    let after = digests(world.stack.etcd_list(&prefix).await?);
    let rewritten = after.iter().filter(|(key, digest)| before.get(*key).is_some_and(|old| old != *digest)).count() as u64;
    let Some(done) = report.resources.first() else {
        return Err(StepError::Failed(format!("no StorageVersionMigration was made for {name}")));
    };
    let per_second = if done.seconds > 0.0 { rewritten as f64 / done.seconds } else { 0.0 };
    world.figure(format!("migrate_svm.{name}.seconds"), (done.seconds * 10.0).round() / 10.0);
    world.figure(format!("migrate_svm.{name}.rewritten"), rewritten as f64);
    world.figure(format!("migrate_svm.{name}.objects_per_second"), (per_second * 10.0).round() / 10.0);
    let started = if restarted { "; kube-controller-manager (re)started against apiserver-0 first" } else { "" };
    Ok(format!(
        "StorageVersionMigration `{}` ({}) Succeeded in {:.1} s: {rewritten} of {} {name} re-encrypted in etcd ({per_second:.1}/s){started}",
        done.name, report.api_version, done.seconds, done.objects
    ))
}

async fn rewrite(world: &mut World, rewrite: &Rewrite) -> StepResult {
    // Containers from a registry's images: kubectl may not be on the host yet (found or built now).
    let wanted = world.stack.binaries().kubectl.clone();
    let kubectl = match tokio::task::spawn_blocking(move || wanted.on_host()).await {
        Ok(Ok(binary)) => binary.path,
        Ok(Err(error)) => return Err(StepError::Failed(format!("kubectl is needed on this host for the rewrite: {error}"))),
        Err(error) => return Err(StepError::Failed(format!("provisioning kubectl stopped: {error}"))),
    };
    let kubeconfig = world.stack.kubeconfig_path(rewrite.apiserver);
    let resource = rewrite.kind.resource();
    let started = Instant::now();
    let outcome = async {
        let listed = run_kubectl(&kubectl, &kubeconfig, &["get", resource, "-A", "-o", "json"], None).await?;
        let replaced = run_kubectl(&kubectl, &kubeconfig, &["replace", "-f", "-"], Some(listed)).await?;
        Ok::<_, String>(String::from_utf8_lossy(&replaced).lines().filter(|l| l.ends_with(" replaced")).count())
    }
    .await;
    let took = started.elapsed().as_secs_f64();
    match (outcome, &rewrite.expect_error) {
        (Ok(count), None) => {
            let tracked = world.objects.keys().filter(|o| o.kind == rewrite.kind).count();
            if count < tracked {
                return Err(StepError::Failed(format!("kubectl replaced {count} {resource}, but the scenario wrote {tracked}")));
            }
            world.figure(format!("rewrite.{resource}.seconds"), (took * 10.0).round() / 10.0);
            Ok(format!("{count} {resource} replaced in {took:.1} s"))
        }
        (Ok(count), Some(pattern)) => Err(StepError::Failed(format!(
            "expected the rewrite to fail with /{}/, but {count} {resource} were replaced",
            pattern.0.as_str()
        ))),
        (Err(message), None) => Err(StepError::Failed(format!("rewrite of {resource} failed: {}", shorten(&message)))),
        (Err(message), Some(pattern)) if pattern.0.is_match(&message) => Ok(format!("refused as expected: {}", shorten(&message))),
        (Err(message), Some(pattern)) => {
            Err(StepError::Failed(format!("the rewrite failed, but not with /{}/: {}", pattern.0.as_str(), shorten(&message))))
        }
    }
}

async fn run_kubectl(
    kubectl: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(kubectl);
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot run {}: {e}", kubectl.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(&input).await.map_err(|e| format!("cannot feed kubectl: {e}"))?;
    }
    let output = tokio::time::timeout(REWRITE_DEADLINE, child.wait_with_output())
        .await
        .map_err(|_| format!("`kubectl {}` did not finish within {} s", args.join(" "), REWRITE_DEADLINE.as_secs()))?
        .map_err(|e| format!("kubectl failed to run: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!("`kubectl {}` exited with {}: {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr).trim()))
    }
}
