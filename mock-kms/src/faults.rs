//! Fault injection: a [`FaultProfile`] (serde, loadable from YAML) and the per-node [`Faults`]
//! that apply it at runtime.
//!
//! Randomness comes from a ChaCha8 generator seeded from `--seed` (or the profile's own `seed`),
//! on a stream per node, and restarted every time a profile is applied: the same profile and the
//! same sequence of calls give the same sequence of outcomes. Random draws happen only for faults
//! that apply to the call at hand, in this order: latency, error rate, corruption.
//!
//! Order of effects on a `/v1/*` call: hang → latency → (seal, auth) → throttle → deny → error
//! rate → (the action; `key_disabled` applies here) → corrupt. `outage` works on the listener:
//! the node closes it (connection refused) and drops its open connections until cleared.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::Action;
use crate::api::faults::{FaultProfile, LatencyDistribution, ThrottleFault};
use crate::error::{FaultProfileError, KmsError};

/// The longest latency a profile may add (a sampled value is capped here too).
pub const MAX_LATENCY_MS: f64 = 600_000.0;

fn applies(actions: &Option<Vec<Action>>, action: Option<Action>) -> bool {
    match (actions, action) {
        (None, _) => true,
        (Some(list), Some(action)) => list.contains(&action),
        (Some(_), None) => false,
    }
}

impl FaultProfile {
    /// Parses a profile from YAML (JSON is accepted too).
    pub fn from_yaml(text: &str) -> Result<Self, FaultProfileError> {
        let profile: Self = serde_yaml::from_str(text).map_err(|e| FaultProfileError::Parse { path: None, message: e.to_string() })?;
        profile.validate()?;
        Ok(profile)
    }

    /// Reads and parses a YAML profile file.
    pub fn from_file(path: &Path) -> Result<Self, FaultProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FaultProfileError::Io { path: path.to_owned(), source })?;
        Self::from_yaml(&text).map_err(|e| match e {
            FaultProfileError::Parse { message, .. } => FaultProfileError::Parse { path: Some(path.to_owned()), message },
            other => other,
        })
    }

    /// Whether no fault is set.
    pub fn is_empty(&self) -> bool {
        Self { seed: None, ..self.clone() } == Self::default()
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), FaultProfileError> {
        fn ms(field: &'static str, value: f64) -> Result<(), FaultProfileError> {
            if !(0.0..=MAX_LATENCY_MS).contains(&value) {
                return Err(FaultProfileError::Invalid {
                    field,
                    problem: format!("is {value}; it must be between 0 and {MAX_LATENCY_MS} ms"),
                });
            }
            Ok(())
        }
        fn rate(field: &'static str, value: f64) -> Result<(), FaultProfileError> {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultProfileError::Invalid { field, problem: format!("is {value}; it must be a probability between 0 and 1") });
            }
            Ok(())
        }
        if let Some(latency) = &self.latency {
            ms("latency.fixed_ms", latency.fixed_ms)?;
            match latency.distribution {
                Some(LatencyDistribution::Uniform { min_ms, max_ms }) => {
                    ms("latency.distribution.min_ms", min_ms)?;
                    ms("latency.distribution.max_ms", max_ms)?;
                    if min_ms > max_ms {
                        return Err(FaultProfileError::Invalid { field: "latency.distribution.min_ms", problem: "is above max_ms".into() });
                    }
                }
                Some(LatencyDistribution::Normal { mean_ms, stddev_ms }) => {
                    ms("latency.distribution.mean_ms", mean_ms)?;
                    ms("latency.distribution.stddev_ms", stddev_ms)?;
                }
                Some(LatencyDistribution::Exponential { mean_ms }) => {
                    ms("latency.distribution.mean_ms", mean_ms)?;
                    if mean_ms <= 0.0 {
                        return Err(FaultProfileError::Invalid {
                            field: "latency.distribution.mean_ms",
                            problem: "must be above 0 for an exponential distribution".into(),
                        });
                    }
                }
                None => {}
            }
        }
        if let Some(error) = &self.error_rate {
            rate("error_rate.rate", error.rate)?;
        }
        if let Some(corrupt) = &self.corrupt {
            rate("corrupt.rate", corrupt.rate)?;
        }
        if let Some(throttle) = &self.throttle {
            if !(throttle.per_second.is_finite() && throttle.per_second > 0.0) {
                return Err(FaultProfileError::Invalid {
                    field: "throttle.per_second",
                    problem: format!("is {}; it must be above 0", throttle.per_second),
                });
            }
            if let Some(burst) = throttle.burst
                && !(burst.is_finite() && burst >= 1.0)
            {
                return Err(FaultProfileError::Invalid { field: "throttle.burst", problem: format!("is {burst}; it must be at least 1") });
            }
        }
        Ok(())
    }
}

/// The profile in force, with a generation number that grows with every change.
#[derive(Debug, Clone, Default)]
pub struct ActiveFaults {
    /// Grows with every change (including a timed fault expiring).
    pub generation: u64,
    /// The profile.
    pub profile: Arc<FaultProfile>,
}

impl ActiveFaults {
    /// Whether the node should be in an outage.
    pub fn outage(&self) -> bool {
        self.profile.outage.is_some()
    }

    fn hangs(&self, action: Option<Action>) -> bool {
        self.profile.hang.as_ref().is_some_and(|h| applies(&h.actions, action))
    }
}

struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(fault: &ThrottleFault) -> Self {
        let burst = fault.burst.unwrap_or(fault.per_second).max(1.0);
        Self { per_second: fault.per_second, burst, tokens: burst, last: Instant::now() }
    }

    /// Takes a token, or says how many whole seconds until one is available.
    fn take(&mut self) -> Result<(), u64> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err((((1.0 - self.tokens) / self.per_second).ceil() as u64).max(1))
    }
}

struct Runtime {
    rng: ChaCha8Rng,
    bucket: Option<TokenBucket>,
    /// Bumped only by [`Faults::set`]; a timed fault expires only if no newer profile was set.
    set_generation: u64,
}

struct Inner {
    seed: u64,
    stream: u64,
    runtime: Mutex<Runtime>,
    active: watch::Sender<ActiveFaults>,
    hung: AtomicUsize,
}

/// The faults of one node. Cloning gives another handle to the same state.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").field("seed", &self.inner.seed).field("profile", &self.profile()).finish()
    }
}

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

struct HungGuard<'a>(&'a AtomicUsize);

impl Drop for HungGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Faults {
    /// No faults yet; random draws from `seed` on stream `stream` (the node's index).
    pub fn new(seed: u64, stream: u64) -> Self {
        let runtime = Runtime { rng: rng_for(seed, stream), bucket: None, set_generation: 0 };
        let (active, _) = watch::channel(ActiveFaults::default());
        Self { inner: Arc::new(Inner { seed, stream, runtime: Mutex::new(runtime), active, hung: AtomicUsize::new(0) }) }
    }

    /// The seed in use (without a profile override).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    fn runtime(&self) -> std::sync::MutexGuard<'_, Runtime> {
        self.inner.runtime.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `profile` (replacing the one in force) and restarts its random sequence.
    /// Timed faults (`duration_ms`) clear themselves if called within a Tokio runtime.
    pub fn set(&self, profile: FaultProfile) -> Result<(), FaultProfileError> {
        profile.validate()?;
        let durations = [
            (profile.outage.as_ref().and_then(|o| o.duration_ms), Timed::Outage),
            (profile.hang.as_ref().and_then(|h| h.duration_ms), Timed::Hang),
        ];
        let set_generation = {
            let mut runtime = self.runtime();
            runtime.rng = rng_for(profile.seed.unwrap_or(self.inner.seed), self.inner.stream);
            runtime.bucket = profile.throttle.as_ref().map(TokenBucket::new);
            runtime.set_generation += 1;
            let profile = Arc::new(profile);
            self.inner.active.send_modify(|a| *a = ActiveFaults { generation: a.generation + 1, profile });
            runtime.set_generation
        };
        if !self.profile().is_empty() {
            tracing::info!(profile = %serde_json::to_string(&self.profile()).unwrap_or_default(), "faults set");
        } else {
            tracing::info!("faults cleared");
        }
        for (duration, which) in durations {
            if let (Some(ms), Ok(handle)) = (duration, tokio::runtime::Handle::try_current()) {
                let weak: Weak<Inner> = Arc::downgrade(&self.inner);
                handle.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if let Some(inner) = weak.upgrade() {
                        Faults { inner }.expire(set_generation, which);
                    }
                });
            }
        }
        Ok(())
    }

    fn expire(&self, set_generation: u64, which: Timed) {
        let runtime = self.runtime();
        if runtime.set_generation != set_generation {
            return;
        }
        self.inner.active.send_modify(|a| {
            let mut profile = (*a.profile).clone();
            match which {
                Timed::Outage => profile.outage = None,
                Timed::Hang => profile.hang = None,
            }
            *a = ActiveFaults { generation: a.generation + 1, profile: Arc::new(profile) };
        });
        tracing::info!(fault = ?which, "timed fault expired");
    }

    /// Clears every fault.
    pub fn clear(&self) {
        let _ = self.set(FaultProfile::default());
    }

    /// The profile in force.
    pub fn profile(&self) -> FaultProfile {
        (*self.inner.active.borrow().profile).clone()
    }

    /// A receiver that sees every change (the listener watches it for outages).
    pub fn subscribe(&self) -> watch::Receiver<ActiveFaults> {
        self.inner.active.subscribe()
    }

    /// How many calls are hanging now.
    pub fn hung(&self) -> usize {
        self.inner.hung.load(Ordering::SeqCst)
    }

    /// Waits while a `hang` fault applies to `action`; fails if `shutdown` turns true first.
    pub async fn hang(&self, action: Option<Action>, shutdown: &mut watch::Receiver<bool>) -> Result<(), KmsError> {
        let mut active = self.subscribe();
        if !active.borrow_and_update().hangs(action) {
            return Ok(());
        }
        self.inner.hung.fetch_add(1, Ordering::SeqCst);
        let _guard = HungGuard(&self.inner.hung);
        loop {
            tokio::select! {
                changed = active.changed() => {
                    if changed.is_err() || !active.borrow_and_update().hangs(action) {
                        return Ok(());
                    }
                }
                _ = crate::listener::stopped(shutdown) => {
                    return Err(KmsError::ServiceUnavailable("the node is shutting down".into()));
                }
            }
        }
    }

    /// The latency to add to a call of `action`, if any.
    pub fn latency(&self, action: Option<Action>) -> Option<Duration> {
        let profile = self.inner.active.borrow().profile.clone();
        let latency = profile.latency.as_ref().filter(|l| applies(&l.actions, action))?;
        let mut ms = latency.fixed_ms;
        if let Some(distribution) = &latency.distribution {
            let mut runtime = self.runtime();
            let rng = &mut runtime.rng;
            ms += match *distribution {
                LatencyDistribution::Uniform { min_ms, max_ms } if max_ms > min_ms => rng.gen_range(min_ms..=max_ms),
                LatencyDistribution::Uniform { min_ms, .. } => min_ms,
                LatencyDistribution::Normal { mean_ms, stddev_ms } => {
                    Normal::new(mean_ms, stddev_ms).map(|d| d.sample(rng)).unwrap_or(mean_ms)
                }
                LatencyDistribution::Exponential { mean_ms } => Exp::new(1.0 / mean_ms).map(|d| d.sample(rng)).unwrap_or(mean_ms),
            }
            .max(0.0);
        }
        let ms = ms.clamp(0.0, MAX_LATENCY_MS);
        (ms > 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
    }

    /// Throttle, deny and error-rate checks for a call of `action`.
    pub fn admit(&self, action: Option<Action>, action_name: &str) -> Result<(), KmsError> {
        let profile = self.inner.active.borrow().profile.clone();
        if profile.throttle.as_ref().is_some_and(|t| applies(&t.actions, action)) {
            let mut runtime = self.runtime();
            if let Some(bucket) = runtime.bucket.as_mut()
                && let Err(retry_after_secs) = bucket.take()
            {
                return Err(KmsError::Throttling { retry_after_secs });
            }
        }
        if profile.deny.as_ref().is_some_and(|d| applies(&d.actions, action)) {
            return Err(KmsError::Forbidden { action: action_name.to_owned() });
        }
        if let Some(error) = profile.error_rate.as_ref().filter(|e| applies(&e.actions, action))
            && self.runtime().rng.gen_bool(error.rate)
        {
            return Err(KmsError::InternalFailure("internal failure (injected fault: error_rate)".into()));
        }
        Ok(())
    }

    /// The keys a `key_disabled` fault disables for `action`.
    pub fn disabled_keys(&self, action: Option<Action>) -> BTreeSet<String> {
        let profile = self.inner.active.borrow().profile.clone();
        profile
            .key_disabled
            .as_ref()
            .filter(|k| applies(&k.actions, action))
            .map(|k| k.key_ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether to corrupt the response of this call of `action`: `Some(random)` picks the byte to flip.
    pub fn corruption(&self, action: Option<Action>) -> Option<u64> {
        let profile = self.inner.active.borrow().profile.clone();
        let corrupt = profile.corrupt.as_ref().filter(|c| applies(&c.actions, action))?;
        let mut runtime = self.runtime();
        runtime.rng.gen_bool(corrupt.rate).then(|| runtime.rng.r#gen::<u64>())
    }
}

#[derive(Debug, Clone, Copy)]
enum Timed {
    Outage,
    Hang,
}

/// Flips all bits of one byte of `bytes`, chosen by `pick`; false if `bytes` is empty.
pub fn flip_byte(bytes: &mut [u8], pick: u64) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let at = (pick % bytes.len() as u64) as usize;
    bytes[at] ^= 0xff;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::faults::{DenyFault, ErrorRateFault, LatencyFault};

    #[test]
    fn shipped_profiles_parse_and_validate() {
        for (name, text) in [
            ("same-region", include_str!("../profiles/same-region.yaml")),
            ("cross-region", include_str!("../profiles/cross-region.yaml")),
            ("throttled", include_str!("../profiles/throttled.yaml")),
            ("flaky", include_str!("../profiles/flaky.yaml")),
            ("outage", include_str!("../profiles/outage.yaml")),
        ] {
            let profile = FaultProfile::from_yaml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!profile.is_empty(), "{name} sets no fault");
        }
        let throttled = FaultProfile::from_yaml(include_str!("../profiles/throttled.yaml")).unwrap();
        assert_eq!(throttled.throttle.unwrap().per_second, 20.0);
    }

    #[test]
    fn yaml_and_json_forms_and_clear_errors() {
        let yaml = "latency:\n  fixed_ms: 5\n  distribution: {kind: normal, mean_ms: 2, stddev_ms: 1}\n  actions: [Encrypt]\ndeny: {actions: [Decrypt]}\n";
        let profile = FaultProfile::from_yaml(yaml).unwrap();
        let json = serde_json::to_string(&profile).unwrap();
        assert_eq!(serde_json::from_str::<FaultProfile>(&json).unwrap(), profile);
        assert_eq!(FaultProfile::from_yaml(&json).unwrap(), profile);
        let typo = FaultProfile::from_yaml("latncy: {fixed_ms: 1}").unwrap_err().to_string();
        assert!(typo.contains("latncy"), "{typo}");
        let range = FaultProfile::from_yaml("error_rate: {rate: 1.5}").unwrap_err().to_string();
        assert!(range.contains("error_rate.rate"), "{range}");
        let action = FaultProfile::from_yaml("deny: {actions: [Encrypted]}").unwrap_err().to_string();
        assert!(action.contains("Encrypted"), "{action}");
    }

    #[test]
    fn the_same_seed_gives_the_same_outcomes() {
        let run = |seed| {
            let faults = Faults::new(seed, 0);
            faults.set(FaultProfile { error_rate: Some(ErrorRateFault { rate: 0.5, actions: None }), ..Default::default() }).unwrap();
            (0..64).map(|_| faults.admit(Some(Action::Encrypt), "Encrypt").is_ok()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let faults = Faults::new(7, 0);
        let profile = FaultProfile { error_rate: Some(ErrorRateFault { rate: 0.5, actions: None }), ..Default::default() };
        faults.set(profile.clone()).unwrap();
        let first: Vec<bool> = (0..16).map(|_| faults.admit(None, "X").is_ok()).collect();
        faults.set(profile).unwrap();
        let again: Vec<bool> = (0..16).map(|_| faults.admit(None, "X").is_ok()).collect();
        assert_eq!(first, again, "applying a profile restarts its sequence");
    }

    #[test]
    fn action_limits_deny_and_throttle() {
        let faults = Faults::new(1, 0);
        faults
            .set(FaultProfile {
                deny: Some(DenyFault { actions: Some(vec![Action::Decrypt]) }),
                throttle: Some(ThrottleFault { per_second: 0.001, burst: Some(1.0), actions: Some(vec![Action::Encrypt]) }),
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(faults.admit(Some(Action::Decrypt), "Decrypt"), Err(KmsError::Forbidden { .. })));
        assert!(faults.admit(Some(Action::Encrypt), "Encrypt").is_ok());
        match faults.admit(Some(Action::Encrypt), "Encrypt") {
            Err(KmsError::Throttling { retry_after_secs }) => assert!(retry_after_secs >= 1),
            other => panic!("expected throttling, got {other:?}"),
        }
        assert!(faults.admit(Some(Action::ListKeys), "ListKeys").is_ok());
        faults.clear();
        assert!(faults.admit(Some(Action::Decrypt), "Decrypt").is_ok());
    }

    #[test]
    fn latency_is_at_least_the_fixed_part() {
        let faults = Faults::new(3, 0);
        let latency = LatencyFault {
            fixed_ms: 10.0,
            distribution: Some(LatencyDistribution::Normal { mean_ms: 0.0, stddev_ms: 5.0 }),
            actions: None,
        };
        faults.set(FaultProfile { latency: Some(latency), ..Default::default() }).unwrap();
        for _ in 0..100 {
            assert!(faults.latency(Some(Action::Encrypt)).unwrap() >= Duration::from_millis(10));
        }
        let mut bytes = [1u8, 2, 3];
        assert!(flip_byte(&mut bytes, 4));
        assert_eq!(bytes, [1, 0xfd, 3]);
        assert!(!flip_byte(&mut [], 0));
    }
}
