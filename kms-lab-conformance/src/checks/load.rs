//! Behaviour under load: concurrent round trips must all be correct; latency is reported only.

use std::time::{Duration, Instant};

use futures::future::join_all;

use super::encrypt::APISERVER_PAYLOAD;
use super::{CheckResult, unknown};
use crate::Api;
use crate::context::{Ctx, bytes, random, uid};
use crate::report::{Finding, LatencySummary, Percentiles};

/// What one caller saw.
#[derive(Default)]
struct Tally {
    encrypt: Vec<Duration>,
    decrypt: Vec<Duration>,
    failures: Vec<(String, String)>,
}

pub(crate) async fn run(ctx: &Ctx, id: &str) -> CheckResult {
    let api = match id {
        "v2.load.concurrent-round-trips" => Api::V2,
        "v1beta1.load.concurrent-round-trips" => Api::V1beta1,
        _ => return unknown(id),
    };
    let concurrency = ctx.options.concurrency.max(1);
    let per_caller = ctx.options.round_trips_per_caller.max(1);
    let tallies = join_all((0..concurrency).map(|caller| one_caller(ctx, api, caller, per_caller))).await;
    let mut all = Tally::default();
    for tally in tallies {
        all.encrypt.extend(tally.encrypt);
        all.decrypt.extend(tally.decrypt);
        all.failures.extend(tally.failures);
    }
    let round_trips = concurrency * per_caller;
    let latency =
        LatencySummary { concurrency, round_trips, encrypt: Percentiles::of(&mut all.encrypt), decrypt: Percentiles::of(&mut all.decrypt) };
    let mut result = match all.failures.first() {
        None => CheckResult::pass(),
        Some((sent, received)) => CheckResult::fail(Finding::new(
            format!(
                "{round_trips} round trips of {APISERVER_PAYLOAD} random bytes from {concurrency} concurrent callers; first bad one: {sent}"
            ),
            received.clone(),
            format!(
                "{} of {round_trips} concurrent round trips failed or returned another caller's bytes: the apiserver shares one connection for all requests",
                all.failures.len()
            ),
        )),
    };
    for (name, percentiles) in [("Encrypt", latency.encrypt), ("Decrypt", latency.decrypt)] {
        if let Some(p) = percentiles {
            result = result.note(format!("{name} under load ({concurrency} callers): {p}"));
        }
    }
    result.latency = Some(latency);
    result
}

async fn one_caller(ctx: &Ctx, api: Api, caller: usize, round_trips: usize) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..round_trips {
        let plaintext = random(APISERVER_PAYLOAD);
        let uid = uid(&format!("load-{caller}"));
        let started = Instant::now();
        let encrypted = match api {
            Api::V2 => ctx.encrypt(&plaintext, &uid).await.map(|e| (e.ciphertext.clone(), Some(e))),
            Api::V1beta1 => ctx.v1_encrypt(&plaintext).await.map(|c| (c, None)),
        };
        tally.encrypt.push(started.elapsed());
        let (ciphertext, v2) = match encrypted {
            Ok(ok) => ok,
            Err(error) => {
                tally.failures.push((format!("Encrypt of {}", bytes(&plaintext)), error.to_string()));
                continue;
            }
        };
        let started = Instant::now();
        let back = match &v2 {
            Some(e) => ctx.decrypt(&ciphertext, &uid, &e.key_id, &e.annotations).await,
            None => ctx.v1_decrypt(&ciphertext).await,
        };
        tally.decrypt.push(started.elapsed());
        match back {
            Ok(back) if back.as_ref() == plaintext.as_slice() => {}
            Ok(back) => tally.failures.push((
                format!("Decrypt of the ciphertext of {}", bytes(&plaintext)),
                format!("DecryptResponse {{ plaintext: {} }} (not what this caller encrypted)", bytes(&back)),
            )),
            Err(error) => tally.failures.push((format!("Decrypt of the ciphertext of {}", bytes(&plaintext)), error.to_string())),
        }
    }
    tally
}
