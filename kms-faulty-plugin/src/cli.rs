//! The `kms-faulty-plugin` command line: every `kms-plugin` flag plus `--defect NAME`.

use crate::defect::{Defect, Defects};

/// `kms-faulty-plugin`: the reference plugin with defects switched on.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kms-faulty-plugin",
    version,
    about = "kms-lab's reference KMS plugin with switchable defects, for conformance mutation tests and scenarios",
    after_help = kms_lab_cli_common::EXIT_HELP
)]
pub struct FaultyArgs {
    /// The reference plugin's flags.
    #[command(flatten)]
    pub plugin: kms_plugin::cli::Args,
    /// A defect to switch on (repeatable).
    #[arg(long = "defect", value_enum, value_name = "NAME")]
    pub defects: Vec<Defect>,
    /// Answer every call from this hostile script (JSON, see `hostile::Script`) instead of
    /// from defects: a generated subject that sends what no well-meaning plugin would.
    #[arg(long, value_name = "FILE", conflicts_with = "defects")]
    pub hostile_script: Option<std::path::PathBuf>,
}

impl FaultyArgs {
    /// The switched-on defects.
    pub fn defects(&self) -> Defects {
        Defects::new(self.defects.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn accepts_every_plugin_flag_and_repeated_defects() {
        FaultyArgs::command().debug_assert();
        let args = FaultyArgs::parse_from([
            "kms-faulty-plugin",
            "--socket",
            "/tmp/x.sock",
            "--kms",
            "local",
            "--api",
            "v2",
            "--defect",
            "ignore-rotation",
            "--defect",
            "status-always-ok",
        ]);
        assert!(args.defects().has(Defect::IgnoreRotation) && args.defects().has(Defect::StatusAlwaysOk));
        assert_eq!(args.plugin.resolve().expect("valid plugin flags").api, kms_plugin::ApiSelection::V2);
        let rotate = FaultyArgs::parse_from(["kms-faulty-plugin", "rotate-kek", "--kek-file", "/tmp/k"]);
        assert!(matches!(rotate.plugin.command, Some(kms_plugin::cli::Command::RotateKek { .. })));
    }
}
