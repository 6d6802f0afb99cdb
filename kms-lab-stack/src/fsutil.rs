//! Files that hold credentials, written so that no other local user can read them: directories
//! 0700, files 0600 from the moment they exist (created with the mode, not chmod-ed after).
//! The stack's work and run directories hold the apiserver's serving key, the service-account
//! signing key, the admin token file, EncryptionConfigurations (static keys) and kubeconfigs.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory the stack creates for its files.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file the stack writes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) as a private directory, and makes an existing one private.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Writes `contents` to `path` with mode 0600 (an existing file is truncated and made 0600 too).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(contents)
}

/// Opens `path` for appending with mode 0600 (created so, or made so if it existed): the logs of
/// the stack's components, which can hold tokens, key ids and request details.
pub fn append_private(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_are_0700_and_files_0600_even_when_they_existed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("sa.key");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&file, b"new").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
        let log = dir.join("etcd.log");
        std::fs::write(&log, "old\n").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::io::Write::write_all(&mut append_private(&log).unwrap(), b"new\n").unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "old\nnew\n");
        append_private(&dir.join("fresh.log")).unwrap();
        assert_eq!(mode(&dir.join("fresh.log")), 0o600);
    }
}
