//! Renders a plugin report from a scenarios JSON report (`kms-lab scenarios … --json FILE`), with
//! no conformance section: for looking at real timelines while `kms-lab report` is wired.
//! `cargo run -p kms-lab-plugin-report --example render_suite -- SCENARIOS.json OUT_DIR`

use kms_lab_plugin_report::{PluginInfo, PluginReport};
use kms_lab_scenarios::report::SuiteReport;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: render_suite SCENARIOS.json OUT_DIR".into());
    };
    let text = std::fs::read_to_string(&input).map_err(|e| format!("cannot read {input}: {e}"))?;
    let scenarios: SuiteReport = serde_json::from_str(&text).map_err(|e| format!("{input} is not a scenarios JSON report: {e}"))?;
    let report = PluginReport {
        plugin: PluginInfo { name: "kms-plugin".into(), description: format!("scenarios from {input}") },
        conformance: Vec::new(),
        kubernetes_version: scenarios.kubernetes_version.clone(),
        interrupted: false,
        scenarios,
        started: String::new(),
        finished: String::new(),
    };
    let files = kms_lab_plugin_report::render(&report, std::path::Path::new(&out))?;
    println!("{}\n{}\n{}\n{}", files.markdown.display(), files.html.display(), files.junit.display(), files.json.display());
    Ok(())
}
