//! A scenario's `encryption:` as the EncryptionConfiguration the apiserver reads: plugin names
//! resolved to their sockets, static keys derived from the seed (never printed).

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use kms_lab_stack::encryption::{EncryptionConfiguration, KmsProvider, Provider, ResourceConfig, StaticKey, StaticKeys};
use sha2::{Digest, Sha256};

use crate::error::StepError;
use crate::model::{EncryptionSpec, KmsApi, ProviderSpec};

/// The bytes of static key `name` in a run with `seed` (never printed).
fn static_key(seed: u64, name: &str) -> String {
    let digest = Sha256::new().chain_update(b"kms-lab-static-key").chain_update(seed.to_be_bytes()).chain_update(name).finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The EncryptionConfiguration for `spec` in a run with `seed`; `sockets` finds a plugin's socket.
pub fn build_encryption(
    spec: &EncryptionSpec,
    seed: u64,
    sockets: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<EncryptionConfiguration, StepError> {
    let keys = |name: &str| StaticKeys { keys: vec![StaticKey { name: name.to_owned(), secret: static_key(seed, name) }] };
    let provider = |spec: &ProviderSpec| -> Result<Provider, StepError> {
        Ok(match spec {
            ProviderSpec::Identity(_) => Provider::Identity(Default::default()),
            ProviderSpec::Aescbc(key) => Provider::Aescbc(keys(&key.key)),
            ProviderSpec::Aesgcm(key) => Provider::Aesgcm(keys(&key.key)),
            ProviderSpec::Secretbox(key) => Provider::Secretbox(keys(&key.key)),
            ProviderSpec::Kms(kms) => {
                let socket =
                    sockets(&kms.plugin).ok_or_else(|| StepError::Failed(format!("no plugin named `{}` in the stack", kms.plugin)))?;
                let timeout = kms.timeout.map_or(Duration::from_secs(3), |d| d.0);
                Provider::Kms(match kms.api {
                    KmsApi::V2 => KmsProvider::v2(&kms.name, &socket, timeout),
                    KmsApi::V1 => KmsProvider::v1(&kms.name, &socket, kms.cachesize.unwrap_or(1000), timeout),
                })
            }
        })
    };
    let mut config = EncryptionConfiguration::new(&[], Vec::new());
    config.resources.clear();
    for (resource, providers) in spec {
        let providers = providers.iter().map(provider).collect::<Result<Vec<_>, _>>()?;
        config.resources.push(ResourceConfig { resources: vec![resource.clone()], providers });
    }
    Ok(config)
}
