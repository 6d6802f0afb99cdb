//! `mock-kms`: parses flags, sets up logging and signals, and runs [`mock_kms::MockKms`].
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for bad flags or an unusable data
//! dir (the message names the flag and the fix), 1 for anything else.

use std::process::ExitCode;

use clap::Parser;
use mock_kms::cli::{Args, Command, LogFormat};
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for flags or a data dir the KMS cannot use (also clap's code for usage errors).
const EXIT_CONFIG: u8 = 2;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOCK_KMS_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    if let Some(Command::Init { data_dir, shares, threshold }) = &args.command {
        return match mock_kms::seal::init(data_dir, *shares, *threshold) {
            Ok(dealt) => {
                for share in &dealt {
                    println!("{}", share.as_str());
                }
                eprintln!(
                    "initialised sealed data dir {}: {shares} unseal shares printed above, {threshold} unseal.\n\
                     They are shown only once; store them apart. Start with: mock-kms --sealed --data-dir {0} …",
                    data_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let builder = match args.builder() {
        Ok(builder) => builder,
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
    runtime.block_on(run(builder))
}

async fn run(builder: mock_kms::MockKmsBuilder) -> ExitCode {
    let (mut terminate, mut interrupt) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("error: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let kms = match builder.start().await {
        Ok(kms) => kms,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for url in kms.urls() {
        println!("mock-kms listening on {url}");
    }
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: finishing in-flight calls"),
        _ = interrupt.recv() => tracing::info!("SIGINT: finishing in-flight calls"),
    }
    kms.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
