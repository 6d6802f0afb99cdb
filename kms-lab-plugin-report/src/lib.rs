//! The plugin report of `kms-lab report`: conformance results and scenario results rendered into
//! `report.md`, `report.html` (one self-contained file, SVG timelines inline, no JavaScript),
//! `junit.xml` and `report.json`. Only names, outcomes, timings and findings are rendered; the
//! inputs carry no plaintexts, keys or credentials, and nothing here adds any.

pub mod derive;
pub mod plot;
mod render;
pub mod summary;
pub mod table;

use std::path::{Path, PathBuf};

use kms_lab_cli_common::files::{FileKind, Recognise};
use kms_lab_conformance::Report as ConformanceReport;
use kms_lab_scenarios::report::SuiteReport;
use serde::Serialize;

pub use derive::DerivedFigures;
pub use render::{html, junit, markdown};
pub use summary::Summary;

/// The plugin a report is about.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Its name (manifest name or binary name).
    pub name: String,
    /// One line on what it is.
    pub description: String,
}

/// Everything one plugin report shows.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// The plugin.
    pub plugin: PluginInfo,
    /// Conformance, one report per API the plugin serves (`report.api` names it).
    pub conformance: Vec<ConformanceReport>,
    /// The scenarios run on the plugin.
    pub scenarios: SuiteReport,
    /// When the report run began (RFC 3339, UTC).
    pub started: String,
    /// When it ended (RFC 3339, UTC).
    pub finished: String,
    /// The kube-apiserver version used.
    pub kubernetes_version: String,
    /// The run was interrupted (Ctrl-C): `scenarios` holds only those that finished.
    #[serde(default)]
    pub interrupted: bool,
}

impl PluginReport {
    /// Whether nothing failed: no conformance FAIL (warnings do not count) and no failed scenario.
    pub fn passed(&self) -> bool {
        self.conformance.iter().all(|c| c.checks.iter().all(|k| !k.failed())) && self.scenarios.passed()
    }
}

/// The files written by [`render`].
#[derive(Debug, Clone)]
pub struct RenderedFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// `junit.xml`.
    pub junit: PathBuf,
    /// `report.json`.
    pub json: PathBuf,
}

/// Why a report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The output directory or a file in it could not be written.
    #[error("cannot write {path}: {source} (check that the --out directory is writable)")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A report file would replace something that is not an earlier report's file.
    #[error(transparent)]
    Output(#[from] kms_lab_cli_common::files::FileError),
    /// A timeline could not be drawn.
    #[error("cannot draw the timeline of scenario {scenario}: {message}")]
    Plot {
        /// The scenario.
        scenario: String,
        /// The drawing backend's message.
        message: String,
    },
    /// The JSON report could not be serialised.
    #[error("cannot serialise the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// The JSON report: the inputs plus each scenario's derived figures.
pub fn json(report: &PluginReport) -> Result<String, ReportError> {
    #[derive(Serialize)]
    struct Json<'a> {
        #[serde(flatten)]
        report: &'a PluginReport,
        derived: std::collections::BTreeMap<&'a str, DerivedFigures>,
    }
    let derived = report.scenarios.scenarios.iter().map(|s| (s.name.as_str(), DerivedFigures::of(s))).collect();
    Ok(serde_json::to_string_pretty(&Json { report, derived })?)
}

/// The files a report writes into its `--out` directory, each with how an earlier report's
/// copy is recognised: only those are replaced; any other file there is left alone.
const FILES: [(&str, FileKind); 4] = [
    ("report.md", FileKind::public("kms-lab plugin report (Markdown)", Recognise::FirstLine("# KMS plugin report: "))),
    ("report.html", FileKind::public("kms-lab plugin report (HTML)", Recognise::FirstLine("<!DOCTYPE html>"))),
    ("junit.xml", FileKind::public("JUnit report", Recognise::XmlRoot(&["testsuites"]))),
    ("report.json", FileKind::public("kms-lab plugin report (JSON)", Recognise::JsonObjectWith(&["plugin", "conformance", "derived"]))),
];

/// Fails, changing nothing, unless `out_dir` is absent or a directory whose report files (if
/// any) are an earlier report's: the check before minutes of work.
pub fn check_out_dir(out_dir: &Path) -> Result<(), ReportError> {
    FILES
        .iter()
        .try_for_each(|(name, kind)| kms_lab_cli_common::files::check_replaceable(&out_dir.join(name), kind).map_err(ReportError::from))
}

/// Writes `report.md`, `report.html`, `junit.xml` and `report.json` into `out_dir` (created if
/// missing), each atomically, replacing only an earlier report's files.
pub fn render(report: &PluginReport, out_dir: &Path) -> Result<RenderedFiles, ReportError> {
    check_out_dir(out_dir)?;
    let [markdown_file, html_file, junit_file, json_file] = FILES;
    let write = |(name, kind): (&str, FileKind), text: &str| -> Result<PathBuf, ReportError> {
        let path = out_dir.join(name);
        kms_lab_cli_common::files::replace(&path, &kind, text.as_bytes())?;
        Ok(path)
    };
    let html_text = html(report)?;
    Ok(RenderedFiles {
        markdown: write(markdown_file, &markdown(report))?,
        html: write(html_file, &html_text)?,
        junit: write(junit_file, &junit(report))?,
        json: write(json_file, &json(report)?)?,
    })
}
