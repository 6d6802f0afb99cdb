//! `kms-faulty-plugin`: parses flags, wires signals like `kms-plugin`, and serves the reference
//! plugin's KEK through the faulty services.

use std::process::ExitCode;

use clap::Parser;
use kms_faulty_plugin::cli::FaultyArgs;
use kms_lab_cli_common::{Exit, fail};
use kms_plugin::Plugin;
use kms_plugin::cli::Command;
use kms_plugin::exit;
use tokio::signal::unix::{SignalKind, signal};

/// A panic (a bug) ends as a message and exit 1, after its guards stopped every child.
fn main() -> ExitCode {
    kms_lab_cli_common::guard_panics("kms-faulty-plugin", main_body)
}

fn main_body() -> ExitCode {
    let args = FaultyArgs::parse();
    kms_lab_cli_common::init_logging("KMS_PLUGIN_LOG", args.plugin.log_format);
    if let Some(Command::RotateKek { kek_file }) = &args.plugin.command {
        return match kms_plugin::kek::append_random_key(kek_file) {
            Ok(()) => Exit::Success.into(),
            Err(error) => fail(&error, exit::for_kek(&error)),
        };
    }
    let config = match args.plugin.resolve() {
        Ok(config) => config,
        Err(error) => return fail(&error, Exit::Usage),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}"), Exit::Failed),
    };
    let script = match args.hostile_script.as_deref().map(kms_faulty_plugin::hostile::Script::load).transpose() {
        Ok(script) => script,
        Err(error) => return fail(&error, Exit::Usage),
    };
    match runtime.block_on(run(config, args.defects(), script)) {
        Ok(()) => Exit::Success.into(),
        Err(error) => fail(&error, exit::for_error(&error)),
    }
}

async fn run(
    config: kms_plugin::PluginConfig,
    defects: kms_faulty_plugin::Defects,
    script: Option<kms_faulty_plugin::hostile::Script>,
) -> anyhow::Result<()> {
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
    if let Some(script) = script {
        tracing::warn!("hostile plugin: every answer comes from the script");
        let (v2, v1) = kms_faulty_plugin::hostile::services(plugin.shared(), script);
        plugin.serve_with(v2, v1, shutdown).await?;
        return Ok(());
    }
    tracing::warn!(defects = ?defects.iter().collect::<Vec<_>>(), "faulty plugin: these defects are switched on");
    let (v2, v1) = kms_faulty_plugin::services(plugin.shared(), defects);
    plugin.serve_with(v2, v1, shutdown).await?;
    Ok(())
}
