//! The three text renderings: Markdown, HTML and JUnit XML.

use std::fmt::Write as _;

use kms_lab_conformance::{CheckOutcome, CheckReport, xml_escape as esc};
use kms_lab_scenarios::runner::{ScenarioOutcome, StepRecord};

use crate::derive::DerivedFigures;
use crate::summary::Summary;
use crate::{PluginReport, ReportError};

/// A scenario's result word.
fn scenario_result(s: &ScenarioOutcome) -> &'static str {
    match (&s.skipped, s.passed) {
        (Some(_), _) => "skip",
        (None, true) => "pass",
        (None, false) => "FAIL",
    }
}

/// A conformance check's result word.
fn check_result(c: &CheckReport) -> &'static str {
    match c.outcome {
        CheckOutcome::Pass => "pass",
        CheckOutcome::Fail(_) => "FAIL",
        CheckOutcome::Warn(_) => "WARN",
        CheckOutcome::Skip { .. } => "skip",
    }
}

/// The first failed step: the runner stops a scenario there.
fn failing_step(s: &ScenarioOutcome) -> Option<&StepRecord> {
    s.steps.iter().find(|st| !st.passed)
}

/// A scenario row's note: why it failed; a skip points at the summary, which groups the reasons.
fn scenario_note(s: &ScenarioOutcome) -> String {
    match (&s.skipped, &s.failure) {
        (Some(_), _) => "skipped (reason in the summary)".to_owned(),
        (None, Some(failure)) => failure.clone(),
        (None, None) => String::new(),
    }
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown report.
pub fn markdown(report: &PluginReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# KMS plugin report: {}\n", report.plugin.name);
    let _ = writeln!(out, "{}\n", report.plugin.description);
    if report.interrupted {
        let _ =
            writeln!(out, "**interrupted: partial report** ({} scenario(s) finished before Ctrl-C)\n", report.scenarios.scenarios.len());
    }
    let summary = Summary::of(report);
    let _ = writeln!(out, "## Summary: **{}** — {}\n", summary.verdict(), summary.headline());
    for (word, lines) in [("FAIL", &summary.failures), ("WARN", &summary.warnings)] {
        for line in lines {
            let _ = writeln!(out, "- {word} {}: {}", line.subject, md_cell(&line.why));
        }
    }
    if !summary.skips.is_empty() {
        let _ = writeln!(out, "\nSkipped, by reason:");
        for (reason, names) in &summary.skips {
            let _ = writeln!(out, "- {} ({}): {}", md_cell(reason), names.len(), names.join(", "));
        }
    }
    let _ =
        writeln!(out, "\n- Kubernetes: {}\n- Started: {}\n- Finished: {}\n", report.kubernetes_version, report.started, report.finished);
    for conformance in &report.conformance {
        let (passed, failed, skipped) = conformance.counts();
        let _ = writeln!(
            out,
            "## Conformance ({}): {passed} passed, {failed} failed, {} warned, {skipped} skipped\n",
            conformance.api.name(),
            conformance.warned_ids().len()
        );
        let _ = writeln!(out, "| check | a failure is | result | rule |\n| --- | --- | --- | --- |");
        for c in &conformance.checks {
            let _ = writeln!(out, "| {} | {} | {} | {} |", c.id, c.level, check_result(c), md_cell(c.rule));
        }
        out.push('\n');
        for c in &conformance.checks {
            if let Some(f) = c.finding() {
                let _ = writeln!(
                    out,
                    "- **{} {}**: {}\n  - sent: {}\n  - received: {}\n  - why {}: {}",
                    check_result(c),
                    c.id,
                    md_cell(&f.problem),
                    md_cell(&f.sent),
                    md_cell(&f.received),
                    c.level,
                    md_cell(c.level_reason)
                );
            }
            if let CheckOutcome::Skip { reason } = &c.outcome {
                let _ = writeln!(out, "- skip {}: {}", c.id, md_cell(reason));
            }
        }
        out.push('\n');
    }
    let suite = &report.scenarios;
    let failed = suite.scenarios.iter().filter(|s| !s.passed).count();
    let skipped = suite.scenarios.iter().filter(|s| s.skipped.is_some()).count();
    let _ = writeln!(out, "## Scenarios: {} passed, {failed} failed, {skipped} skipped\n", suite.scenarios.len() - failed - skipped);
    let _ = writeln!(out, "| scenario | tier | result | time | note |\n| --- | --- | --- | --- | --- |");
    for s in &suite.scenarios {
        let note = scenario_note(s);
        let _ = writeln!(out, "| {} | {} | {} | {:.1} s | {} |", s.name, s.tier, scenario_result(s), s.seconds, md_cell(&note));
    }
    for s in &suite.scenarios {
        let _ = writeln!(out, "\n### {} — {}\n", s.name, s.title);
        let _ = writeln!(out, "Result: **{}**", scenario_result(s));
        if let Some(reason) = &s.skipped {
            let _ = writeln!(out, "\nSkipped: {reason}");
            continue;
        }
        if let Some(step) = failing_step(s) {
            let _ = writeln!(out, "\nFailing step {}: `{}` — {}", step.number, step.label, step.detail);
        } else if let Some(failure) = &s.failure {
            let _ = writeln!(out, "\nFailure: {failure}");
        }
        let derived = DerivedFigures::of(s).pairs();
        if !s.figures.is_empty() || !derived.is_empty() {
            let _ = writeln!(out, "\n| figure | value |\n| --- | --- |");
            for (name, value) in &s.figures {
                let _ = writeln!(out, "| {name} | {value} |");
            }
            for (name, value) in derived {
                let _ = writeln!(out, "| {name} (derived) | {value} |");
            }
        }
        let _ = writeln!(out, "\n| # | started | took | step | result | detail |\n| --- | --- | --- | --- | --- | --- |");
        for st in &s.steps {
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {:.1} s | {} | {} | {} |",
                st.number,
                st.started_s,
                st.seconds,
                md_cell(&st.label),
                if st.passed { "ok" } else { "FAIL" },
                md_cell(&st.detail)
            );
        }
        if s.skipped_steps > 0 {
            let _ = writeln!(out, "\n{} step(s) not reached.", s.skipped_steps);
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.pass{color:#1b7a34;font-weight:bold}.FAIL{color:#c02020;font-weight:bold}\
.WARN{color:#b06000;font-weight:bold}.skip{color:#666;font-weight:bold}section.scenario{border-top:2px solid #ddd;margin-top:1.5em}\
figure.timeline{margin:0}figure.timeline svg{max-width:100%;height:auto;border:1px solid #eee}code{background:#f5f5f5}";

/// The HTML report: one self-contained file (inline CSS, inline SVG timelines, no JavaScript).
pub fn html(report: &PluginReport) -> Result<String, ReportError> {
    let mut out = String::new();
    let name = esc(&report.plugin.name);
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>KMS plugin report: {name}</title><style>{CSS}</style></head><body>"
    );
    let _ = writeln!(out, "<h1>KMS plugin report: {name}</h1><p>{}</p>", esc(&report.plugin.description));
    if report.interrupted {
        let _ = writeln!(
            out,
            "<p class=\"FAIL\">interrupted: partial report ({} scenario(s) finished before Ctrl-C)</p>",
            report.scenarios.scenarios.len()
        );
    }
    let summary = Summary::of(report);
    let _ = writeln!(
        out,
        "<section id=\"summary\"><h2>Summary: <span class=\"{verdict}\">{verdict}</span> — {}</h2><ul>",
        esc(&summary.headline()),
        verdict = summary.verdict()
    );
    for (word, lines) in [("FAIL", &summary.failures), ("WARN", &summary.warnings)] {
        for line in lines {
            let _ = writeln!(out, "<li><span class=\"{word}\">{word}</span> {}: {}</li>", esc(&line.subject), esc(&line.why));
        }
    }
    out.push_str("</ul>");
    if !summary.skips.is_empty() {
        out.push_str("<p>Skipped, by reason:</p><ul class=\"skips\">");
        for (reason, names) in &summary.skips {
            let _ = writeln!(out, "<li>{} ({}): {}</li>", esc(reason), names.len(), esc(&names.join(", ")));
        }
        out.push_str("</ul>");
    }
    let _ = writeln!(
        out,
        "</section><ul><li>Kubernetes: {}</li><li>Started: {}</li><li>Finished: {}</li></ul>",
        esc(&report.kubernetes_version),
        esc(&report.started),
        esc(&report.finished)
    );
    for conformance in &report.conformance {
        let api = conformance.api.name();
        let _ = writeln!(
            out,
            "<h2>Conformance ({api})</h2><table id=\"conformance-{api}\"><tr><th>check</th><th>a failure is</th><th>result</th><th>rule</th><th>finding</th></tr>"
        );
        for c in &conformance.checks {
            let result = check_result(c);
            let finding = match &c.outcome {
                CheckOutcome::Fail(f) | CheckOutcome::Warn(f) => format!(
                    "{}<br><small>sent: {}<br>received: {}<br>why {}: {}</small>",
                    esc(&f.problem),
                    esc(&f.sent),
                    esc(&f.received),
                    c.level,
                    esc(c.level_reason)
                ),
                CheckOutcome::Skip { reason } => esc(reason),
                CheckOutcome::Pass => String::new(),
            };
            let _ = writeln!(
                out,
                "<tr class=\"check\" data-check=\"{}\"><td>{}</td><td>{}</td><td class=\"{result}\">{result}</td><td>{}</td><td>{finding}</td></tr>",
                esc(c.id),
                esc(c.id),
                c.level,
                esc(c.rule)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str(
        "<h2>Scenarios</h2><table id=\"scenarios\"><tr><th>scenario</th><th>tier</th><th>result</th><th>time</th><th>note</th></tr>\n",
    );
    for s in &report.scenarios.scenarios {
        let result = scenario_result(s);
        let note = scenario_note(s);
        let _ = writeln!(
            out,
            "<tr class=\"scenario\" data-scenario=\"{n}\"><td><a href=\"#s-{n}\">{n}</a></td><td>{}</td><td class=\"{result}\">{result}</td><td>{:.1} s</td><td>{}</td></tr>",
            s.tier,
            s.seconds,
            esc(&note),
            n = esc(&s.name)
        );
    }
    out.push_str("</table>\n");
    for s in &report.scenarios.scenarios {
        let result = scenario_result(s);
        let n = esc(&s.name);
        let _ = writeln!(
            out,
            "<section class=\"scenario\" id=\"s-{n}\"><h3>{n} — {}: <span class=\"{result}\">{result}</span></h3>",
            esc(&s.title)
        );
        if let Some(reason) = &s.skipped {
            let _ = writeln!(out, "<p>Skipped: {}</p></section>", esc(reason));
            continue;
        }
        if let Some(step) = failing_step(s) {
            let _ = writeln!(out, "<p>Failing step {}: <code>{}</code><br>{}</p>", step.number, esc(&step.label), esc(&step.detail));
        } else if let Some(failure) = &s.failure {
            let _ = writeln!(out, "<p>Failure: {}</p>", esc(failure));
        }
        let derived = DerivedFigures::of(s).pairs();
        if !s.figures.is_empty() || !derived.is_empty() {
            out.push_str("<table class=\"figures\"><tr><th>figure</th><th>value</th></tr>");
            for (name, value) in &s.figures {
                let _ = write!(out, "<tr><td>{}</td><td>{value}</td></tr>", esc(name));
            }
            for (name, value) in derived {
                let _ = write!(out, "<tr><td>{name} (derived)</td><td>{value}</td></tr>");
            }
            out.push_str("</table>\n");
        }
        let svg = crate::plot::timeline_svg(s).map_err(|message| ReportError::Plot { scenario: s.name.clone(), message })?;
        let svg = svg.trim_start_matches(|c| c != '<').trim_start();
        let svg = svg.strip_prefix("<?xml").map_or(svg, |rest| rest.split_once("?>").map_or(rest, |(_, tail)| tail.trim_start()));
        let _ = writeln!(
            out,
            "<figure class=\"timeline\" data-scenario=\"{n}\">{svg}<figcaption>Timeline of {n}: steps (orange faults, green heals, red failed), API writes and mock KMS calls per second.</figcaption></figure>"
        );
        out.push_str("<details><summary>steps</summary><table><tr><th>#</th><th>started</th><th>took</th><th>step</th><th>result</th><th>detail</th></tr>");
        for st in &s.steps {
            let r = if st.passed { "pass" } else { "FAIL" };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td><td class=\"{r}\">{}</td><td>{}</td></tr>",
                st.number,
                st.started_s,
                st.seconds,
                esc(&st.label),
                if st.passed { "ok" } else { "FAIL" },
                esc(&st.detail)
            );
        }
        out.push_str("</table></details></section>\n");
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

/// JUnit XML: one `testsuite` per conformance API (warnings as `system-out`, not failures) and one
/// for the scenarios (skips as `<skipped message=…>`).
pub fn junit(report: &PluginReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kms-lab report\">\n");
    let plugin = esc(&report.plugin.name);
    for conformance in &report.conformance {
        let api = conformance.api.name();
        let (_, failed, skipped) = conformance.counts();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{plugin} conformance {api}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
            conformance.checks.len(),
            conformance.duration_ms as f64 / 1000.0
        );
        for c in &conformance.checks {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"kms-lab.conformance.{api}\" time=\"{:.3}\">",
                esc(c.id),
                c.duration_ms as f64 / 1000.0
            );
            match &c.outcome {
                CheckOutcome::Pass => {}
                CheckOutcome::Fail(f) | CheckOutcome::Warn(f) => {
                    let body = format!("sent: {}\nreceived: {}\nwhy {}: {}", esc(&f.sent), esc(&f.received), c.level, esc(c.level_reason));
                    // A warning is visible in the output but is not a failure.
                    let _ = match c.outcome {
                        CheckOutcome::Fail(_) => write!(out, "<failure message=\"{}\">{body}</failure>", esc(&f.problem)),
                        _ => write!(out, "<system-out>WARN: {}\n{body}</system-out>", esc(&f.problem)),
                    };
                }
                CheckOutcome::Skip { reason } => {
                    let _ = write!(out, "<skipped message=\"{}\"/>", esc(reason));
                }
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    let suite = &report.scenarios;
    let _ = writeln!(
        out,
        "  <testsuite name=\"{plugin} scenarios\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
        suite.scenarios.len(),
        suite.scenarios.iter().filter(|s| !s.passed).count(),
        suite.scenarios.iter().filter(|s| s.skipped.is_some()).count(),
        suite.seconds
    );
    for s in &suite.scenarios {
        let _ =
            write!(out, "    <testcase name=\"{}\" classname=\"kms-lab.scenarios.{}\" time=\"{:.3}\">", esc(&s.name), s.tier, s.seconds);
        if let Some(reason) = &s.skipped {
            let _ = write!(out, "<skipped message=\"{}\"/>", esc(reason));
        } else if !s.passed {
            let message = s.failure.as_deref().unwrap_or("a step failed");
            let body = failing_step(s).map(|st| format!("step {}: {}\n{}", st.number, st.label, st.detail)).unwrap_or_default();
            let _ = write!(out, "<failure message=\"{}\">{}</failure>", esc(message), esc(&body));
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
