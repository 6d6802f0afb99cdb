//! Runs a plugin process on a temporary socket for tests and benches: a short run directory
//! under `/tmp` (socket paths are limited to 107 bytes), readiness polled over the socket and
//! raced against the process exiting and a deadline, SIGTERM then SIGKILL on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kms_wire::PluginClient;
use kms_wire::proto::{KMS_V1BETA1_API_VERSION, v1beta1, v2};

use crate::Api;

/// How often readiness is polled.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Log lines quoted in an error.
const LOG_TAIL_LINES: usize = 20;

/// Why a plugin process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The run directory could not be created.
    #[error("cannot create a run directory under /tmp: {0}")]
    TempDir(#[source] std::io::Error),
    /// The program could not be started.
    #[error("cannot start `{program}`: {source} (is it built?)")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it was ready.
    #[error("{name} exited with {status} before {awaited}; last log lines:\n{log_tail}")]
    ExitedEarly {
        /// The process's name.
        name: String,
        /// Its exit status.
        status: ExitStatus,
        /// What readiness was waiting for.
        awaited: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The process did not become ready in time.
    #[error("{name} gave no {awaited} within {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// The process's name.
        name: String,
        /// What readiness was waiting for.
        awaited: String,
        /// The deadline.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
}

/// A fresh run directory `/tmp/kms-lab-XXXXXX`, removed when dropped; short enough for sockets.
pub fn short_run_dir() -> Result<tempfile::TempDir, ProcessError> {
    tempfile::Builder::new().prefix("kms-lab-").tempdir_in("/tmp").map_err(ProcessError::TempDir)
}

/// A running plugin process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct PluginProcess {
    name: String,
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl PluginProcess {
    /// Starts `command` (which must make the plugin listen on `socket`), sends its output to
    /// `log`, and waits until it answers `api` on the socket (v2 Status or v1beta1 Version),
    /// at most `ready_within`.
    pub async fn start(
        name: &str,
        mut command: Command,
        socket: &Path,
        log: &Path,
        api: Api,
        ready_within: Duration,
    ) -> Result<Self, ProcessError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let log_file = std::fs::File::create(log).map_err(|source| ProcessError::Spawn { program: program.clone(), source })?;
        let stderr = log_file.try_clone().map_err(|source| ProcessError::Spawn { program: program.clone(), source })?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ProcessError::Spawn { program, source })?;
        let mut process = Self { name: name.to_owned(), child: Some(child), socket: socket.to_owned(), log: log.to_owned() };
        process.wait_ready(api, ready_within).await?;
        Ok(process)
    }

    async fn wait_ready(&mut self, api: Api, ready_within: Duration) -> Result<(), ProcessError> {
        let awaited = match api {
            Api::V2 => format!("v2 Status answer on {}", self.endpoint()),
            Api::V1beta1 => format!("v1beta1 Version answer on {}", self.endpoint()),
        };
        let deadline = Instant::now() + ready_within;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(ProcessError::ExitedEarly { name: self.name.clone(), status, awaited, log_tail: self.log_tail() });
            }
            if self.answers(api).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::NotReady { name: self.name.clone(), awaited, waited: ready_within, log_tail: self.log_tail() });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn answers(&self, api: Api) -> bool {
        if !self.socket.exists() {
            return false;
        }
        let Ok(client) = PluginClient::connect(&self.endpoint(), Duration::from_secs(1)).await else {
            return false;
        };
        match api {
            Api::V2 => client.v2().status(v2::StatusRequest {}).await.is_ok(),
            Api::V1beta1 => client.v1beta1().version(v1beta1::VersionRequest { version: KMS_V1BETA1_API_VERSION.to_owned() }).await.is_ok(),
        }
    }

    /// The socket as an endpoint (`unix:///…`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The process id (e.g. for a rotate command that sends SIGHUP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the process's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Stops the process: SIGTERM, up to 3 s for it to exit, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped; no memory effects.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
