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
    /// A child process of this program, leader of its own process group (the pid is the
    /// group's id): stopping it stops every process it started.
    Process(tokio::process::Child, libc::pid_t),
    /// A Docker container.
    Container(Box<Container>),
    /// Stopped or killed already (only while `stop`/`kill` consume the value).
    Exited,
}

/// Whether process `pid` runs (a zombie — exited, awaiting its reaper — does not).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Waits until process `pid` no longer runs, at most `bound` (its reaper may take a moment);
/// whether it stopped.
pub async fn stopped_within(pid: u32, bound: Duration) -> bool {
    let started = Instant::now();
    while running(pid) {
        if started.elapsed() > bound {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// The last `n` lines of a log file (empty if unreadable).
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Supervised {
    /// Starts `program` with `args`, stdout and stderr appended to `log`, in a process group of
    /// its own: a plugin started through a script, or one that starts helpers, is stopped with
    /// all of them. The child gets SIGTERM if the process that started it dies.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path, envs: &[(String, String)]) -> Result<Self, StackError> {
        let open_log = || crate::fsutil::append_private(log);
        let stdout = open_log().map_err(StackError::io(format!("open log {}", log.display())))?;
        let stderr = stdout.try_clone().map_err(StackError::io(format!("open log {}", log.display())))?;
        let mut command = tokio::process::Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(stdout).stderr(stderr).kill_on_drop(true).process_group(0);
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
        let group = child.id().map_or(0, |pid| pid as libc::pid_t);
        tracing::debug!(component = name, pid = group, log = %log.display(), "started");
        Ok(Self { name: name.to_owned(), backend: Backend::Process(child, group), log: log.to_owned() })
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
            Backend::Process(child, _) => child.id(),
            Backend::Container(container) => container.pid(),
            Backend::Exited => None,
        }
    }

    /// The container's id, when it runs in one.
    pub fn container_id(&self) -> Option<&str> {
        match &self.backend {
            Backend::Process(..) | Backend::Exited => None,
            Backend::Container(container) => Some(container.id()),
        }
    }

    /// Its exit status, if it has exited.
    pub async fn exited(&mut self) -> Option<ExitStatus> {
        match &mut self.backend {
            Backend::Process(child, _) => child.try_wait().ok().flatten(),
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
            Backend::Process(child, _) => {
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

    /// Sends `signal` to every process of the child's group (the child and whatever it started).
    fn signal_group(group: libc::pid_t, signal: libc::c_int) {
        if group > 0 {
            // SAFETY: kill(2) on the process group we created has no memory effects.
            unsafe {
                libc::kill(-group, signal);
            }
        }
    }

    /// Kills the component at once (SIGKILL), as a crash would, and reaps it (a container is removed).
    pub async fn kill(mut self) -> Option<ExitStatus> {
        match std::mem::replace(&mut self.backend, Backend::Exited) {
            Backend::Process(mut child, group) => {
                Self::signal_group(group, libc::SIGKILL);
                child.wait().await.ok()
            }
            Backend::Container(container) => container.kill().await,
            Backend::Exited => None,
        }
    }

    /// Stops the component: SIGTERM, up to `grace` to exit, then SIGKILL (a container is removed).
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        match std::mem::replace(&mut self.backend, Backend::Exited) {
            Backend::Process(mut child, group) => {
                if let Some(status) = child.try_wait().ok().flatten() {
                    // Whatever it started and left behind goes with it.
                    Self::signal_group(group, libc::SIGKILL);
                    return Some(status);
                }
                Self::signal_group(group, libc::SIGTERM);
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => {
                        Self::signal_group(group, libc::SIGKILL);
                        status.ok()
                    }
                    Err(_) => {
                        tracing::warn!(component = %self.name, ?grace, "did not exit after SIGTERM; sending SIGKILL");
                        self.backend = Backend::Process(child, group);
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
        if let Backend::Process(_, group) = &self.backend {
            Self::signal_group(*group, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers each helper's pid file: a second helper must not read the first one's.
    static HELPERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// A component started through a script that starts a helper and waits for it: what
    /// `sh -c 'plugin & helper & wait'` or a manifest's wrapper script does.
    async fn with_helper(dir: &Path) -> (Supervised, u32) {
        let pid_file = dir.join(format!("helper-{}.pid", HELPERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let script = format!("sleep 600 & echo $! > {}; wait", pid_file.display());
        let args = vec!["-c".to_owned(), script];
        let mut process = Supervised::spawn("script", Path::new("/bin/sh"), &args, &dir.join("log"), &[]).unwrap();
        let read_pid = || std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok());
        process.wait_ready("the helper's pid file", Duration::from_secs(10), || std::future::ready(read_pid().is_some())).await.unwrap();
        let helper = read_pid().unwrap();
        assert!(running(helper), "the helper runs");
        (process, helper)
    }

    #[tokio::test]
    async fn stopping_a_component_stops_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let (process, helper) = with_helper(dir.path()).await;
        process.stop(Duration::from_secs(5)).await;
        assert!(stopped_within(helper, Duration::from_secs(5)).await, "the helper {helper} outlived its stopped parent");
    }

    #[tokio::test]
    async fn killing_or_dropping_a_component_stops_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let (process, helper) = with_helper(dir.path()).await;
        process.kill().await;
        assert!(stopped_within(helper, Duration::from_secs(5)).await, "the helper {helper} outlived its killed parent");
        let (process, helper) = with_helper(dir.path()).await;
        drop(process);
        assert!(stopped_within(helper, Duration::from_secs(5)).await, "the helper {helper} outlived its dropped parent");
    }
}
