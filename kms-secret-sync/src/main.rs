//! `kms-secret-sync`: thin over the library. `run` the controller, print the `crd`s (or their
//! Markdown reference), or print the `rbac` objects it needs.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand};
use kms_secret_sync::{ControllerConfig, StoreCredential};

#[derive(Parser, Debug)]
#[command(name = "kms-secret-sync", about = "Keeps secrets of the mock KMS's secrets manager as Kubernetes Secrets.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print the CRDs (ExternalSecret, SecretStore) as YAML.
    Crd {
        /// Print the Markdown field reference instead (docs/secret-sync-crds.md).
        #[arg(long)]
        reference: bool,
    },
    /// Print the ServiceAccount, Role, ClusterRole and bindings the controller needs, as YAML.
    Rbac {
        /// The namespace the controller watches.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
}

/// ack-secret-manager's only backend.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Backend {
    /// Alibaba Cloud KMS's secrets manager (here: the mock KMS's).
    AlicloudKms,
}

/// The flags of ack-secret-manager (`cmd/manager/main.go`, commit 223ebff) with its defaults, in
/// its `--name=value` form (its chart passes `--region=` and `--kms-endpoint=` empty, and
/// booleans as `--disable-polling=false`), then ours.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The secrets backend.
    #[arg(long, value_enum, default_value = "alicloud-kms")]
    backend: Backend,
    /// The region of Alibaba's endpoints (recorded; the lab's store is --kms-endpoint).
    #[arg(long, default_value = "cn-hangzhou")]
    region: String,
    /// The store's endpoint: `http://host:port`, or a bare host for `https://`.
    #[arg(long, env = "KMS_SECRET_SYNC_ENDPOINT", default_value = "")]
    kms_endpoint: String,
    /// How often remote secrets are read again, unless an ExternalSecret sets refreshInterval.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    polling_interval: Duration,
    /// Read remote secrets only when an ExternalSecret or its Secret changes, and at start.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    disable_polling: bool,
    /// The first retry after a failed sync (doubled per failure, jittered, capped at the polling interval).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    reconcile_period: Duration,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 1)]
    reconcile_count: u16,
    /// ExternalSecrets of these namespaces only (comma-separated); all when empty.
    #[arg(long, value_delimiter = ',', default_value = "")]
    watch_namespaces: Vec<String>,
    /// Never ExternalSecrets of these namespaces (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "")]
    exclude_namespaces: Vec<String>,
    /// Calls to the store per second, over all ExternalSecrets.
    #[arg(long, visible_alias = "max-concurrent-secret-pulls", default_value = "10")]
    max_concurrent_kms_secret_pulls: NonZeroU32,
    /// Accepted for ack-secret-manager's chart: OOS is not served by the lab.
    #[arg(long, default_value = "10")]
    max_concurrent_oos_secret_pulls: NonZeroU32,
    /// Accepted for ack-secret-manager's chart: the lab has no ECS metadata service, so no worker
    /// role; entries without secretStoreRef use ACCESS_KEY_ID and SECRET_ACCESS_KEY.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    enable_worker_role: bool,
    /// Accepted for ack-secret-manager's chart: credentials are read afresh at every sync.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    token_rotation_period: Duration,
    /// The kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Calls to the store allowed in a burst (ack-secret-manager's limiter allows 1).
    #[arg(long, default_value = "1")]
    store_burst: NonZeroU32,
    /// The deadline of one store call.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    store_timeout: Duration,
    /// Serve Prometheus metrics at /metrics on this address (e.g. 127.0.0.1:9102).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
}

/// The controller's own credential, as ack-secret-manager reads it: `ACCESS_KEY_ID` and
/// `SECRET_ACCESS_KEY` (never flags: they would show in `ps`).
fn own_credential() -> anyhow::Result<Option<StoreCredential>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("ACCESS_KEY_ID"), var("SECRET_ACCESS_KEY")) {
        (Some(access_key), Some(secret_key)) => Ok(Some(StoreCredential::new(access_key, secret_key))),
        (Some(_), None) => anyhow::bail!("ACCESS_KEY_ID is set but SECRET_ACCESS_KEY is not: export the access key's secret too"),
        (None, Some(_)) => anyhow::bail!("SECRET_ACCESS_KEY is set but ACCESS_KEY_ID is not: export the access key's id too"),
        (None, None) => Ok(None),
    }
}

fn listed(values: Vec<String>) -> Vec<String> {
    values.into_iter().map(|v| v.trim().trim_matches('"').to_owned()).filter(|v| !v.is_empty()).collect()
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let credential = own_credential()?;
    let client = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("--kubeconfig {}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default().await.context("no Kubernetes configuration found: pass --kubeconfig or set KUBECONFIG")?,
    };
    let metrics = Arc::new(kms_secret_sync::metrics::Metrics::default());
    if let Some(addr) = args.metrics_addr {
        let (bound, _task) =
            kms_secret_sync::metrics::serve(metrics.clone(), addr).await.with_context(|| format!("--metrics-addr {addr}"))?;
        tracing::info!(%bound, "serving metrics at /metrics");
    }
    tracing::info!(
        backend = ?args.backend,
        region = %args.region,
        enable_worker_role = args.enable_worker_role,
        token_rotation_period = ?args.token_rotation_period,
        max_concurrent_oos_secret_pulls = args.max_concurrent_oos_secret_pulls,
        "accepted for ack-secret-manager's chart"
    );
    let config = ControllerConfig {
        watch_namespaces: listed(args.watch_namespaces),
        exclude_namespaces: listed(args.exclude_namespaces),
        polling_interval: args.polling_interval,
        disable_polling: args.disable_polling,
        reconcile_period: args.reconcile_period,
        reconcile_count: args.reconcile_count.max(1),
        kms_endpoint: Some(args.kms_endpoint).filter(|e| !e.is_empty()),
        credential,
        max_concurrent_kms_secret_pulls: args.max_concurrent_kms_secret_pulls,
        store_burst: args.store_burst,
        store_timeout: args.store_timeout,
    };
    tracing::info!(?config, "starting");
    kms_secret_sync::run(client, config, metrics, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

/// Errors end the process as one `error: …` line (the cause chain, never a backtrace) with the
/// exit-code table's 2: nothing is served when the set-up fails. A panic (a bug) ends as a
/// message and exit 1.
fn main() -> std::process::ExitCode {
    kms_lab_cli_common::guard_panics("kms-secret-sync", || match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(main_body()),
        Err(error) => kms_lab_cli_common::fail(&format!("cannot start the async runtime: {error}"), kms_lab_cli_common::Exit::Failed),
    })
}

async fn main_body() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match command(Cli::parse().command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => kms_lab_cli_common::fail(&format!("{error:#}"), kms_lab_cli_common::Exit::Usage),
    }
}

async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run(*args).await,
        Command::Crd { reference: true } => {
            print!("{}", kms_secret_sync::reference::markdown());
            Ok(())
        }
        Command::Crd { reference: false } => {
            print!("{}", kms_secret_sync::crd::crds_yaml()?);
            Ok(())
        }
        Command::Rbac { namespace } => {
            print!("{}", kms_secret_sync::rbac::yaml(&namespace)?);
            Ok(())
        }
    }
}
