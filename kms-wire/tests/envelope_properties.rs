//! Property tests for every storage envelope kube-apiserver writes: round trips, tampering,
//! truncation, wrong etcd key, wrong provider name, and arbitrary bytes.
//!
//! The KMS key side here is a strict test plugin: it unwraps by XOR and, like kms-lab's
//! reference plugin, refuses a key id or annotations other than the ones it returned.

use std::collections::BTreeMap;

use bytes::Bytes;
use kms_wire::decode::{self, DecodeError, KeySource};
use kms_wire::envelope::{Envelope, ProviderKind, StaticCipher, WrappedDekSource};
use kms_wire::proto::storage::EncryptedDekSourceType;
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use zeroize::Zeroizing;

const PROVIDER: &str = "lab-kms";
const KEY_NAME: &str = "key1";
const KEY_ID: &str = "lab-key/v3";

/// The envelope kinds under test: every provider kube-apiserver writes with.
#[derive(Debug, Clone, Copy)]
enum Kind {
    AesCbc,
    AesGcm,
    Secretbox,
    KmsV1,
    KmsV2Key,
    KmsV2Seed,
}

impl Kind {
    const ALL: [Kind; 6] = [Kind::AesCbc, Kind::AesGcm, Kind::Secretbox, Kind::KmsV1, Kind::KmsV2Key, Kind::KmsV2Seed];

    /// Whether tampering always fails to open. AES-CBC has no MAC, and KMS v1 falls back to
    /// AES-CBC on read exactly as upstream does, so for those two tampering only guarantees
    /// that the original plaintext does not come back.
    fn authenticated(self) -> bool {
        !matches!(self, Kind::AesCbc | Kind::KmsV1)
    }

    /// Whether the etcd key is bound as additional data (upstream binds it for GCM-based formats only).
    fn binds_etcd_key(self) -> bool {
        !matches!(self, Kind::AesCbc | Kind::Secretbox)
    }

    fn provider(self) -> (ProviderKind, &'static str) {
        match self {
            Kind::AesCbc => (ProviderKind::AesCbc, KEY_NAME),
            Kind::AesGcm => (ProviderKind::AesGcm, KEY_NAME),
            Kind::Secretbox => (ProviderKind::Secretbox, KEY_NAME),
            Kind::KmsV1 => (ProviderKind::KmsV1, PROVIDER),
            Kind::KmsV2Key | Kind::KmsV2Seed => (ProviderKind::KmsV2, PROVIDER),
        }
    }
}

struct StrictTestPlugin {
    static_key: Zeroizing<Vec<u8>>,
    annotations: BTreeMap<String, Bytes>,
}

fn xor_wrap(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b ^ 0x5a).collect()
}

impl StrictTestPlugin {
    fn new() -> Self {
        Self {
            static_key: Zeroizing::new(vec![0x42; 32]),
            annotations: BTreeMap::from([("version.kms-lab.io".to_string(), Bytes::from_static(b"1"))]),
        }
    }
}

impl KeySource for StrictTestPlugin {
    async fn unwrap_v2(
        &self,
        encrypted: &[u8],
        key_id: &str,
        annotations: &BTreeMap<String, Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        if key_id != KEY_ID || annotations != &self.annotations {
            return Err(DecodeError::Unwrap { code: tonic::Code::InvalidArgument, message: "key id or annotations do not match".into() });
        }
        Ok(Zeroizing::new(xor_wrap(encrypted)))
    }

    async fn unwrap_v1(&self, encrypted: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        Ok(Zeroizing::new(xor_wrap(encrypted)))
    }

    fn static_key(&self, _cipher: StaticCipher, key_name: &str) -> Option<Zeroizing<Vec<u8>>> {
        (key_name == KEY_NAME).then(|| self.static_key.clone())
    }
}

fn seal(kind: Kind, plugin: &StrictTestPlugin, plaintext: &[u8], etcd_key: &[u8]) -> Vec<u8> {
    let dek = [0x17u8; 32];
    let envelope = match kind {
        Kind::AesCbc => Envelope::seal_static(StaticCipher::AesCbc, KEY_NAME, &plugin.static_key, plaintext, etcd_key),
        Kind::AesGcm => Envelope::seal_static(StaticCipher::AesGcm, KEY_NAME, &plugin.static_key, plaintext, etcd_key),
        Kind::Secretbox => Envelope::seal_static(StaticCipher::Secretbox, KEY_NAME, &plugin.static_key, plaintext, etcd_key),
        Kind::KmsV1 => Envelope::seal_kms_v1(PROVIDER, &dek, &xor_wrap(&dek), plaintext, etcd_key),
        Kind::KmsV2Key | Kind::KmsV2Seed => {
            let source_type = if matches!(kind, Kind::KmsV2Key) {
                EncryptedDekSourceType::AesGcmKey
            } else {
                EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed
            };
            let wrapped = WrappedDekSource {
                source_type,
                encrypted: xor_wrap(&dek).into(),
                key_id: KEY_ID.into(),
                annotations: plugin.annotations.clone(),
            };
            Envelope::seal_kms_v2(PROVIDER, &wrapped, &dek, plaintext, etcd_key)
        }
    };
    envelope.expect("sealing with valid inputs works").to_bytes().expect("a sealed envelope serializes")
}

/// Parses and opens `raw` as the configured provider for `kind` would.
fn open(kind: Kind, plugin: &StrictTestPlugin, raw: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, String> {
    let envelope = Envelope::parse(raw).map_err(|e| e.to_string())?;
    let (provider_kind, name) = kind.provider();
    block_on(decode::open_as(&envelope, provider_kind, Some(name), etcd_key, plugin)).map_err(|e| e.to_string())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("a test runtime starts").block_on(future)
}

/// Payloads of 0 B to 1 MiB, mostly small; bytes expanded from a seed so large ones are cheap.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    (prop_oneof![8 => 0usize..4096, 1 => 0usize..=(1 << 20)], any::<u64>()).prop_map(|(len, seed)| {
        let mut bytes = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
        bytes
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(Kind::ALL.to_vec())
}

fn etcd_key() -> impl Strategy<Value = Vec<u8>> {
    "/registry/secrets/[a-z0-9-]{1,20}/[a-z0-9.-]{1,40}".prop_map(String::into_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_envelope_round_trips(kind in kind(), plaintext in payload(), etcd_key in etcd_key()) {
        let plugin = StrictTestPlugin::new();
        let raw = seal(kind, &plugin, &plaintext, &etcd_key);
        let (provider_kind, _) = kind.provider();
        prop_assert!(raw.starts_with(provider_kind.prefix().unwrap().as_bytes()));
        prop_assert_eq!(open(kind, &plugin, &raw, &etcd_key), Ok(plaintext));
    }

    #[test]
    fn a_single_bit_flip_never_returns_the_plaintext(kind in kind(), plaintext in proptest::collection::vec(any::<u8>(), 0..512), etcd_key in etcd_key(), bit in any::<proptest::sample::Index>()) {
        let plugin = StrictTestPlugin::new();
        let mut raw = seal(kind, &plugin, &plaintext, &etcd_key);
        let bit = bit.index(raw.len() * 8);
        raw[bit / 8] ^= 1 << (bit % 8);
        let opened = open(kind, &plugin, &raw, &etcd_key);
        prop_assert_ne!(&opened, &Ok(plaintext), "flipping bit {} of {:?} went unnoticed", bit, kind);
        if kind.authenticated() {
            prop_assert!(opened.is_err(), "flipping bit {} of {:?} opened to other data", bit, kind);
        }
    }

    #[test]
    fn truncation_never_returns_the_plaintext(kind in kind(), plaintext in proptest::collection::vec(any::<u8>(), 0..512), etcd_key in etcd_key(), cut in any::<proptest::sample::Index>()) {
        let plugin = StrictTestPlugin::new();
        let raw = seal(kind, &plugin, &plaintext, &etcd_key);
        let kept = cut.index(raw.len());
        let opened = open(kind, &plugin, &raw[..kept], &etcd_key);
        prop_assert_ne!(&opened, &Ok(plaintext), "truncating {:?} to {} bytes went unnoticed", kind, kept);
        if kind.authenticated() {
            prop_assert!(opened.is_err());
        }
    }

    #[test]
    fn a_value_copied_to_another_etcd_key_does_not_open(kind in kind(), plaintext in proptest::collection::vec(any::<u8>(), 0..512), etcd_key in etcd_key(), other_key in etcd_key()) {
        prop_assume!(kind.binds_etcd_key() && etcd_key != other_key);
        let plugin = StrictTestPlugin::new();
        let raw = seal(kind, &plugin, &plaintext, &etcd_key);
        let opened = open(kind, &plugin, &raw, &other_key);
        prop_assert_ne!(&opened, &Ok(plaintext));
        if kind.authenticated() {
            prop_assert!(opened.is_err());
        }
    }

    #[test]
    fn a_value_under_another_provider_name_does_not_open(kind in kind(), plaintext in proptest::collection::vec(any::<u8>(), 0..64), etcd_key in etcd_key(), other in "[a-z0-9-]{1,16}") {
        let plugin = StrictTestPlugin::new();
        let raw = seal(kind, &plugin, &plaintext, &etcd_key);
        let (provider_kind, name) = kind.provider();
        prop_assume!(other != name);
        let renamed = [provider_kind.prefix().unwrap().as_bytes(), other.as_bytes(), &raw[provider_kind.prefix().unwrap().len() + name.len()..]].concat();
        let error = open(kind, &plugin, &renamed, &etcd_key).unwrap_err();
        prop_assert!(error.contains("not by the expected"), "{}", error);
    }

    #[test]
    fn parsing_and_opening_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..2048), kind in kind()) {
        let plugin = StrictTestPlugin::new();
        let _ = open(kind, &plugin, &raw, b"/registry/secrets/default/x");
    }

    #[test]
    fn arbitrary_bytes_after_each_prefix_never_panic(kind in kind(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let plugin = StrictTestPlugin::new();
        let (provider_kind, name) = kind.provider();
        let raw = [provider_kind.prefix().unwrap().as_bytes(), name.as_bytes(), b":", &body].concat();
        let _ = open(kind, &plugin, &raw, b"/registry/secrets/default/x");
    }
}

#[test]
fn unknown_prefix_is_named_in_the_error() {
    let error = Envelope::parse(b"k8s:enc:rot13:v1:key:payload").unwrap_err().to_string();
    assert!(error.contains("`k8s:enc:rot13:`") && error.contains("k8s:enc:kms:v2:"), "{error}");
}

#[test]
fn kms_v1_truncated_dek_says_what_it_expected() {
    let error = Envelope::parse(b"k8s:enc:kms:v1:lab:\x00\x20short").unwrap_err().to_string();
    assert_eq!(error, "kms-v1 envelope is truncated: it announces a 32-byte encrypted DEK but only 5 bytes follow");
}

#[test]
fn kms_v2_object_that_breaks_a_limit_is_refused_with_the_rule() {
    let plugin = StrictTestPlugin::new();
    let wrapped = WrappedDekSource {
        source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed,
        encrypted: vec![1; 1025].into(),
        key_id: KEY_ID.into(),
        annotations: plugin.annotations.clone(),
    };
    let error = Envelope::seal_kms_v2(PROVIDER, &wrapped, &[0; 32], b"x", b"/k").unwrap_err().to_string();
    assert_eq!(error, "kms-v2 EncryptedObject is invalid: encrypted DEK source is 1025 bytes, which exceeds the max size of 1024");
}

#[test]
fn identity_values_pass_through() {
    let raw = b"k8s\x00\x0a\x0fv1\x12\x06Secret";
    let envelope = Envelope::parse(raw).unwrap();
    assert_eq!(envelope.kind(), ProviderKind::Identity);
    assert_eq!(block_on(decode::open(&envelope, b"/k", &())).unwrap(), raw);
}

#[test]
fn debug_output_never_shows_payload_bytes() {
    let plugin = StrictTestPlugin::new();
    let raw = seal(Kind::KmsV2Seed, &plugin, b"super-secret-plaintext", b"/registry/secrets/a/b");
    let shown = format!("{:?}", Envelope::parse(&raw).unwrap());
    assert!(shown.contains("lab-key/v3") && !shown.contains("encrypted_data"), "{shown}");
}
