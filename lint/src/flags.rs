//! What the linter needs from kube-apiserver's flags: feature gates, automatic reload and the
//! request timeout. Read from a file holding the flags in any common shape (a command line, one
//! flag per line, or a static pod manifest's `- --flag=value` list).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::error::LintError;

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

    /// Reads flags from a file.
    pub fn from_file(path: &Path) -> Result<Self, LintError> {
        let text = std::fs::read_to_string(path).map_err(|source| LintError::Read { path: path.to_owned(), source })?;
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
}
