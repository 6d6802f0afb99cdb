//! The HTML report in a real browser: headless Chromium (Debian package `chromium`) loads the
//! file, and the test reads the DOM it built and the screenshot it took. Without Chromium the
//! test fails and says how to install it (`apt-get install -y chromium`; `.ci/run` does).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(move |dir| dir.join(name)).collect::<Vec<_>>()
        })
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("headless Chromium is missing: no chromium, chromium-browser or google-chrome on PATH; install it with `apt-get install -y chromium` (Debian package chromium; .ci/run installs it)")
    })
}

fn run_chromium(browser: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    let output = Command::new(browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}): {}",
        browser.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn html_report_renders_in_chromium() {
    let browser = chromium();
    let report = common::fixture();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = kms_lab_plugin_report::render(&report, &dir.path().join("out")).expect("the report renders");
    let url = format!("file://{}", files.html.display());
    let profile = dir.path().join("profile");

    let dom = String::from_utf8(run_chromium(&browser, &profile, &["--dump-dom".into(), url.clone()]).stdout).expect("the DOM is UTF-8");
    assert!(dom.contains("<table id=\"scenarios\">"), "the scenario table is missing from the DOM Chromium built");
    // A plugin author reads the verdict and what failed first: the summary comes before any table.
    let summary_at = dom.find("<section id=\"summary\">").expect("the summary section is in the DOM");
    let first_table = dom.find("<table").expect("the DOM has tables");
    assert!(summary_at < first_table, "the summary is not the first thing on the page");
    let summary_html = &dom[summary_at..summary_at + dom[summary_at..].find("</section>").expect("the summary closes")];
    let summary = kms_lab_plugin_report::Summary::of(&report);
    assert!(!summary.failures.is_empty(), "the fixture has failures to summarise");
    for line in summary.failures.iter().chain(&summary.warnings) {
        assert!(summary_html.contains(&line.subject), "the summary lacks {}", line.subject);
    }
    for (reason, _) in &summary.skips {
        assert_eq!(summary_html.matches(reason.as_str()).count(), 1, "skip reason {reason:?} is not listed exactly once");
    }
    for s in &report.scenarios.scenarios {
        assert!(dom.contains(&format!("data-scenario=\"{}\"><td>", s.name)), "scenario row {} is missing from the DOM", s.name);
        if s.skipped.is_some() {
            assert!(
                !dom.contains(&format!("<figure class=\"timeline\" data-scenario=\"{}\"", s.name)),
                "skipped scenario {} has a timeline",
                s.name
            );
            continue;
        }
        let start = format!("<figure class=\"timeline\" data-scenario=\"{}\">", s.name);
        let at = dom.find(&start).unwrap_or_else(|| panic!("the timeline of {} is missing from the DOM", s.name));
        let figure = &dom[at..at + dom[at..].find("</figure>").expect("the figure closes")];
        assert!(figure.contains("<svg"), "the timeline of {} has no <svg> element in the DOM", s.name);
        // Each step is a filled rect, each per-second bar too: the plot is not an empty frame.
        let rects = figure.matches("<rect").count();
        assert!(rects > s.steps.len() + 3, "the timeline of {} has only {rects} <rect> elements for {} steps", s.name, s.steps.len());
        for step in &s.steps {
            assert!(figure.contains(&format!("{}. ", step.number)), "step {} of {} is not labelled in its timeline", step.number, s.name);
        }
    }
    for c in &report.conformance[0].checks {
        assert!(dom.contains(&format!("data-check=\"{}\"", c.id)), "conformance row {} is missing", c.id);
    }

    let png = dir.path().join("report.png");
    run_chromium(&browser, &profile, &[format!("--screenshot={}", png.display()), "--window-size=1280,2400".into(), url]);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("Chromium wrote no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    // A blank white page of this size compresses to a few KiB; text, tables and plots do not.
    assert!(bytes.len() > 40_000, "the screenshot is {} bytes: the page looks blank", bytes.len());
    if let Some(keep) = std::env::var_os("KMS_LAB_KEEP_SCREENSHOT") {
        std::fs::copy(&png, &keep).unwrap_or_else(|e| panic!("cannot copy the screenshot to {keep:?}: {e}"));
    }
}
