//! Several scenarios at once, each on its own fresh stack (own ports, run directory and mock KMS):
//! live progress per scenario (one line each on a terminal, prefixed plain lines otherwise), and
//! every outcome kept as it finishes so an interrupted run still reports what finished.

use std::io::IsTerminal;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::model::Scenario;
use crate::runner::{self, RunOptions, ScenarioOutcome};

/// Runs `scenarios`, `jobs` at a time (exclusive ones alone, after the others), pushing each
/// outcome to `outcomes` as it finishes.
pub async fn run_all(scenarios: &[Scenario], options: &RunOptions, jobs: usize, outcomes: &mut Vec<ScenarioOutcome>) {
    let (shared, exclusive): (Vec<&Scenario>, Vec<&Scenario>) = scenarios.iter().partition(|s| !s.exclusive);
    if jobs <= 1 || shared.len() <= 1 {
        for scenario in shared.into_iter().chain(exclusive) {
            outcomes.push(runner::run_scenario(scenario, options, &|line| println!("{line}")).await);
        }
        return;
    }
    let view = View::new();
    let mut running = futures::stream::iter(shared.into_iter().map(|scenario| {
        let view = &view;
        async move {
            let line = view.start(&scenario.name);
            let outcome = runner::run_scenario(scenario, options, &|text| line.say(text)).await;
            line.finish(&outcome);
            outcome
        }
    }))
    .buffer_unordered(jobs);
    while let Some(outcome) = running.next().await {
        outcomes.push(outcome);
    }
    drop(running);
    for scenario in exclusive {
        view.note(&format!("{} is exclusive: it runs alone", scenario.name));
        let line = view.start(&scenario.name);
        let outcome = runner::run_scenario(scenario, options, &|text| line.say(text)).await;
        line.finish(&outcome);
        outcomes.push(outcome);
    }
}

/// The progress view: a live line per running scenario on a terminal, plain lines elsewhere.
struct View {
    bars: Option<MultiProgress>,
}

impl View {
    fn new() -> Self {
        Self { bars: std::io::stdout().is_terminal().then(MultiProgress::new) }
    }

    fn note(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => println!("{text}"),
        }
    }

    fn start(&self, name: &str) -> Line<'_> {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Line { view: self, name: name.to_owned(), bar }
    }
}

/// One running scenario's progress.
struct Line<'v> {
    view: &'v View,
    name: String,
    bar: Option<ProgressBar>,
}

impl Line<'_> {
    /// A progress line of the scenario: the live line shows the latest; failures and the start
    /// and end are also printed in full.
    fn say(&self, text: &str) {
        match &self.bar {
            Some(bar) => {
                let first = text.trim().lines().next().unwrap_or_default().to_owned();
                bar.set_message(first);
                if text.contains('✗') {
                    self.view.note(&format!("[{}] {}", self.name, text.trim_start()));
                }
            }
            None => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    println!("[{}] {}", self.name, line.trim_start());
                }
            }
        }
    }

    fn finish(&self, outcome: &ScenarioOutcome) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            let result = if outcome.passed { "✓ passed" } else { "✗ FAILED" };
            self.view.note(&format!("{result} {} in {:.1} s", self.name, outcome.seconds));
        }
    }
}
