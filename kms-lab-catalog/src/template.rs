//! Command-line and environment templates: text with typed `{placeholder}`s, parsed when the
//! manifest loads (an unknown placeholder is a load error listing the known ones) and rendered
//! from a [`Values`] when the plugin starts. `{{` and `}}` are a literal brace.

use std::fmt;

/// A value the lab fills into a template; [`Placeholder::ALL`] and [`Placeholder::name`] follow
/// from the variants (declared in the order the docs list them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Placeholder {
    /// `{socket}`: the Unix socket path the apiserver dials (the process's own socket for an extra process).
    Socket,
    /// `{kms_endpoint}`: the mock KMS's URL in the plugin's dialect (`http://127.0.0.1:PORT`, node 0).
    KmsEndpoint,
    /// `{kms_endpoints}`: every node's URL, comma-separated (plugins that take several endpoints).
    KmsEndpoints,
    /// `{kms_port}`: the port of `{kms_endpoint}` (plugins that take a port, e.g. `--fake-kms-port`).
    KmsPort,
    /// `{kms_ca_file}`: the CA certificate (PEM) of a dialect the mock KMS serves over HTTPS
    /// (`aliyun`), e.g. for `SSL_CERT_FILE`.
    KmsCaFile,
    /// `{key_id}`: the key the plugin uses in the mock KMS.
    KeyId,
    /// `{access_key}`: the credential's access key (native and AWS dialects).
    AccessKey,
    /// `{secret_key}`: the credential's secret key (native and AWS dialects). Keep it in `env:`.
    SecretKey,
    /// `{region}`: the region the plugin names (AWS), `us-east-1`.
    Region,
    /// `{vault_token}`: the token the Vault dialect accepts. Keep it in `env:` or a file.
    VaultToken,
    /// `{vault_role_id}`: the role id of the AppRole whose login hands out that token (Vault dialect).
    VaultRoleId,
    /// `{vault_secret_id}`: that AppRole's secret id. Keep it in `env:` or a file.
    VaultSecretId,
    /// `{work_dir}`: the plugin's own private directory for files and extra sockets.
    WorkDir,
    /// `{health_port}`: a free loopback port for the plugin's health endpoint.
    HealthPort,
    /// `{metrics_port}`: a free loopback port for the plugin's metrics endpoint.
    MetricsPort,
    /// `{pid}`: the plugin's process id once it runs; only in `rotation: {command}` (e.g.
    /// `[kill, -HUP, '{pid}']`).
    Pid,
}

impl Placeholder {
    /// Every placeholder, in the order the docs list them.
    pub const ALL: &'static [Placeholder] = <Self as strum::VariantArray>::VARIANTS;

    /// The name between the braces (`kms_endpoint`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Whether its value is a secret (never put in argv, where `ps` shows it: the loader warns).
    pub fn is_secret(self) -> bool {
        matches!(self, Self::SecretKey | Self::VaultToken | Self::VaultSecretId)
    }

    /// Every placeholder as `{name}`, comma-separated, for error messages.
    pub fn known() -> String {
        Self::ALL.iter().map(|p| format!("{{{}}}", p.name())).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`; the error says which placeholder is unknown and lists the known ones.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!("unclosed `{{` in `{text}`: write `{{{{` for a literal brace"));
                    };
                    let name = &rest[..end];
                    let placeholder = Placeholder::ALL
                        .iter()
                        .copied()
                        .find(|p| p.name() == name)
                        .ok_or_else(|| format!("unknown placeholder `{{{name}}}` (known: {})", Placeholder::known()))?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Value(placeholder));
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                '}' => return Err(format!("a lone `}}` in `{text}`: write `}}}}` for a literal brace")),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self { source: text.to_owned(), pieces })
    }

    /// The placeholders it uses.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Value(v) => Some(*v),
            Piece::Text(_) => None,
        })
    }

    /// The text as written in the manifest.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text with every placeholder filled from `values`; a value the lab does not have for
    /// this plugin (e.g. `{vault_token}` on the AWS dialect) is an error naming it.
    pub fn render(&self, values: &Values) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(placeholder) => out.push_str(values.get(*placeholder).ok_or_else(|| {
                    format!("`{}` uses {placeholder}, which has no value here ({})", self.source, values.why_missing(*placeholder))
                })?),
            }
        }
        Ok(out)
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The values of the placeholders for one start of one process. Secrets are not printed by `Debug`.
#[derive(Clone, Default)]
pub struct Values {
    values: std::collections::BTreeMap<Placeholder, String>,
    missing: std::collections::BTreeMap<Placeholder, String>,
}

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> =
            self.values.iter().map(|(k, v)| if k.is_secret() { format!("{k}=<redacted>") } else { format!("{k}={v}") }).collect();
        write!(f, "Values({})", shown.join(", "))
    }
}

impl Values {
    /// Sets a placeholder's value.
    pub fn set(&mut self, placeholder: Placeholder, value: impl Into<String>) -> &mut Self {
        self.values.insert(placeholder, value.into());
        self
    }

    /// Records why a placeholder has no value (shown if a template uses it).
    pub fn unavailable(&mut self, placeholder: Placeholder, why: impl Into<String>) -> &mut Self {
        self.missing.insert(placeholder, why.into());
        self
    }

    /// A placeholder's value.
    pub fn get(&self, placeholder: Placeholder) -> Option<&str> {
        self.values.get(&placeholder).map(String::as_str)
    }

    fn why_missing(&self, placeholder: Placeholder) -> &str {
        self.missing.get(&placeholder).map_or("not set", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_named_as_templates_write_them() {
        assert_eq!(
            Placeholder::known(),
            "{socket}, {kms_endpoint}, {kms_endpoints}, {kms_port}, {kms_ca_file}, {key_id}, {access_key}, {secret_key}, {region}, \
             {vault_token}, {vault_role_id}, {vault_secret_id}, {work_dir}, {health_port}, {metrics_port}, {pid}"
        );
    }

    #[test]
    fn placeholders_render_and_braces_escape() {
        let template = Template::parse("--listen={socket} --x={{literal}} {health_port}").unwrap();
        let mut values = Values::default();
        values.set(Placeholder::Socket, "/s.sock").set(Placeholder::HealthPort, "8080");
        assert_eq!(template.render(&values).unwrap(), "--listen=/s.sock --x={literal} 8080");
        assert_eq!(template.placeholders().collect::<Vec<_>>(), [Placeholder::Socket, Placeholder::HealthPort]);
    }

    #[test]
    fn an_unknown_placeholder_lists_the_known_ones() {
        let error = Template::parse("--listen={sockt}").unwrap_err();
        assert!(error.starts_with("unknown placeholder `{sockt}` (known: {socket}, {kms_endpoint}"), "{error}");
        assert!(Template::parse("{socket").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a}b").unwrap_err().contains("lone"));
    }

    #[test]
    fn a_value_without_a_source_says_why() {
        let template = Template::parse("{vault_token}").unwrap();
        let mut values = Values::default();
        values.unavailable(Placeholder::VaultToken, "the plugin's dialect is `aws`");
        let error = template.render(&values).unwrap_err();
        assert!(error.contains("{vault_token}") && error.contains("dialect is `aws`"), "{error}");
        values.set(Placeholder::VaultToken, "s.secret");
        assert!(!format!("{values:?}").contains("s.secret"));
    }
}
