//! Human-readable and JUnit renderings of a [`Report`] (JSON is the serde form).

use std::fmt::Write;

use crate::report::{CheckOutcome, CheckReport, Report};

/// The report as the terminal shows it: one line per check; for a failure what was sent, what
/// came back, the problem, the rule and its upstream reference.
pub fn render_text(report: &Report) -> String {
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut out = render_header(&report.endpoint, report.api, report.checks.len());
    for check in &report.checks {
        out.push_str(&render_check(check, width));
    }
    out.push_str(&render_summary(report));
    out
}

/// The first line of the text report.
pub fn render_header(endpoint: &str, api: crate::Api, checks: usize) -> String {
    format!("kms-lab conformance: {endpoint} (KMS {api}), {checks} checks\n")
}

/// One check of the text report (its line, and what was found), ids padded to `width`.
pub fn render_check(check: &CheckReport, width: usize) -> String {
    let mut out = String::new();
    let tag = match check.outcome {
        CheckOutcome::Pass => "PASS",
        CheckOutcome::Fail(_) => "FAIL",
        CheckOutcome::Warn(_) => "WARN",
        CheckOutcome::Skip { .. } => "SKIP",
    };
    let _ = writeln!(out, "  {tag} {:width$}  {}", check.id, check.rule);
    match &check.outcome {
        CheckOutcome::Pass => {}
        CheckOutcome::Fail(finding) | CheckOutcome::Warn(finding) => {
            let _ = writeln!(out, "       sent:     {}", finding.sent);
            let _ = writeln!(out, "       received: {}", finding.received);
            let _ = writeln!(out, "       problem:  {}", finding.problem);
            let label = if check.level == crate::Level::Fail { "why:     " } else { "advice:  " };
            let _ = writeln!(out, "       {label} {}", check.level_reason);
            let _ = writeln!(out, "       upstream: {}", check.reference);
        }
        CheckOutcome::Skip { reason } => {
            let _ = writeln!(out, "       skipped:  {reason}");
        }
    }
    if !matches!(check.outcome, CheckOutcome::Skip { .. }) && check.latency.is_some() {
        for note in &check.notes {
            let _ = writeln!(out, "       {note}");
        }
    }
    out
}

/// The verdict line of the text report.
pub fn render_summary(report: &Report) -> String {
    let (passed, failed, skipped) = report.counts();
    let warned = report.warned_ids().len();
    let verdict = if report.interrupted {
        "INTERRUPTED"
    } else if report.passed() {
        "PASS"
    } else {
        "FAIL"
    };
    let strict = if report.strict { " (--strict: warnings fail)" } else { "" };
    format!(
        "{verdict}: {passed} passed, {failed} failed, {warned} warnings, {skipped} skipped in {:.1} s{strict}\n",
        report.duration_ms as f64 / 1000.0
    )
}

/// Escapes text for XML (and HTML) content and attributes. Characters XML 1.0 does not allow at
/// all, even as references (control characters other than tab and line breaks, U+FFFE, U+FFFF),
/// are written as the text `\u{…}`, so the document stays well-formed whatever a plugin sent.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if ((c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// The report as a JUnit XML document (one `testcase` per check), for CI dashboards.
pub fn render_junit(report: &Report) -> String {
    let (_, mut failed, skipped) = report.counts();
    let warned = report.warned_ids().len();
    if report.strict {
        failed += warned;
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"kms-lab conformance ({}{})\" tests=\"{}\" failures=\"{failed}\" skipped=\"{skipped}\" warnings=\"{warned}\" time=\"{:.3}\">",
        report.api,
        if report.interrupted { ", interrupted: partial" } else { "" },
        report.checks.len(),
        report.duration_ms as f64 / 1000.0
    );
    let _ = writeln!(out, "  <properties><property name=\"endpoint\" value=\"{}\"/></properties>", xml_escape(&report.endpoint));
    for check in &report.checks {
        let _ = write!(
            out,
            "  <testcase classname=\"kms-lab.conformance.{}\" name=\"{}\" time=\"{:.3}\">",
            report.api,
            xml_escape(check.id),
            check.duration_ms as f64 / 1000.0
        );
        match &check.outcome {
            CheckOutcome::Pass => {}
            CheckOutcome::Fail(finding) => {
                let body = format!(
                    "sent: {}\nreceived: {}\nproblem: {}\nwhy: {}\nrule: {}\nupstream: {}",
                    finding.sent, finding.received, finding.problem, check.level_reason, check.rule, check.reference
                );
                let _ = write!(out, "<failure message=\"{}\">{}</failure>", xml_escape(&finding.problem), xml_escape(&body));
            }
            // JUnit has no warning: a property and the text in system-err keep it visible
            // without counting as a failure (as a failure under --strict).
            CheckOutcome::Warn(finding) if report.strict => {
                let body = format!("WARN (--strict): {}\nadvice: {}", finding.problem, check.level_reason);
                let _ = write!(out, "<failure message=\"WARN: {}\">{}</failure>", xml_escape(&finding.problem), xml_escape(&body));
            }
            CheckOutcome::Warn(finding) => {
                let body = format!(
                    "WARN: {}\nsent: {}\nreceived: {}\nadvice: {}\nupstream: {}",
                    finding.problem, finding.sent, finding.received, check.level_reason, check.reference
                );
                let _ = write!(
                    out,
                    "<properties><property name=\"level\" value=\"warn\"/></properties><system-err>{}</system-err>",
                    xml_escape(&body)
                );
            }
            CheckOutcome::Skip { reason } => {
                let _ = write!(out, "<skipped message=\"{}\"/>", xml_escape(reason));
            }
        }
        if !check.notes.is_empty() {
            let _ = write!(out, "<system-out>{}</system-out>", xml_escape(&check.notes.join("\n")));
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}
