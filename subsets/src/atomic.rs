//! Crash-safe output: every file is written to a temporary file in its own folder, fsync'd,
//! then renamed over the destination, so a reader sees the old file or the new one, never a
//! part.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `path` atomically with whatever `fill` writes into the temporary file.
pub fn write_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut std::fs::File) -> Result<()>,
{
    write_with_prefix(path, ".cfmem-", fill)
}

/// As [`write_with`], the temporary file named `prefix`, random characters and `.tmp`, so
/// that whoever knows the prefix can remove what a killed writer left.
pub fn write_with_prefix<F>(path: &Path, prefix: &str, fill: F) -> Result<()>
where
    F: FnOnce(&mut std::fs::File) -> Result<()>,
{
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = builder(prefix, ".tmp", false).tempfile_in(dir).map_err(Error::io(dir))?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(Error::io(path))?;
    tmp.persist(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e.error })?;
    sync_dir(dir)
}

/// A temporary-file builder for outputs: named `prefix…suffix`, and created with the
/// permissions of an ordinary file or folder (0666 or 0777 less the umask), not tempfile's
/// owner-only default, since runs and reports are shared.
pub fn builder<'a>(prefix: &'a str, suffix: &'a str, folder: bool) -> tempfile::Builder<'a, 'a> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if folder { 0o777 } else { 0o666 };
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix).permissions(std::fs::Permissions::from_mode(mode));
    builder
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |file| file.write_all(bytes).map_err(Error::io(path)))
}

/// Makes a rename inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_is_named_by_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job-00003.done");
        write_with_prefix(&path, ".job-00003-", |file| {
            let names: Vec<String> =
                std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            assert!(names.len() == 1 && names[0].starts_with(".job-00003-") && names[0].ends_with(".tmp"), "{names:?}");
            file.write_all(b"done").map_err(Error::io(&path))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"done");
    }

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_bytes(&path, b"first version, longer").unwrap();
        write_bytes(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failed_fill_leaves_destination_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_bytes(&path, b"kept").unwrap();
        let err = write_with(&path, |_| Err(Error::Invalid("boom".into())));
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn outputs_get_an_ordinary_files_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.txt");
        write_bytes(&path, b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044 & !umask(), "group and others read it unless the umask says no: {mode:o}");
    }

    /// The process's umask (read by setting and restoring it).
    fn umask() -> u32 {
        // SAFETY: umask only swaps the process's file-mode mask.
        let mask = unsafe { libc::umask(0o022) };
        unsafe { libc::umask(mask) };
        mask as u32
    }
}
