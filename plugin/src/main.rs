//! `kms-plugin`: parses flags, sets up logging and signals, and runs [`kms_plugin::Plugin`].

use std::process::ExitCode;

use clap::Parser;
use kms_plugin::Plugin;
use kms_plugin::cli::{Args, Command, LogFormat};
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for a configuration the plugin cannot use.
const EXIT_CONFIG: u8 = 2;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KMS_PLUGIN_LOG").unwrap_or_else(|_| "info".into());
    // ANSI colour only when stderr is a terminal: a log file must not carry escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    if let Some(Command::RotateKek { kek_file }) = &args.command {
        return match kms_plugin::kek::append_random_key(kek_file) {
            Ok(()) => {
                eprintln!("appended a new KEK version to {}; send SIGHUP to a running plugin to use it", kek_file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                exit_for_kek(&error)
            }
        };
    }
    let config = match args.resolve() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            match error.downcast_ref::<kms_plugin::ServeError>() {
                Some(kms_plugin::ServeError::Kek(kek)) => exit_for_kek(kek),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// 2 for a key file the user must fix (configuration), 1 for anything else.
fn exit_for_kek(error: &kms_plugin::KekError) -> ExitCode {
    match error {
        kms_plugin::KekError::KeyFile(_) => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::FAILURE,
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
