//! The load generator: `n` callers, each issuing one KMS v2 call after the other on a shared
//! connection (as kube-apiserver does: one channel per provider), for a fixed time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kms_wire::PluginClient;
use kms_wire::proto::v2;
use serde::Serialize;

use crate::BenchError;
use crate::targets::RunningTarget;

/// Which call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `v2 Encrypt`.
    Encrypt,
    /// `v2 Decrypt` of what the target's `Encrypt` returned.
    Decrypt,
}

impl Op {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        }
    }
}

/// One call shape: the operation and the plaintext size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Workload {
    /// The call.
    pub op: Op,
    /// Bytes of plaintext (32 B is what kube-apiserver sends: a seed or a DEK).
    pub payload_bytes: usize,
}

/// A request ready to be sent again and again (cloning it only bumps reference counts).
#[derive(Debug, Clone)]
pub enum Prepared {
    /// An Encrypt request.
    Encrypt(v2::EncryptRequest),
    /// A Decrypt request for a ciphertext the same target produced.
    Decrypt(v2::DecryptRequest),
}

/// Builds the request for `workload`; for Decrypt, asks the target to Encrypt first.
pub async fn prepare(target: &RunningTarget, workload: Workload) -> Result<Prepared, BenchError> {
    let plaintext = Bytes::from((0..workload.payload_bytes).map(|i| (i * 31 + 7) as u8).collect::<Vec<_>>());
    let encrypt = v2::EncryptRequest { plaintext, uid: "kms-lab-bench".to_owned() };
    match workload.op {
        Op::Encrypt => Ok(Prepared::Encrypt(encrypt)),
        Op::Decrypt => {
            let failed =
                |status| BenchError::Call { target: target.role().name().to_owned(), call: "v2 Encrypt", status: Box::new(status) };
            let response = target.client().v2().encrypt(encrypt).await.map_err(failed)?.into_inner();
            Ok(Prepared::Decrypt(v2::DecryptRequest {
                ciphertext: response.ciphertext,
                uid: "kms-lab-bench".to_owned(),
                key_id: response.key_id,
                annotations: response.annotations,
            }))
        }
    }
}

/// One call, timed.
pub async fn call_once(
    client: &mut v2::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>,
    request: &Prepared,
) -> Result<Duration, tonic::Status> {
    let started = Instant::now();
    match request {
        Prepared::Encrypt(request) => client.encrypt(request.clone()).await.map(drop)?,
        Prepared::Decrypt(request) => client.decrypt(request.clone()).await.map(drop)?,
    }
    Ok(started.elapsed())
}

/// What one measured segment produced.
#[derive(Debug, Default)]
pub struct Segment {
    /// The latency of every successful call, ns.
    pub samples: Vec<u64>,
    /// From the first call to the last answer.
    pub elapsed: Duration,
    /// Failed calls.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// Runs `concurrency` callers against `client` for `duration` (each finishes its call in flight).
pub async fn run(client: &PluginClient, request: &Prepared, concurrency: usize, duration: Duration) -> Result<Segment, BenchError> {
    let started = Instant::now();
    let stop_at = started + duration;
    let callers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let mut client = client.v2();
            let request = request.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(4096);
                let mut errors = 0u64;
                let mut first_error = None;
                while Instant::now() < stop_at {
                    match call_once(&mut client, &request).await {
                        Ok(latency) => samples.push(latency.as_nanos() as u64),
                        Err(status) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| status.to_string());
                        }
                    }
                }
                (samples, errors, first_error, Instant::now())
            })
        })
        .collect();
    let mut segment = Segment::default();
    let mut finished = started;
    for caller in callers {
        let (samples, errors, first_error, done) = caller.await?;
        segment.samples.extend(samples);
        segment.errors += errors;
        if segment.first_error.is_none() {
            segment.first_error = first_error;
        }
        finished = finished.max(done);
    }
    segment.elapsed = finished - started;
    Ok(segment)
}
