//! One plugin process on a socket of its own, outside any [`crate::Stack`]: what conformance
//! runs, benches measure and tests start. The process is a [`Supervised`] like every stack
//! component (output in a log file, readiness raced against its exit, SIGTERM then SIGKILL); it
//! counts as ready once it answers gRPC ([`PluginClient::answers`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use kms_wire::PluginClient;

use crate::error::StackError;
use crate::process::{Supervised, tail};

/// The deadline of each readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many log lines [`StandalonePlugin::log_tail`] gives.
const LOG_TAIL_LINES: usize = 20;

/// A fresh run directory `/tmp/kms-lab-XXXXXX`, removed when dropped: short enough for socket
/// paths (at most 107 bytes), unlike a build directory's.
pub fn short_run_dir() -> Result<tempfile::TempDir, StackError> {
    tempfile::Builder::new().prefix("kms-lab-").tempdir_in("/tmp").map_err(StackError::io("create a run directory under /tmp"))
}

/// The program, arguments and environment a plugin starts with (built like
/// [`std::process::Command`]; a non-UTF-8 argument is kept lossily).
#[derive(Debug, Clone)]
pub struct PluginCommand {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl PluginCommand {
    /// A command that runs `program`.
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self { program: program.as_ref().to_owned(), args: Vec::new(), envs: Vec::new() }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// Sets an environment variable for the plugin.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

/// A running plugin on its own socket; stopped with [`StandalonePlugin::stop`], killed if dropped.
#[derive(Debug)]
pub struct StandalonePlugin {
    process: Option<Supervised>,
    socket: PathBuf,
    log: PathBuf,
}

impl StandalonePlugin {
    /// Starts `command` (which must make the plugin listen on `socket`), its output in `log`,
    /// and waits until it answers gRPC on the socket, at most `ready_within`; a plugin that
    /// exits first or never answers is an error quoting its last log lines.
    pub async fn start(name: &str, command: &PluginCommand, socket: &Path, log: &Path, ready_within: Duration) -> Result<Self, StackError> {
        let mut process = Supervised::spawn(name, &command.program, &command.args, log, &command.envs)?;
        let endpoint = format!("unix://{}", socket.display());
        let ready = process
            .wait_ready(&format!("a gRPC answer on {endpoint}"), ready_within, || {
                let endpoint = endpoint.clone();
                async move { PluginClient::answers_at(&endpoint, PROBE_TIMEOUT).await }
            })
            .await;
        if let Err(error) = ready {
            process.kill().await;
            return Err(error);
        }
        Ok(Self { process: Some(process), socket: socket.to_owned(), log: log.to_owned() })
    }

    /// The socket as the apiserver's EncryptionConfiguration spells it (`unix:///…`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The process id while it runs (e.g. for a rotate command that sends SIGHUP).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Supervised::pid)
    }

    /// Its log file (stdout and stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last lines of the plugin's output.
    pub fn log_tail(&self) -> String {
        tail(&self.log, LOG_TAIL_LINES)
    }

    /// Sends a signal without waiting (e.g. SIGHUP to reload its KEK).
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(process) = &self.process {
            process.send_signal(signal);
        }
    }

    /// Stops the plugin: SIGTERM, up to `grace` for it to exit, then SIGKILL; its exit status.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        self.process.take()?.stop(grace).await
    }
}
