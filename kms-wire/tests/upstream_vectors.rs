//! Byte-exact checks against values written by upstream kube-apiserver code:
//! - `testdata/upstream-vectors/vectors.json`, made by `k8s.io/apiserver` v0.34.4's own transformers
//!   (see `main.go` there), with a toy KMS that wraps DEKs by XOR 0x5a;
//! - two complete etcd values from upstream's integration test
//!   `test/integration/controlplane/transformation/kmsv2_transformation_test.go`
//!   (`TestKMSv2ProviderLegacyData`), whose mock plugin wraps DEKs as base64.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use kms_wire::decode::{self, DecodeError, KeySource, StaticKey};
use kms_wire::envelope::{Envelope, ProviderKind, StaticCipher};
use kms_wire::proto::storage::EncryptedDekSourceType;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    provider: String,
    key_name: String,
    key_hex: String,
    #[serde(default)]
    encrypted_dek_hex: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    etcd_key: String,
    plaintext_hex: String,
    stored_hex: String,
}

/// The toy KMS of the vector generator: XOR 0x5a; static keys by name.
struct XorKms {
    static_keys: Vec<StaticKey>,
}

impl KeySource for XorKms {
    async fn unwrap_v2(
        &self,
        encrypted: &[u8],
        key_id: &str,
        _annotations: &BTreeMap<String, Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        assert_eq!(key_id, "vector-key-1");
        Ok(Zeroizing::new(encrypted.iter().map(|b| b ^ 0x5a).collect()))
    }

    async fn unwrap_v1(&self, encrypted: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        Ok(Zeroizing::new(encrypted.iter().map(|b| b ^ 0x5a).collect()))
    }

    fn static_key(&self, cipher: StaticCipher, key_name: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.static_keys.static_key(cipher, key_name)
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("vector field is hex")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("a test runtime starts").block_on(future)
}

fn load_vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/upstream-vectors/vectors.json");
    let text = std::fs::read_to_string(path).expect("vectors.json is in the repository");
    serde_json::from_str::<VectorFile>(&text).expect("vectors.json matches its schema").vectors
}

#[test]
fn opens_every_value_upstream_transformers_wrote() {
    let vectors = load_vectors();
    assert!(vectors.len() >= 16, "expected the full vector set, found {}", vectors.len());
    for vector in vectors {
        let raw = unhex(&vector.stored_hex);
        let envelope = Envelope::parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        let expected_kind = match vector.provider.as_str() {
            "aescbc" => ProviderKind::AesCbc,
            "aesgcm" => ProviderKind::AesGcm,
            "secretbox" => ProviderKind::Secretbox,
            "kms-v1" => ProviderKind::KmsV1,
            "kms-v2-aes-gcm-key" | "kms-v2-hkdf-seed" => ProviderKind::KmsV2,
            other => panic!("{}: unknown provider {other}", vector.name),
        };
        assert_eq!(envelope.kind(), expected_kind, "{}", vector.name);
        assert_eq!(envelope.name(), Some(vector.key_name.as_str()), "{}", vector.name);
        match (&envelope, vector.provider.as_str()) {
            (Envelope::KmsV2 { object, .. }, "kms-v2-hkdf-seed") => {
                assert_eq!(object.encrypted_dek_source_type(), EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed);
                assert_eq!(Some(object.key_id.as_str()), vector.key_id.as_deref());
                assert_eq!(object.encrypted_dek_source.to_vec(), unhex(vector.encrypted_dek_hex.as_deref().unwrap()));
            }
            (Envelope::KmsV2 { object, .. }, _) => assert_eq!(object.encrypted_dek_source_type(), EncryptedDekSourceType::AesGcmKey),
            (Envelope::KmsV1 { encrypted_dek, .. }, _) => {
                assert_eq!(encrypted_dek.to_vec(), unhex(vector.encrypted_dek_hex.as_deref().unwrap()))
            }
            _ => {}
        }
        // Re-serializing gives upstream's exact bytes back (protobuf field order included).
        assert_eq!(envelope.to_bytes().unwrap(), raw, "{}: re-encoding changed the bytes", vector.name);

        let keys =
            XorKms { static_keys: vec![StaticKey { name: vector.key_name.clone(), secret: Zeroizing::new(unhex(&vector.key_hex)) }] };
        let opened =
            block_on(decode::open(&envelope, vector.etcd_key.as_bytes(), &keys)).unwrap_or_else(|e| panic!("{}: {e}", vector.name));
        assert_eq!(hex::encode(opened), vector.plaintext_hex, "{}", vector.name);

        if !matches!(expected_kind, ProviderKind::AesCbc | ProviderKind::Secretbox) {
            let moved = block_on(decode::open(&envelope, b"/registry/secrets/default/elsewhere", &keys));
            assert!(moved.is_err(), "{}: opened under another etcd key", vector.name);
        }
    }
}

/// The mock plugin in upstream's integration test wraps by base64 and uses key id "1".
struct Base64Plugin;

impl KeySource for Base64Plugin {
    async fn unwrap_v2(
        &self,
        encrypted: &[u8],
        key_id: &str,
        annotations: &BTreeMap<String, Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        assert_eq!(key_id, "1");
        assert_eq!(annotations.get("local-kek.kms.kubernetes.io").map(|v| v.as_ref()), Some(&b"encrypted-local-kek"[..]));
        Ok(Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(encrypted).expect("mock plugin ciphertext is base64")))
    }
}

fn legacy_value(hex_object: &str) -> Vec<u8> {
    [&b"k8s:enc:kms:v2:kms-provider:"[..], &unhex(hex_object)].concat()
}

const LEGACY_ETCD_KEY_PREFIX: &str = "/43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry/secrets/kms-v2-legacy-data/";

#[test]
fn opens_upstream_v1_27_aes_gcm_key_value() {
    let raw = legacy_value(
        "0a8a03b0c699dc01ca9a3b000000008c800bf01d4b6f7b300bb5d5c5831ab50ecfd75665ede982b8df45ed4d6bcf2115c00b09825768209e8f1b5c3908a480026df450147aeef78c1a846e35fd478376230ed40c83597748e11cbf12c61bba8b7208827af8db60a75d50b1e6214c628db8491a454ca0ae2bbe15528e9b0634f650b63b9fa68d96b201a18ee461df2f9075de369ac2cdbb62882b16983de903ddd74876430ae58c76057e0aab585f4e9a847770a8130f82593978ed8915b9e1eaa690c660520a3004f2a6d1a5850a6bf4cfe4756c1c2a5b4112a0d9f2b52182e400a44c2726f5706c6e22e03d0c5be1b0553937117cda4e6bc33dc2f2853c371e01b8a9f489db7ee18ce11f05424057cabc530ae8819b4c598624f601dd9dcd1de9025df469dafac20e5572c544cabd646213befe1cc5e184ccdf26936a1e4b04ba0616850e1fca089006114b9d5b0d56e845d528910c6ed4109c481cdc9d5894c881351b8cbb7af9486f7b1d11329046e7d868a8a1f68c8c76cab231f92382a3be376564d914f306ffb7dfab691201311a2c676166497677543041536f4b645a2f44314c32536c4837334c554d6a3571613368726f6c6a6653353177633d22320a1b6c6f63616c2d6b656b2e6b6d732e6b756265726e657465732e696f1213656e637279707465642d6c6f63616c2d6b656b",
    );
    let envelope = Envelope::parse(&raw).expect("upstream value parses");
    assert_eq!(envelope.to_bytes().unwrap(), raw);
    let etcd_key = format!("{LEGACY_ETCD_KEY_PREFIX}dek-source-aes-gcm-key");
    let opened = block_on(decode::open(&envelope, etcd_key.as_bytes(), &Base64Plugin)).expect("upstream value opens");
    assert!(opened.starts_with(b"k8s\x00"));
    assert_eq!(hex::encode(Sha256::digest(&opened)), "15a8eb00c3b297165ca4dbc5a69d4544a6b2578c6f991542be99ded3ea25ecae");
}

#[test]
fn opens_upstream_v1_28_hkdf_seed_value() {
    let raw = legacy_value(
        "0ad103120f87aea2a2f54a1106d0be8a81b615df3448a3b769935e29e569e27ffd6fee221730b70aa00bece0fa092309c696f6c7a77701b9abb3f4dfec9e4a9524265a3d8a774163a5b23b09d5f905c145298bb814c9da147b490d563fe53af0424d9badaa486e3e572f51a3f5bae7cb9a0ae722a75c708cba32f2b0783cc484889af1b53a643d7ae3c32603996d96e75ce3a3d769b20c8467f934d20cd67eedacf81bc6282c5bd1ffba89c8874402293a77544d3132b5fd6cd2f2851230d3d961616bcedd49d6a50f6b32f649d0f9c2da0bc597d7d7bb83d6f71abf1369488fe4b323f3dfc824790d4c28465c587486bbe54b883d92e904f7301e093eac3b9ee6f02bdb99341d1a5639d5842d67f3c75a00f7330ee7a6cfc4fce0b21fa0bb1a81b3e4d7a67fc60894cd89ad40ac8101350fe841e942fb32816f9c3f2a0c8c15a82922e8ff8d38d5214f17c5e38d8083d3c2b4ca313bf7b0f49078a6019585c0aff682516babc1823c4493cf0ddbdf1c941751fa53e6cbd458c6bf801dc41c9d503734824a4b0b79e929bc6859becc7ce497dd3c3b33904a07ee23b279e30960efef1f226b8b96a098d9ff73de26b7a60ef17f32cd8562e3da3522635c4be231a2ec601be552e66a08401837e1db04f6624e4f0e1201311a2c2f2b576e4b5851454d2f416858494359524e4265476b2b575375422b374f427553594a54625036365a79633d22320a1b6c6f63616c2d6b656b2e6b6d732e6b756265726e657465732e696f1213656e637279707465642d6c6f63616c2d6b656b2801",
    );
    let envelope = Envelope::parse(&raw).expect("upstream value parses");
    assert_eq!(envelope.to_bytes().unwrap(), raw);
    let etcd_key = format!("{LEGACY_ETCD_KEY_PREFIX}dek-source-hkdf-sha256-xnonce-aes-gcm-seed");
    let opened = block_on(decode::open(&envelope, etcd_key.as_bytes(), &Base64Plugin)).expect("upstream value opens");
    assert_eq!(hex::encode(Sha256::digest(&opened)), "149b0a839beaf2dc3e0be77f8307ae2f4a5da7970c2795a905374a4d0744841a");
}
