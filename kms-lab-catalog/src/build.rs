//! Getting a plugin's binaries: Go recipes go through the stack's one locator and cache
//! ([`kms_lab_provision::locate_go_subject`]), Cargo recipes through `cargo build` in this
//! workspace, `path:` is used as it is.

use std::path::{Path, PathBuf};

use kms_lab_provision::workspace::workspace_root;
use kms_lab_provision::{GoInstall, GoRecipe, GoSubject, ProvisionOptions, locate_go_install, locate_go_recipe, locate_go_subject};

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

/// What builds a `go_build`: the manifest's own recipe, or a subject of the stack's table.
enum GoSource {
    Recipe(Box<GoRecipe>),
    Subject(GoSubject),
}

impl GoSource {
    fn locate(&self, options: &ProvisionOptions) -> Result<PathBuf, kms_lab_provision::ProvisionError> {
        match self {
            Self::Recipe(recipe) => locate_go_recipe(recipe, options),
            Self::Subject(subject) => locate_go_subject(*subject, options),
        }
    }
}

/// The Go source a `go_build` names: with `module` and `commit`, the manifest's own recipe (a
/// third-party folder); else a subject of the stack's Go locator (a folder and main package it
/// knows).
fn go_source(manifest: &Manifest, label: &str, build: &Build) -> Result<GoSource, PluginError> {
    let Build::GoBuild { dir, package, module, commit, goflags, go_work, go_mod } = build else {
        unreachable!("go_source is called for go_build recipes only")
    };
    let recipe_error = |message: String| PluginError::Recipe { plugin: manifest.name.clone(), path: manifest.path.clone(), message };
    match (module, commit) {
        (Some(module), Some(commit)) => {
            let folder = dir.strip_prefix(THIRDPARTY_PREFIX).ok_or_else(|| {
                recipe_error(format!("`go_build` of `{dir}` with `module:`/`commit:`: the folder must be under `{THIRDPARTY_PREFIX}`"))
            })?;
            if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(recipe_error(format!("`go_build` `commit: {commit}`: expected the 40 hex digits of the upstream commit")));
            }
            let name = label.replace('/', "-");
            Ok(GoSource::Recipe(Box::new(GoRecipe {
                env_var: GoRecipe::env_var_for(&name),
                name,
                folder: folder.trim_end_matches('/').to_owned(),
                package: package.clone(),
                module: module.clone(),
                commit: commit.clone(),
                goflags: goflags.clone(),
                go_work: *go_work,
                go_mod: go_mod.clone(),
                replace: Vec::new(),
            })))
        }
        (None, None) => go_subject(manifest, dir, package).map(GoSource::Subject),
        _ => Err(recipe_error(format!("`go_build` of `{dir}`: give both `module:` and `commit:` (a third-party folder), or neither"))),
    }
}

/// The Go subject a `go_build` without a recipe names: the stack's locator knows each source
/// folder and main package it can build and cache.
fn go_subject(manifest: &Manifest, dir: &str, package: &str) -> Result<GoSubject, PluginError> {
    let folder = dir.strip_prefix(THIRDPARTY_PREFIX).unwrap_or(dir).trim_end_matches('/');
    let want = |s: &GoSubject| s.folder() == folder && s.main_package().trim_start_matches("./") == package.trim_start_matches("./");
    GoSubject::ALL.iter().copied().find(want).ok_or_else(|| {
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
                "`go_build` of `{dir}` `{package}`: the stack's Go locator builds only the folders it knows ({}); give `module:` and `commit:` (a folder under {THIRDPARTY_PREFIX}), or build it yourself and use `path:`",
                known.join(", ")
            ),
        }
    })
}

/// What a `go_install` needs: the target, and the variable naming a binary or checkout instead.
fn go_install(label: &str, target: &str) -> GoInstall {
    let name = label.replace('/', "-");
    GoInstall { env_var: GoRecipe::env_var_for(&name), name, target: target.to_owned() }
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
    locate_as(manifest, &manifest.name, build)
}

/// Like [`locate`], for the binary `label` names (the plugin's, or `PLUGIN/EXTRA` for an extra process).
pub fn locate_as(manifest: &Manifest, label: &str, build: &Build) -> Result<Located, PluginError> {
    match build {
        Build::Path(path) => {
            let path = resolve_path(manifest, path);
            Ok(if executable(&path) { Located::Built(path) } else { Located::Missing(format!("no executable {}", path.display())) })
        }
        Build::Cargo { bin, .. } => {
            let path = cargo_binary(bin);
            Ok(if executable(&path) { Located::Built(path) } else { Located::Missing(format!("no {}", path.display())) })
        }
        Build::GoBuild { .. } => {
            let source = go_source(manifest, label, build)?;
            let options = ProvisionOptions { allow_build: false, progress: false, ..ProvisionOptions::default() };
            Ok(match source.locate(&options) {
                Ok(path) => Located::Built(path),
                Err(_) => Located::Missing(format!("not in the cache {}", options.effective_cache_dir().unwrap_or_default().display())),
            })
        }
        Build::GoInstall(target) => {
            let install = go_install(label, target);
            let options = ProvisionOptions { allow_build: false, progress: false, ..ProvisionOptions::default() };
            Ok(match locate_go_install(&install, &options) {
                Ok(path) => Located::Built(path),
                Err(_) => Located::Missing(format!(
                    "not in the cache {} and ${} not set (`go install {target}` builds it where the module proxy serves it)",
                    options.effective_cache_dir().unwrap_or_default().display(),
                    install.env_var
                )),
            })
        }
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
        Build::Path(_) => match locate_as(manifest, label, build)? {
            Located::Built(path) => Ok(path),
            Located::Missing(where_) => Err(PluginError::NotBuilt { plugin: label.to_owned(), where_ }),
        },
        Build::GoBuild { .. } => {
            let options = ProvisionOptions { progress, ..ProvisionOptions::default() };
            go_source(manifest, label, build)?
                .locate(&options)
                .map_err(|source| PluginError::Provision { plugin: label.to_owned(), source: Box::new(source) })
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
            let output = kms_lab_provision::workspace::cargo().args(["build", "--workspace", "--bin", bin]).output().map_err(|e| {
                PluginError::Cargo { plugin: label.to_owned(), command: command.clone(), status: e.to_string(), tail: String::new() }
            })?;
            if !output.status.success() {
                let text = String::from_utf8_lossy(&output.stderr);
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                return Err(PluginError::Cargo { plugin: label.to_owned(), command, status: output.status.to_string(), tail });
            }
            match locate_as(manifest, label, build)? {
                Located::Built(path) => Ok(path),
                Located::Missing(where_) => Err(PluginError::NotBuilt { plugin: label.to_owned(), where_ }),
            }
        }
        Build::GoInstall(target) => {
            let options = ProvisionOptions { progress, ..ProvisionOptions::default() };
            locate_go_install(&go_install(label, target), &options)
                .map_err(|source| PluginError::Provision { plugin: label.to_owned(), source: Box::new(source) })
        }
    }
}
