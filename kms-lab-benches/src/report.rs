//! The bench report: a table for people and a JSON summary whose headline figures are ratios
//! of things measured in the same run.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::apiserver::ProviderResult;
use crate::compare::CellResult;
use crate::load::{Op, Workload};
use crate::stats::{self, ratio};
use crate::targets::Role;

/// Everything one `cargo xtask bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// CPUs the machine offers (everything ran on them at once: client, targets, apiserver, etcd).
    pub cpus: usize,
    /// Headline ratios (see [`ratios`]).
    pub ratios: BTreeMap<String, f64>,
    /// The plugin over the bare tonic echo in every cell both ran: p50 latency and throughput,
    /// each the median and spread of per-round ratios.
    pub plugin_over_bare_tonic: Vec<CellRatio>,
    /// Every plugin cell.
    pub plugin: Vec<CellResult>,
    /// Every apiserver provider.
    pub apiserver: Vec<ProviderResult>,
    /// What was skipped or how to read the figures.
    pub notes: Vec<String>,
}

impl Report {
    /// Builds the report and its ratios.
    pub fn new(quick: bool, plugin: Vec<CellResult>, apiserver: Vec<ProviderResult>, notes: Vec<String>) -> Self {
        let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let ratios = ratios(&plugin, &apiserver);
        let plugin_over_bare_tonic = cell_ratios(&plugin, Role::Plugin, Role::BareTonic);
        Self { mode: if quick { "quick" } else { "full" }, cpus, ratios, plugin_over_bare_tonic, plugin, apiserver, notes }
    }

    /// The JSON summary.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

fn cell(plugin: &[CellResult], role: Role, op: Op, payload_bytes: usize, concurrency: usize) -> Option<&CellResult> {
    plugin.iter().find(|c| c.target == role && c.workload == Workload { op, payload_bytes } && c.concurrency == concurrency)
}

/// The short name of a provider in ratio keys: `v2`, `v1_cache10`, ….
fn short(provider: &str) -> String {
    provider.strip_prefix("kms-").unwrap_or(provider).replace('-', "_")
}

/// The median over rounds of `a`'s figure over `b`'s in the same round: the two ran back to back,
/// so a burst of load from elsewhere on the machine mostly cancels out.
fn paired(a: &[f64], b: &[f64]) -> Option<f64> {
    Spread::of(a, b).map(|spread| spread.median)
}

/// The per-round ratios of two targets' figures: their median and their spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The median over rounds (what the headline ratios report).
    pub median: f64,
    /// The lowest round.
    pub min: f64,
    /// The highest round.
    pub max: f64,
}

impl Spread {
    fn of(a: &[f64], b: &[f64]) -> Option<Self> {
        let per_round: Vec<f64> = a.iter().zip(b).filter_map(|(a, b)| ratio(*a, *b)).collect();
        let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
        (!per_round.is_empty()).then(|| Self {
            median: round3(stats::median(&per_round)),
            min: round3(per_round.iter().copied().fold(f64::INFINITY, f64::min)),
            max: round3(per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        })
    }
}

/// One target over another in one cell (call shape × callers).
#[derive(Debug, Clone, Serialize)]
pub struct CellRatio {
    /// The call shape.
    #[serde(flatten)]
    pub workload: Workload,
    /// Concurrent callers.
    pub concurrency: usize,
    /// p50 latency over the other's p50 (below 1 is faster).
    pub p50: Spread,
    /// Throughput over the other's throughput (above 1 is faster).
    pub throughput: Spread,
}

/// `a` over `b` in every cell both ran.
pub fn cell_ratios(plugin: &[CellResult], a: Role, b: Role) -> Vec<CellRatio> {
    plugin
        .iter()
        .filter(|c| c.target == a)
        .filter_map(|ca| {
            let cb = cell(plugin, b, ca.workload.op, ca.workload.payload_bytes, ca.concurrency)?;
            Some(CellRatio {
                workload: ca.workload,
                concurrency: ca.concurrency,
                p50: Spread::of(&ca.round_p50_us, &cb.round_p50_us)?,
                throughput: Spread::of(&ca.round_throughputs, &cb.round_throughputs)?,
            })
        })
        .collect()
}

fn geomean(values: &[f64]) -> Option<f64> {
    (!values.is_empty() && values.iter().all(|v| *v > 0.0))
        .then(|| (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

/// The headline ratios, each the median over rounds of the per-round ratio (see [`paired`]):
/// - `plugin_{encrypt,decrypt}[_1k]_p50_over_bare_tonic_p50`: one caller, 32 B (what kube-apiserver
///   sends) or 1 KiB; `plugin_encrypt_p50_over_bare_tonic_p50` is the goal's figure (≤ 1.2);
/// - `plugin_throughput_over_go_plugin`: the geometric mean over Encrypt and Decrypt at 32 B and
///   1 KiB with 64 callers (the goal's figure, ≥ 2); `plugin_encrypt_throughput_over_go_plugin`
///   is Encrypt 32 B alone; the same against the bare tonic echo, and the Go peer against it;
/// - `plugin_encrypt_1k_x{1,16,64}_{p50,throughput}_over_bare_tonic`: Encrypt 1 KiB at 1, 16 and
///   64 callers, the figures an independent client measures (the goal: throughput ≥ 0.95);
///   every other cell is in [`Report::plugin_over_bare_tonic`];
/// - `apiserver_<provider>_{creates,reads}_over_identity`, e.g. `apiserver_v2_creates_over_identity`.
///
/// A ratio whose parts were not measured (no Go peer, no apiserver) is left out.
pub fn ratios(plugin: &[CellResult], apiserver: &[ProviderResult]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: Option<f64>| {
        if let Some(value) = value {
            out.insert(key.to_owned(), (value * 1000.0).round() / 1000.0);
        }
    };
    let p50 = |a: Role, b: Role, op, bytes| {
        let (a, b) = (cell(plugin, a, op, bytes, 1)?, cell(plugin, b, op, bytes, 1)?);
        paired(&a.round_p50_us, &b.round_p50_us)
    };
    let thr = |a: Role, b: Role, op, bytes| {
        let (a, b) = (cell(plugin, a, op, bytes, 64)?, cell(plugin, b, op, bytes, 64)?);
        paired(&a.round_throughputs, &b.round_throughputs)
    };
    let thr_all = |a: Role, b: Role| {
        let each: Option<Vec<f64>> = [(Op::Encrypt, 32), (Op::Encrypt, 1024), (Op::Decrypt, 32), (Op::Decrypt, 1024)]
            .into_iter()
            .map(|(op, n)| thr(a, b, op, n))
            .collect();
        geomean(&each?)
    };
    use Role::{BareTonic, GoPeer, Plugin};
    put("plugin_encrypt_p50_over_bare_tonic_p50", p50(Plugin, BareTonic, Op::Encrypt, 32));
    put("plugin_decrypt_p50_over_bare_tonic_p50", p50(Plugin, BareTonic, Op::Decrypt, 32));
    put("plugin_encrypt_1k_p50_over_bare_tonic_p50", p50(Plugin, BareTonic, Op::Encrypt, 1024));
    put("plugin_decrypt_1k_p50_over_bare_tonic_p50", p50(Plugin, BareTonic, Op::Decrypt, 1024));
    put("plugin_encrypt_p50_over_go_plugin_p50", p50(Plugin, GoPeer, Op::Encrypt, 32));
    put("plugin_throughput_over_go_plugin", thr_all(Plugin, GoPeer));
    put("plugin_encrypt_throughput_over_go_plugin", thr(Plugin, GoPeer, Op::Encrypt, 32));
    put("plugin_throughput_over_bare_tonic", thr_all(Plugin, BareTonic));
    put("go_plugin_throughput_over_bare_tonic", thr_all(GoPeer, BareTonic));
    for callers in [1, 16, 64] {
        let pair = || Some((cell(plugin, Plugin, Op::Encrypt, 1024, callers)?, cell(plugin, BareTonic, Op::Encrypt, 1024, callers)?));
        let p50 = pair().and_then(|(a, b)| paired(&a.round_p50_us, &b.round_p50_us));
        let throughput = pair().and_then(|(a, b)| paired(&a.round_throughputs, &b.round_throughputs));
        put(&format!("plugin_encrypt_1k_x{callers}_p50_over_bare_tonic"), p50);
        put(&format!("plugin_encrypt_1k_x{callers}_throughput_over_bare_tonic"), throughput);
    }
    if let Some(identity) = apiserver.iter().find(|p| p.provider == "identity") {
        for provider in apiserver.iter().filter(|p| p.provider != "identity") {
            let name = short(&provider.provider);
            let creates = paired(&provider.round_creates_per_s, &identity.round_creates_per_s);
            let reads = paired(&provider.round_reads_per_s, &identity.round_reads_per_s);
            put(&format!("apiserver_{name}_creates_over_identity"), creates);
            put(&format!("apiserver_{name}_reads_over_identity"), reads);
        }
    }
    out
}

/// The report as text tables.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let roles: Vec<Role> = {
        let mut roles: Vec<Role> = report.plugin.iter().map(|c| c.target).collect();
        roles.sort();
        roles.dedup();
        roles
    };
    if !roles.is_empty() {
        let _ = writeln!(
            out,
            "Plugin v2 round trips over a Unix socket ({} mode, {} CPUs); p50/p99 in µs, throughput in calls/s",
            report.mode, report.cpus
        );
        let mut header = format!("{:<8} {:>6} {:>7}", "call", "bytes", "callers");
        for role in &roles {
            let _ = write!(header, " | {:>26}", format!("{} p50/p99/thr", role.name()));
        }
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
        let mut keys: Vec<(Workload, usize)> = report.plugin.iter().map(|c| (c.workload, c.concurrency)).collect();
        keys.sort();
        keys.dedup();
        for (workload, concurrency) in keys {
            let mut line = format!("{:<8} {:>6} {:>7}", workload.op.name(), workload.payload_bytes, concurrency);
            for role in &roles {
                match cell(&report.plugin, *role, workload.op, workload.payload_bytes, concurrency) {
                    Some(c) => {
                        let _ = write!(line, " | {:>7.0} {:>7.0} {:>10.0}", c.summary.p50_us, c.summary.p99_us, c.summary.throughput_per_s);
                    }
                    None => {
                        let _ = write!(line, " | {:>26}", "-");
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out);
    }
    if !report.apiserver.is_empty() {
        let _ = writeln!(out, "kube-apiserver Secrets (same client, same run); latencies in ms");
        let header = format!("{:<18} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}", "provider", "creates/s", "p50", "p99", "reads/s", "p50", "p99");
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
        for p in &report.apiserver {
            let _ = writeln!(
                out,
                "{:<18} {:>10.0} {:>9.1} {:>9.1} {:>9.0} {:>9.1} {:>9.1}",
                p.provider, p.creates_per_s, p.create_p50_ms, p.create_p99_ms, p.reads_per_s, p.read_p50_ms, p.read_p99_ms
            );
        }
        let _ = writeln!(out);
    }
    if !report.plugin_over_bare_tonic.is_empty() {
        let _ = writeln!(out, "kms-plugin over bare-tonic-echo per cell: median of per-round ratios [lowest, highest round]");
        let header = format!("{:<8} {:>6} {:>7} | {:>26} | {:>26}", "call", "bytes", "callers", "p50 latency", "throughput");
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
        let mut rows = report.plugin_over_bare_tonic.clone();
        rows.sort_by_key(|r| (r.workload, r.concurrency));
        for r in rows {
            let spread = |s: Spread| format!("{:.3} [{:.3}, {:.3}]", s.median, s.min, s.max);
            let _ = writeln!(
                out,
                "{:<8} {:>6} {:>7} | {:>26} | {:>26}",
                r.workload.op.name(),
                r.workload.payload_bytes,
                r.concurrency,
                spread(r.p50),
                spread(r.throughput)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "Ratios (same run)");
    for (key, value) in &report.ratios {
        let _ = writeln!(out, "  {key:<48} {value:>8.3}");
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    fn result(target: Role, op: Op, concurrency: usize, p50_us: f64, throughput_per_s: f64) -> CellResult {
        CellResult {
            target,
            workload: Workload { op, payload_bytes: 32 },
            concurrency,
            summary: Summary { calls: 10, p50_us, p99_us: p50_us * 2.0, mean_us: p50_us, throughput_per_s },
            round_throughputs: vec![throughput_per_s, throughput_per_s * 2.0, throughput_per_s],
            round_p50_us: vec![p50_us, p50_us, p50_us * 10.0],
            server_cpu_us_per_call: None,
            client_cpu_us_per_call: None,
        }
    }

    #[test]
    fn ratios_pair_the_right_cells_and_skip_missing_ones() {
        let plugin = [result(Role::Plugin, Op::Encrypt, 1, 60.0, 1.0), result(Role::BareTonic, Op::Encrypt, 1, 50.0, 1.0)]
            .into_iter()
            .chain([(Op::Encrypt, 32), (Op::Encrypt, 1024), (Op::Decrypt, 32), (Op::Decrypt, 1024)].into_iter().flat_map(|(op, n)| {
                let mut plugin = result(Role::Plugin, op, 64, 1.0, 3000.0);
                let mut go = result(Role::GoPeer, op, 64, 1.0, 1000.0);
                plugin.workload.payload_bytes = n;
                go.workload.payload_bytes = n;
                [plugin, go]
            }))
            .collect::<Vec<_>>();
        let apiserver = ["identity", "kms-v2", "kms-v1-cache10"]
            .iter()
            .enumerate()
            .map(|(i, name)| ProviderResult {
                provider: (*name).to_owned(),
                creates_per_s: 100.0 / (i + 1) as f64,
                reads_per_s: 200.0,
                create_p50_ms: 1.0,
                create_p99_ms: 2.0,
                read_p50_ms: 1.0,
                read_p99_ms: 2.0,
                round_creates_per_s: vec![100.0 / (i + 1) as f64],
                round_reads_per_s: vec![200.0],
            })
            .collect::<Vec<_>>();
        let ratios = ratios(&plugin, &apiserver);
        assert_eq!(ratios["plugin_encrypt_p50_over_bare_tonic_p50"], 1.2);
        assert_eq!(ratios["plugin_throughput_over_go_plugin"], 3.0);
        assert_eq!(ratios["apiserver_v2_creates_over_identity"], 0.5);
        assert_eq!(ratios["apiserver_v1_cache10_reads_over_identity"], 1.0);
        assert!(!ratios.contains_key("plugin_decrypt_p50_over_bare_tonic_p50"));
        assert!(!ratios.contains_key("plugin_encrypt_1k_x1_p50_over_bare_tonic"), "no 1 KiB cells were measured");
        let report = Report::new(true, plugin, apiserver, vec![]);
        let [only] = report.plugin_over_bare_tonic.as_slice() else { panic!("one cell ran on both: {:?}", report.plugin_over_bare_tonic) };
        assert_eq!((only.workload.op, only.concurrency), (Op::Encrypt, 1));
        assert_eq!(only.p50, Spread { median: 1.2, min: 1.2, max: 1.2 });
        assert_eq!(only.throughput, Spread { median: 1.0, min: 1.0, max: 1.0 });
        let text = table(&report);
        assert!(text.contains("kms-plugin p50/p99/thr") && text.contains("kms-v1-cache10"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["plugin"][0]["op"], "encrypt");
        assert_eq!(json["plugin"][0]["payload_bytes"], 32);
    }
}
