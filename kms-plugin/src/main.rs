//! `kms-plugin`: parses flags, sets up logging and signals, and runs [`kms_plugin::Plugin`].

use std::process::ExitCode;

use clap::Parser;
use kms_lab_cli_common::{Exit, fail};
use kms_plugin::Plugin;
use kms_plugin::cli::{Args, Command};
use kms_plugin::exit;
use tokio::signal::unix::{SignalKind, signal};

/// A panic (a bug) ends as a message and exit 1, after its guards stopped every child.
fn main() -> ExitCode {
    kms_lab_cli_common::guard_panics("kms-plugin", main_body)
}

fn main_body() -> ExitCode {
    let args = Args::parse();
    kms_lab_cli_common::init_logging("KMS_PLUGIN_LOG", args.log_format);
    if let Some(Command::RotateKek { kek_file }) = &args.command {
        return match kms_plugin::kek::append_random_key(kek_file) {
            Ok(()) => {
                eprintln!("appended a new KEK version to {}; send SIGHUP to a running plugin to use it", kek_file.display());
                Exit::Success.into()
            }
            Err(error) => fail(&error, exit::for_kek(&error)),
        };
    }
    let config = match args.resolve() {
        Ok(config) => config,
        Err(error) => return fail(&error, Exit::Usage),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}"), Exit::Failed),
    };
    match runtime.block_on(run(config)) {
        Ok(()) => Exit::Success.into(),
        Err(error) => fail(&error, exit::for_error(&error)),
    }
}

async fn run(config: kms_plugin::PluginConfig) -> anyhow::Result<()> {
    let plugin = Plugin::bind(config)?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let kek = plugin.kek();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if let Err(error) = kek.reload().await {
                tracing::error!(%error, "SIGHUP: KEK reload failed; still using the previous key ring");
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: finishing in-flight calls"),
            _ = interrupt.recv() => tracing::info!("SIGINT: finishing in-flight calls"),
        }
    };
    plugin.serve(shutdown).await?;
    Ok(())
}
