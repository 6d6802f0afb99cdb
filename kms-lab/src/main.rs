//! `kms-lab`: the user-facing command line. Parses and dispatches; the work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kms_lab::decode::{self, DecodeArgs, OutputFormat};

/// kms-lab: a test harness and simulation lab for Kubernetes KMS plugins.
#[derive(Debug, Parser)]
#[command(name = "kms-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Explain a raw etcd value (provider, key id, annotations) and, with keys, print the object.
    Decode(DecodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Decode(args) => match runtime.block_on(decode::run(&args)) {
            Ok(report) => {
                match args.format {
                    OutputFormat::Text => print!("{}", decode::render_text(&report)),
                    OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
