//! The one exit-code table ([`Exit`], in `kms_lab_cli_common` so `kms-plugin`, `mock-kms` and
//! `kms-faulty-plugin` use the same codes) and the one place `kms-lab` maps each command's
//! errors to it: 2 when the command line or an input cannot be used (nothing ran), 1 when what
//! ran failed, 130 when interrupted.

pub use kms_lab_cli_common::{EXIT_HELP as HELP, Exit};

use kms_lab_conformance::ConformanceError;
use kms_lab_scenarios::ScenariosError;
use kms_lab_tune::TuneError;

use crate::decode::DecodeCommandError;
use crate::lab::LabError;

/// `kms-lab conformance`: a plugin that cannot be reached or does not serve the API, bad ids
/// and report paths are unusable input; Ctrl-C is 130.
pub fn conformance(error: &ConformanceError) -> Exit {
    match error {
        ConformanceError::Interrupted { .. } => Exit::Interrupted,
        ConformanceError::WriteReport { .. } => Exit::Failed,
        _ => Exit::Usage,
    }
}

/// `kms-lab tune`: bad flags, profiles and calibration files are unusable input; a failed run 1.
pub fn tune(error: &TuneError) -> Exit {
    match error {
        TuneError::Interrupted => Exit::Interrupted,
        TuneError::Profile { .. } | TuneError::UnknownProfile { .. } | TuneError::Calibration { .. } | TuneError::Argument { .. } => {
            Exit::Usage
        }
        _ => Exit::Failed,
    }
}

/// `kms-lab scenarios`: invalid files and provisioning are unusable input (nothing ran).
pub fn scenarios(error: &ScenariosError) -> Exit {
    match error {
        ScenariosError::Interrupted => Exit::Interrupted,
        _ => Exit::Usage,
    }
}

/// `kms-lab lab`: the demo failing is 1, Ctrl-C during the demo 130, set-up 2.
pub fn lab(error: &LabError) -> Exit {
    match error {
        LabError::Interrupted => Exit::Interrupted,
        LabError::Demo { .. } => Exit::Failed,
        _ => Exit::Usage,
    }
}

/// `kms-lab decode`: the command line or its input file cannot be used (2), or the value was
/// read and is not what it should be (1).
pub fn decode(error: &DecodeCommandError) -> Exit {
    match error {
        DecodeCommandError::Read { .. }
        | DecodeCommandError::Encoding(_)
        | DecodeCommandError::BadKey(_)
        | DecodeCommandError::NeedEtcdKey
        | DecodeCommandError::Plugin(_) => Exit::Usage,
        _ => Exit::Failed,
    }
}

/// `kms-lab provision`: binaries that cannot be found or built are unusable input (2);
/// `kms-lab clean`: the container runtime failed (1).
pub fn provision() -> Exit {
    Exit::Usage
}

/// `kms-lab report`: setup (plugin, files, binaries, --out) is unusable input; a plugin that
/// does not start or a conformance run that cannot begin is a failed run; Ctrl-C is 130.
pub fn report(error: &crate::report::ReportCommandError) -> Exit {
    use crate::report::ReportCommandError as E;
    match error {
        E::Interrupted { .. } => Exit::Interrupted,
        E::Setup(error) => scenarios(error),
        E::Out { .. } | E::Table(_) => Exit::Usage,
        E::Stack(_) | E::Conformance { .. } | E::Render(_) => Exit::Failed,
    }
}
