//! kms-lab's own binaries (`kms-plugin`, `mock-kms`, …): the one locator every crate uses (the
//! stack runs them as processes so a scenario can kill and restart them; the benches and the
//! conformance tests start them too).

use std::path::PathBuf;

use crate::error::StackError;

/// One of kms-lab's own binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnBinary {
    /// The reference plugin.
    KmsPlugin,
    /// The mock remote KMS.
    MockKms,
    /// The reference plugin with defects switched on by flag (conformance mutants, broken variants in scenarios).
    FaultyPlugin,
    /// The bare tonic echo the benches measure the plugin against (the floor).
    EchoPlugin,
    /// The bench harness (`kms-lab-bench`, behind `cargo xtask bench`).
    Bench,
}

impl OwnBinary {
    fn file_name(self) -> &'static str {
        match self {
            Self::KmsPlugin => "kms-plugin",
            Self::MockKms => "mock-kms",
            Self::FaultyPlugin => "kms-faulty-plugin",
            Self::EchoPlugin => "kms-lab-echo-plugin",
            Self::Bench => "kms-lab-bench",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::KmsPlugin => "kms-plugin",
            Self::MockKms => "mock-kms",
            Self::FaultyPlugin => "kms-faulty-plugin",
            Self::EchoPlugin | Self::Bench => "kms-lab-benches",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Self::KmsPlugin => "KMS_LAB_PLUGIN_BIN",
            Self::MockKms => "KMS_LAB_MOCK_KMS_BIN",
            Self::FaultyPlugin => "KMS_LAB_FAULTY_PLUGIN_BIN",
            Self::EchoPlugin => "KMS_LAB_ECHO_BIN",
            Self::Bench => "KMS_LAB_BENCH_BIN",
        }
    }

    /// Finds the binary: its env var, next to the running program (or one level up, for test
    /// binaries in `target/*/deps`), then this workspace's `target/debug`.
    pub fn locate(self) -> Result<PathBuf, StackError> {
        if let Some(path) = std::env::var_os(self.env_var()) {
            return Ok(PathBuf::from(path));
        }
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.join(self.file_name()));
            if let Some(parent) = dir.parent() {
                candidates.push(parent.join(self.file_name()));
            }
        }
        candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug").join(self.file_name()));
        if let Some(found) = candidates.iter().find(|p| p.is_file()) {
            return Ok(found.clone());
        }
        let tried = std::iter::once(format!("${}", self.env_var())).chain(candidates.iter().map(|p| p.display().to_string())).collect();
        Err(StackError::OwnBinaryMissing { binary: self.file_name(), package: self.package(), env_var: self.env_var(), tried })
    }
}
