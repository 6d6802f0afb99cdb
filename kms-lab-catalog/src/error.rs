//! Why a manifest cannot be used, a plugin cannot be found or built, or it did not start.

use std::path::PathBuf;

/// Why a manifest file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the manifest model, or a value is not usable.
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The path to the bad key (`build.cargo.package`, `command[2]`), `.` for the top.
        key: String,
        /// What was wrong and the valid choices.
        message: String,
    },
}

/// Why a plugin could not be resolved, built or located.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A bad manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Neither a catalog name nor a file.
    #[error(
        "`{wanted}` is neither a catalog plugin nor a manifest file (catalog: {known}); give a catalog name or the path of your manifest"
    )]
    Unknown {
        /// What was asked for.
        wanted: String,
        /// The catalog's names.
        known: String,
    },
    /// The binary is not there and may not be built now.
    #[error("{plugin}: not built ({where_}): run `kms-lab plugins build {plugin}`")]
    NotBuilt {
        /// The plugin (or `plugin/extra`).
        plugin: String,
        /// Where it was looked for.
        where_: String,
    },
    /// The stack's locator could not find or build it.
    #[error("{plugin}: {source}")]
    Provision {
        /// The plugin.
        plugin: String,
        /// The locator's error (every place tried, the fix).
        #[source]
        source: Box<kms_lab_provision::ProvisionError>,
    },
    /// The recipe cannot be carried out here.
    #[error("{plugin}: cannot build from {path}: {message}")]
    Recipe {
        /// The plugin.
        plugin: String,
        /// The manifest.
        path: PathBuf,
        /// Why, and what to write instead.
        message: String,
    },
    /// `cargo build` failed.
    #[error("{plugin}: `{command}` failed ({status}); its output ends:\n{tail}")]
    Cargo {
        /// The plugin.
        plugin: String,
        /// The command run.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its output.
        tail: String,
    },
}
