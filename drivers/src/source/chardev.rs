//! Character devices and FIFOs giving raw samples: `/dev/hwrng`, IDQ Quantis
//! `/dev/qrandomN`, other QRNG cards, or a FIFO fed by a test.

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use crate::{EntropySource, Error, SourceInfo};

/// A character device or FIFO, one sample per byte.
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
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
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
    fn file_reads_then_reports_eof_as_unavailable_then_reopens() {
        let dir = std::env::temp_dir().join(format!("qkeyd-chardev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev");
        let mut src = CharDevSource::new("t", &path, 8, 7.0);
        let mut buf = [0u8; 16];
        assert!(matches!(src.read(&mut buf), Err(Error::Unavailable { source: Some(_), .. })));
        std::fs::File::create(&path).unwrap().write_all(&[1, 2, 3]).unwrap();
        assert_eq!(src.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], &[1, 2, 3]);
        let e = src.read(&mut buf).unwrap_err();
        assert!(e.is_transient());
        // Reopened from the start on the next read.
        assert_eq!(src.read(&mut buf).unwrap(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
