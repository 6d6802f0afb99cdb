//! Scenarios on a plugin that is not kms-lab's own (`kms-lab scenarios --plugin NAME|FILE`):
//! which scenarios mean something for it (the rest are reported as skipped, with the reason),
//! and which of a scenario's plugins it stands in for.

use std::sync::Arc;

use kms_lab_catalog::{Capability, Manifest, ManifestPlugin};

use crate::model::{PluginDecl, Scenario};
use crate::steps::Needs;

/// The plugin every scenario runs instead of `kms-plugin`, with its binaries located.
#[derive(Debug, Clone)]
pub struct PluginUnderTest(pub Arc<ManifestPlugin>);

impl PluginUnderTest {
    /// Resolves `wanted` (a catalog name or a manifest file) and locates, or with `allow_build`
    /// builds, its binaries (blocking: a first Go build takes minutes).
    pub fn prepare(wanted: &str, allow_build: bool) -> Result<Self, kms_lab_catalog::PluginError> {
        let manifest = kms_lab_catalog::resolve(wanted)?;
        Ok(Self(Arc::new(ManifestPlugin::prepare(manifest, allow_build)?)))
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        self.0.manifest()
    }

    /// Whether it stands in for `decl`: every plugin the scenario declares as plain `kms-plugin`
    /// (not the deliberately broken `kms-faulty-plugin`, not one with its own `use:`).
    pub fn replaces(decl: &PluginDecl) -> bool {
        decl.defects.is_empty() && decl.uses.is_none()
    }

    /// Why `scenario` means nothing for this plugin (`None`: it runs).
    pub fn why_not(&self, scenario: &Scenario) -> Option<String> {
        why_not(scenario, self.manifest())
    }
}

/// Why `scenario` means nothing for the plugin of `manifest`, or `None` when it applies.
pub fn why_not(scenario: &Scenario, manifest: &Manifest) -> Option<String> {
    let name = &manifest.name;
    if !scenario.stack.plugins.iter().any(PluginUnderTest::replaces) {
        return Some(
            "every plugin of the scenario is kms-faulty-plugin with defects on purpose or a named manifest: it is about those".into(),
        );
    }
    let needs = match needs_of(scenario) {
        Ok(needs) => needs,
        Err(why) => return Some(why),
    };
    let lacking = manifest.lacks(&needs.capabilities)?;
    Some(format!("it needs a plugin with `{lacking}`; {name}'s manifest ({}) does not list it", manifest.path.display()))
}

/// What `scenario` needs of the plugin that runs it: its providers' APIs, its `requires:`, what
/// its mock KMS and its steps call for; `Err` says which step only kms-lab's own plugin can take.
fn needs_of(scenario: &Scenario) -> Result<Needs, String> {
    let mut needs = Needs::of_encryption(&scenario.stack.encryption);
    needs.capabilities.extend(scenario.requires.iter().copied());
    if let Some(kms) = &scenario.stack.mock_kms {
        // A Vault client is given one node: a standby redirects it to the active one.
        if kms.nodes > 1 && kms.vault.is_none() {
            needs.capabilities.push(Capability::SeveralEndpoints);
        }
        if kms.sealed {
            needs.capabilities.push(Capability::RemoteKms);
        }
        if kms.vault.is_some() {
            needs.capabilities.extend([Capability::RemoteKms, Capability::Vault]);
        }
    }
    for (index, item) in scenario.steps.iter().enumerate() {
        needs.absorb(item.kind().needs());
        if let Some(why) = needs.own_plugin_only {
            return Err(format!("step {} needs kms-lab's own plugin: {why}", index + 1));
        }
    }
    Ok(needs)
}

/// Why `scenario` means nothing for kms-lab's own plugin (no `--plugin`), or `None` when it
/// runs: its plugin speaks the native, `jdcloud` and `aliyun` dialects, not Vault's.
pub fn why_not_own_plugin(scenario: &Scenario) -> Option<String> {
    let needs = needs_of(scenario).ok()?;
    needs.capabilities.contains(&Capability::Vault).then(|| {
        "it needs a plugin with `vault` (it drives the mock KMS as a HashiCorp Vault); kms-lab's own plugin does not call \
         Vault: run it with `--plugin vault-kubernetes-kms`"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A v2 plugin with a KEK of its own: no remote KMS to perturb.
    const LOCAL_KEK_PLUGIN: &str =
        "name: local\ndescription: d\nbuild: {path: /bin/true}\ncommand: ['--socket={socket}']\napis: [v2]\nrotation: none\n";

    fn why_not_with(fault: &str) -> Option<String> {
        let manifest = kms_lab_catalog::manifest::parse(Path::new("local.yaml"), LOCAL_KEK_PLUGIN).unwrap();
        let text = format!(
            "title: t\ndescription: d\nstack:\n  mock_kms: {{}}\n  plugins: [{{name: plugin-0}}]\n  encryption:\n    secrets:\n      - kms: {{name: k, api: v2, plugin: plugin-0}}\nsteps:\n  - faults: {{profile: {fault}}}\n"
        );
        let scenario = crate::load::parse(Path::new("t.yaml"), &text).unwrap_or_else(|e| panic!("{e}"));
        why_not(&scenario, &manifest)
    }

    /// A 3-node Vault scenario: a Vault plugin with one address takes it (no `several-endpoints`:
    /// a standby redirects it), any other plugin — kms-lab's own too — is skipped naming `vault`.
    #[test]
    fn a_vault_cluster_scenario_needs_a_vault_plugin_not_several_endpoints() {
        let manifest = |dialect: &str| {
            let text = format!(
                "name: p\ndescription: d\nbuild: {{path: /bin/true}}\ncommand: ['--socket={{socket}}']\ndialect: {dialect}\napis: [v2]\nrotation: none\n"
            );
            kms_lab_catalog::manifest::parse(Path::new("p.yaml"), &text).unwrap()
        };
        let text = "title: t\ndescription: d\nstack:\n  mock_kms: {nodes: 3, sealed: true, vault: {plugin_node: 2}}\n  plugins: [{name: plugin-0}]\n  encryption:\n    secrets:\n      - kms: {name: k, api: v2, plugin: plugin-0}\nsteps:\n  - unseal: {shares: 3, through: vault}\n";
        let scenario = crate::load::parse(Path::new("t.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(why_not(&scenario, &manifest("vault")), None);
        let why = why_not(&scenario, &manifest("aws")).expect("an AWS plugin is skipped");
        assert!(why.contains("`vault`"), "{why}");
        let own = why_not_own_plugin(&scenario).expect("kms-lab's own plugin is skipped");
        assert!(own.contains("`vault`") && own.contains("--plugin vault-kubernetes-kms"), "{own}");
    }

    #[test]
    fn a_fault_on_the_secrets_store_alone_runs_on_any_plugin_one_on_key_calls_needs_a_remote_kms() {
        assert_eq!(why_not_with("{throttle: {per_second: 1, actions: [GetSecretValue, ListSecrets]}}"), None);
        for touches_keys in ["{throttle: {per_second: 1}}", "{deny: {actions: [GetSecretValue, Decrypt]}}", "{outage: {}}"] {
            let why = why_not_with(touches_keys).unwrap_or_else(|| panic!("{touches_keys} ran"));
            assert!(why.contains("`remote-kms`"), "{touches_keys}: {why}");
        }
    }
}
