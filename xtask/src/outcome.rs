//! How a task ends when it does not succeed, and the one way a child command is run so that its
//! exit code reaches the user unchanged.

use std::process::{Command, ExitCode};
use std::time::Instant;

/// A task that did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// A child command failed and has already said why: exit with its code, print nothing more.
    Child {
        /// The child's exit code (1 when it was killed by a signal and had none).
        code: u8,
    },
    /// The task's own error: one `error: …` line, then exit 2 (usage or set-up) or 1.
    Message {
        /// What went wrong and what to do.
        text: String,
        /// The exit code (the table of `kms-lab --help`).
        code: u8,
    },
}

/// The result of a task.
pub type Outcome = Result<(), Failure>;

impl Failure {
    /// A set-up or usage error: nothing ran (exit 2).
    pub fn message(text: impl Into<String>) -> Self {
        Self::Message { text: text.into(), code: 2 }
    }

    /// Something ran and failed (exit 1).
    pub fn failed(text: impl Into<String>) -> Self {
        Self::Message { text: text.into(), code: 1 }
    }

    /// Prints the message (if any) and gives the exit code.
    pub fn exit(self) -> ExitCode {
        match self {
            Self::Child { code } => ExitCode::from(code),
            Self::Message { text, code } => {
                eprintln!("error: {text}");
                ExitCode::from(code)
            }
        }
    }
}

/// Runs `command` with the terminal's stdin/stdout/stderr; a non-zero exit is
/// [`Failure::Child`] with the same code, a command that cannot start is a message naming it.
pub fn delegate(command: impl Into<Command>) -> Outcome {
    let mut command = command.into();
    let program = program_of(&command);
    let child = command.spawn().map_err(|error| Failure::message(format!("cannot run `{program}`: {error}")))?;
    wait_for(child, &program)
}

/// As [`delegate`], with the command's stdout and stderr merged, passed on to this task's
/// stdout as they come, and each line also given to `watch` (to pick out what failed) once the
/// command has exited.
pub fn delegate_watching(command: impl Into<Command>, mut watch: impl FnMut(&str)) -> Outcome {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::mpsc;
    use std::time::Duration;
    let mut command = command.into();
    let program = program_of(&command);
    let cannot_run = |error: std::io::Error| Failure::message(format!("cannot run `{program}`: {error}"));
    let (reader, writer) = std::io::pipe().map_err(cannot_run)?;
    command.stdout(writer.try_clone().map_err(cannot_run)?).stderr(writer);
    let child = command.spawn().map_err(cannot_run)?;
    // Only the command holds the pipe's write ends now.
    drop(command);
    let (lines, seen) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&line);
            let _ = out.flush();
            if lines.send(String::from_utf8_lossy(&line).trim_end().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let outcome = wait_for(child, &program);
    // The pipe ends when every process holding it has exited; one the command started and left
    // running would hold it forever, so what it still writes after a grace period goes unread.
    loop {
        match seen.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => watch(&line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("warning: `{program}` exited, but a process it started still holds its output open (still running?)");
                break;
            }
        }
    }
    outcome
}

fn program_of(command: &Command) -> String {
    command.get_program().to_string_lossy().into_owned()
}

/// Waits for `child`: exit 0 is success, any other exit [`Failure::Child`] with its code.
fn wait_for(mut child: std::process::Child, program: &str) -> Outcome {
    let status = {
        // A signal to the task reaches this child first (see `interrupt`).
        let _waiting = crate::interrupt::waiting_for(child.id());
        child.wait().map_err(|error| Failure::message(format!("cannot wait for `{program}`: {error}")))?
    };
    crate::interrupt::stop_if_interrupted();
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Failure::Child { code: u8::try_from(code).unwrap_or(1) }),
        // Killed by a signal: 128 + the signal, as shells report it.
        None => {
            use std::os::unix::process::ExitStatusExt;
            let code = status.signal().map_or(1, |signal| 128 + signal);
            Err(Failure::Child { code: u8::try_from(code).unwrap_or(1) })
        }
    }
}

/// Runs `command` with its output captured (stdin closed): a non-zero exit becomes
/// `failure("cannot {what} (status):\n  <the last 8 lines of its stderr>")`.
pub fn quietly(command: &mut Command, what: &str, failure: fn(String) -> Failure) -> Outcome {
    let output = command.stdin(std::process::Stdio::null()).output().map_err(|error| failure(format!("cannot {what}: {error}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    tail.reverse();
    Err(failure(format!("cannot {what} ({}):\n  {}", output.status, tail.join("\n  "))))
}

/// Announces one phase of a long task (`==> what`) and, when it ends, how long it took.
pub struct Phase {
    what: String,
    started: Instant,
}

impl Phase {
    /// Prints `==> what` and starts the clock.
    pub fn start(what: impl Into<String>) -> Self {
        let what = what.into();
        eprintln!("==> {what}");
        Self { what, started: Instant::now() }
    }

    /// Prints `    done: what (1m 05s)` or `    FAILED: …`, and passes `outcome` on.
    pub fn end<T>(self, outcome: Result<T, Failure>) -> Result<T, Failure> {
        let verdict = if outcome.is_ok() { "done" } else { "FAILED" };
        eprintln!("    {verdict}: {} ({})", self.what, elapsed(self.started));
        outcome
    }
}

/// `1m 05s` or `12.3s`.
pub fn elapsed(since: Instant) -> String {
    let seconds = since.elapsed().as_secs_f64();
    if seconds < 60.0 { format!("{seconds:.1}s") } else { format!("{}m {:02}s", (seconds / 60.0) as u64, (seconds % 60.0) as u64) }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::{Failure, delegate_watching};

    fn watched(script: &str) -> (Result<(), u8>, Vec<String>) {
        let mut lines = Vec::new();
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        let outcome = delegate_watching(command, |line| lines.push(line.to_owned()));
        let outcome = outcome.map_err(|failure| match failure {
            Failure::Child { code } => code,
            Failure::Message { text, .. } => panic!("{text}"),
        });
        (outcome, lines)
    }

    #[test]
    fn watches_stdout_and_stderr_in_order_and_keeps_the_exit_code() {
        assert_eq!(watched("echo one; echo two >&2; echo three; exit 3"), (Err(3), ["one", "two", "three"].map(String::from).into()));
        assert_eq!(watched("echo ok"), (Ok(()), vec!["ok".to_owned()]));
    }

    #[test]
    fn a_process_left_running_with_the_output_does_not_hold_the_task() {
        // The background sleep keeps the pipe open after sh exits; the task goes on after its
        // grace period with what it read, and the sleep is killed by its own end.
        let (outcome, lines) = watched("sleep 20 & echo started");
        assert_eq!((outcome, lines), (Ok(()), vec!["started".to_owned()]));
    }
}
