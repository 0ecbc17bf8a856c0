//! The software sealer: AES-256-GCM under a 32-byte key file.
//!
//! For development and tests only. Whoever reads the key file can unseal every
//! record, so the daemon names this backend as dangerous and logs it.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use aes_gcm::{
    Aes256Gcm, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use zeroize::Zeroizing;

use super::{Sealed, Sealer, Secret};
use crate::Error;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// AES-256-GCM under a key file.
pub struct SoftSealer {
    cipher: Aes256Gcm,
    path: PathBuf,
}

impl std::fmt::Debug for SoftSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftSealer").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SoftSealer {
    /// Open the key file, creating it (mode 0600, 32 random bytes) if it does
    /// not exist. A key file readable by group or others is refused.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let key = match fs::read(path) {
            Ok(bytes) => {
                let mode = fs::metadata(path)
                    .map_err(|e| Error::Backend(format!("{}: {e}", path.display())))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(Error::Backend(format!(
                        "key file {} is readable by others (mode {:o}); chmod 600 it",
                        path.display(),
                        mode & 0o777
                    )));
                }
                Zeroizing::new(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path)?,
            Err(e) => return Err(Error::Backend(format!("{}: {e}", path.display()))),
        };
        if key.len() != 32 {
            return Err(Error::Backend(format!(
                "key file {} must hold exactly 32 bytes, it holds {}",
                path.display(),
                key.len()
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| Error::Backend(e.to_string()))?;
        Ok(Self { cipher, path: path.to_owned() })
    }

    fn create(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
        let err = |e: std::io::Error| Error::Backend(format!("{}: {e}", path.display()));
        let mut key = Zeroizing::new(vec![0u8; 32]);
        getrandom::fill(&mut key).map_err(|e| Error::Backend(e.to_string()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(&key).map_err(err)?;
        f.sync_all().map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(key)
    }
}

impl Sealer for SoftSealer {
    fn kind(&self) -> &'static str {
        "soft"
    }

    fn seal(&mut self, _name: &str, aad: &[u8], secret: &[u8]) -> Result<Sealed, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Backend(e.to_string()))?;
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: secret, aad })
            .map_err(|_| Error::Backend("AES-GCM encryption failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(Sealed { backend: self.kind().into(), object: None, blob })
    }

    fn unseal(&mut self, sealed: &Sealed, aad: &[u8]) -> Result<Secret, Error> {
        if sealed.backend != self.kind() {
            return Err(Error::Malformed(format!("sealed by {:?}, not soft", sealed.backend)));
        }
        if sealed.blob.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Malformed(format!("blob of {} bytes", sealed.blob.len())));
        }
        let (nonce, ct) = sealed.blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] =
            nonce.try_into().map_err(|_| Error::Malformed("nonce".into()))?;
        let pt = self
            .cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| Error::Integrity)?;
        Ok(Secret(Zeroizing::new(pt)))
    }

    fn destroy(&mut self, _sealed: &Sealed) -> Result<(), Error> {
        Ok(())
    }

    fn check(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_tamper_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let mut s = SoftSealer::open(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = s.seal("k", b"aad", &[7u8; 64]).unwrap();
        assert_eq!(&s.unseal(&sealed, b"aad").unwrap().0[..], &[7u8; 64]);
        // Reopening uses the same key.
        let mut again = SoftSealer::open(&path).unwrap();
        assert_eq!(&again.unseal(&sealed, b"aad").unwrap().0[..], &[7u8; 64]);
        assert!(matches!(s.unseal(&sealed, b"other"), Err(Error::Integrity)));
        for i in 0..sealed.blob.len() * 8 {
            let mut bad = sealed.clone();
            bad.blob[i / 8] ^= 1 << (i % 8);
            assert!(s.unseal(&bad, b"aad").is_err(), "bit {i}");
        }
        let mut short = sealed.clone();
        short.blob.truncate(20);
        assert!(matches!(s.unseal(&short, b"aad"), Err(Error::Malformed(_))));
        // Another key file cannot unseal it.
        let mut other = SoftSealer::open(&dir.path().join("other.key")).unwrap();
        assert!(matches!(other.unseal(&sealed, b"aad"), Err(Error::Integrity)));
        assert!(!format!("{:?}", s.unseal(&sealed, b"aad").unwrap()).contains('7'));
    }

    #[test]
    fn bad_key_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        fs::write(&short, [1u8; 16]).unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SoftSealer::open(&short).unwrap_err().to_string().contains("exactly 32 bytes"));
        let open = dir.path().join("open.key");
        fs::write(&open, [1u8; 32]).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SoftSealer::open(&open).unwrap_err().to_string().contains("readable by others"));
    }
}
