//! Starts the real `kms-plugin` binary on a temporary socket and waits until it answers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kms_wire::PluginClient;
use kms_wire::proto::v2;

/// How long a plugin may take to start answering.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// The deadline of every test call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `kms-plugin` process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct PluginProcess {
    child: Option<Child>,
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
    /// Starts the plugin on `socket` with extra `args` and waits until a v2 Status answers.
    pub async fn start(dir: &Path, socket: &Path, args: &[&str]) -> Self {
        let log = dir.join(format!("plugin-{}.log", std::process::id() as u128 * 1000 + Instant::now().elapsed().as_nanos()));
        let log_file = std::fs::File::create(&log).expect("log file can be created");
        let child = Command::new(binary())
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("kms-plugin starts");
        let mut process = Self { child: Some(child), socket: socket.to_owned(), log };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("child status is readable")) {
                panic!("kms-plugin exited with {status} before it was ready; its log:\n{}", self.log_text());
            }
            if let Ok(client) = PluginClient::connect(self.socket.to_str().unwrap(), CALL_TIMEOUT).await
                && (client.v2().status(v2::StatusRequest {}).await.is_ok() || client.v1beta1().version(v1beta1_version()).await.is_ok())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kms-plugin did not answer on {} within {READY_DEADLINE:?}; its log:\n{}",
                self.socket.display(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A connected client.
    pub async fn client(&self) -> PluginClient {
        PluginClient::connect(self.socket.to_str().unwrap(), CALL_TIMEOUT).await.expect("plugin socket accepts connections")
    }

    /// The plugin's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the plugin.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("plugin is running").id();
        // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("plugin is running");
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("child status is readable") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kms-plugin did not exit within {READY_DEADLINE:?} of SIGTERM; its log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn v1beta1_version() -> kms_wire::proto::v1beta1::VersionRequest {
    kms_wire::proto::v1beta1::VersionRequest { version: "v1beta1".into() }
}
