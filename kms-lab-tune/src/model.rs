//! `--model`: a fast discrete simulation of kube-apiserver's KMS usage, calibrated from a real
//! run. It models what decides `cachesize` and `timeout`:
//!
//! - KMS v1: every write generates a DEK and calls the plugin's Encrypt; every storage read
//!   looks the object's encrypted DEK up in an LRU cache of `cachesize` entries and calls
//!   Decrypt on a miss (writes insert their DEK too), as `envelope.go` does.
//! - KMS v2: one DEK seed per apiserver start (one Encrypt, retried at the 10 s Status poll; a
//!   restarted apiserver takes traffic once it has one, or after [`READY_WAIT_MS`] without one,
//!   and then fails writes *and* reads until a retry succeeds); reads decrypt each distinct seed
//!   once.
//! - the apiserver's own reads: it decodes every write's watch event once (its watch cache, or
//!   without one its Secrets informer), an update first reads the stored object, and a restart
//!   lists every Secret (the watch cache or informer filling) before clients re-list.
//! - each plugin call: a latency drawn from the calibrated distribution; the mock KMS's token
//!   bucket (429 + `Retry-After`) and per-attempt error rate from the profile; the plugin's
//!   retries, backoff and 2 s deadline; the apiserver's `timeout` cancelling the call.
//! - the workload: N Secrets written, then gets, full lists and updates at a fixed rate, and
//!   apiserver restarts (empty caches, then a full list as the watch cache fills).
//!
//! Reads here are *storage* reads (what reaches the transformer); with the watch cache on, most
//! client reads never do, so read figures are the worst case: cold starts, lists from etcd,
//! `--watch-cache=false`.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::calibration::{Calibration, LOCAL, PluginPolicy, ProfileCalibration};
use crate::lru::Lru;
use crate::profile::Profile;

/// The apiserver's own cost of a write (etcd round trip, admission), ms; not measured, the same for every setting.
pub const WRITE_OVERHEAD_MS: f64 = 3.0;
/// The apiserver's own cost of a get, ms.
pub const GET_OVERHEAD_MS: f64 = 1.0;
/// The apiserver's own cost per item of a list, ms.
pub const LIST_ITEM_OVERHEAD_MS: f64 = 0.02;
/// How long after a failed v2 seed generation the apiserver tries again (its Status poll while unhealthy).
pub const V2_RETRY_MS: f64 = 10_000.0;
/// How long a (re)started apiserver gets to become ready (KMS v2: a DEK seed) before it takes
/// traffic anyway; the real engine waits as long for `/readyz`.
pub const READY_WAIT_MS: f64 = 20_000.0;

/// KMS plugin API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Api {
    /// KMS v1 (per-object DEKs, LRU cache of `cachesize`).
    V1,
    /// KMS v2 (one DEK seed per start).
    V2,
}

impl Api {
    /// `v1` / `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// One point of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Setting {
    /// The API.
    pub api: Api,
    /// KMS v1 `cachesize` (`None` for v2).
    pub cachesize: Option<i64>,
    /// The provider's `timeout`, ms.
    pub timeout_ms: f64,
}

/// What the cluster does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Secrets in the cluster (all written at the start).
    pub secrets: u64,
    /// Share of operations that are reads (the rest are updates).
    pub read_share: f64,
    /// Share of reads that are full lists (the rest are gets of a random Secret).
    pub list_share: f64,
    /// Operations after the initial writes.
    pub ops: u64,
    /// Operations per second the client sends.
    pub ops_per_second: f64,
    /// Apiserver restarts, evenly spread over the operations.
    pub restarts: u32,
    /// How long a restart takes before the apiserver serves again, ms.
    pub restart_ms: f64,
}

impl Workload {
    /// The default workload for `secrets` Secrets.
    pub fn new(secrets: u64, ops: u64) -> Self {
        Self { secrets, read_share: 0.9, list_share: 0.02, ops, ops_per_second: 50.0, restarts: 1, restart_ms: 5000.0 }
    }
}

/// What one point measured (or simulated).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Share of DEK lookups on reads served from the cache.
    pub hit_rate: f64,
    /// Plugin calls (Encrypt + Decrypt) per minute.
    pub kms_calls_per_min: f64,
    /// Calls that reached the remote KMS (with the plugin's retries) per minute.
    pub remote_calls_per_min: f64,
    /// Median write latency, ms.
    pub write_p50_ms: f64,
    /// p99 write latency, ms.
    pub write_p99_ms: f64,
    /// p99 get latency, ms.
    pub read_p99_ms: f64,
    /// Median full-list latency, ms.
    pub list_p50_ms: f64,
    /// Share of operations that failed.
    pub failure_rate: f64,
    /// Share of writes that failed.
    pub write_failure_rate: f64,
    /// Plugin calls the apiserver's timeout cut off.
    pub timeouts: u64,
    /// Operations run (initial writes, gets, lists, updates).
    pub ops: u64,
    /// Simulated (or measured) duration, minutes.
    pub minutes: f64,
}

/// A model of the plugin + KMS for one profile.
#[derive(Debug, Clone)]
pub struct KmsModel {
    latency: ProfileCalibration,
    /// Extra latency for an uncalibrated profile: its own mean added on top of the local overhead.
    extra_ms: f64,
    error_rate: f64,
    throttle: Option<(f64, f64)>,
    policy: PluginPolicy,
}

impl KmsModel {
    /// The model of `profile`: its calibrated latency if the calibration has it, else the
    /// calibration's local overhead plus the profile's mean added latency.
    pub fn new(profile: &Profile, calibration: &Calibration) -> Self {
        let (latency, extra_ms) = match calibration.profiles.get(&profile.name) {
            Some(measured) => (measured.clone(), 0.0),
            None => (
                calibration.profiles.get(LOCAL).cloned().unwrap_or_else(|| ProfileCalibration::from_samples(vec![1.0], 0)),
                profile.mean_added_ms(),
            ),
        };
        Self { latency, extra_ms, error_rate: profile.error_rate(), throttle: profile.throttle(), policy: calibration.plugin.clone() }
    }

    /// A synthetic model (tests): fixed quantiles, error rate, quota.
    pub fn synthetic(latency: ProfileCalibration, error_rate: f64, throttle: Option<(f64, f64)>) -> Self {
        Self { latency, extra_ms: 0.0, error_rate, throttle, policy: PluginPolicy::default() }
    }

    /// The p99 of one successful call without throttling, ms.
    pub fn p99_ms(&self) -> f64 {
        self.latency.at(0.99) + self.extra_ms
    }
}

struct Bucket {
    per_ms: f64,
    burst: f64,
    tokens: f64,
    last: f64,
}

impl Bucket {
    /// Takes a token at `now` (ms), or says how many whole seconds to wait (the `Retry-After`).
    fn take(&mut self, now: f64) -> Result<(), f64> {
        self.tokens = (self.tokens + (now - self.last).max(0.0) * self.per_ms).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err((((1.0 - self.tokens) / (self.per_ms * 1000.0)).ceil()).max(1.0))
    }
}

/// The outcome of one plugin call.
struct Call {
    ms: f64,
    ok: bool,
}

struct Kms<'a> {
    model: &'a KmsModel,
    rng: ChaCha8Rng,
    bucket: Option<Bucket>,
    timeout_ms: f64,
    calls: u64,
    remote: u64,
    timeouts: u64,
}

impl Kms<'_> {
    fn latency(&mut self) -> f64 {
        let q: f64 = self.rng.r#gen();
        self.model.latency.at(q) + self.model.extra_ms
    }

    fn call(&mut self, now: f64) -> Call {
        self.calls += 1;
        let policy = &self.model.policy;
        let window = self.timeout_ms.min(policy.deadline_ms);
        let cut_by_apiserver = self.timeout_ms <= policy.deadline_ms;
        let mut elapsed = 0.0;
        let mut attempt = 0u32;
        loop {
            let latency = self.latency();
            self.remote += 1;
            if elapsed + latency > window {
                if cut_by_apiserver {
                    self.timeouts += 1;
                }
                return Call { ms: window, ok: false };
            }
            elapsed += latency;
            let backoff = if let Some(Err(retry_after_s)) = self.bucket.as_mut().map(|b| b.take(now + elapsed)) {
                retry_after_s * 1000.0
            } else if self.rng.r#gen::<f64>() < self.model.error_rate {
                let cap = (policy.base_backoff_ms * f64::from(1u32 << (attempt + 1).min(10))).min(policy.max_backoff_ms);
                self.rng.gen_range(0.0..=cap)
            } else {
                return Call { ms: elapsed, ok: true };
            };
            if attempt >= policy.retries || elapsed + backoff >= policy.deadline_ms {
                return Call { ms: elapsed, ok: false };
            }
            attempt += 1;
            if elapsed + backoff >= window {
                self.timeouts += 1;
                return Call { ms: window, ok: false };
            }
            elapsed += backoff;
        }
    }
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    crate::calibration::quantile(values, q)
}

/// The apiserver's transformer state.
struct Apiserver {
    api: Api,
    lru: Lru,
    /// v2: the current seed, if generation succeeded.
    seed: Option<u64>,
    /// v2: when the next seed generation may be tried.
    retry_at: f64,
    /// v2: decrypted seeds.
    seeds: HashSet<u64>,
    next_id: u64,
    hits: u64,
    lookups: u64,
}

impl Apiserver {
    /// Starts (empty caches); returns how long until it takes traffic (v2: until it has a seed).
    fn start(&mut self, kms: &mut Kms, now: f64) -> f64 {
        self.lru.clear();
        self.seeds.clear();
        self.seed = None;
        self.retry_at = now;
        if self.api == Api::V1 {
            return 0.0;
        }
        let mut spent = self.generate_seed(kms, now);
        while self.seed.is_none() && V2_RETRY_MS <= READY_WAIT_MS - spent {
            spent += V2_RETRY_MS;
            spent += self.generate_seed(kms, now + spent);
        }
        spent
    }

    fn generate_seed(&mut self, kms: &mut Kms, now: f64) -> f64 {
        let call = kms.call(now);
        if call.ok {
            self.next_id += 1;
            self.seed = Some(self.next_id);
            self.seeds.insert(self.next_id);
        } else {
            self.retry_at = now + V2_RETRY_MS;
        }
        call.ms
    }

    /// Writes an object whose stored version (if any) has DEK/seed `old`: its new DEK (v1) or
    /// seed (v2) id, and the time spent on KMS calls. An update first reads the stored object
    /// (a storage read without the watch cache); the write's watch event is decoded once.
    fn write(&mut self, kms: &mut Kms, old: Option<u64>, now: f64) -> (Option<u64>, f64) {
        let mut spent = 0.0;
        if let Some(old) = old {
            let (ok, ms) = self.read(kms, old, now);
            spent += ms;
            if !ok {
                return (None, spent);
            }
        }
        let (id, ms) = self.store(kms, now + spent);
        spent += ms;
        if let Some(id) = id {
            // The apiserver's own watch decodes the new object, in the background (a hit, unless
            // there is no cache: the write cached its DEK).
            self.read(kms, id, now + spent);
        }
        (id, spent)
    }

    /// Encrypts an object: its new DEK (v1) or seed (v2) id, and the time spent on KMS calls.
    fn store(&mut self, kms: &mut Kms, now: f64) -> (Option<u64>, f64) {
        match self.api {
            Api::V1 => {
                let call = kms.call(now);
                if !call.ok {
                    return (None, call.ms);
                }
                self.next_id += 1;
                self.lru.add(self.next_id);
                (Some(self.next_id), call.ms)
            }
            Api::V2 => {
                let mut spent = 0.0;
                if self.seed.is_none() && now >= self.retry_at {
                    spent = self.generate_seed(kms, now);
                }
                (self.seed, spent)
            }
        }
    }

    /// Reads an object whose DEK/seed is `id`: success, and the time spent on KMS calls.
    fn read(&mut self, kms: &mut Kms, id: u64, now: f64) -> (bool, f64) {
        self.lookups += 1;
        if self.api == Api::V2 && self.seed.is_none() {
            // No DEK seed yet, no transformer: reads fail too ("got unexpected nil transformer"),
            // and the next Status poll (in the background) tries again.
            if now >= self.retry_at {
                self.generate_seed(kms, now);
            }
            if self.seed.is_none() {
                return (false, 0.0);
            }
        }
        let hit = match self.api {
            Api::V1 => self.lru.get(id),
            Api::V2 => self.seeds.contains(&id),
        };
        if hit {
            self.hits += 1;
            return (true, 0.0);
        }
        let call = kms.call(now);
        if call.ok {
            match self.api {
                Api::V1 => self.lru.add(id),
                Api::V2 => {
                    self.seeds.insert(id);
                }
            }
        }
        (call.ok, call.ms)
    }
}

/// One operation of a workload.
pub(crate) enum Op {
    /// Update Secret i.
    Write(usize),
    /// Get Secret i.
    Get(usize),
    /// List every Secret.
    List,
    /// Restart the apiserver (then it lists everything).
    Restart,
}

/// The operations of `workload`, the same for every setting of one seed.
pub(crate) fn operations(workload: &Workload, seed: u64) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = workload.secrets.max(1) as usize;
    let mut ops: Vec<Op> = (0..n).map(Op::Write).collect();
    let every = workload.ops / (u64::from(workload.restarts) + 1);
    for i in 0..workload.ops {
        if workload.restarts > 0 && i > 0 && every > 0 && i % every == 0 && i / every <= u64::from(workload.restarts) {
            ops.push(Op::Restart);
        }
        let op = if rng.r#gen::<f64>() < workload.read_share {
            if rng.r#gen::<f64>() < workload.list_share { Op::List } else { Op::Get(rng.gen_range(0..n)) }
        } else {
            Op::Write(rng.gen_range(0..n))
        };
        ops.push(op);
    }
    ops
}

/// Simulates `workload` under `setting` against `model`; deterministic for a `seed`.
pub fn simulate(model: &KmsModel, setting: Setting, workload: &Workload, seed: u64) -> Metrics {
    simulate_until(model, setting, workload, seed, &std::sync::atomic::AtomicBool::new(false))
        .expect("a flag nobody sets never stops the simulation")
}

/// [`simulate`], giving up (`None`) as soon as `stop` is set: one point with many Secrets can
/// take minutes, and Ctrl-C must not wait for it.
pub fn simulate_until(
    model: &KmsModel,
    setting: Setting,
    workload: &Workload,
    seed: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Option<Metrics> {
    let bucket = model.throttle.map(|(per_second, burst)| Bucket { per_ms: per_second / 1000.0, burst, tokens: burst, last: 0.0 });
    let mut kms = Kms {
        model,
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6b6d_735f_6c61_6221),
        bucket,
        timeout_ms: setting.timeout_ms,
        calls: 0,
        remote: 0,
        timeouts: 0,
    };
    let mut server = Apiserver {
        api: setting.api,
        lru: Lru::new(setting.cachesize.unwrap_or(crate::DEFAULT_CACHESIZE)),
        seed: None,
        retry_at: 0.0,
        seeds: HashSet::new(),
        next_id: 0,
        hits: 0,
        lookups: 0,
    };
    let n = workload.secrets.max(1) as usize;
    let mut ids: Vec<Option<u64>> = vec![None; n];
    let (mut writes, mut gets, mut lists) = (Vec::new(), Vec::new(), Vec::new());
    let (mut failed, mut failed_writes, mut ops_run) = (0u64, 0u64, 0u64);
    let interval = 1000.0 / workload.ops_per_second.max(0.001);
    let mut clock = server.start(&mut kms, 0.0);
    let mut scheduled = clock;

    let list = |server: &mut Apiserver, kms: &mut Kms, ids: &[Option<u64>], start: f64| -> (bool, f64) {
        let mut spent = 2.0;
        let mut ok = true;
        for id in ids.iter().flatten() {
            spent += LIST_ITEM_OVERHEAD_MS;
            let (read, ms) = server.read(kms, *id, start + spent);
            spent += ms;
            ok &= read;
        }
        (ok, spent)
    };

    for op in operations(workload, seed) {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let start = clock.max(scheduled);
        let (ok, spent) = match op {
            Op::Restart => {
                let back = start + workload.restart_ms;
                let spent = server.start(&mut kms, back);
                // The watch cache (or, without one, the Secrets informer) fills with a full list
                // from etcd: every object is decrypted; then the client re-lists.
                let (_, fill_ms) = list(&mut server, &mut kms, &ids, back + spent);
                let (ok, list_ms) = list(&mut server, &mut kms, &ids, back + spent + fill_ms);
                lists.push(list_ms);
                clock = back + spent + fill_ms + list_ms;
                ops_run += 1;
                if !ok {
                    failed += 1;
                }
                scheduled = clock;
                continue;
            }
            Op::Write(i) => {
                let (id, ms) = server.write(&mut kms, ids[i], start);
                writes.push(WRITE_OVERHEAD_MS + ms);
                if id.is_some() {
                    ids[i] = id;
                } else {
                    failed_writes += 1;
                }
                (id.is_some(), WRITE_OVERHEAD_MS + ms)
            }
            Op::Get(i) => match ids[i] {
                Some(id) => {
                    let (ok, ms) = server.read(&mut kms, id, start);
                    gets.push(GET_OVERHEAD_MS + ms);
                    (ok, GET_OVERHEAD_MS + ms)
                }
                None => (true, GET_OVERHEAD_MS),
            },
            Op::List => {
                let (ok, ms) = list(&mut server, &mut kms, &ids, start);
                lists.push(ms);
                (ok, ms)
            }
        };
        ops_run += 1;
        if !ok {
            failed += 1;
        }
        clock = start + spent;
        scheduled += interval;
    }
    let minutes = (clock / 60_000.0).max(1e-9);
    let write_count = writes.len().max(1) as f64;
    Some(Metrics {
        hit_rate: if server.lookups == 0 { 0.0 } else { server.hits as f64 / server.lookups as f64 },
        kms_calls_per_min: kms.calls as f64 / minutes,
        remote_calls_per_min: kms.remote as f64 / minutes,
        write_p50_ms: percentile(&mut writes, 0.5),
        write_p99_ms: percentile(&mut writes, 0.99),
        read_p99_ms: percentile(&mut gets, 0.99),
        list_p50_ms: percentile(&mut lists, 0.5),
        failure_rate: failed as f64 / ops_run.max(1) as f64,
        write_failure_rate: failed_writes as f64 / write_count,
        timeouts: kms.timeouts,
        ops: ops_run,
        minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KmsModel {
        KmsModel::synthetic(ProfileCalibration::from_samples(vec![1.0; 10], 0), 0.0, None)
    }

    #[test]
    fn lru_with_room_for_every_key_misses_once_then_always_hits() {
        let mut lru = Lru::new(100);
        let mut misses = 0;
        for key in 0..100 {
            if !lru.get(key) {
                misses += 1;
                lru.add(key);
            }
        }
        assert_eq!(misses, 100);
        for _ in 0..3 {
            assert!((0..100).all(|k| lru.get(k)), "every key of a second pass hits");
        }
    }

    #[test]
    fn lru_smaller_than_a_cyclic_scan_always_misses() {
        let mut lru = Lru::new(99);
        for _ in 0..5 {
            for key in 0..100 {
                assert!(!lru.get(key), "key {key} hit in a cyclic scan over more keys than the cache holds");
                lru.add(key);
            }
        }
        assert_eq!(lru.len(), 99);
        let mut disabled = Lru::new(-1);
        disabled.add(1);
        assert!(!disabled.get(1) && disabled.is_empty());
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.add(1);
        lru.add(2);
        assert!(lru.get(1));
        lru.add(3);
        assert!(lru.get(1) && lru.get(3) && !lru.get(2));
    }

    fn lists_only(secrets: u64) -> Workload {
        Workload { read_share: 1.0, list_share: 1.0, ops: 5, restarts: 0, ..Workload::new(secrets, 5) }
    }

    #[test]
    fn v1_lists_hit_when_the_cache_holds_every_dek_and_miss_when_it_does_not() {
        let big = simulate(&fast(), Setting { api: Api::V1, cachesize: Some(100), timeout_ms: 3000.0 }, &lists_only(100), 1);
        assert_eq!(big.hit_rate, 1.0, "the writes put every DEK in the cache");
        let small = simulate(&fast(), Setting { api: Api::V1, cachesize: Some(50), timeout_ms: 3000.0 }, &lists_only(100), 1);
        // A cyclic scan over 100 DEKs with room for 50 always misses: the only hits are the
        // 100 writes' watch decodes, of 100 + 5 × 100 lookups.
        assert!((small.hit_rate - 100.0 / 600.0).abs() < 1e-9, "{small:?}");
        assert!(small.kms_calls_per_min > big.kms_calls_per_min);
    }

    #[test]
    fn v2_decrypts_one_seed_per_apiserver_lifetime() {
        let workload = Workload { restarts: 2, ..lists_only(100) };
        let metrics = simulate(&fast(), Setting { api: Api::V2, cachesize: None, timeout_ms: 3000.0 }, &workload, 1);
        // 100 writes with one seed, then reads: after each restart one Decrypt of the old seed.
        assert!(metrics.hit_rate > 0.99, "{metrics:?}");
        assert_eq!(metrics.failure_rate, 0.0);
    }

    #[test]
    fn a_timeout_below_the_kms_latency_fails_every_call() {
        let slow = KmsModel::synthetic(ProfileCalibration::from_samples(vec![80.0; 10], 0), 0.0, None);
        let workload = Workload::new(50, 100);
        let short = simulate(&slow, Setting { api: Api::V1, cachesize: Some(1000), timeout_ms: 50.0 }, &workload, 3);
        assert_eq!(short.write_failure_rate, 1.0);
        assert!(short.timeouts > 0);
        let long = simulate(&slow, Setting { api: Api::V1, cachesize: Some(1000), timeout_ms: 200.0 }, &workload, 3);
        assert_eq!(long.failure_rate, 0.0);
    }

    #[test]
    fn a_quota_below_the_miss_rate_throttles_and_fails_short_timeouts() {
        let throttled = KmsModel::synthetic(ProfileCalibration::from_samples(vec![2.0; 10], 0), 0.0, Some((20.0, 20.0)));
        let workload = Workload { ops: 200, ..lists_only(200) };
        let small = simulate(&throttled, Setting { api: Api::V1, cachesize: Some(100), timeout_ms: 500.0 }, &workload, 5);
        assert!(small.failure_rate > 0.5, "{small:?}");
        let fitting = simulate(&throttled, Setting { api: Api::V1, cachesize: Some(400), timeout_ms: 500.0 }, &workload, 5);
        assert!(fitting.failure_rate < small.failure_rate, "{fitting:?}");
    }

    #[test]
    fn the_simulation_is_deterministic_for_a_seed() {
        let flaky = KmsModel::synthetic(ProfileCalibration::from_samples((1..=100).map(f64::from).collect(), 0), 0.05, None);
        let setting = Setting { api: Api::V1, cachesize: Some(200), timeout_ms: 60.0 };
        let workload = Workload::new(300, 1000);
        assert_eq!(simulate(&flaky, setting, &workload, 9), simulate(&flaky, setting, &workload, 9));
    }
}
