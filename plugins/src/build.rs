//! Getting a plugin's binaries: Go recipes go through the stack's one locator and cache
//! ([`kms_lab_stack::provision::locate_go_subject`]), Cargo recipes through `cargo build` in this
//! workspace, `path:` is used as it is.

use std::path::{Path, PathBuf};
use std::process::Command;

use kms_lab_stack::provision::{GoSubject, ProvisionOptions, locate_go_subject};

use crate::error::PluginError;
use crate::manifest::{Build, Manifest};

/// The third-party folder as manifests name it (relative to the project).
pub const THIRDPARTY_PREFIX: &str = "../shared/thirdparty/";

/// Where a binary is, or why it is not there.
#[derive(Debug, Clone)]
pub enum Located {
    /// Ready to run.
    Built(PathBuf),
    /// Not built; where it was looked for.
    Missing(String),
}

/// One binary a manifest needs: the plugin's, or an extra process's.
#[derive(Debug, Clone)]
pub struct Needed<'a> {
    /// `aws-encryption-provider`, or `trousseau/awskms` for an extra process.
    pub label: String,
    /// Its recipe.
    pub build: &'a Build,
}

/// Every binary `manifest` needs: its extra processes' first, then its own.
pub fn needed(manifest: &Manifest) -> Vec<Needed<'_>> {
    let extras = manifest.extra_processes.iter().map(|e| Needed { label: format!("{}/{}", manifest.name, e.name), build: &e.build });
    extras.chain(std::iter::once(Needed { label: manifest.name.clone(), build: &manifest.build })).collect()
}

/// The workspace root this crate was compiled in.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Go subject a `go_build` recipe names: the stack's locator knows each source folder and
/// main package it can build and cache.
fn go_subject(manifest: &Manifest, dir: &str, package: &str) -> Result<GoSubject, PluginError> {
    let folder = dir.strip_prefix(THIRDPARTY_PREFIX).unwrap_or(dir).trim_end_matches('/');
    let want = |s: &GoSubject| s.folder() == folder && s.main_package().trim_start_matches("./") == package.trim_start_matches("./");
    GoSubject::ALL.into_iter().find(want).ok_or_else(|| {
        let known: Vec<String> = GoSubject::ALL
            .iter()
            .map(|s| {
                let dir = if s.is_third_party() { format!("{THIRDPARTY_PREFIX}{}", s.folder()) } else { s.folder().to_owned() };
                format!("{{dir: {dir}, package: {}}}", s.main_package())
            })
            .collect();
        PluginError::Recipe {
            plugin: manifest.name.clone(),
            path: manifest.path.clone(),
            message: format!(
                "`go_build` of `{dir}` `{package}`: the stack's Go locator builds only the folders it knows ({}); build it yourself and use `path:`",
                known.join(", ")
            ),
        }
    })
}

/// Cargo's target directory for this workspace (`$CARGO_TARGET_DIR`, else `target/`), debug profile.
fn cargo_binary(bin: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("debug").join(bin)
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the binary of `build` without building: `Located::Missing` says where it looked.
pub fn locate(manifest: &Manifest, build: &Build) -> Result<Located, PluginError> {
    match build {
        Build::Path(path) => {
            let path = resolve_path(manifest, path);
            Ok(if executable(&path) { Located::Built(path) } else { Located::Missing(format!("no executable {}", path.display())) })
        }
        Build::Cargo { bin, .. } => {
            let path = cargo_binary(bin);
            Ok(if executable(&path) { Located::Built(path) } else { Located::Missing(format!("no {}", path.display())) })
        }
        Build::GoBuild { dir, package } => {
            let subject = go_subject(manifest, dir, package)?;
            let options = ProvisionOptions { allow_build: false, progress: false, ..ProvisionOptions::default() };
            Ok(match locate_go_subject(subject, &options) {
                Ok(path) => Located::Built(path),
                Err(_) => Located::Missing(format!("not in the cache {}", options.effective_cache_dir().unwrap_or_default().display())),
            })
        }
        Build::GoInstall(target) => Err(go_install_unsupported(manifest, target)),
    }
}

fn go_install_unsupported(manifest: &Manifest, target: &str) -> PluginError {
    PluginError::Recipe {
        plugin: manifest.name.clone(),
        path: manifest.path.clone(),
        message: format!(
            "`go_install: {target}` is not carried out by the lab yet: run `GOBIN=$PWD/bin go install {target}` and write `path: bin/<binary>`"
        ),
    }
}

/// A `path:` relative to the manifest's folder.
fn resolve_path(manifest: &Manifest, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_owned() } else { manifest.path.parent().unwrap_or(Path::new(".")).join(path) }
}

/// Finds or builds the binary of `build` (blocking: a first Go build takes minutes). With
/// `progress`, says what it does on stderr.
pub fn build(manifest: &Manifest, label: &str, build: &Build, progress: bool) -> Result<PathBuf, PluginError> {
    match build {
        Build::Path(_) => match locate(manifest, build)? {
            Located::Built(path) => Ok(path),
            Located::Missing(where_) => Err(PluginError::NotBuilt { plugin: label.to_owned(), where_ }),
        },
        Build::GoBuild { dir, package } => {
            let subject = go_subject(manifest, dir, package)?;
            let options = ProvisionOptions { progress, ..ProvisionOptions::default() };
            locate_go_subject(subject, &options).map_err(|source| PluginError::Provision { plugin: label.to_owned(), source })
        }
        Build::Cargo { package, bin } => {
            let root = workspace_root();
            // With the workspace's unified features: the same artifacts `cargo build --workspace
            // --bins` (what `cargo xtask test` and CI build first) made, so no rebuild of
            // `package` with other features.
            let command = format!("cargo build --workspace --bin {bin} (package {package})");
            if progress {
                eprintln!("{label}: {command} (in {})", root.display());
            }
            let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "--workspace", "--bin", bin])
                .current_dir(&root)
                .output()
                .map_err(|e| PluginError::Cargo {
                    plugin: label.to_owned(),
                    command: command.clone(),
                    status: e.to_string(),
                    tail: String::new(),
                })?;
            if !output.status.success() {
                let text = String::from_utf8_lossy(&output.stderr);
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                return Err(PluginError::Cargo { plugin: label.to_owned(), command, status: output.status.to_string(), tail });
            }
            match locate(manifest, build)? {
                Located::Built(path) => Ok(path),
                Located::Missing(where_) => Err(PluginError::NotBuilt { plugin: label.to_owned(), where_ }),
            }
        }
        Build::GoInstall(target) => Err(go_install_unsupported(manifest, target)),
    }
}
