//! `kms-secret-sync`: thin over the library. `run` the controller, print the `crd`s (or their
//! Markdown reference), or print the `rbac` objects it needs.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
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
    Run(RunArgs),
    /// Print the CRDs (ExternalSecret, SecretStore, ClusterSecretStore) as YAML.
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

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch this namespace only (a Role suffices); all namespaces when absent.
    #[arg(long)]
    namespace: Option<String>,
    /// How often remote secrets are read again, unless an ExternalSecret sets refreshInterval.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    polling_interval: Duration,
    /// Read remote secrets only when an ExternalSecret or its Secret changes, and at start.
    #[arg(long)]
    disable_polling: bool,
    /// At most one reconcile of an object per period; changes within it are coalesced.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    reconcile_period: Duration,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 4)]
    max_concurrent_reconciles: u16,
    /// The store endpoint for stores that name none (http://host:port).
    #[arg(long, env = "KMS_SECRET_SYNC_ENDPOINT")]
    store_endpoint: Option<String>,
    /// The access key for stores that name no credential; its secret comes from
    /// KMS_SECRET_SYNC_SECRET_KEY (never a flag: it would show in `ps`).
    #[arg(long, env = "KMS_SECRET_SYNC_ACCESS_KEY")]
    access_key: Option<String>,
    /// Calls to the store per second, over all ExternalSecrets.
    #[arg(long, default_value = "10")]
    store_qps: NonZeroU32,
    /// Calls to the store allowed in a burst.
    #[arg(long, default_value = "20")]
    store_burst: NonZeroU32,
    /// The deadline of one store call.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    store_timeout: Duration,
    /// The first retry delay after a store error (doubled per failure, jittered, capped at the polling interval).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    backoff_base: Duration,
    /// Serve Prometheus metrics at /metrics on this address (e.g. 127.0.0.1:9102).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let credential = match (&args.access_key, std::env::var("KMS_SECRET_SYNC_SECRET_KEY").ok()) {
        (Some(access_key), Some(secret_key)) => Some(StoreCredential::new(access_key, secret_key)),
        (Some(_), None) => anyhow::bail!("--access-key is set but KMS_SECRET_SYNC_SECRET_KEY is not: export the access key's secret"),
        (None, _) => None,
    };
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
    let config = ControllerConfig {
        namespace: args.namespace,
        polling_interval: args.polling_interval,
        disable_polling: args.disable_polling,
        reconcile_period: args.reconcile_period,
        max_concurrent_reconciles: args.max_concurrent_reconciles,
        store_endpoint: args.store_endpoint,
        credential,
        store_qps: args.store_qps,
        store_burst: args.store_burst,
        store_timeout: args.store_timeout,
        backoff_base: args.backoff_base,
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
    kms_lab_edge::guard_panics("kms-secret-sync", || match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(main_body()),
        Err(error) => kms_lab_edge::fail(&format!("cannot start the async runtime: {error}"), kms_lab_edge::Exit::Failed),
    })
}

async fn main_body() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match command(Cli::parse().command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => kms_lab_edge::fail(&format!("{error:#}"), kms_lab_edge::Exit::Usage),
    }
}

async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run(args).await,
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
