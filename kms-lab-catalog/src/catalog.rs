//! The catalog: the manifests kept in the repository (`catalog/*.yaml`, compiled in), and
//! [`resolve`], which turns what a user typed into a manifest: a catalog name first, else a file.

use std::path::Path;

use crate::error::PluginError;
use crate::manifest::{self, Manifest};

/// Each catalog entry: its file name under `catalog/` and its text.
const ENTRIES: &[(&str, &str)] = &[
    ("kms-plugin.yaml", include_str!("../../catalog/kms-plugin.yaml")),
    ("kms-plugin-jdcloud.yaml", include_str!("../../catalog/kms-plugin-jdcloud.yaml")),
    ("kms-plugin-aliyun.yaml", include_str!("../../catalog/kms-plugin-aliyun.yaml")),
    ("kms-faulty-plugin.yaml", include_str!("../../catalog/kms-faulty-plugin.yaml")),
    ("kms-go-plugin.yaml", include_str!("../../catalog/kms-go-plugin.yaml")),
    ("aws-encryption-provider.yaml", include_str!("../../catalog/aws-encryption-provider.yaml")),
    ("k8s-cloudkms-plugin.yaml", include_str!("../../catalog/k8s-cloudkms-plugin.yaml")),
    ("trousseau-awskms.yaml", include_str!("../../catalog/trousseau-awskms.yaml")),
    ("trousseau-vault.yaml", include_str!("../../catalog/trousseau-vault.yaml")),
    ("vault-kubernetes-kms.yaml", include_str!("../../catalog/vault-kubernetes-kms.yaml")),
    ("vault-kubernetes-kms-approle.yaml", include_str!("../../catalog/vault-kubernetes-kms-approle.yaml")),
    ("ack-kms-plugin.yaml", include_str!("../../catalog/ack-kms-plugin.yaml")),
    ("jdcloud-kms-plugin.yaml", include_str!("../../catalog/jdcloud-kms-plugin.yaml")),
];

/// The repository's `catalog/` folder (at the workspace root) the entries were compiled from.
fn directory() -> std::path::PathBuf {
    kms_lab_provision::workspace::workspace_root().join("catalog")
}

/// Every catalog manifest, in catalog order.
pub fn all() -> Result<Vec<Manifest>, PluginError> {
    let root = directory();
    ENTRIES.iter().map(|(file, text)| Ok(manifest::parse(&root.join(file), text)?)).collect()
}

/// The catalog's names.
pub fn names() -> Vec<String> {
    all().map(|all| all.into_iter().map(|m| m.name).collect()).unwrap_or_default()
}

/// The manifest `wanted` names: a catalog name, else the path of a manifest file; a miss lists
/// the catalog.
pub fn resolve(wanted: &str) -> Result<Manifest, PluginError> {
    if let Some(found) = all()?.into_iter().find(|m| m.name == wanted) {
        return Ok(found);
    }
    let path = Path::new(wanted);
    if path.is_file() {
        return Ok(manifest::load_file(path)?);
    }
    Err(PluginError::Unknown { wanted: wanted.to_owned(), known: names().join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_entry_loads_and_is_named_after_its_file() {
        let all = all().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), ENTRIES.len());
        for (manifest, (file, _)) in all.iter().zip(ENTRIES) {
            assert_eq!(format!("{}.yaml", manifest.name), *file);
        }
        // The compiled-in text is the file in the repository.
        for (file, text) in ENTRIES {
            let on_disk = std::fs::read_to_string(directory().join(file)).unwrap();
            assert_eq!(&on_disk, text, "{file}");
        }
    }

    #[test]
    fn a_miss_lists_the_catalog() {
        let error = resolve("aws-encryption-provder").unwrap_err().to_string();
        assert!(error.contains("`aws-encryption-provder`") && error.contains("aws-encryption-provider, k8s-cloudkms-plugin"), "{error}");
    }
}
