//! The kms-lab workspace itself: where it is, and cargo run in it as the user's own `cargo`
//! runs, so a build started from a test, from `cargo run` or from `cargo xtask` reuses what the
//! user's builds made instead of compiling a part of the tree again.
//!
//! Cargo gives a running crate (a test binary, a `cargo run` program) variables describing it
//! (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …). A cargo started with them inherited sees them as
//! changed wherever a build script watches one (`ring`'s watches `CARGO_MANIFEST_DIR`): it
//! rebuilds that crate and everything above it (rustls, reqwest, kube-client, …), and the next
//! build without them does the same again.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root this crate was compiled in.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Whether cargo sets `name` for a crate it runs (a test, `cargo run`), rather than the user
/// setting it to configure cargo (`CARGO_HOME`, `CARGO_TARGET_DIR`, …).
pub fn set_by_cargo_for_a_running_crate(name: &OsStr) -> bool {
    const SET_FOR_A_RUNNING_CRATE: [&str; 8] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_BIN_EXE_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    let name = name.to_string_lossy();
    SET_FOR_A_RUNNING_CRATE.iter().any(|prefix| name.starts_with(prefix))
}

/// `cargo` (the one that runs this program when there is one) in the workspace root, without
/// the variables cargo set for this program ([`set_by_cargo_for_a_running_crate`]).
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        if set_by_cargo_for_a_running_crate(&name) {
            command.env_remove(name);
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::{cargo, set_by_cargo_for_a_running_crate};

    #[test]
    fn what_cargo_sets_for_a_test_is_removed_and_what_configures_cargo_is_kept() {
        for set in ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_PKG_NAME", "CARGO_CRATE_NAME", "CARGO_BIN_EXE_kms-lab"] {
            assert!(set_by_cargo_for_a_running_crate(OsStr::new(set)), "{set}");
        }
        for kept in ["CARGO", "CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_INCREMENTAL", "CARGO_TERM_COLOR", "PATH"] {
            assert!(!set_by_cargo_for_a_running_crate(OsStr::new(kept)), "{kept}");
        }
        // This test runs under `cargo test`, which set CARGO_MANIFEST_DIR for it.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let removed: Vec<_> = cargo().get_envs().filter(|(_, value)| value.is_none()).map(|(name, _)| name.to_owned()).collect();
        assert!(removed.iter().any(|name| name == "CARGO_MANIFEST_DIR"), "{removed:?}");
    }
}
