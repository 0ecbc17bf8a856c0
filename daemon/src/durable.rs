//! Files written whole and checked when read, for the key vault and the KMS
//! plugin's KEK list: `body \n SHA3-256(body) in hex \n`. A write goes to a
//! temp file, is fsynced, renamed over the target, and the folder is fsynced,
//! so a crash leaves the old file or the new one; a file whose digest does not
//! match its body is an error, never a shorter or different record.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use sha3::{Digest as _, Sha3_256};

/// Write `body` to `path` through `tmp` (same folder), durably. On failure,
/// the path that failed and the cause.
pub(crate) fn write(tmp: &Path, path: &Path, body: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    stage(tmp, body)?;
    publish(tmp, path)
}

/// The first half of [`write()`]: `body` and its digest in `tmp`, fsynced, not
/// yet visible under its name.
pub(crate) fn stage(tmp: &Path, body: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let mut content = body.to_vec();
    content.push(b'\n');
    content.extend_from_slice(hex::encode(Sha3_256::digest(body)).as_bytes());
    content.push(b'\n');
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(at(tmp))?;
    let written = f.write_all(&content).and_then(|()| f.sync_all());
    if written.is_err() {
        // A full or failing disk leaves nothing half-written behind.
        let _ = fs::remove_file(tmp);
    }
    written.map_err(at(tmp))
}

/// The second half of [`write()`]: rename a staged `tmp` over `path` and fsync
/// the folder, so the new name survives a crash.
pub(crate) fn publish(tmp: &Path, path: &Path) -> Result<(), (PathBuf, io::Error)> {
    fs::rename(tmp, path).map_err(at(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

fn at(p: &Path) -> impl FnOnce(io::Error) -> (PathBuf, io::Error) {
    let p = p.to_owned();
    move |e| (p, e)
}

/// The body of a file's `content`, or why it is not a sound one.
pub(crate) fn body(content: &[u8]) -> Result<&[u8], &'static str> {
    let mut lines = content.split(|&b| b == b'\n');
    let (Some(body), Some(sum), Some(rest), None) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Err("not a body line and a digest line");
    };
    if !rest.is_empty() || hex::encode(Sha3_256::digest(body)).as_bytes() != sum {
        return Err("its SHA3-256 does not match (changed or truncated)");
    }
    Ok(body)
}
