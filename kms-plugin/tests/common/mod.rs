//! Starts the real `kms-plugin` binary on a temporary socket and waits until it answers.

#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kms_lab_stack::standalone::{PluginCommand, StandalonePlugin};
use kms_wire::PluginClient;

/// How long a plugin may take to start answering.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// The deadline of every test call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `kms-plugin` process (the lab's one supervisor, [`StandalonePlugin`]), killed if
/// dropped.
pub struct PluginProcess {
    plugin: StandalonePlugin,
    pub socket: PathBuf,
    pub log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kms-plugin")
}

/// Runs `kms-plugin` with `args` to completion; returns its exit status and stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(binary()).args(args).stdin(Stdio::null()).output().expect("kms-plugin runs");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

impl PluginProcess {
    /// Starts the plugin on `socket` with extra `args` and waits until it answers gRPC.
    pub async fn start(dir: &Path, socket: &Path, args: &[&str]) -> Self {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!("plugin-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let mut command = PluginCommand::new(binary());
        command.arg("--socket").arg(socket).args(args);
        let plugin = StandalonePlugin::start("kms-plugin", &command, socket, &log, READY_DEADLINE).await.unwrap_or_else(|e| panic!("{e}"));
        Self { plugin, socket: socket.to_owned(), log }
    }

    /// A connected client.
    pub async fn client(&self) -> PluginClient {
        PluginClient::connect(self.socket.to_str().unwrap(), CALL_TIMEOUT).await.expect("plugin socket accepts connections")
    }

    /// The plugin's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the plugin.
    pub fn signal(&self, signal: libc::c_int) {
        self.plugin.signal(signal);
    }

    /// Sends SIGTERM and waits (bounded) for the exit status; a plugin still running after
    /// [`READY_DEADLINE`] is killed and the test fails.
    pub async fn terminate(self) -> ExitStatus {
        let Self { plugin, log, .. } = self;
        match plugin.stop(READY_DEADLINE).await {
            Some(status) if status.signal() != Some(libc::SIGKILL) => status,
            other => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("kms-plugin did not exit within {READY_DEADLINE:?} of SIGTERM ({other:?}); its log:\n{log}")
            }
        }
    }
}
