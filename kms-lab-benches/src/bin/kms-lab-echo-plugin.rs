//! `kms-lab-echo-plugin --socket PATH`: the bare tonic echo service (see `kms_lab_benches::echo`),
//! run as its own process like any plugin. SIGTERM or SIGINT stops it and removes the socket.

use std::path::PathBuf;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// The floor for any KMS v2 plugin: returns the plaintext as the ciphertext.
#[derive(Debug, Parser)]
struct Args {
    /// The Unix socket to serve on (must not exist).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
}

/// An error ends the process as one `error: …` line, exit 1 (a server that failed while
/// serving); a panic (a bug) as a message and exit 1.
fn main() -> std::process::ExitCode {
    kms_lab_cli_common::guard_panics("kms-lab-echo-plugin", || match serve(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => kms_lab_cli_common::fail(&format!("{error:#}"), kms_lab_cli_common::Exit::Failed),
    })
}

fn serve(args: Args) -> anyhow::Result<()> {
    // The same runtime the reference plugin's binary builds: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        kms_lab_benches::echo::serve(&args.socket, shutdown).await?;
        Ok(())
    })
}
