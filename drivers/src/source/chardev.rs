//! Character devices and FIFOs giving raw samples: `/dev/hwrng`, IDQ Quantis
//! `/dev/qrandomN`, other QRNG cards, or a FIFO fed by a test.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
};

use crate::{EntropySource, Error, SourceInfo};

/// A character device or FIFO, one sample per byte.
///
/// Anything else (a regular file, a directory) is refused: a file would be
/// reread from its start after every end-of-file, replaying the same samples
/// as if they were fresh entropy.
///
/// The device is opened lazily and closed on end-of-file or a read error, so a
/// device that vanishes (card reset, FIFO writer gone) is reopened on a later
/// `read` once it is back. Opening a FIFO blocks until a writer appears; the
/// daemon runs each source on its own thread, so only this source waits.
#[derive(Debug)]
pub struct CharDevSource {
    info: SourceInfo,
    path: PathBuf,
    file: Option<File>,
}

impl CharDevSource {
    /// A source reading `path`, with the given sample width and claim.
    pub fn new(name: &str, path: &Path, bits_per_sample: u32, claimed_h: f64) -> Self {
        Self {
            info: SourceInfo {
                name: name.to_owned(),
                kind: "chardev",
                identity: path.display().to_string(),
                bits_per_sample,
                claimed_h,
            },
            path: path.to_owned(),
            file: None,
        }
    }

    fn unavailable(&mut self, source: Option<io::Error>) -> Error {
        self.file = None;
        Error::Unavailable { path: self.path.clone(), source }
    }
}

impl EntropySource for CharDevSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.file.is_none() {
            let file = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) => return Err(self.unavailable(Some(e))),
            };
            let kind = file.metadata().map(|m| m.file_type());
            match kind {
                Ok(t) if t.is_char_device() || t.is_fifo() => self.file = Some(file),
                Ok(_) => {
                    return Err(Error::Config(format!(
                        "{} is not a character device or FIFO",
                        self.path.display()
                    )));
                }
                Err(e) => return Err(self.unavailable(Some(e))),
            }
        }
        loop {
            let Some(file) = self.file.as_mut() else {
                return Err(self.unavailable(None));
            };
            match file.read(buf) {
                Ok(0) if !buf.is_empty() => return Err(self.unavailable(None)),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.unavailable(Some(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn regular_files_are_refused_missing_devices_are_transient() {
        let dir = std::env::temp_dir().join(format!("qkeyd-chardev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev");
        let mut src = CharDevSource::new("t", &path, 8, 7.0);
        let mut buf = [0u8; 16];
        let e = src.read(&mut buf).unwrap_err();
        assert!(e.is_transient(), "missing device: {e}");
        std::fs::File::create(&path).unwrap().write_all(&[1, 2, 3]).unwrap();
        let e = src.read(&mut buf).unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("not a character device or FIFO"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn character_device_reads() {
        let mut src = CharDevSource::new("u", Path::new("/dev/urandom"), 8, 7.0);
        let mut buf = [0u8; 64];
        assert_eq!(src.read(&mut buf).unwrap(), 64);
        assert_eq!(src.info().identity, "/dev/urandom");
    }
}
