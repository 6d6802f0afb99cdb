//! The plugins a comparison measures, each run as its own process on a fresh Unix socket (in a
//! `/tmp/kms-lab-*` directory, so the path stays short), ready once it answers gRPC.

use std::path::PathBuf;
use std::time::Duration;

use kms_lab_stack::own::OwnBinary;
use kms_lab_stack::standalone::{PluginCommand, StandalonePlugin, short_run_dir};
use kms_wire::PluginClient;

use crate::BenchError;

/// How long a target may take to answer on its socket.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// SIGTERM to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The deadline of every call the harness makes (kube-apiserver's default).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// What `args` say where the socket goes.
pub const SOCKET_PLACEHOLDER: &str = "{socket}";

/// The role a target plays in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// kms-lab's reference plugin (`kms-plugin --kms local`).
    Plugin,
    /// The bare tonic echo: the floor.
    BareTonic,
    /// The Go plugin on upstream's `k8s.io/kms/pkg/service`: a peer a user could pick instead.
    GoPeer,
}

impl Role {
    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plugin => "kms-plugin",
            Self::BareTonic => "bare-tonic-echo",
            Self::GoPeer => "go-plugin",
        }
    }
}

/// How to start one target.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Its role.
    pub role: Role,
    /// The program.
    pub program: PathBuf,
    /// Its arguments; [`SOCKET_PLACEHOLDER`] is replaced by the socket path.
    pub args: Vec<String>,
}

impl TargetSpec {
    /// The reference plugin binary with a local KEK, as `README.md` starts it (both APIs, logs at info).
    pub fn reference_plugin(program: PathBuf) -> Self {
        Self { role: Role::Plugin, program, args: vec!["--socket".into(), SOCKET_PLACEHOLDER.into(), "--kms".into(), "local".into()] }
    }

    /// The `kms-lab-echo-plugin` binary.
    pub fn bare_tonic(program: PathBuf) -> Self {
        Self { role: Role::BareTonic, program, args: vec!["--socket".into(), SOCKET_PLACEHOLDER.into()] }
    }

    /// A Go peer plugin; `args` name the socket with [`SOCKET_PLACEHOLDER`].
    pub fn go_peer(program: PathBuf, args: Vec<String>) -> Self {
        Self { role: Role::GoPeer, program, args }
    }
}

/// The reference plugin, release-built beside the harness (`KMS_LAB_PLUGIN_BIN` overrides).
pub fn locate_reference_plugin() -> Result<PathBuf, BenchError> {
    Ok(OwnBinary::KmsPlugin.locate()?)
}

/// The bare tonic echo, release-built beside the harness (`KMS_LAB_ECHO_BIN` overrides).
pub fn locate_echo() -> Result<PathBuf, BenchError> {
    Ok(OwnBinary::EchoPlugin.locate()?)
}

/// A target process serving on its socket, with a client connected to it.
#[derive(Debug)]
pub struct RunningTarget {
    role: Role,
    client: PluginClient,
    plugin: Option<StandalonePlugin>,
    // Dropped last: the socket and the log live here.
    dir: tempfile::TempDir,
}

impl RunningTarget {
    /// Starts `spec` in a fresh `/tmp/kms-lab-*` directory and waits (bounded) until it answers
    /// gRPC; a target that exits first or never answers is an error with its last log lines.
    pub async fn start(spec: &TargetSpec) -> Result<Self, BenchError> {
        let dir = short_run_dir()?;
        let socket = dir.path().join("p.sock");
        let log = dir.path().join("target.log");
        let mut command = PluginCommand::new(&spec.program);
        command.args(spec.args.iter().map(|a| a.replace(SOCKET_PLACEHOLDER, &socket.display().to_string())));
        let plugin = StandalonePlugin::start(spec.role.name(), &command, &socket, &log, READY_DEADLINE).await?;
        let client = PluginClient::connect(&plugin.endpoint(), CALL_TIMEOUT)
            .await
            .map_err(|source| BenchError::Connect { target: spec.role.name().to_owned(), source })?;
        Ok(Self { role: spec.role, client, plugin: Some(plugin), dir })
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The client every measurement of this target uses.
    pub fn client(&self) -> &PluginClient {
        &self.client
    }

    /// The target's log so far (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("target.log")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.plugin.as_ref().and_then(StandalonePlugin::pid)
    }

    /// Stops the process (SIGTERM, then SIGKILL after a grace period) and removes its directory.
    pub async fn stop(mut self) {
        if let Some(plugin) = self.plugin.take() {
            plugin.stop(STOP_GRACE).await;
        }
    }
}
