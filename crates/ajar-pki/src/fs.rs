//! Private directories, files only their owner may read, and writes that
//! a crash cannot leave half done.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::PkiError;

/// Creates `dir` (and missing parents) with mode 0700; an existing
/// directory is left as it is.
pub(crate) fn private_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
        PkiError::new(format!(
            "cannot create the directory {}: {e}; check that its parent exists and is writable",
            dir.display()
        ))
    })
}

/// Writes `contents` to a temporary file beside `path` with `mode`, syncs
/// it, renames it over `path` and syncs the directory, so `path` holds
/// either the old or the new contents, never part of them.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(".{name}.tmp"));
    let fail = |e: io::Error| {
        PkiError::new(format!(
            "cannot write {}: {e}; check that {} is writable and the disk is not full",
            path.display(),
            dir.display()
        ))
    };
    // A temporary file left by a crash may have another mode; `mode` only
    // applies to a file this call creates.
    match fs::remove_file(&temp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp).map_err(fail)?;
    file.write_all(contents).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    fs::rename(&temp, path).map_err(fail)?;
    sync_dir(dir).map_err(fail)
}

/// Removes `path` if it exists.
pub(crate) fn remove(path: &Path) -> Result<(), PkiError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(PkiError::new(format!("cannot remove {}: {e}; remove it by hand", path.display())))
        }
        _ => Ok(()),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The text of `path`, or `None` if there is no such file.
pub(crate) fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match File::open(path) {
        Ok(file) => read_text(file, path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(cannot_read(path, e)),
    }
}

/// Like [`read`], for a private key: refused when other users may read or
/// write it. `what` names it in the message ("the agent CA key").
pub(crate) fn read_private(path: &Path, what: &str) -> Result<Option<String>, PkiError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot_read(path, e)),
    };
    // The mode is read from the open file, so it is the mode of what is read.
    let mode = file.metadata().map_err(|e| cannot_read(path, e))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::new(format!(
            "{what} {} is readable or writable by other users (mode {mode:04o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    read_text(file, path).map(Some)
}

fn read_text(mut file: File, path: &Path) -> Result<String, PkiError> {
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| cannot_read(path, e))?;
    Ok(text)
}

fn cannot_read(path: &Path, e: io::Error) -> PkiError {
    PkiError::new(format!("cannot read {}: {e}; check its owner and permissions", path.display()))
}
