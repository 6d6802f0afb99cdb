//! Ctrl-C or SIGTERM while a task runs: the command being run gets SIGTERM and is waited for
//! (kms-lab then stops everything it started and writes its partial reports), the daemons this
//! task started (dockerd, a registry) are stopped and their files removed, and the task exits 130.
//! Without this, a `kill` of the xtask alone would leave dockerd running.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Set first thing on a signal: the handler owns the rest of the process's life.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The child command being waited for (0: none).
static CHILD: AtomicU32 = AtomicU32::new(0);
/// What to stop on a signal, newest last, each with the id its guard removes it by.
type Cleanup = Box<dyn FnOnce() + Send>;
static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Installs the handler (once, at start-up); a failure to install is said, not fatal.
pub fn install() {
    let installed = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("==> interrupted: stopping what this task started");
        let child = CHILD.load(Ordering::SeqCst);
        if child != 0 {
            stop_pid(child, Duration::from_secs(60));
        }
        let cleanups = std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, cleanup) in cleanups.into_iter().rev() {
            cleanup();
        }
        std::process::exit(130);
    });
    if let Err(error) = installed {
        eprintln!("warning: Ctrl-C cannot be listened for ({error}); an interrupted run may leave dockerd running");
    }
}

/// After a signal, the handler stops everything and exits 130: the caller must not go on (nor
/// race the handler to an exit code), so this parks the calling thread for good.
pub fn stop_if_interrupted() {
    while INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

/// Marks `pid` as the command being waited for, until the guard drops.
pub fn waiting_for(pid: u32) -> ChildGuard {
    CHILD.store(pid, Ordering::SeqCst);
    ChildGuard
}

/// Clears the command being waited for.
pub struct ChildGuard;

impl Drop for ChildGuard {
    fn drop(&mut self) {
        CHILD.store(0, Ordering::SeqCst);
    }
}

/// Runs `cleanup` if a signal ends the task before the guard drops (the guard's owner cleans up
/// on the ordinary path itself).
pub fn on_signal(cleanup: impl FnOnce() + Send + 'static) -> CleanupGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    CLEANUPS.lock().unwrap_or_else(|p| p.into_inner()).push((id, Box::new(cleanup)));
    CleanupGuard { id }
}

/// Removes its cleanup from the signal path when dropped.
pub struct CleanupGuard {
    id: u64,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        CLEANUPS.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _)| *id != self.id);
    }
}

/// SIGTERM to `pid`, then up to `grace` for it to end (a zombie counts as ended), then SIGKILL.
pub fn stop_pid(pid: u32, grace: Duration) {
    stop(pid, &pid.to_string(), grace);
}

/// [`stop_pid`] for the whole process group `group` leads (the process and its children: the
/// Go builds of `cargo xtask provision`).
pub fn stop_group(group: u32, grace: Duration) {
    stop(group, &format!("-{group}"), grace);
}

/// SIGTERM to `target` (a pid, or `-pgid`), SIGKILL if `pid` still runs after `grace`.
fn stop(pid: u32, target: &str, grace: Duration) {
    let signal = |name: &str| {
        let _ = std::process::Command::new("kill").arg(format!("-{name}")).arg("--").arg(target).status();
    };
    signal("TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid) {
            return;
        }
        // Polling for the process to end; bounded by `grace`.
        std::thread::sleep(Duration::from_millis(100));
    }
    signal("KILL");
}

/// Whether `pid` runs (not gone, not a zombie), from `/proc`.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last `)`.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|state| state != 'Z'),
        Err(_) => false,
    }
}
