//! Envelope encode and decode throughput per provider and payload size, beside raw AES-256-GCM
//! of the same bytes (the floor: every AES-GCM envelope does at least that much work).
//!
//! Encode = seal with a fresh nonce (and HKDF info) + serialize to the bytes etcd stores;
//! decode = parse those bytes + open them. `aescbc` has no MAC and pads, so it is compared with
//! the floor too, not held to it.

use std::collections::BTreeMap;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kms_wire::decode;
use kms_wire::envelope::{Envelope, StaticCipher, WrappedDekSource};
use kms_wire::proto::storage::EncryptedDekSourceType;

const ETCD_KEY: &[u8] = b"/registry/secrets/default/bench";
const KEY: [u8; 32] = [9; 32];
const SIZES: [usize; 4] = [256, 4096, 65536, 1 << 20];
const KINDS: [&str; 5] = ["aescbc", "aesgcm", "kms-v1", "kms-v2-key", "kms-v2-seed"];

fn wrapped(source_type: EncryptedDekSourceType) -> WrappedDekSource {
    WrappedDekSource { source_type, encrypted: vec![1; 64].into(), key_id: "bench-key".into(), annotations: BTreeMap::new() }
}

/// A key side that returns the fixed key for everything.
struct FixedKey;

impl decode::KeySource for FixedKey {
    async fn unwrap_v2(
        &self,
        _: &[u8],
        _: &str,
        _: &BTreeMap<String, bytes::Bytes>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, decode::DecodeError> {
        Ok(zeroize::Zeroizing::new(KEY.to_vec()))
    }
    async fn unwrap_v1(&self, _: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, decode::DecodeError> {
        Ok(zeroize::Zeroizing::new(KEY.to_vec()))
    }
    fn static_key(&self, _: kms_wire::envelope::StaticCipher, _: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        Some(zeroize::Zeroizing::new(KEY.to_vec()))
    }
}

fn seal(kind: &str, plaintext: &[u8]) -> Envelope {
    let sealed = match kind {
        "aescbc" => Envelope::seal_static(StaticCipher::AesCbc, "k", &KEY, plaintext, ETCD_KEY),
        "aesgcm" => Envelope::seal_static(StaticCipher::AesGcm, "k", &KEY, plaintext, ETCD_KEY),
        "kms-v1" => Envelope::seal_kms_v1("p", &KEY, &[1; 64], plaintext, ETCD_KEY),
        "kms-v2-key" => Envelope::seal_kms_v2("p", &wrapped(EncryptedDekSourceType::AesGcmKey), &KEY, plaintext, ETCD_KEY),
        _ => Envelope::seal_kms_v2("p", &wrapped(EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed), &KEY, plaintext, ETCD_KEY),
    };
    sealed.expect("bench inputs are valid")
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_encode");
    let cipher = Aes256Gcm::new_from_slice(&KEY).expect("32-byte key");
    for size in SIZES {
        let plaintext = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw-aes-256-gcm", size), &plaintext, |b, pt| {
            b.iter(|| cipher.encrypt((&[7u8; 12]).into(), Payload { msg: pt, aad: ETCD_KEY }).expect("seal"))
        });
        for kind in KINDS {
            group.bench_with_input(BenchmarkId::new(kind, size), &plaintext, |b, pt| {
                b.iter(|| seal(kind, pt).to_bytes().expect("serializes"))
            });
        }
    }
    group.finish();
}

fn decode_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_decode");
    let cipher = Aes256Gcm::new_from_slice(&KEY).expect("32-byte key");
    for size in SIZES {
        let plaintext = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        let sealed = cipher.encrypt((&[7u8; 12]).into(), Payload { msg: &plaintext, aad: ETCD_KEY }).expect("seal");
        group.bench_with_input(BenchmarkId::new("raw-aes-256-gcm", size), &sealed, |b, sealed| {
            b.iter(|| cipher.decrypt((&[7u8; 12]).into(), Payload { msg: sealed, aad: ETCD_KEY }).expect("open"))
        });
        for kind in KINDS {
            let raw = seal(kind, &plaintext).to_bytes().expect("serializes");
            group.bench_with_input(BenchmarkId::new(kind, size), &raw, |b, raw| {
                b.iter(|| {
                    let parsed = Envelope::parse(raw).expect("parses");
                    poll_ready(decode::open(&parsed, ETCD_KEY, &FixedKey)).expect("opens")
                })
            });
        }
    }
    group.finish();
}

/// Polls a future that never waits (the key side above answers at once).
fn poll_ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

criterion_group!(benches, encode, decode_open);
criterion_main!(benches);
