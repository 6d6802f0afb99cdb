//! Where the stack's components run: as local processes (the default) or as Docker containers
//! (through testcontainers), with the same semantics either way — start with logs into the run
//! directory, readiness raced against exit, stop = SIGTERM + grace, kill = SIGKILL.
//!
//! `KMS_LAB_RUNTIME` (`process` or `container`) is read here, in [`Runtime::from_env`], and
//! nowhere else; the `--runtime` flags of the CLIs override it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::StackError;
use crate::process::Supervised;

/// The environment variable that picks the runtime when no `--runtime` flag is given.
pub const RUNTIME_ENV: &str = "KMS_LAB_RUNTIME";

/// The runtime a CLI's `--runtime` flag chose for this process (0: none, 1: process, 2: container).
static CHOSEN: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Where the stack's components run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// Child processes of this program (the default).
    #[default]
    Process,
    /// Docker containers on the host network, one per component, from images built locally
    /// from the same binaries (`localhost/kms-lab/<binary>:<version>-<hash>`).
    Container,
}

impl Runtime {
    /// Every runtime, as its name.
    pub const NAMES: [&str; 2] = ["process", "container"];

    /// The runtime `KMS_LAB_RUNTIME` names, or [`Runtime::Process`] when it is unset or empty.
    pub fn from_env() -> Result<Self, StackError> {
        match std::env::var(RUNTIME_ENV) {
            Ok(value) if !value.trim().is_empty() => {
                value.parse().map_err(|e: ParseRuntimeError| StackError::Container(format!("{RUNTIME_ENV}: {e}")))
            }
            _ => Ok(Self::Process),
        }
    }

    /// Makes `runtime` the one every [`crate::StackOptions::new`] of this process uses, over
    /// `KMS_LAB_RUNTIME` (what a CLI's `--runtime` flag calls, once, before starting stacks).
    pub fn choose_for_process(runtime: Self) {
        CHOSEN.store(if runtime == Self::Process { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
    }

    /// The runtime for new stacks: the one chosen with [`Runtime::choose_for_process`], else
    /// `KMS_LAB_RUNTIME`, else processes.
    pub fn configured() -> Result<Self, StackError> {
        match CHOSEN.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Ok(Self::Process),
            2 => Ok(Self::Container),
            _ => Self::from_env(),
        }
    }

    /// Its name (`process` or `container`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Container => "container",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A runtime name that is neither `process` nor `container`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown runtime `{0}` (known: process, container)")]
pub struct ParseRuntimeError(String);

impl std::str::FromStr for Runtime {
    type Err = ParseRuntimeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "process" => Ok(Self::Process),
            "container" | "docker" => Ok(Self::Container),
            _ => Err(ParseRuntimeError(text.to_owned())),
        }
    }
}

/// Starts one stack's components on its runtime. In containers, every directory in `mounts`
/// is bind-mounted at the same path (so flags, sockets and data dirs mean the same on both
/// sides) and the network is the host's (so `127.0.0.1:<port>` does too).
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    runtime: Runtime,
    mounts: Vec<PathBuf>,
    run: String,
    versions: BTreeMap<PathBuf, String>,
}

impl Launcher {
    /// A launcher for `runtime`; `run` names the run in container labels and names.
    pub fn new(runtime: Runtime, run: &str) -> Self {
        Self { runtime, mounts: Vec::new(), run: run.to_owned(), versions: BTreeMap::new() }
    }

    /// The launcher of one stack: `work` (sockets, data, certificates, configs) mounted, the
    /// upstream images tagged with their provisioned versions.
    pub fn for_stack(runtime: Runtime, run: &str, work: &Path, binaries: &kms_lab_provision::Binaries) -> Self {
        let mut launcher = Self::new(runtime, run).with_mount(work);
        for binary in binaries.all() {
            launcher = launcher.with_version(&binary.path, &binary.version.to_string());
        }
        launcher
    }

    /// Also bind-mounts `dir` (at the same path) into every container.
    pub fn with_mount(mut self, dir: &Path) -> Self {
        self.mounts.push(dir.to_owned());
        self
    }

    /// Tags the image of `binary` with `version` (e.g. `v1.37.2`) instead of kms-lab's own version.
    pub fn with_version(mut self, binary: &Path, version: &str) -> Self {
        self.versions.insert(binary.to_owned(), version.to_owned());
        self
    }

    /// The runtime.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// Starts `program` with `args` and `envs` as component `name`, its output appended to `log`.
    pub async fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        envs: &[(String, String)],
    ) -> Result<Supervised, StackError> {
        match self.runtime {
            Runtime::Process => Supervised::spawn(name, program, args, log, envs),
            Runtime::Container => {
                let version = self.versions.get(program).map_or(env!("CARGO_PKG_VERSION"), String::as_str);
                self.start_container(name, program, None, version, args, log, envs).await
            }
        }
    }

    /// Starts component `name` from a given image (`name:tag`, e.g. a plugin author's released
    /// image, which must be in the local image store) with `args` as its command, in a container.
    /// The process runtime has no images: it refuses, saying to run the binary instead.
    pub async fn spawn_image(
        &self,
        name: &str,
        image: &crate::images::ImageRef,
        args: &[String],
        log: &Path,
        envs: &[(String, String)],
    ) -> Result<Supervised, StackError> {
        match self.runtime {
            Runtime::Process => Err(StackError::Container(format!(
                "{name}: image `{image}` runs only with `--runtime container`; with processes, run its binary"
            ))),
            Runtime::Container => self.start_container(name, Path::new(&image.name), Some(image), &image.tag, args, log, envs).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        name: &str,
        program: &Path,
        image: Option<&crate::images::ImageRef>,
        version: &str,
        args: &[String],
        log: &Path,
        envs: &[(String, String)],
    ) -> Result<Supervised, StackError> {
        let spec = crate::container::ContainerSpec { name, program, image, version, args, envs, log, mounts: &self.mounts, run: &self.run };
        let container = crate::container::Container::start(&spec).await?;
        Ok(Supervised::from_container(name, log, container))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_parse_and_unknown_ones_list_the_choices() {
        assert_eq!("process".parse::<Runtime>().unwrap(), Runtime::Process);
        assert_eq!(" Container ".parse::<Runtime>().unwrap(), Runtime::Container);
        for name in Runtime::NAMES {
            assert_eq!(name.parse::<Runtime>().unwrap().name(), name);
        }
        let error = "podman".parse::<Runtime>().unwrap_err().to_string();
        assert_eq!(error, "unknown runtime `podman` (known: process, container)");
    }
}
