//! The plugin manifest: how to build a plugin, run it, reach its KEK, and what it can do. One
//! YAML file per plugin (`deny_unknown_fields`, every choice a typed enum); see
//! `catalog/*.yaml` for real ones and the README's "Your plugin in the lab".

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mock_kms::dialects::Dialect;
use serde::Deserialize;

use crate::error::ManifestError;
use crate::template::{Placeholder, Template};

/// A plugin, as the lab knows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Its name (`aws-encryption-provider`): lower-case letters, digits and dashes.
    pub name: String,
    /// One line saying what it is.
    pub description: String,
    /// How to get its binary (a one-key map: `cargo: {…}`, `go_build: {…}`, `go_install: …`, `path: …`).
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub build: Build,
    /// A released image of the plugin (`NAME:TAG`, in the local image store): with `--runtime
    /// container` the plugin runs from it (its own entrypoint, `command` as arguments) instead of
    /// an image made from the built binary; processes always run the binary.
    #[serde(default)]
    pub image: Option<String>,
    /// The command line, one template per argument (the program is the built binary).
    pub command: Vec<Template>,
    /// Environment variables, values templated (the place for secrets: argv shows in `ps`).
    #[serde(default)]
    pub env: BTreeMap<String, Template>,
    /// Files written (0600) into the plugin's work dir before anything starts, content templated
    /// (configs, credentials files); `{work_dir}/NAME` in templates.
    #[serde(default)]
    pub files: BTreeMap<String, Template>,
    /// The mock KMS dialect the plugin speaks to its remote KMS; absent for a plugin with a local
    /// KEK (no remote KMS).
    #[serde(default)]
    pub dialect: Option<Dialect>,
    /// The KMS APIs it serves on its socket.
    pub apis: Vec<Api>,
    /// How its KEK rotates (`remote_key_id_follows`, `remote_key_id_stays`, `none`, or `{command: […]}`).
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub rotation: Rotation,
    /// Whether it takes several KMS endpoints (`{kms_endpoints}`) and fails over between them.
    #[serde(default)]
    pub several_endpoints: bool,
    /// Processes it needs beside itself, started first in this order (trousseau's providers).
    #[serde(default)]
    pub extra_processes: Vec<ExtraProcess>,
    /// When it counts as started.
    #[serde(default)]
    pub readiness: Readiness,
    /// The file it was read from (catalog entries: `catalog/NAME.yaml`).
    #[serde(skip)]
    pub path: PathBuf,
}

/// How to get the plugin's binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Build {
    /// A package of this Cargo workspace: `cargo build --workspace --bin BIN` (BIN of PACKAGE).
    Cargo {
        /// The package.
        package: String,
        /// The binary target.
        bin: String,
    },
    /// `go build` of a main package in a source folder, through the stack's Go locator and cache.
    /// With `module` and `commit` (a third-party folder) the manifest is the whole recipe
    /// (`stack::provision::locate_go_recipe`); without, the folder is one the stack's table knows
    /// (`stack::provision::locate_go_subject`).
    GoBuild {
        /// The source folder: `../shared/thirdparty/NAME` (the third-party folder, relative to
        /// the project) or a folder of this workspace (`kms-lab-conformance/go-plugin`).
        dir: String,
        /// The main package, relative to `dir` (`./cmd/server`).
        package: String,
        /// The folder's Go module (`github.com/AliyunContainerService/ack-kms-plugin`).
        #[serde(default)]
        module: Option<String>,
        /// The upstream commit the folder holds (40 hex digits): the cache key.
        #[serde(default)]
        commit: Option<String>,
        /// `GOFLAGS` of the build (`-mod=mod` where upstream's `go.sum` is incomplete).
        #[serde(default)]
        goflags: String,
        /// Whether the folder's `go.work` is used (else `GOWORK=off`).
        #[serde(default)]
        go_work: bool,
        /// A `go.mod` for a folder that has none (a dep-managed repository): written into a
        /// build copy of the folder, never into the folder.
        #[serde(default)]
        go_mod: Option<String>,
    },
    /// `go install MODULE/PACKAGE@VERSION`, as a user outside this environment would
    /// (`stack::provision::locate_go_install`); `KMS_LAB_<NAME>` names a built binary or a
    /// checkout instead.
    GoInstall(String),
    /// A binary that exists already; relative to the manifest's folder.
    Path(PathBuf),
}

/// A KMS API a plugin serves on its socket (`kms_wire::Api`, re-exported).
pub use kms_wire::Api;

/// How a plugin's KEK rotates.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rotation {
    /// A rotation in the remote KMS; the plugin's Status `key_id` follows the new version.
    RemoteKeyIdFollows,
    /// A rotation in the remote KMS; the plugin's `key_id` stays the same (it names the key, not
    /// the version).
    RemoteKeyIdStays,
    /// A command the lab runs to rotate the KEK once the plugin runs (argv templates; `{pid}` is
    /// the plugin's process id), e.g. `[kill, -HUP, '{pid}']`.
    Command(Vec<Template>),
    /// It cannot rotate.
    None,
}

/// A process the plugin needs beside itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraProcess {
    /// Its name (the log is `<plugin>-<name>.log`).
    pub name: String,
    /// How to get its binary (a one-key map: `cargo: {…}`, `go_build: {…}`, `go_install: …`, `path: …`).
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub build: Build,
    /// Its socket path (in templates, `{socket}` is this one), usually under `{work_dir}`.
    pub socket: Template,
    /// Its command line.
    pub command: Vec<Template>,
    /// Its environment.
    #[serde(default)]
    pub env: BTreeMap<String, Template>,
    /// How long it may take until its socket accepts connections.
    #[serde(default = "default_within", deserialize_with = "duration")]
    pub within: Duration,
}

impl ExtraProcess {
    /// Every template it starts with: socket, command line, environment.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        std::iter::once(&self.socket).chain(&self.command).chain(self.env.values())
    }
}

/// When a plugin counts as started: the socket accepts connections and (if `status`) the plugin
/// answers gRPC on it ([`kms_wire::PluginClient::answers`]), within a bound; raced against its
/// exit. Healthy or not is not asked here: a plugin in front of a sealed or unreachable KMS is up
/// but unhealthy, and that is what scenarios observe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// Whether the plugin must answer a v2 Status call with anything but "unavailable" (a
    /// v1beta1-only plugin answers `Unimplemented`; else: the socket accepts connections).
    #[serde(default = "yes")]
    pub status: bool,
    /// How long it may take.
    #[serde(default = "default_within", deserialize_with = "duration")]
    pub within: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { status: true, within: default_within() }
    }
}

fn yes() -> bool {
    true
}

fn default_within() -> Duration {
    Duration::from_secs(60)
}

fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration ({e}): write e.g. `30s`")))
}

/// What a plugin can do, as a scenario's `requires:` names it; [`Capability::ALL`] and
/// [`Capability::name`] follow from the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Capability {
    /// Serves KMS v1beta1.
    V1beta1,
    /// Serves KMS v2.
    V2,
    /// Its KEK can be rotated by the lab (in the remote KMS or by a command).
    Rotation,
    /// A rotation changes its Status `key_id` (the apiserver sees it and re-wraps DEKs).
    RotationChangesKeyId,
    /// It takes several KMS endpoints.
    SeveralEndpoints,
    /// It signs its KMS calls with an access key and secret key (the native and AWS dialects), so
    /// changing the KMS's accepted credentials locks it out.
    AccessKeyCredentials,
    /// Its KEK is in a remote KMS (it names a `dialect:`), so faults, seals and audit counts of
    /// the mock KMS concern it.
    RemoteKms,
    /// It calls HashiCorp Vault (the `vault` dialect), so a scenario about Vault itself — its
    /// `sys/` endpoints, HA standbys, the token's lease — concerns it.
    Vault,
}

impl Capability {
    /// Every capability.
    pub const ALL: &'static [Capability] = <Self as strum::VariantArray>::VARIANTS;

    /// Its name in `requires:` (`rotation-changes-key-id`).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Manifest {
    /// What it can do, derived from its fields.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut out = Vec::new();
        if self.apis.contains(&Api::V1beta1) {
            out.push(Capability::V1beta1);
        }
        if self.apis.contains(&Api::V2) {
            out.push(Capability::V2);
        }
        if !matches!(self.rotation, Rotation::None) {
            out.push(Capability::Rotation);
        }
        if matches!(self.rotation, Rotation::RemoteKeyIdFollows) {
            out.push(Capability::RotationChangesKeyId);
        }
        if matches!(self.dialect, Some(Dialect::Native | Dialect::Aws | Dialect::Jdcloud | Dialect::Aliyun)) {
            out.push(Capability::AccessKeyCredentials);
        }
        if self.dialect.is_some() {
            out.push(Capability::RemoteKms);
        }
        if self.dialect == Some(Dialect::Vault) {
            out.push(Capability::Vault);
        }
        if self.several_endpoints {
            out.push(Capability::SeveralEndpoints);
        }
        out
    }

    /// The first capability of `required` it lacks, if any (a scenario's `requires:`).
    pub fn lacks(&self, required: &[Capability]) -> Option<Capability> {
        let have = self.capabilities();
        required.iter().copied().find(|c| !have.contains(c))
    }

    /// `image:` as an image reference (checked when the manifest was parsed).
    pub fn image_ref(&self) -> Option<kms_lab_stack::images::ImageRef> {
        self.image.as_deref().and_then(|text| text.parse().ok())
    }

    /// The API the lab uses it through by default: v2 when it serves it.
    pub fn preferred_api(&self) -> Api {
        if self.apis.contains(&Api::V2) { Api::V2 } else { Api::V1beta1 }
    }
}

/// Parses manifest text (`path` names it in errors and anchors relative paths).
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let mut manifest: Manifest = serde_yaml::from_str(text).map_err(|error| {
        let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        // serde_yaml says `key.path: message at line L column C`: keep the key, drop the location.
        let message = error.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message);
        let (key, message) = match message.split_once(": ") {
            Some((key, rest)) if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c)) => {
                (key.to_owned(), rest.to_owned())
            }
            _ => (".".to_owned(), message.to_owned()),
        };
        ManifestError::Parse { path: path.to_owned(), line, column, key, message }
    })?;
    manifest.path = path.to_owned();
    validate(&manifest, text)?;
    Ok(manifest)
}

/// Reads and parses a manifest file.
pub fn load_file(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io { path: path.to_owned(), source })?;
    parse(path, &text)
}

/// Checks what serde cannot: the name's shape, a non-empty command and API list, and that the
/// placeholders fit the dialect; each error points at the line of the key.
fn validate(manifest: &Manifest, text: &str) -> Result<(), ManifestError> {
    let invalid = |key: &str, message: String| {
        let (line, column) = locate(text, key);
        ManifestError::Parse { path: manifest.path.clone(), line, column, key: key.to_owned(), message }
    };
    let good_name = |name: &str| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') && !name.starts_with('-')
    };
    if !good_name(&manifest.name) {
        return Err(invalid("name", format!("`{}` is not a plugin name: use lower-case letters, digits and dashes", manifest.name)));
    }
    if manifest.command.is_empty() {
        return Err(invalid("command", "the command line is empty: list the plugin's flags, with `{socket}` among them".into()));
    }
    if manifest.apis.is_empty() {
        return Err(invalid("apis", "no KMS API: list what the plugin serves, `v2` and/or `v1beta1`".into()));
    }
    if let Some(image) = &manifest.image {
        image.parse::<kms_lab_stack::images::ImageRef>().map_err(|problem| invalid("image", problem))?;
    }
    let all_templates = manifest.command.iter().chain(manifest.env.values()).chain(manifest.files.values());
    if !all_templates.flat_map(Template::placeholders).any(|p| p == Placeholder::Socket) {
        return Err(invalid(
            "command",
            "no `{socket}` in the command line, environment or files: the plugin must listen on the socket the lab gives it".into(),
        ));
    }
    let starts_the_plugin: [(&str, Vec<&Template>); 4] = [
        ("command", manifest.command.iter().collect()),
        ("env", manifest.env.values().collect()),
        ("files", manifest.files.values().collect()),
        ("extra_processes", manifest.extra_processes.iter().flat_map(ExtraProcess::templates).collect()),
    ];
    let uses_pid = |templates: &[&Template]| templates.iter().flat_map(|t| t.placeholders()).any(|p| p == Placeholder::Pid);
    if let Some((key, _)) = starts_the_plugin.iter().find(|(_, templates)| uses_pid(templates)) {
        return Err(invalid(
            key,
            "`{pid}` is the plugin's process id once it runs: it has a value only in `rotation: {command: [...]}`".into(),
        ));
    }
    if let Rotation::Command(argv) = &manifest.rotation
        && argv.is_empty()
    {
        return Err(invalid("rotation", "the rotation command is empty: e.g. `{command: [kill, -HUP, '{pid}']}`, or `none`".into()));
    }
    // The rotation command's argv is shown by `ps` too, and printed in the conformance report.
    let rotation: &[Template] = match &manifest.rotation {
        Rotation::Command(argv) => argv,
        _ => &[],
    };
    for (key, argv) in [("command", manifest.command.as_slice()), ("rotation", rotation)] {
        for (index, argument) in argv.iter().enumerate() {
            if let Some(secret) = argument.placeholders().find(|p| p.is_secret()) {
                return Err(invalid(
                    key,
                    format!(
                        "{key}[{index}] `{}` puts {secret} on the command line, where `ps` shows it: pass it through `env:` or `files:`",
                        argument.source()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The line and column of a top-level `key:` in `text` (1, 1 if absent).
fn locate(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .position(|line| line.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with(':')))
        .map_or((1, 1), |index| (index + 1, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_named_as_requires_writes_them() {
        let names: Vec<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            ["v1beta1", "v2", "rotation", "rotation-changes-key-id", "several-endpoints", "access-key-credentials", "remote-kms", "vault"]
        );
        for &capability in Capability::ALL {
            assert_eq!(serde_yaml::from_str::<Capability>(capability.name()).unwrap(), capability, "serde reads the same name");
        }
    }

    const GOOD: &str = "name: p\ndescription: d\nbuild: {path: /bin/true}\ncommand: ['--socket={socket}']\ndialect: native\napis: [v2]\nrotation: remote_key_id_follows\n";

    #[test]
    fn a_minimal_manifest_loads_with_defaults_and_derived_capabilities() {
        let manifest = parse(Path::new("p.yaml"), GOOD).unwrap();
        assert!(manifest.readiness.status);
        assert_eq!(manifest.readiness.within, Duration::from_secs(60));
        assert_eq!(
            manifest.capabilities(),
            [
                Capability::V2,
                Capability::Rotation,
                Capability::RotationChangesKeyId,
                Capability::AccessKeyCredentials,
                Capability::RemoteKms
            ]
        );
        let gcp = parse(Path::new("p.yaml"), &GOOD.replace("dialect: native", "dialect: gcp")).unwrap();
        assert!(!gcp.capabilities().contains(&Capability::AccessKeyCredentials), "the Cloud KMS dialect takes no access key");
        assert_eq!(manifest.lacks(&[Capability::V2, Capability::V1beta1]), Some(Capability::V1beta1));
    }

    #[test]
    fn rotation_by_command_parses() {
        let text = GOOD.replace("rotation: remote_key_id_follows", "rotation: {command: [rotate, '{key_id}']}");
        let manifest = parse(Path::new("p.yaml"), &text).unwrap();
        assert!(matches!(manifest.rotation, Rotation::Command(ref argv) if argv.len() == 2));
        assert!(!manifest.capabilities().contains(&Capability::RotationChangesKeyId));
    }
}
