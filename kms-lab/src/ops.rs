//! The arguments of `kms-lab inspect`, `migrate` and `enable`, and their dispatch to
//! `kms-lab-ops` (where the work is done).

use std::path::PathBuf;
use std::time::Duration;

use kms_lab_ops::enable::{self, EnableOptions, KmsPluginSettings};
use kms_lab_ops::inspect::{self, InspectOptions, InspectReport};
use kms_lab_ops::migrate::{self, MigrateOptions};
use kms_lab_ops::recover::{self, DecryptCheck};
use kms_lab_ops::{OpsError, ProviderRef, Resource};
use kms_lab_stack::etcd_client::{EtcdClient, EtcdTls};
use kms_wire::PluginClient;
use kms_wire::decode::KeyRing;

use crate::exit::Exit;

/// Output format of inspect and migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// How to reach etcd (the flags etcdctl takes).
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated (a kubeadm node: https://127.0.0.1:2379).
    #[arg(long, value_name = "URL,…", value_delimiter = ',', env = "ETCDCTL_ENDPOINTS")]
    pub endpoints: Vec<String>,
    /// The CA of etcd's serving certificate (kubeadm: /etc/kubernetes/pki/etcd/ca.crt).
    #[arg(long, value_name = "FILE", env = "ETCDCTL_CACERT", requires_all = ["cert", "key"])]
    pub cacert: Option<PathBuf>,
    /// A client certificate etcd accepts (kubeadm: /etc/kubernetes/pki/apiserver-etcd-client.crt).
    #[arg(long, value_name = "FILE", env = "ETCDCTL_CERT", requires_all = ["cacert", "key"])]
    pub cert: Option<PathBuf>,
    /// Its key (kubeadm: /etc/kubernetes/pki/apiserver-etcd-client.key).
    #[arg(long, value_name = "FILE", env = "ETCDCTL_KEY", requires_all = ["cacert", "cert"])]
    pub key: Option<PathBuf>,
}

impl EtcdArgs {
    fn client(&self) -> Result<EtcdClient, OpsError> {
        let tls = match (&self.cacert, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => Some(EtcdTls::from_files(ca, cert, key)?),
            _ => None,
        };
        Ok(EtcdClient::new(&self.endpoints, tls.as_ref())?)
    }
}

/// Arguments of `kms-lab inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    etcd: EtcdArgs,
    /// The EncryptionConfiguration the apiservers run: adds its resources, says what a rewrite
    /// changes, which objects it cannot read, and which providers are safe to drop.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Resources to inspect (default: secrets, configmaps), e.g. `secrets` or `widgets.example.com`.
    #[arg(long = "resource", value_name = "RESOURCE")]
    resources: Vec<String>,
    /// Gate: exit 1 unless every object is under this provider (`kms-v2`, `kms-v2:NAME`, `identity`, `aescbc:KEY`, …).
    #[arg(long, value_name = "PROVIDER")]
    expect_all: Option<String>,
    /// Keys per etcd range request.
    #[arg(long, value_name = "N", default_value_t = 500)]
    page_size: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    decrypt: DecryptArgs,
}

/// How to open KMS values (inspect's decryption check, recover).
#[derive(Debug, Clone, clap::Args)]
pub struct DecryptArgs {
    /// The KMS plugin's socket (unix:///var/run/kmsplugin/kms.sock): every KMS value is opened
    /// through it (never printed) and the objects that do not open are listed.
    #[arg(long, value_name = "ENDPOINT")]
    plugin: Option<String>,
    /// Only check values written by the KMS provider of this name (several plugins: one run each).
    #[arg(long, value_name = "NAME", requires = "plugin")]
    kms_provider: Option<String>,
    /// Deadline of each plugin call.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    plugin_timeout: Duration,
}

impl DecryptArgs {
    async fn keys(&self) -> Result<Option<KeyRing>, String> {
        let Some(endpoint) = &self.plugin else {
            return Ok(None);
        };
        let plugin = PluginClient::connect(endpoint, self.plugin_timeout)
            .await
            .map_err(|e| format!("cannot reach the plugin at {endpoint}: {e}"))?;
        Ok(Some(KeyRing { plugin: Some(plugin), static_keys: Vec::new() }))
    }

    async fn check(&self, etcd: &EtcdClient, resources: &[Resource], keys: &KeyRing, page_size: u64) -> Result<Vec<DecryptCheck>, String> {
        let mut checks = Vec::new();
        for resource in resources {
            eprintln!("open {resource} through the plugin");
            let check = recover::check_decryption(etcd, resource, keys, self.kms_provider.as_deref(), page_size)
                .await
                .map_err(|e| e.to_string())?;
            checks.push(check);
        }
        Ok(checks)
    }
}

/// The decryption check as a table (object, provider, key id, the plugin's reason; never a value).
fn render_checks(checks: &[DecryptCheck]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(
            out,
            "{}: {} KMS object(s) opened through the plugin: {} decrypt, {} cannot be decrypted ({} not checked: not KMS, or another provider)",
            c.resource,
            c.checked,
            c.decryptable,
            c.undecryptable.len(),
            c.not_checked
        );
        for (key_id, n) in &c.undecryptable_by_key_id {
            let _ = writeln!(out, "  key id {}: {n} undecryptable", key_id.escape_debug());
        }
        for u in &c.undecryptable {
            let _ = writeln!(
                out,
                "  cannot be decrypted: {} ({}{}): {}",
                u.object,
                u.provider,
                u.key_id.as_deref().map(|k| format!(", key id {}", k.escape_debug())).unwrap_or_default(),
                u.reason.escape_debug()
            );
        }
    }
    out
}

fn resources(names: &[String], default: Vec<Resource>) -> Result<Vec<Resource>, OpsError> {
    if names.is_empty() {
        return Ok(default);
    }
    names.iter().map(|n| Resource::parse(n).ok_or_else(|| OpsError::UnknownResource(n.clone()))).collect()
}

fn progress_line(verb: &'static str) -> impl FnMut(&Resource, u64, u64) {
    move |resource, done, total| eprintln!("{verb} {resource}: {done}/{total}")
}

async fn run_inspect(args: &InspectArgs) -> Result<(InspectReport, Option<ProviderRef>), OpsError> {
    let expect = args.expect_all.as_deref().map(ProviderRef::parse).transpose()?;
    let mut options = InspectOptions {
        resources: resources(&args.resources, InspectOptions::default().resources)?,
        page_size: args.page_size.max(1),
        ..Default::default()
    };
    if let Some(path) = &args.config {
        options = options.with_config_file(path)?;
    }
    let report = inspect::inspect(&args.etcd.client()?, &options, &mut progress_line("read")).await?;
    Ok((report, expect))
}

fn print_inspect(report: &InspectReport, format: Format) {
    match format {
        Format::Table => print!("{}", inspect::render_table(report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(report).unwrap_or_default()),
    }
}

/// Whether the report passes: the gate, no malformed values, nothing the configuration cannot read.
fn inspect_passes(report: &InspectReport, expect: Option<&ProviderRef>) -> bool {
    let gate = expect.is_none_or(|pattern| {
        let others = report.objects_not_under(pattern);
        if others > 0 {
            eprintln!("gate: {others} object(s) are not under {pattern}");
        }
        others == 0
    });
    if report.has_problems() {
        eprintln!("problem: malformed values, or objects the given configuration cannot read (see above)");
    }
    gate && !report.has_problems()
}

/// `kms-lab inspect`.
pub async fn inspect(args: &InspectArgs) -> Exit {
    let keys = match args.decrypt.keys().await {
        Ok(keys) => keys,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Usage;
        }
    };
    let (report, expect) = match run_inspect(args).await {
        Ok(found) => found,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Usage;
        }
    };
    let checks = match &keys {
        None => Vec::new(),
        Some(keys) => {
            let resources: Vec<Resource> = report.resources.iter().filter_map(|r| Resource::parse(&r.resource)).collect();
            let etcd = match args.etcd.client() {
                Ok(etcd) => etcd,
                Err(error) => {
                    eprintln!("error: {error}");
                    return Exit::Usage;
                }
            };
            match args.decrypt.check(&etcd, &resources, keys, args.page_size.max(1)).await {
                Ok(checks) => checks,
                Err(error) => {
                    eprintln!("error: {error}");
                    return Exit::Failed;
                }
            }
        }
    };
    match args.format {
        Format::Table => {
            print_inspect(&report, args.format);
            print!("{}", render_checks(&checks));
        }
        Format::Json => {
            let mut value = serde_json::to_value(&report).unwrap_or_default();
            if keys.is_some() {
                value["decrypt"] = serde_json::to_value(&checks).unwrap_or_default();
            }
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        }
    }
    let undecryptable: usize = checks.iter().map(|c| c.undecryptable.len()).sum();
    if undecryptable > 0 {
        eprintln!("problem: {undecryptable} object(s) cannot be decrypted (see `kms-lab recover --help`)");
    }
    Exit::passed(inspect_passes(&report, expect.as_ref()) && undecryptable == 0)
}

/// Arguments of `kms-lab recover`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecoverArgs {
    /// Delete the objects that cannot be decrypted with upstream's unsafe delete
    /// (`ignoreStoreReadErrorWithClusterBreakingPotential`; the only recovery there is).
    #[arg(long)]
    unsafe_delete: bool,
    /// Act: without it, a dry run (the apiserver is asked with `dryRun: [All]`; nothing is deleted).
    #[arg(long)]
    yes: bool,
    /// Impersonate this user for the deletes, as `kubectl --as` (it needs the RBAC verb
    /// `unsafe-delete-ignore-read-errors` on the resource).
    #[arg(long = "as", value_name = "USER")]
    as_user: Option<String>,
    /// Go on when not one KMS object decrypts (that usually means the plugin cannot reach its
    /// KMS, not that a key version was lost).
    #[arg(long)]
    even_if_none_decrypt: bool,
    /// Resources to check (default: secrets).
    #[arg(long = "resource", value_name = "RESOURCE")]
    resources: Vec<String>,
    /// Keys per etcd range request.
    #[arg(long, value_name = "N", default_value_t = 500)]
    page_size: u64,
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(flatten)]
    decrypt: DecryptArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What to say when the apiserver refuses the unsafe delete for want of the RBAC verb.
fn refused_hint(as_user: Option<&str>) -> String {
    format!(
        "the apiserver refused the unsafe delete: {} lacks the RBAC verb `{verb}` on the resource. Grant it only for the \
         repair, e.g. a ClusterRole with rules [{{apiGroups: [\"\"], resources: [secrets], verbs: [delete, {verb}]}}] bound \
         to that user, and remove the binding afterwards",
        as_user.map_or_else(|| "the kubeconfig's user".to_owned(), |u| format!("user `{u}`")),
        verb = recover::UNSAFE_DELETE_VERB
    )
}

/// `kms-lab recover --unsafe-delete`.
pub async fn recover(args: &RecoverArgs) -> Exit {
    use recover::{DeleteOutcome, UnsafeDeleteOptions};
    if !args.unsafe_delete {
        eprintln!("error: say how to recover: --unsafe-delete (the only recovery there is for objects whose key is lost)");
        return Exit::Usage;
    }
    let prepared = async {
        let resources = resources(&args.resources, vec![Resource::secrets()]).map_err(|e| e.to_string())?;
        let etcd = args.etcd.client().map_err(|e| e.to_string())?;
        let keys = args.decrypt.keys().await?.ok_or("recover opens every KMS value through the plugin: give --plugin unix:///path.sock")?;
        let client =
            kube::Client::try_default().await.map_err(|e| format!("connect with the kubeconfig (KUBECONFIG or ~/.kube/config): {e}"))?;
        Ok::<_, String>((resources, etcd, keys, client))
    };
    let (resources, etcd, keys, client) = match prepared.await {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Usage;
        }
    };
    let checks = match args.decrypt.check(&etcd, &resources, &keys, args.page_size.max(1)).await {
        Ok(checks) => checks,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Failed;
        }
    };
    if args.format == Format::Table {
        print!("{}", render_checks(&checks));
    }
    let lost: Vec<recover::StoredObject> = checks.iter().flat_map(|c| c.undecryptable.iter().map(|u| u.object.clone())).collect();
    let checked: u64 = checks.iter().map(|c| c.checked).sum();
    let decryptable: u64 = checks.iter().map(|c| c.decryptable).sum();
    if lost.is_empty() {
        match args.format {
            Format::Json => println!("{}", serde_json::json!({ "decrypt": checks, "recover": null })),
            Format::Table => println!("every object decrypts ({checked} KMS object(s) opened through the plugin): nothing to delete"),
        }
        return Exit::Success;
    }
    if decryptable == 0 && !args.even_if_none_decrypt {
        eprintln!(
            "error: not one of the {checked} KMS object(s) decrypts: that is what a plugin cut off from its KMS (credentials, \
             network, a disabled key) looks like, not one lost key version. Check the plugin first; if the key is truly gone, \
             run again with --even-if-none-decrypt"
        );
        return Exit::Failed;
    }
    let n = lost.len();
    if args.yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("delete {n} object(s) that cannot be decrypted, for good? type {n} to confirm: ");
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != n.to_string() {
            eprintln!("not confirmed: nothing deleted");
            return Exit::Failed;
        }
    }
    if args.format == Format::Table {
        if args.yes {
            println!("deleting {n} object(s) that cannot be decrypted with {}: true", recover::UNSAFE_DELETE_OPTION);
        } else {
            println!("dry run: asking the apiserver whether {n} unsafe delete(s) would go through (dryRun: [All]); nothing is deleted");
        }
    }
    let options = UnsafeDeleteOptions { dry_run: !args.yes, as_user: args.as_user.clone() };
    let report = match recover::unsafe_delete(&client, &lost, &options).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Failed;
        }
    };
    match args.format {
        Format::Json => println!("{}", serde_json::json!({ "decrypt": checks, "recover": report })),
        Format::Table => {
            for r in &report.results {
                let what = match &r.outcome {
                    DeleteOutcome::Deleted => "deleted".to_owned(),
                    DeleteOutcome::WouldDelete => "would be deleted".to_owned(),
                    DeleteOutcome::Refused(m) => format!("REFUSED: {m}"),
                    DeleteOutcome::NotFound => "already gone".to_owned(),
                    DeleteOutcome::Readable(m) => format!("left alone, the apiserver reads it: {m}"),
                    DeleteOutcome::Failed(m) => format!("FAILED: {m}"),
                };
                println!("  {}: {what}", r.object);
            }
            let verb = if report.dry_run { "would be deleted" } else { "deleted" };
            println!("{} of {n} object(s) {verb} in {:.1} s", report.deleted(), report.seconds);
            if report.dry_run && report.complete() {
                println!("to delete them: the same command with --yes");
            }
        }
    }
    if report.refused() > 0 {
        eprintln!("error: {}", refused_hint(args.as_user.as_deref()));
    }
    Exit::passed(report.complete())
}

/// How `kms-lab migrate` rewrites the objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// kms-lab's own rewrite through the API: paged, retried, resumable.
    #[default]
    Rewrite,
    /// A StorageVersionMigration per resource (storagemigration.k8s.io), carried out by
    /// kube-controller-manager's storage-version-migrator-controller; awaited until Succeeded.
    Svm,
}

/// Arguments of `kms-lab migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Resources to rewrite (default: secrets).
    #[arg(long = "resource", value_name = "RESOURCE")]
    resources: Vec<String>,
    /// How: `rewrite` (kms-lab's own) or `svm` (StorageVersionMigration objects; needs
    /// kube-controller-manager with the migrator: on by default from Kubernetes v1.37).
    #[arg(long, value_enum, default_value_t = Via::Rewrite)]
    via: Via,
    /// With `--via svm`: how long each migration may take until Succeeded.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5m")]
    svm_timeout: Duration,
    /// Only this namespace (default: all).
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Objects per list page and per checkpoint.
    #[arg(long, value_name = "N", default_value_t = 250)]
    page_size: u32,
    /// Updates in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    in_flight: usize,
    /// Resume from (and record progress in) this file.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Stop after this many objects (the checkpoint lets a later run finish).
    #[arg(long, value_name = "N")]
    stop_after: Option<u64>,
    /// Only list what would be rewritten.
    #[arg(long)]
    dry_run: bool,
    /// With --endpoints: the EncryptionConfiguration, so the final inspect checks 0 objects left
    /// under any provider but the first.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// etcd, for the final inspect (optional).
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What etcd holds after a migration of `resources`, read for the report when `--etcd` is given.
async fn inspect_after(args: &MigrateArgs, resources: &[Resource]) -> Result<Option<InspectReport>, OpsError> {
    if args.etcd.endpoints.is_empty() {
        return Ok(None);
    }
    let mut options = InspectOptions { resources: resources.to_vec(), ..Default::default() };
    if let Some(path) = &args.config {
        options = options.with_config_file(path)?;
    }
    Ok(Some(inspect::inspect(&args.etcd.client()?, &options, &mut progress_line("read")).await?))
}

/// `kms-lab migrate` (the kubeconfig comes from `KUBECONFIG` or `~/.kube/config`).
pub async fn migrate(args: &MigrateArgs) -> Exit {
    if args.via == Via::Svm {
        return migrate_via_svm(args).await;
    }
    let run = async {
        let client = kube::Client::try_default()
            .await
            .map_err(|source| OpsError::Api { what: "connect with the kubeconfig (KUBECONFIG or ~/.kube/config)".into(), source })?;
        let options = MigrateOptions {
            resources: resources(&args.resources, MigrateOptions::default().resources)?,
            namespace: args.namespace.clone(),
            page_size: args.page_size.max(1),
            in_flight: args.in_flight.max(1),
            checkpoint: args.checkpoint.clone(),
            dry_run: args.dry_run,
            stop_after: args.stop_after,
            ..Default::default()
        };
        let report = migrate::migrate(&client, &options, &mut progress_line(if args.dry_run { "plan" } else { "rewrote" })).await?;
        let after = if args.dry_run { None } else { inspect_after(args, &options.resources).await? };
        Ok::<_, OpsError>((report, after))
    };
    match run.await {
        Ok((report, after)) => {
            match args.format {
                Format::Json => println!("{}", serde_json::json!({ "migrate": report, "inspect": after })),
                Format::Table => {
                    for r in &report.resources {
                        println!(
                            "{}: {} listed, {} {}, {} already done, {} failed, {} conflict(s) and {} throttled retried",
                            r.resource,
                            r.listed,
                            r.rewritten,
                            if report.dry_run { "to rewrite" } else { "rewritten" },
                            r.already_done,
                            r.failed.len(),
                            r.conflicts,
                            r.throttled
                        );
                        for failed in &r.failed {
                            println!("  FAILED {}: {}", failed.object, failed.error);
                        }
                    }
                    println!(
                        "{:.1} s, {:.1} objects/s{}",
                        report.seconds,
                        report.objects_per_second,
                        if report.stopped_early { "; stopped early: run again with the same --checkpoint" } else { "" }
                    );
                    if let Some(after) = &after {
                        print!("{}", inspect::render_table(after));
                    }
                }
            }
            let left = after.as_ref().is_some_and(|a| a.resources.iter().any(|r| r.rewrite.as_ref().is_some_and(|p| p.would_change > 0)));
            Exit::passed(report.failed().count() == 0 && !left && !report.stopped_early)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Exit::Usage
        }
    }
}

/// `kms-lab migrate --via svm`: one StorageVersionMigration per resource, awaited.
async fn migrate_via_svm(args: &MigrateArgs) -> Exit {
    use kms_lab_ops::svm::{SvmOptions, migrate_via_svm};
    let unsupported = [
        (args.checkpoint.is_some(), "--checkpoint"),
        (args.stop_after.is_some(), "--stop-after"),
        (args.dry_run, "--dry-run"),
        (args.namespace.is_some(), "--namespace"),
    ];
    if let Some((_, flag)) = unsupported.iter().find(|(set, _)| *set) {
        eprintln!(
            "error: {flag} belongs to the rewrite: a StorageVersionMigration covers every object of a resource and runs to the end; drop {flag}, or use --via rewrite"
        );
        return Exit::Usage;
    }
    let run = async {
        let client = kube::Client::try_default()
            .await
            .map_err(|source| OpsError::Api { what: "connect with the kubeconfig (KUBECONFIG or ~/.kube/config)".into(), source })?;
        warn_without_controller_manager(&client).await;
        let options = SvmOptions { resources: resources(&args.resources, SvmOptions::default().resources)?, deadline: args.svm_timeout };
        let mut progress = |resource: &Resource, state: &kms_lab_ops::svm::SvmState| eprintln!("{resource}: {state}");
        let report = migrate_via_svm(&client, &options, &mut progress).await?;
        let after = inspect_after(args, &options.resources).await?;
        Ok::<_, OpsError>((report, after))
    };
    match run.await {
        Ok((report, after)) => {
            match args.format {
                Format::Json => println!("{}", serde_json::json!({ "svm": report, "inspect": after })),
                Format::Table => {
                    for r in &report.resources {
                        let per_second = if r.seconds > 0.0 { r.objects as f64 / r.seconds } else { 0.0 };
                        println!(
                            "{}: StorageVersionMigration `{}` Succeeded in {:.1} s; {} object(s) listed ({per_second:.1}/s; the controller re-writes those the apiserver reports stale, which the API does not count)",
                            r.resource, r.name, r.seconds, r.objects
                        );
                    }
                    println!("{:.1} s ({})", report.seconds, report.api_version);
                    if let Some(after) = &after {
                        print!("{}", inspect::render_table(after));
                    }
                }
            }
            let left = after.as_ref().is_some_and(|a| a.resources.iter().any(|r| r.rewrite.as_ref().is_some_and(|p| p.would_change > 0)));
            Exit::passed(!left)
        }
        Err(error) => {
            eprintln!("error: {error}");
            // A migration that ran and failed (or never finished) is a failed run, not bad input.
            match error {
                OpsError::SvmFailed { .. } | OpsError::SvmTimeout { .. } => Exit::Failed,
                _ => Exit::Usage,
            }
        }
    }
}

/// Warns when no kube-controller-manager seems to run: a real cluster's holds the Lease
/// `kube-system/kube-controller-manager`; without one, a StorageVersionMigration never starts.
async fn warn_without_controller_manager(client: &kube::Client) {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), "kube-system");
    if let Ok(None) = leases.get_opt("kube-controller-manager").await {
        eprintln!(
            "warning: no Lease kube-system/kube-controller-manager: if no kube-controller-manager runs (e.g. `kms-lab lab`, which runs none), \
             the StorageVersionMigration is never carried out and this waits until --svm-timeout; there, use --via rewrite \
             (a scenario runs one with `stack: {{controller_manager: true}}`)"
        );
    }
}

/// Arguments of `kms-lab enable`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnableArgs {
    /// The plugin (known: kms-plugin).
    #[arg(long, value_name = "NAME")]
    plugin: String,
    /// Where to write the files (nothing is applied to a cluster).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The KMS v2 provider's name (it is written into every stored prefix).
    #[arg(long, value_name = "NAME", default_value = "kms-plugin")]
    provider_name: String,
    /// Per-call timeout of the provider (e.g. what `kms-lab tune` recommends).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Resources to encrypt.
    #[arg(long = "resource", value_name = "RESOURCE", default_value = "secrets")]
    resources: Vec<String>,
    /// Control-plane nodes, in rollout order (the runbook has a section per node).
    #[arg(long = "node", value_name = "NAME", default_value = "control-plane-1")]
    nodes: Vec<String>,
    /// The plugin's image.
    #[arg(long, value_name = "IMAGE", default_value = "localhost/kms-lab/kms-plugin:latest")]
    image: String,
    /// kms-plugin: the remote KMS (`host:port`).
    #[arg(long, value_name = "HOST:PORT", default_value = "kms.example.internal:443")]
    kms_endpoint: String,
    /// kms-plugin: the KEK's id in the KMS.
    #[arg(long, value_name = "ID", default_value = "kek-1")]
    kms_key_id: String,
    /// kms-plugin: `https`, or `http` for a lab KMS.
    #[arg(long, value_name = "SCHEMA", default_value = "https")]
    kms_schema: String,
}

/// `kms-lab enable`.
pub fn enable(args: &EnableArgs) -> Exit {
    let options = EnableOptions {
        provider_name: args.provider_name.clone(),
        timeout: args.timeout,
        resources: args.resources.clone(),
        nodes: args.nodes.clone(),
        ..Default::default()
    };
    let run = || {
        let plugin = match args.plugin.as_str() {
            "kms-plugin" => enable::kms_plugin(
                &KmsPluginSettings {
                    image: args.image.clone(),
                    kms_endpoint: args.kms_endpoint.clone(),
                    kms_key_id: args.kms_key_id.clone(),
                    kms_schema: args.kms_schema.clone(),
                },
                &options,
            ),
            other => return Err(OpsError::UnknownPlugin(other.to_owned())),
        };
        enable::write(&args.out, &enable::generate(&plugin, &options)?)
    };
    match run() {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            println!("next: read {} (lint → preflight → apply → wait → migrate → inspect)", args.out.join("RUNBOOK.md").display());
            Exit::Success
        }
        Err(error) => {
            eprintln!("error: {error}");
            Exit::Usage
        }
    }
}
