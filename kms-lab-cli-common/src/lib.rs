//! What every kms-lab binary (`kms-lab`, `kms-plugin`, `kms-faulty-plugin`, `mock-kms`) does
//! around its `main`, written once:
//!
//! - [`Exit`]: the one exit-code table (0 / 1 / 2 / 130), [`EXIT_HELP`] for `--help`.
//! - [`init_logging`]: stderr logs, ANSI colour only on a terminal (a log file carries none).
//! - [`ranged`]: flag parsers that reject out-of-range numbers and durations with the range.
//! - [`hint`]: the hint that fits an OS error on a TCP listener (socket connects: `kms_wire`).
//! - [`stop_signal`]: Ctrl-C or SIGTERM, for commands that stop early and write a partial report.
//! - [`files`]: files the user names are replaced only when they are the command's own kind, atomically.
//! - [`guard_panics`]: a panic ends as a message asking to report the bug, never a backtrace.
//!
//! Without the default feature `binary`, only the exit-code table and the panic guard (the
//! xtask's needs: no async runtime, no logging).

#![warn(missing_docs)]

#[cfg(feature = "binary")]
pub mod files;
#[cfg(feature = "binary")]
pub mod hint;
#[cfg(feature = "binary")]
pub mod ranged;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM; never, if neither can be listened for. The one
/// interruption signal of every long command (`scenarios`, `lab`, `report`, `tune`, the bench).
#[cfg(feature = "binary")]
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
}

use std::process::ExitCode;

/// How a command or a server ended; the code every kms-lab binary exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: it ran and everything it checked passed (a server: it stopped cleanly on SIGTERM/SIGINT,
    /// which is how a server is meant to end).
    Success,
    /// 1: the thing checked failed (findings, failed checks or scenarios, a value that is not
    /// what it should be); a server: it failed while serving.
    Failed,
    /// 2: usage or configuration error: a bad flag or an input that cannot be used; nothing ran.
    Usage,
    /// 130: a command was interrupted (Ctrl-C or SIGTERM; 128 + SIGINT, as shells report it);
    /// what finished was printed and partial reports written.
    Interrupted,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Usage => 2,
            Self::Interrupted => 130,
        }
    }

    /// 0 or 1: passed or failed.
    pub fn passed(passed: bool) -> Self {
        if passed { Self::Success } else { Self::Failed }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// The exit-code table as every binary's `--help` shows it (also in the README).
pub const EXIT_HELP: &str = "\
Exit codes (every kms-lab command and binary):
  0    success: everything checked passed (a server: stopped cleanly by SIGTERM/SIGINT)
  1    the thing checked failed (findings, failed checks or scenarios, a malformed value);
       a server: it failed while serving
  2    usage or configuration error (a bad flag or input; nothing ran)
  130  interrupted (Ctrl-C / SIGTERM): what finished is printed, partial reports written";

/// Prints `error: {error}` (with its sources) to stderr and returns `exit`: the one way a
/// binary reports the error it ends with.
pub fn fail(error: &dyn std::fmt::Display, exit: Exit) -> ExitCode {
    eprintln!("error: {error}");
    exit.into()
}

/// Runs a binary's `main` body so that a panic (a bug in kms-lab, never the user's input) ends
/// as one message, a line asking to report it, and exit 1 from the table instead of Rust's
/// backtrace and 101. The panic first unwinds `body`, so every guard in it runs its `Drop`:
/// children started with `kill_on_drop` or a supervisor are stopped before the process exits.
/// `RUST_BACKTRACE=1` keeps Rust's own report (with the backtrace) as well.
pub fn guard_panics(program: &'static str, body: impl FnOnce() -> ExitCode + std::panic::UnwindSafe) -> ExitCode {
    let rust_report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error in {program}: {message}{place}");
        eprintln!("this is a bug in kms-lab, not in your input: please report it with the command line and this message");
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            rust_report(info);
        }
    }));
    std::panic::catch_unwind(body).unwrap_or_else(|_| Exit::Failed.into())
}

/// The log format of a binary's `--log-format`.
#[cfg(feature = "binary")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up logging to stderr with the filter in the environment variable `filter_var` (default
/// `info`). ANSI colour only when stderr is a terminal: a log file must not carry escape codes.
#[cfg(feature = "binary")]
pub fn init_logging(filter_var: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(filter_var).unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_help_agree() {
        for exit in [Exit::Success, Exit::Failed, Exit::Usage, Exit::Interrupted] {
            let code = exit.code().to_string();
            assert!(EXIT_HELP.lines().any(|line| line.trim_start().starts_with(&format!("{code} "))), "{code} is not in EXIT_HELP");
        }
    }

    #[test]
    fn a_panic_unwinds_its_guards_then_exits_1() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static CHILD_STOPPED: AtomicBool = AtomicBool::new(false);
        /// Stands in for a supervised child: stopped in `Drop`.
        struct Child;
        impl Drop for Child {
            fn drop(&mut self) {
                CHILD_STOPPED.store(true, Ordering::SeqCst);
            }
        }
        let code = guard_panics("cli-common-test", || {
            let _child = Child;
            panic!("a bug");
        });
        // Rust's own report again for the rest of this test binary.
        drop(std::panic::take_hook());
        assert_eq!(format!("{code:?}"), format!("{:?}", ExitCode::from(1)));
        assert!(CHILD_STOPPED.load(Ordering::SeqCst), "the panic unwound the body: its guards ran");
        assert_eq!(format!("{:?}", guard_panics("cli-common-test", || Exit::Usage.into())), format!("{:?}", ExitCode::from(2)));
        drop(std::panic::take_hook());
    }
}
