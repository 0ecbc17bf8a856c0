//! The operating system's random source, `getrandom(2)`.

use crate::{EntropySource, Error, SourceInfo};

/// Reads `getrandom(2)`. Its output is already conditioned by the kernel, so
/// the claim is a policy choice, not a measurement; 8 bits per byte is the
/// default.
#[derive(Debug)]
pub struct OsSource {
    info: SourceInfo,
}

impl OsSource {
    /// An OS source with the given name and claimed min-entropy per byte.
    pub fn new(name: &str, claimed_h: f64) -> Self {
        Self {
            info: SourceInfo {
                name: name.to_owned(),
                kind: "os",
                identity: "getrandom".to_owned(),
                bits_per_sample: 8,
                claimed_h,
            },
        }
    }
}

impl EntropySource for OsSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        getrandom::fill(buf).map_err(Error::Os)?;
        Ok(buf.len())
    }
}
