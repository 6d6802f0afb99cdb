//! Turns the sweep's measurements into recommended `timeout` (both APIs) and `cachesize` (v1),
//! with the reasoning in numbers.

use serde::Serialize;

use crate::model::{Api, Metrics, Setting};

/// Failure rates within this much of the best count as equally good (0.1 percentage points).
pub const FAILURE_SLACK: f64 = 0.001;
/// Hit rates within this much of the best count as equally good (1 percentage point).
pub const HIT_SLACK: f64 = 0.01;
/// A recommended timeout keeps at least this factor over the p99 of one KMS call.
pub const HEADROOM: f64 = 2.0;

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The profile.
    pub profile: String,
    /// The setting.
    pub setting: Setting,
    /// What it did.
    pub metrics: Metrics,
}

/// The recommendation for one profile and API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// The profile.
    pub profile: String,
    /// The API.
    pub api: Api,
    /// The recommended `timeout`, ms.
    pub timeout_ms: f64,
    /// The recommended `cachesize` (v1).
    pub cachesize: Option<i64>,
    /// Why, in numbers.
    pub reasons: Vec<String>,
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// `250ms`, `3s`, `1.5s`.
pub fn show_ms(ms: f64) -> String {
    if ms < 1000.0 { format!("{ms:.0}ms") } else { format!("{}s", (ms / 10.0).round() / 100.0) }
}

/// Recommends values for `profile` and `api` from `points` (all of that profile and API);
/// `call_p99_ms` is the p99 of one KMS call (for the headroom rule). `None` without points.
pub fn recommend(points: &[&Point], profile: &str, api: Api, call_p99_ms: f64) -> Option<Recommendation> {
    let points: Vec<&Point> = points.iter().copied().filter(|p| p.profile == profile && p.setting.api == api).collect();
    if points.is_empty() {
        return None;
    }
    let mut timeouts: Vec<f64> = points.iter().map(|p| p.setting.timeout_ms).collect();
    timeouts.sort_by(f64::total_cmp);
    timeouts.dedup();
    let largest_cache = points.iter().filter_map(|p| p.setting.cachesize).max();
    // Judge timeouts where the cache is least in the way (the largest cachesize swept).
    let at_timeout = |t: f64| points.iter().copied().find(|p| p.setting.timeout_ms == t && p.setting.cachesize == largest_cache);
    let best_failure = timeouts.iter().filter_map(|t| at_timeout(*t)).map(|p| p.metrics.failure_rate).fold(f64::INFINITY, f64::min);
    let plateau: Vec<f64> = timeouts
        .iter()
        .copied()
        .filter(|t| at_timeout(*t).is_some_and(|p| p.metrics.failure_rate <= best_failure + FAILURE_SLACK))
        .collect();
    let timeout = plateau.iter().copied().find(|t| *t >= HEADROOM * call_p99_ms).or_else(|| plateau.last().copied())?;
    let mut reasons = Vec::new();
    let chosen = at_timeout(timeout)?;
    reasons.push(format!(
        "timeout {}: {} of operations fail, p99 write {:.0} ms, {:.0} KMS calls/min (one KMS call: p99 {:.0} ms)",
        show_ms(timeout),
        pct(chosen.metrics.failure_rate),
        chosen.metrics.write_p99_ms,
        chosen.metrics.kms_calls_per_min,
        call_p99_ms
    ));
    if let Some(shorter) = timeouts.iter().rev().copied().find(|t| *t < timeout).and_then(at_timeout) {
        let why = if plateau.contains(&shorter.setting.timeout_ms) {
            format!("no worse here, but below {HEADROOM} × the p99 of one call: a little more KMS latency would start failing writes")
        } else {
            format!("calls cut off by the timeout: {}", shorter.metrics.timeouts)
        };
        reasons.push(format!("shorter ({}): {} fail; {why}", show_ms(shorter.setting.timeout_ms), pct(shorter.metrics.failure_rate)));
    }
    if let Some(longer) = timeouts.last().copied().filter(|t| *t > timeout).and_then(at_timeout) {
        reasons.push(format!(
            "longer ({}): {} fail, no better — and a hung KMS holds each write for the whole timeout",
            show_ms(longer.setting.timeout_ms),
            pct(longer.metrics.failure_rate)
        ));
    }
    let mut cachesize = None;
    if api == Api::V1 {
        let mut at_t: Vec<&Point> = points.iter().copied().filter(|p| p.setting.timeout_ms == timeout).collect();
        at_t.sort_by_key(|p| p.setting.cachesize);
        let best_hit = at_t.iter().map(|p| p.metrics.hit_rate).fold(0.0, f64::max);
        let best_fail = at_t.iter().map(|p| p.metrics.failure_rate).fold(f64::INFINITY, f64::min);
        if let Some(pick) =
            at_t.iter().find(|p| p.metrics.hit_rate >= best_hit - HIT_SLACK && p.metrics.failure_rate <= best_fail + FAILURE_SLACK)
        {
            cachesize = pick.setting.cachesize;
            reasons.push(format!(
                "cachesize {}: hit rate {}, {:.0} KMS calls/min, list p50 {:.0} ms",
                pick.setting.cachesize.unwrap_or_default(),
                pct(pick.metrics.hit_rate),
                pick.metrics.kms_calls_per_min,
                pick.metrics.list_p50_ms
            ));
            if let Some(smaller) = at_t.iter().rev().find(|p| p.setting.cachesize < pick.setting.cachesize) {
                reasons.push(format!(
                    "smaller ({}): hit rate {}, {:.0} KMS calls/min, list p50 {:.0} ms, {} fail",
                    smaller.setting.cachesize.unwrap_or_default(),
                    pct(smaller.metrics.hit_rate),
                    smaller.metrics.kms_calls_per_min,
                    smaller.metrics.list_p50_ms,
                    pct(smaller.metrics.failure_rate)
                ));
            }
        }
    }
    Some(Recommendation { profile: profile.to_owned(), api, timeout_ms: timeout, cachesize, reasons })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(api: Api, cachesize: Option<i64>, timeout_ms: f64, failure_rate: f64, hit_rate: f64) -> Point {
        Point {
            profile: "p".into(),
            setting: Setting { api, cachesize, timeout_ms },
            metrics: Metrics { failure_rate, hit_rate, kms_calls_per_min: (1.0 - hit_rate) * 1000.0, ..Metrics::default() },
        }
    }

    #[test]
    fn picks_the_shortest_timeout_on_the_failure_plateau_with_headroom() {
        let points = [
            point(Api::V2, None, 100.0, 0.30, 1.0),
            point(Api::V2, None, 250.0, 0.0005, 1.0),
            point(Api::V2, None, 1000.0, 0.0, 1.0),
            point(Api::V2, None, 3000.0, 0.0, 1.0),
        ];
        let refs: Vec<&Point> = points.iter().collect();
        // p99 of a call 20 ms: 250 ms is on the plateau (within 0.1 pp) and ≥ 2 × p99.
        assert_eq!(recommend(&refs, "p", Api::V2, 20.0).unwrap().timeout_ms, 250.0);
        // p99 of a call 400 ms: 250 ms lacks headroom, 1 s is next on the plateau.
        let slow = recommend(&refs, "p", Api::V2, 400.0).unwrap();
        assert_eq!(slow.timeout_ms, 1000.0);
        assert!(slow.reasons.iter().any(|r| r.starts_with("shorter (250ms)") && r.contains("no worse")), "{:?}", slow.reasons);
    }

    #[test]
    fn picks_the_smallest_cachesize_that_reaches_the_best_hit_rate() {
        let points = [
            point(Api::V1, Some(100), 1000.0, 0.02, 0.10),
            point(Api::V1, Some(500), 1000.0, 0.0, 0.995),
            point(Api::V1, Some(1000), 1000.0, 0.0, 0.999),
            point(Api::V1, Some(100), 3000.0, 0.0, 0.10),
            point(Api::V1, Some(500), 3000.0, 0.0, 0.995),
            point(Api::V1, Some(1000), 3000.0, 0.0, 0.999),
        ];
        let refs: Vec<&Point> = points.iter().collect();
        let pick = recommend(&refs, "p", Api::V1, 100.0).unwrap();
        assert_eq!((pick.timeout_ms, pick.cachesize), (1000.0, Some(500)));
        assert!(pick.reasons.iter().any(|r| r.starts_with("smaller (100): hit rate 10.0 %")), "{:?}", pick.reasons);
        assert!(recommend(&refs, "other", Api::V1, 1.0).is_none());
    }
}
