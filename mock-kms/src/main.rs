//! `mock-kms`: parses flags, sets up logging and signals, and runs [`mock_kms::MockKms`].
//!
//! Exit codes follow the one table (`kms_lab_cli_common::Exit`): 0 after a clean shutdown
//! (SIGTERM/SIGINT), 2 for bad flags, an address it cannot listen on or an unusable data dir
//! (the message names the flag and the fix), 1 when it fails while serving. [`exit_for`] is the
//! one place that maps errors to codes.

use std::process::ExitCode;

use clap::Parser;
use kms_lab_cli_common::{Exit, fail};
use mock_kms::cli::{Args, Command};
use tokio::signal::unix::{SignalKind, signal};

/// Why mock-kms ended with an error: the one place its errors meet the exit-code table.
enum Failure {
    /// Flags, the data dir or the listen address cannot be used: nothing was served.
    Config(String),
    /// The process could not run (async runtime, signal handlers).
    Runtime(String),
}

fn exit_for(failure: Failure) -> ExitCode {
    match failure {
        Failure::Config(error) => fail(&error, Exit::Usage),
        Failure::Runtime(error) => fail(&error, Exit::Failed),
    }
}

/// A panic (a bug) ends as a message and exit 1, after its guards stopped every child.
fn main() -> ExitCode {
    kms_lab_cli_common::guard_panics("mock-kms", main_body)
}

fn main_body() -> ExitCode {
    let args = Args::parse();
    kms_lab_cli_common::init_logging("MOCK_KMS_LOG", args.log_format);
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
                Exit::Success.into()
            }
            Err(error) => exit_for(Failure::Config(error.to_string())),
        };
    }
    let builder = match args.builder() {
        Ok(builder) => builder,
        Err(error) => return exit_for(Failure::Config(error.to_string())),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return exit_for(Failure::Runtime(format!("cannot start the async runtime: {error}"))),
    };
    match runtime.block_on(run(builder)) {
        Ok(()) => Exit::Success.into(),
        Err(failure) => exit_for(failure),
    }
}

async fn run(builder: mock_kms::MockKmsBuilder) -> Result<(), Failure> {
    let (mut terminate, mut interrupt) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(error), _) | (_, Err(error)) => return Err(Failure::Runtime(format!("cannot install signal handlers: {error}"))),
    };
    let kms = builder.start().await.map_err(|error| Failure::Config(error.to_string()))?;
    for url in kms.urls() {
        println!("mock-kms listening on {url}");
    }
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: finishing in-flight calls"),
        _ = interrupt.recv() => tracing::info!("SIGINT: finishing in-flight calls"),
    }
    kms.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
