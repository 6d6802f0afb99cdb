//! `kms-lab plugins list|build`: the plugin catalog and its builds (the work is in `kms-lab-catalog`).

use kms_lab_catalog::build::{self, Located};
use kms_lab_catalog::{Manifest, PluginError, catalog};

use crate::exit::Exit;

/// Arguments of `kms-lab plugins`.
#[derive(Debug, clap::Args)]
pub struct PluginsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PluginsCommand,
}

/// `kms-lab plugins` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// The catalog (and any manifest files given): name, KMS APIs, mock KMS dialect, built or not and where.
    List {
        /// Manifest files of your own to list too.
        #[arg(value_name = "FILE")]
        files: Vec<String>,
    },
    /// Build a plugin (and its extra processes) into the cache, with progress: a catalog name or a manifest file.
    Build {
        /// A catalog name (`kms-lab plugins list`) or the path of a manifest.
        #[arg(value_name = "NAME|FILE")]
        plugin: String,
    },
}

/// Runs `kms-lab plugins`; what it prints goes to stdout, progress and errors to stderr.
pub fn run(args: &PluginsArgs) -> Exit {
    match &args.command {
        PluginsCommand::List { files } => match list(files) {
            Ok(text) => {
                print!("{text}");
                Exit::Success
            }
            Err(error) => {
                eprintln!("error: {error}");
                Exit::Usage
            }
        },
        PluginsCommand::Build { plugin } => {
            let manifest = match kms_lab_catalog::resolve(plugin) {
                Ok(manifest) => manifest,
                Err(error) => {
                    eprintln!("error: {error}");
                    return Exit::Usage;
                }
            };
            match build_all(&manifest) {
                Ok(()) => Exit::Success,
                Err(error @ (PluginError::Manifest(_) | PluginError::Unknown { .. } | PluginError::Recipe { .. })) => {
                    eprintln!("error: {error}");
                    Exit::Usage
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    Exit::Failed
                }
            }
        }
    }
}

/// The table `plugins list` prints.
pub fn list(files: &[String]) -> Result<String, PluginError> {
    let mut manifests = catalog::all()?;
    for file in files {
        manifests.push(kms_lab_catalog::manifest::load_file(std::path::Path::new(file))?);
    }
    let mut out = format!("{:<24} {:<12} {:<8} {:<10} WHERE\n", "NAME", "APIS", "DIALECT", "BUILT");
    for manifest in &manifests {
        let apis = manifest.apis.iter().map(|a| a.name()).collect::<Vec<_>>().join(",");
        let dialect = manifest.dialect.map_or("-".to_owned(), |d| d.to_string());
        let (built, where_) = match built(manifest) {
            Ok(paths) => ("yes", paths.join(" ")),
            Err(missing) => ("no", missing),
        };
        out.push_str(&format!("{:<24} {apis:<12} {dialect:<8} {built:<10} {where_}\n", manifest.name));
    }
    Ok(out)
}

/// Every binary's path, or what is missing.
fn built(manifest: &Manifest) -> Result<Vec<String>, String> {
    let mut paths = Vec::new();
    for needed in build::needed(manifest) {
        match build::locate_as(manifest, &needed.label, needed.build) {
            Ok(Located::Built(path)) => paths.push(path.display().to_string()),
            Ok(Located::Missing(where_)) => return Err(format!("{}: {where_}", needed.label)),
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(paths)
}

fn build_all(manifest: &Manifest) -> Result<(), PluginError> {
    for needed in build::needed(manifest) {
        eprintln!("{}: locating or building ({})", needed.label, manifest.path.display());
        let started = std::time::Instant::now();
        let path = build::build(manifest, &needed.label, needed.build, true)?;
        eprintln!("{}: ready in {} s: {}", needed.label, started.elapsed().as_secs(), path.display());
    }
    println!("{} is built", manifest.name);
    Ok(())
}
