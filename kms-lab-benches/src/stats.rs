//! Latency percentiles and throughput of a set of samples.

use std::time::Duration;

use serde::Serialize;

/// What one measured cell came to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Completed calls.
    pub calls: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Completed calls per second of measured time.
    pub throughput_per_s: f64,
}

/// The nearest-rank percentile `p` (0–100) of sorted samples; 0 when there are none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises latency samples (nanoseconds, any order) taken over `measured` time in total.
pub fn summarize(samples: &mut [u64], measured: Duration) -> Summary {
    samples.sort_unstable();
    let calls = samples.len() as u64;
    let mean_ns = if samples.is_empty() { 0.0 } else { samples.iter().map(|s| *s as f64).sum::<f64>() / samples.len() as f64 };
    let seconds = measured.as_secs_f64();
    Summary {
        calls,
        p50_us: percentile(samples, 50.0) as f64 / 1000.0,
        p99_us: percentile(samples, 99.0) as f64 / 1000.0,
        mean_us: mean_ns / 1000.0,
        throughput_per_s: if seconds > 0.0 { calls as f64 / seconds } else { 0.0 },
    }
}

/// CPU time (user + system, all threads) a process has used so far: `/proc/PID/stat` for another
/// process, `getrusage` for this one. `None` when it cannot be read (the process is gone).
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    match pid {
        Some(pid) => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace().skip(11);
            let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
            // SAFETY: sysconf only reads a constant.
            let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|t| *t > 0)?;
            Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
        }
        None => {
            let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: getrusage fills the struct it is given.
            if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
                return None;
            }
            // SAFETY: initialised by the successful call above.
            let usage = unsafe { usage.assume_init() };
            let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
            Some(Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime)))
        }
    }
}

/// The median of some values (0 when there are none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `a / b`, or `None` when `b` is zero (a ratio that cannot be formed is left out, not faked).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&sorted, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summary_counts_and_rates() {
        let mut samples = vec![3_000, 1_000, 2_000, 4_000];
        let summary = summarize(&mut samples, Duration::from_secs(2));
        assert_eq!(summary.calls, 4);
        assert_eq!(summary.p50_us, 2.0);
        assert_eq!(summary.p99_us, 4.0);
        assert_eq!(summary.mean_us, 2.5);
        assert_eq!(summary.throughput_per_s, 2.0);
    }

    #[test]
    fn cpu_time_of_this_process_and_a_child_grows_with_work() {
        let before = cpu_time(None).expect("getrusage works");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_time(None).expect("getrusage works") > before, "{x}");
        assert!(cpu_time(Some(std::process::id())).is_some(), "this process's /proc/PID/stat parses");
        assert_eq!(cpu_time(Some(u32::MAX)), None);
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
    }
}
