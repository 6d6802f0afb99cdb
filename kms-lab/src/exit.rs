//! One exit-code table for every `kms-lab` command (and the plugin binaries follow it):
//! the codes are mapped here and nowhere else, and [`HELP`] is what `--help` prints.

use std::process::ExitCode;

/// How a `kms-lab` command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: it ran and everything it checked passed.
    Success,
    /// 1: the thing checked failed (findings, failed checks or scenarios, a value that is not
    /// what it should be).
    Failed,
    /// 2: usage or configuration error: a bad flag or an input that cannot be used; nothing ran.
    Usage,
    /// 130: interrupted (Ctrl-C or SIGTERM; 128 + SIGINT, as shells report it).
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

/// The exit-code table as `kms-lab --help` shows it (also in the README).
pub const HELP: &str = "\
Exit codes (every command):
  0    success: everything checked passed
  1    the thing checked failed (findings, failed checks or scenarios, a malformed value)
  2    usage or configuration error (a bad flag or input; nothing ran)
  130  interrupted (Ctrl-C / SIGTERM)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_help_agree() {
        for exit in [Exit::Success, Exit::Failed, Exit::Usage, Exit::Interrupted] {
            let code = exit.code().to_string();
            assert!(HELP.lines().any(|line| line.trim_start().starts_with(&format!("{code} "))), "{code} is not in HELP");
        }
    }
}
