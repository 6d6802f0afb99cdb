//! Scaling the suite: how many scenarios run at once on this machine (`--jobs`), and which
//! scenarios a CI runner takes (`--shard K/N`), so the CI systems' own fan-out (a GitHub Actions
//! matrix, GitLab `parallel:`) spreads the suite with no scheduler of our own.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::model::Scenario;
use crate::report::SuiteReport;

/// Memory one scenario's stack takes at most (etcd, one or two kube-apiservers, plugins, mock
/// KMS nodes): the figure `stack.peak_rss_mib` of the core and incident tiers is 320–670 MiB
/// (two apiservers: failover, 14-ha-config-drift); 1.5 GiB leaves headroom.
const STACK_MEMORY_BYTES: u64 = 1536 * 1024 * 1024;
/// The share of a core one running scenario takes. Measured on 2 cores (figure `stack.cpu_s`
/// over the scenario's wall time, core and incident tiers): 0.07 on average with 4 and with 8
/// at once, 0.02–0.42 per scenario — most of a scenario is waiting on the apiserver's poll
/// intervals; 8 stacks at once used 0.47 of the 2 cores on average. A quarter of a core leaves
/// room for the runner itself and for start-up bursts (an apiserver starting takes a core for a
/// few seconds).
const STACK_CORES: f64 = 0.25;

/// How many scenarios to run at once by default: as many as the cores hold at
/// [`STACK_CORES`] each, at most as many as free memory holds stacks, at least one. Also says
/// why, for the line the command prints.
pub fn default_jobs() -> (usize, String) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let by_cores = ((cores as f64 / STACK_CORES).floor() as usize).max(1);
    let per_core = format!("{cores} core(s) at ≈{STACK_CORES} core per stack");
    match available_memory() {
        Some(bytes) => {
            let by_memory = (bytes / STACK_MEMORY_BYTES).max(1) as usize;
            let jobs = by_cores.min(by_memory).max(1);
            (jobs, format!("{per_core}, {:.1} GiB available memory (≈1.5 GiB per stack)", bytes as f64 / (1u64 << 30) as f64))
        }
        None => (by_cores, format!("{per_core}; available memory unknown")),
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One shard of a partition: `K/N`, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, 1..=`count`.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a shard: write `K/N` with 1 ≤ K ≤ N, e.g. `2/4`");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The scenarios of `shard`: a deterministic partition of `selected` (the same on every runner
/// for the same selection). With `durations` (seconds per scenario name, from an earlier JSON
/// report) the shards are balanced by time: longest first, each to the shard with the least
/// time so far; without, by count (round robin in name order). Ties break by name and index.
pub fn partition(selected: Vec<Scenario>, shard: Shard, durations: &BTreeMap<String, f64>) -> Vec<Scenario> {
    let mut order: Vec<Scenario> = selected;
    order.sort_by(|a, b| a.name.cmp(&b.name));
    if durations.is_empty() {
        return order.into_iter().enumerate().filter(|(i, _)| i % shard.count == shard.index - 1).map(|(_, s)| s).collect();
    }
    let weight = weights(durations);
    order.sort_by(|a, b| weight(b).total_cmp(&weight(a)).then_with(|| a.name.cmp(&b.name)));
    let mut load = vec![0.0f64; shard.count];
    let mut mine = Vec::new();
    for scenario in order {
        let target = (0..shard.count).min_by(|x, y| load[*x].total_cmp(&load[*y]).then(x.cmp(y))).unwrap_or(0);
        load[target] += weight(&scenario);
        if target == shard.index - 1 {
            mine.push(scenario);
        }
    }
    mine.sort_by(|a, b| a.path.cmp(&b.path));
    mine
}

/// A scenario's expected seconds: its recorded duration; an unknown one weighs the mean of the
/// known ones.
fn weights(durations: &BTreeMap<String, f64>) -> impl Fn(&Scenario) -> f64 + '_ {
    let mean = if durations.is_empty() { 0.0 } else { durations.values().sum::<f64>() / durations.len() as f64 };
    move |s: &Scenario| durations.get(&s.name).copied().unwrap_or(mean)
}

/// The order a run starts `scenarios` in: longest first by `durations` (so the long ones do not
/// start last and run on alone while the other slots idle), ties and unknown durations in file
/// order; file order when nothing is recorded.
pub fn longest_first(mut scenarios: Vec<Scenario>, durations: &BTreeMap<String, f64>) -> Vec<Scenario> {
    if durations.is_empty() {
        return scenarios;
    }
    let weight = weights(durations);
    // A stable sort: equal weights keep their file order.
    scenarios.sort_by(|a, b| weight(b).total_cmp(&weight(a)));
    scenarios
}

/// The file under a run root where each run records how long its scenarios took (skipped ones
/// keep their earlier figure), for [`longest_first`] in the next run: `durations.json` for
/// kms-lab's own plugin, `durations-<name>.json` for a catalog plugin (`--plugin`), since one
/// scenario can take seconds on one plugin and minutes on another.
pub fn durations_file(run_root: &Path, plugin: Option<&str>) -> PathBuf {
    run_root.join(match plugin {
        None => "durations.json".to_owned(),
        Some(name) => format!("durations-{name}.json"),
    })
}

/// Seconds per scenario from a JSON report of an earlier run (`kms-lab scenarios --json`), or from
/// a run root's [`durations_file`].
pub fn durations_from(path: &Path) -> Result<BTreeMap<String, f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Ok(recorded) = serde_json::from_str::<BTreeMap<String, f64>>(&text) {
        return Ok(recorded);
    }
    let report: SuiteReport = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is neither a `kms-lab scenarios --json` report nor a durations file of seconds per scenario: {e} (line {})",
            path.display(),
            e.line()
        )
    })?;
    Ok(report.scenarios.into_iter().map(|s| (s.name, s.seconds)).collect())
}

/// The durations recorded under `run_root` for `plugin` (none when the file is missing or
/// unreadable: the order is only an optimisation).
pub fn recorded_durations(run_root: &Path, plugin: Option<&str>) -> BTreeMap<String, f64> {
    durations_from(&durations_file(run_root, plugin)).unwrap_or_default()
}

/// Adds the seconds of the scenarios `report` ran (not the skipped ones) to the durations
/// recorded under `run_root` for `plugin`. Best effort: a run root that cannot be written only
/// loses the order.
pub fn record_durations(run_root: &Path, plugin: Option<&str>, report: &SuiteReport) {
    let mut recorded = recorded_durations(run_root, plugin);
    for scenario in report.scenarios.iter().filter(|s| s.skipped.is_none()) {
        recorded.insert(scenario.name.clone(), (scenario.seconds * 10.0).round() / 10.0);
    }
    let text = serde_json::to_string_pretty(&recorded).unwrap_or_default();
    if let Err(e) = std::fs::create_dir_all(run_root).and_then(|()| std::fs::write(durations_file(run_root, plugin), text)) {
        tracing::debug!(error = %e, "the scenario durations were not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load;

    fn suite() -> Vec<Scenario> {
        let dir = crate::runner::repository_scenario_dir();
        load::select(&dir, &[], &[crate::model::Tier::Core, crate::model::Tier::Incident]).unwrap()
    }

    fn names_in_order(scenarios: &[Scenario]) -> Vec<String> {
        scenarios.iter().map(|s| s.name.clone()).collect()
    }

    fn names(scenarios: &[Scenario]) -> Vec<String> {
        let mut names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn shards_are_disjoint_cover_the_selection_and_are_stable() {
        let all = names(&suite());
        assert!(all.len() >= 20, "{all:?}");
        let durations: BTreeMap<String, f64> = all.iter().enumerate().map(|(i, n)| (n.clone(), 5.0 + (i * 7 % 11) as f64 * 10.0)).collect();
        for timings in [BTreeMap::new(), durations] {
            for count in 1..=5 {
                let mut seen = Vec::new();
                for index in 1..=count {
                    let shard = Shard { index, count };
                    let mine = names(&partition(suite(), shard, &timings));
                    assert_eq!(mine, names(&partition(suite(), shard, &timings)), "shard {shard} is not stable");
                    seen.extend(mine);
                }
                seen.sort();
                assert_eq!(seen, all, "{count} shards do not cover the selection exactly once");
            }
        }
    }

    #[test]
    fn timed_shards_are_balanced_by_recorded_seconds() {
        let all = names(&suite());
        // One long scenario and many short ones: the long one gets a shard of its own.
        let mut durations: BTreeMap<String, f64> = all.iter().map(|n| (n.clone(), 10.0)).collect();
        durations.insert(all[0].clone(), 100.0);
        let first = partition(suite(), Shard { index: 1, count: 2 }, &durations);
        let second = partition(suite(), Shard { index: 2, count: 2 }, &durations);
        let time = |s: &[Scenario]| s.iter().map(|s| durations[&s.name]).sum::<f64>();
        assert!((time(&first) - time(&second)).abs() <= 100.0, "{} vs {}", time(&first), time(&second));
        assert!(first.iter().any(|s| s.name == all[0]));
    }

    #[test]
    fn merged_shard_reports_hold_the_unsharded_runs_test_cases() {
        let report = |scenarios: Vec<Scenario>, shard: Option<Shard>| SuiteReport {
            scenarios: scenarios.iter().map(|s| crate::runner::ScenarioOutcome::skipped(s, 1, "not run: a test".into())).collect(),
            seconds: 1.0,
            kubernetes_version: "v1.37.2".into(),
            jobs: 1,
            shard: shard.map(|s| s.to_string()),
        };
        let testcases = |junit: &str| {
            let mut names: Vec<String> = junit
                .lines()
                .filter_map(|l| l.trim().strip_prefix("<testcase name=\""))
                .map(|l| l.split('"').next().unwrap().to_owned())
                .collect();
            names.sort();
            names
        };
        let unsharded = report(suite(), None).junit();
        for count in [2, 3] {
            // Each shard's JSON goes through the file format `merge` reads.
            let shards: Vec<SuiteReport> = (1..=count)
                .map(|index| {
                    let shard = Shard { index, count };
                    let json = report(partition(suite(), shard, &BTreeMap::new()), Some(shard)).json();
                    serde_json::from_str(&json).unwrap()
                })
                .collect();
            assert_eq!(testcases(&SuiteReport::merge(shards).junit()), testcases(&unsharded), "{count} shards");
        }
    }

    #[test]
    fn a_bad_shard_names_the_shape() {
        for bad in ["0/2", "3/2", "1/0", "x", "1-2"] {
            assert!(bad.parse::<Shard>().unwrap_err().contains("K/N"), "{bad}");
        }
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { index: 2, count: 4 });
    }

    #[test]
    fn a_run_starts_the_longest_scenarios_first_and_keeps_file_order_without_a_record() {
        let all = suite();
        let in_files: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names_in_order(&longest_first(all.clone(), &BTreeMap::new())), in_files);
        let mut durations: BTreeMap<String, f64> = in_files.iter().map(|n| (n.clone(), 10.0)).collect();
        let (last, second_last) = (in_files[in_files.len() - 1].clone(), in_files[in_files.len() - 2].clone());
        durations.insert(last.clone(), 160.0);
        durations.insert(second_last.clone(), 90.0);
        durations.remove(&in_files[0]);
        let ordered = names_in_order(&longest_first(all, &durations));
        assert_eq!(ordered[..2], [last, second_last]);
        // The rest (the unknown first file weighs the mean, more than 10 s) in file order.
        assert_eq!(ordered[2], in_files[0]);
        assert_eq!(ordered[3..], in_files[1..in_files.len() - 2]);
    }

    #[test]
    fn durations_are_recorded_per_run_root_and_plugin_and_skips_keep_their_earlier_figure() {
        let root = tempfile::tempdir().unwrap();
        assert!(recorded_durations(root.path(), None).is_empty());
        let all = suite();
        let outcome = |scenario: &Scenario, seconds: f64, skipped: Option<&str>| {
            let mut outcome = crate::runner::ScenarioOutcome::skipped(scenario, 1, skipped.unwrap_or("").to_owned());
            outcome.skipped = skipped.map(str::to_owned);
            outcome.seconds = seconds;
            outcome
        };
        let report = |scenarios| SuiteReport { scenarios, seconds: 1.0, kubernetes_version: "v1.37.2".into(), jobs: 1, shard: None };
        record_durations(root.path(), None, &report(vec![outcome(&all[0], 12.34, None), outcome(&all[1], 40.0, None)]));
        record_durations(root.path(), None, &report(vec![outcome(&all[1], 0.01, Some("needs vault"))]));
        // Another plugin's run keeps its own figures and leaves kms-lab's plugin's alone.
        record_durations(root.path(), Some("aws-encryption-provider"), &report(vec![outcome(&all[0], 103.0, None)]));
        let recorded = recorded_durations(root.path(), None);
        assert_eq!(recorded, BTreeMap::from([(all[0].name.clone(), 12.3), (all[1].name.clone(), 40.0)]));
        assert_eq!(recorded_durations(root.path(), Some("aws-encryption-provider")), BTreeMap::from([(all[0].name.clone(), 103.0)]));
        assert!(root.path().join("durations-aws-encryption-provider.json").is_file());
    }
}
