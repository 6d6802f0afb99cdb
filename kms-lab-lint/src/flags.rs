//! What the linter needs from kube-apiserver's flags: feature gates, automatic reload and the
//! request timeout. Read from a file holding the flags in any common shape (a command line, one
//! flag per line, or a static pod manifest's `- --flag=value` list).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::error::LintError;
use crate::input::{clip, read_text};

/// kube-apiserver's default `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The apiserver flags that matter to encryption at rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiserverFlags {
    /// Whether a file of flags was given (`--apiserver-flags`), so absent flags mean "off".
    pub from_file: bool,
    /// `--feature-gates`, gate name → enabled.
    pub feature_gates: BTreeMap<String, bool>,
    /// `--encryption-provider-config-automatic-reload`.
    pub automatic_reload: bool,
    /// `--request-timeout` (default 60s).
    pub request_timeout: Option<Duration>,
}

impl ApiserverFlags {
    /// Parses flags from the text of a file.
    pub fn parse(text: &str) -> Result<Self, LintError> {
        let mut flags = Self { from_file: true, ..Self::default() };
        let tokens: Vec<String> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.split_whitespace())
            .map(|token| token.trim_matches(|c| c == '"' || c == '\'' || c == ',' || c == '\\').to_owned())
            .filter(|token| !token.is_empty() && token != "-")
            .collect();
        let mut index = 0;
        while index < tokens.len() {
            let token = &tokens[index];
            index += 1;
            let Some(flag) = token.strip_prefix("--") else { continue };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (flag, None),
            };
            let mut value = || -> Option<String> {
                inline.clone().or_else(|| {
                    let next = tokens.get(index).filter(|t| !t.starts_with("--")).cloned();
                    if next.is_some() {
                        index += 1;
                    }
                    next
                })
            };
            match name {
                "feature-gates" => {
                    let gates = value().unwrap_or_default();
                    flags.add_gates(&gates)?;
                }
                "encryption-provider-config-automatic-reload" => {
                    // A boolean flag: bare means true; only `=false` turns it off.
                    flags.automatic_reload = inline.as_deref().map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(true);
                }
                "request-timeout" => {
                    let text = value().unwrap_or_default();
                    flags.request_timeout = Some(parse_go_duration(&text).ok_or_else(|| LintError::Flag {
                        flag: "--request-timeout",
                        value: text.clone(),
                        hint: "expected a Go duration such as `60s` or `1m`".to_owned(),
                    })?);
                }
                _ => {}
            }
        }
        Ok(flags)
    }

    /// Reads flags from a file (at most [`crate::input::MAX_FILE_BYTES`]), refusing a file that
    /// is clearly something else (another manifest, an EncryptionConfiguration, no flags at all).
    pub fn from_file(path: &Path) -> Result<Self, LintError> {
        let text = read_text(path, "--apiserver-flags")?;
        if let Some(found) = not_apiserver_flags(&text) {
            return Err(LintError::WrongKind {
                path: path.to_owned(),
                flag: "--apiserver-flags",
                found,
                expected: "kube-apiserver's flags (its command line, one flag per line, or its static pod manifest)",
            });
        }
        Self::parse(&text)
    }

    /// Adds `Gate=true,Other=false` (the `--feature-gates` syntax).
    pub fn add_gates(&mut self, gates: &str) -> Result<(), LintError> {
        for pair in gates.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || LintError::Flag {
                flag: "--feature-gates",
                value: pair.to_owned(),
                hint: "expected `Name=true` or `Name=false`, comma-separated, e.g. `KMSv1=true`".to_owned(),
            };
            let (name, value) = pair.split_once('=').ok_or_else(bad)?;
            let enabled = match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad()),
            };
            self.feature_gates.insert(name.trim().to_owned(), enabled);
        }
        Ok(())
    }

    /// Whether the gate is set to true.
    pub fn gate(&self, name: &str) -> bool {
        self.feature_gates.get(name).copied().unwrap_or(false)
    }

    /// The request timeout in force.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }
}

/// What `text` is, when it is clearly not kube-apiserver's flags; `None` when it may be.
fn not_apiserver_flags(text: &str) -> Option<String> {
    let kind = text.lines().find_map(|line| line.strip_prefix("kind:")).map(|kind| kind.trim().trim_matches(['"', '\'']));
    match kind {
        Some("EncryptionConfiguration") => {
            return Some("an EncryptionConfiguration (lint it as the main file and give this flag the apiserver's flags)".to_owned());
        }
        Some(kind) if !text.contains("kube-apiserver") => {
            return Some(format!("a Kubernetes `{}` manifest that does not run kube-apiserver", clip(kind)));
        }
        _ => {}
    }
    let has_flag = text.split_whitespace().any(|token| token.trim_matches(['"', '\'', ',']).starts_with("--"));
    (!has_flag).then(|| "a file without any command-line flag (`--name=value`)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_static_pod_command_list() {
        let flags = ApiserverFlags::parse(
            "    - kube-apiserver\n    - --feature-gates=KMSv1=true,Other=false\n    - --encryption-provider-config-automatic-reload=true\n    - --request-timeout=30s\n",
        )
        .unwrap();
        assert!(flags.gate("KMSv1") && !flags.gate("Other") && flags.automatic_reload);
        assert_eq!(flags.request_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn reads_a_command_line_with_separate_values() {
        let flags =
            ApiserverFlags::parse("kube-apiserver --feature-gates KMSv1=true \\\n  --encryption-provider-config-automatic-reload").unwrap();
        assert!(flags.gate("KMSv1") && flags.automatic_reload);
        assert_eq!(flags.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        assert!(!ApiserverFlags::parse("--encryption-provider-config-automatic-reload=false").unwrap().automatic_reload);
        assert!(ApiserverFlags::parse("--feature-gates=KMSv1").is_err());
    }

    #[test]
    fn files_that_are_not_flags_are_named() {
        let deployment =
            "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - args: [--port=80]\n";
        assert!(not_apiserver_flags(deployment).unwrap().contains("`Deployment` manifest"));
        assert!(not_apiserver_flags("kind: EncryptionConfiguration\nresources: []\n").unwrap().contains("an EncryptionConfiguration"));
        assert!(not_apiserver_flags("hello world\n").unwrap().contains("without any command-line flag"));
        assert!(not_apiserver_flags("kind: Pod\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --foo=1\n").is_none());
        assert!(not_apiserver_flags("kube-apiserver --feature-gates=KMSv1=true").is_none());
    }
}
