//! One component of the stack, as a child process or a container (see [`crate::runtime`]):
//! started with its output in a log file, raced against its own exit while waiting for
//! readiness, stopped with SIGTERM then SIGKILL. Both backends keep these semantics.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::container::Container;
use crate::error::StackError;

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(100);
/// How many log lines an error shows.
const LOG_TAIL: usize = 25;

/// A running component owned by the stack: a child process or a container.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    backend: Backend,
    log: PathBuf,
}

/// What runs the component.
#[derive(Debug)]
enum Backend {
    /// A child process of this program.
    Process(tokio::process::Child),
    /// A Docker container.
    Container(Box<Container>),
    /// Stopped or killed already (only while `stop`/`kill` consume the value).
    Exited,
}

/// The last `n` lines of a log file (empty if unreadable).
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Supervised {
    /// Starts `program` with `args`, stdout and stderr appended to `log`. The child gets
    /// SIGTERM if the process that started it dies.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path, envs: &[(String, String)]) -> Result<Self, StackError> {
        let open_log = || crate::fsutil::append_private(log);
        let stdout = open_log().map_err(StackError::io(format!("open log {}", log.display())))?;
        let stderr = stdout.try_clone().map_err(StackError::io(format!("open log {}", log.display())))?;
        let mut command = tokio::process::Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(stdout).stderr(stderr).kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            command.spawn().map_err(|source| StackError::Spawn { component: name.to_owned(), program: program.to_owned(), source })?;
        tracing::debug!(component = name, pid = child.id(), log = %log.display(), "started");
        Ok(Self { name: name.to_owned(), backend: Backend::Process(child), log: log.to_owned() })
    }

    /// A component running in `container`, its output followed into `log`.
    pub(crate) fn from_container(name: &str, log: &Path, container: Container) -> Self {
        Self { name: name.to_owned(), backend: Backend::Container(Box::new(container)), log: log.to_owned() }
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id while it runs (in a container: the host pid of the container's init).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(child) => child.id(),
            Backend::Container(container) => container.pid(),
            Backend::Exited => None,
        }
    }

    /// The container's id, when it runs in one.
    pub fn container_id(&self) -> Option<&str> {
        match &self.backend {
            Backend::Process(_) | Backend::Exited => None,
            Backend::Container(container) => Some(container.id()),
        }
    }

    /// Its exit status, if it has exited.
    pub async fn exited(&mut self) -> Option<ExitStatus> {
        match &mut self.backend {
            Backend::Process(child) => child.try_wait().ok().flatten(),
            Backend::Container(container) => container.exited().await,
            Backend::Exited => None,
        }
    }

    /// Polls `check` until it returns true, failing if the process exits first or `deadline` passes.
    pub async fn wait_ready<F, Fut>(&mut self, waited_for: &str, deadline: Duration, mut check: F) -> Result<(), StackError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited().await {
                return Err(StackError::ExitedBeforeReady {
                    component: self.name.clone(),
                    waited_for: waited_for.to_owned(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    last_lines: tail(&self.log, LOG_TAIL),
                });
            }
            if check().await {
                tracing::debug!(component = %self.name, waited_for, elapsed_ms = started.elapsed().as_millis() as u64, "ready");
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(StackError::NotReady {
                    component: self.name.clone(),
                    waited_for: waited_for.to_owned(),
                    seconds: deadline.as_secs(),
                    log: self.log.clone(),
                    last_lines: tail(&self.log, LOG_TAIL),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn signal(&self, signal: libc::c_int) {
        match &self.backend {
            Backend::Process(child) => {
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) on our own child's pid has no memory effects.
                    unsafe {
                        libc::kill(pid as libc::pid_t, signal);
                    }
                }
            }
            Backend::Container(container) => container.signal(signal),
            Backend::Exited => {}
        }
    }

    /// Kills the component at once (SIGKILL), as a crash would, and reaps it (a container is removed).
    pub async fn kill(mut self) -> Option<ExitStatus> {
        match std::mem::replace(&mut self.backend, Backend::Exited) {
            Backend::Process(mut child) => {
                if let Some(pid) = child.id() {
                    // SAFETY: as in `signal`.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                }
                child.wait().await.ok()
            }
            Backend::Container(container) => container.kill().await,
            Backend::Exited => None,
        }
    }

    /// Stops the component: SIGTERM, up to `grace` to exit, then SIGKILL (a container is removed).
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        match std::mem::replace(&mut self.backend, Backend::Exited) {
            Backend::Process(mut child) => {
                if let Some(status) = child.try_wait().ok().flatten() {
                    return Some(status);
                }
                if let Some(pid) = child.id() {
                    // SAFETY: as in `signal`.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGTERM);
                    }
                }
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        tracing::warn!(component = %self.name, ?grace, "did not exit after SIGTERM; sending SIGKILL");
                        self.backend = Backend::Process(child);
                        self.kill().await
                    }
                }
            }
            Backend::Container(container) => container.stop(grace).await,
            Backend::Exited => None,
        }
    }

    /// Sends a signal without waiting (e.g. SIGHUP to reload).
    pub fn send_signal(&self, signal: libc::c_int) {
        self.signal(signal);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Reached only when the stack was not shut down (a panic): `kill_on_drop` also applies;
        // a container is removed (by force) by its own Drop.
        if let Backend::Process(child) = &mut self.backend
            && child.try_wait().ok().flatten().is_none()
        {
            self.signal(libc::SIGKILL);
        }
    }
}
