//! The control plane's PKI, generated in process: a CA, the apiserver's serving certificate
//! for 127.0.0.1/localhost, the service-account signing key, and etcd's serving and client
//! certificates (for a stack whose etcd requires mutual TLS).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

use crate::error::StackError;

/// PEM-encoded certificates and keys for one stack.
pub struct Pki {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The apiserver's serving certificate.
    pub serving_cert_pem: String,
    /// The apiserver's serving key.
    pub serving_key_pem: String,
    /// The service-account token signing key (ECDSA P-256, PKCS#8).
    pub service_account_key_pem: String,
    /// Its public key, which verifies the tokens.
    pub service_account_public_pem: String,
    /// etcd's serving certificate for 127.0.0.1/localhost (used when etcd runs with mutual TLS).
    pub etcd_server_cert_pem: String,
    /// etcd's serving key.
    pub etcd_server_key_pem: String,
    /// The client certificate the apiservers (and the lab's readers) present to etcd.
    pub etcd_client_cert_pem: String,
    /// Its key.
    pub etcd_client_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// A CA of its own, for one stack.
fn lab_ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, StackError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?)
}

/// A CA and a serving certificate for 127.0.0.1/localhost signed by it: what the mock KMS's TLS
/// listeners present, and what their clients trust (Go's through `SSL_CERT_FILE`).
pub struct ServingPki {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

impl std::fmt::Debug for ServingPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingPki").finish_non_exhaustive()
    }
}

impl ServingPki {
    /// Generates a fresh CA (named `ca_name`) and a serving certificate named `server_name`.
    pub fn generate(ca_name: &str, server_name: &str) -> Result<Self, StackError> {
        let ca = lab_ca(ca_name)?;
        let mut serving = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        serving.distinguished_name.push(DnType::CommonName, server_name);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = serving.signed_by(&key, &ca)?;
        Ok(Self { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

impl Pki {
    /// Generates a fresh PKI.
    pub fn generate() -> Result<Self, StackError> {
        let ca = lab_ca("kms-lab CA")?;

        let mut serving =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "kubernetes.default.svc".to_owned()])?;
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let mut etcd_server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        etcd_server.distinguished_name.push(DnType::CommonName, "etcd");
        etcd_server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let etcd_server_key = KeyPair::generate()?;
        let etcd_server_cert = etcd_server.signed_by(&etcd_server_key, &ca)?;
        let mut etcd_client = CertificateParams::new(Vec::<String>::new())?;
        etcd_client.distinguished_name.push(DnType::CommonName, "kube-apiserver-etcd-client");
        etcd_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let etcd_client_key = KeyPair::generate()?;
        let etcd_client_cert = etcd_client.signed_by(&etcd_client_key, &ca)?;

        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca_pem: ca.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            service_account_key_pem: service_account.serialize_pem(),
            service_account_public_pem: service_account.public_key_pem(),
            etcd_server_cert_pem: etcd_server_cert.pem(),
            etcd_server_key_pem: etcd_server_key.serialize_pem(),
            etcd_client_cert_pem: etcd_client_cert.pem(),
            etcd_client_key_pem: etcd_client_key.serialize_pem(),
        })
    }
}
