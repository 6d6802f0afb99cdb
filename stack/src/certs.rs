//! The control plane's PKI, generated in process: a CA, the apiserver's serving certificate
//! for 127.0.0.1/localhost, and the service-account signing key.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

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
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// Generates a fresh PKI.
    pub fn generate() -> Result<Self, StackError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "kms-lab CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut serving =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "kubernetes.default.svc".to_owned()])?;
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca_pem: ca.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            service_account_key_pem: service_account.serialize_pem(),
            service_account_public_pem: service_account.public_key_pem(),
        })
    }
}
