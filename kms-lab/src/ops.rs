//! The arguments of `kms-lab inspect`, `migrate` and `enable`, and their dispatch to
//! `kms-lab-ops` (where the work is done).

use std::path::PathBuf;
use std::time::Duration;

use kms_lab_ops::enable::{self, EnableOptions, KmsPluginSettings};
use kms_lab_ops::inspect::{self, InspectOptions, InspectReport};
use kms_lab_ops::migrate::{self, MigrateOptions};
use kms_lab_ops::{OpsError, ProviderRef, Resource};
use kms_lab_stack::etcd_client::{EtcdClient, EtcdTls};

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
    match run_inspect(args).await {
        Ok((report, expect)) => {
            print_inspect(&report, args.format);
            Exit::passed(inspect_passes(&report, expect.as_ref()))
        }
        Err(error) => {
            eprintln!("error: {error}");
            Exit::Usage
        }
    }
}

/// Arguments of `kms-lab migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Resources to rewrite (default: secrets).
    #[arg(long = "resource", value_name = "RESOURCE")]
    resources: Vec<String>,
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

/// `kms-lab migrate` (the kubeconfig comes from `KUBECONFIG` or `~/.kube/config`).
pub async fn migrate(args: &MigrateArgs) -> Exit {
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
        let after = if args.etcd.endpoints.is_empty() || args.dry_run {
            None
        } else {
            let mut inspect_options = InspectOptions { resources: options.resources.clone(), ..Default::default() };
            if let Some(path) = &args.config {
                inspect_options = inspect_options.with_config_file(path)?;
            }
            Some(inspect::inspect(&args.etcd.client()?, &inspect_options, &mut progress_line("read")).await?)
        };
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
