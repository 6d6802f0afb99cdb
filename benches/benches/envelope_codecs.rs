//! Envelope seal + open throughput per provider and payload size, beside raw AES-256-GCM of the
//! same bytes (the floor: every envelope does at least that much work).

use std::collections::BTreeMap;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kms_wire::decode;
use kms_wire::envelope::{Envelope, StaticCipher, WrappedDekSource};
use kms_wire::proto::storage::EncryptedDekSourceType;

const ETCD_KEY: &[u8] = b"/registry/secrets/default/bench";
const KEY: [u8; 32] = [9; 32];

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
    fn static_key(&self, _: StaticCipher, _: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
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

fn envelope_round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_round_trip");
    for size in [256usize, 4096, 65536] {
        let plaintext = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        let cipher = Aes256Gcm::new_from_slice(&KEY).expect("32-byte key");
        group.bench_with_input(BenchmarkId::new("raw-aes-256-gcm", size), &plaintext, |b, pt| {
            b.iter(|| {
                let nonce = [7u8; 12];
                let sealed = cipher.encrypt((&nonce).into(), Payload { msg: pt, aad: ETCD_KEY }).expect("seal");
                cipher.decrypt((&nonce).into(), Payload { msg: &sealed, aad: ETCD_KEY }).expect("open")
            })
        });
        for kind in ["aescbc", "aesgcm", "kms-v1", "kms-v2-key", "kms-v2-seed"] {
            group.bench_with_input(BenchmarkId::new(kind, size), &plaintext, |b, pt| {
                b.iter(|| {
                    let raw = seal(kind, pt).to_bytes().expect("serializes");
                    let parsed = Envelope::parse(&raw).expect("parses");
                    tokio_free_block_on(decode::open(&parsed, ETCD_KEY, &FixedKey)).expect("opens")
                })
            });
        }
    }
    group.finish();
}

/// Polls a future that never waits (the key side above answers at once).
fn tokio_free_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}

criterion_group!(benches, envelope_round_trips);
criterion_main!(benches);
