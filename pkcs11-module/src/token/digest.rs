//! Message digests: C_DigestInit, C_Digest, C_DigestUpdate, C_DigestKey and
//! C_DigestFinal with SHA-2 and SHA-3, computed in this process: a digest
//! holds no secret of the token's, so it costs no round trip to the daemon.

use cryptoki_sys::*;
use sha2::Digest as _;

use super::{Out, with};
use crate::object::{Class, Rv};

/// A running hash.
pub(super) enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Sha3_256(sha3::Sha3_256),
    Sha3_384(sha3::Sha3_384),
    Sha3_512(sha3::Sha3_512),
}

impl Hasher {
    fn new(m: CK_MECHANISM_TYPE) -> Result<Self, Rv> {
        Ok(match m {
            CKM_SHA256 => Self::Sha256(sha2::Sha256::new()),
            CKM_SHA384 => Self::Sha384(sha2::Sha384::new()),
            CKM_SHA512 => Self::Sha512(sha2::Sha512::new()),
            CKM_SHA3_256 => Self::Sha3_256(sha3::Sha3_256::new()),
            CKM_SHA3_384 => Self::Sha3_384(sha3::Sha3_384::new()),
            CKM_SHA3_512 => Self::Sha3_512(sha3::Sha3_512::new()),
            _ => return Err(CKR_MECHANISM_INVALID),
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
            Self::Sha3_256(h) => h.update(data),
            Self::Sha3_384(h) => h.update(data),
            Self::Sha3_512(h) => h.update(data),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Sha256(_) | Self::Sha3_256(_) => 32,
            Self::Sha384(_) | Self::Sha3_384(_) => 48,
            Self::Sha512(_) | Self::Sha3_512(_) => 64,
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Sha384(h) => h.finalize().to_vec(),
            Self::Sha512(h) => h.finalize().to_vec(),
            Self::Sha3_256(h) => h.finalize().to_vec(),
            Self::Sha3_384(h) => h.finalize().to_vec(),
            Self::Sha3_512(h) => h.finalize().to_vec(),
        }
    }
}

/// A session's digest operation.
pub(super) struct DigestOp {
    hasher: Hasher,
    /// C_DigestUpdate or C_DigestKey was called: only C_DigestFinal ends it.
    multipart: bool,
    /// C_Digest was called (to ask the length): only C_Digest ends it.
    single: bool,
}

/// C_DigestInit.
pub(crate) fn digest_init(h: CK_SESSION_HANDLE, mtype: CK_MECHANISM_TYPE) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        if x.digest.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        x.digest = Some(DigestOp { hasher: Hasher::new(mtype)?, multipart: false, single: false });
        Ok(())
    })
}

/// End a digest operation (a NULL mechanism, or arguments refused).
pub(crate) fn end_digest(h: CK_SESSION_HANDLE) {
    let _ = with(|s| {
        s.session(h)?.digest = None;
        Ok(())
    });
}

/// C_DigestUpdate.
pub(crate) fn digest_update(h: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        let op = x.digest.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.single {
            x.digest = None;
            return Err(CKR_OPERATION_ACTIVE);
        }
        op.multipart = true;
        op.hasher.update(part);
        Ok(())
    })
}

/// C_DigestKey: a secret key whose value this process holds. Keys held by
/// the daemon, and other classes, are indigestible.
pub(crate) fn digest_key(h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        if x.digest.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?.single {
            x.digest = None;
            return Err(CKR_OPERATION_ACTIVE);
        }
        let value = match s.key(key) {
            Ok(o) if o.class == Class::Secret && o.held.is_none() => o.value.clone(),
            Ok(_) => {
                s.session(h)?.digest = None;
                return Err(CKR_KEY_INDIGESTIBLE);
            }
            Err(e) => {
                s.session(h)?.digest = None;
                return Err(e);
            }
        };
        let op = s.session(h)?.digest.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        op.multipart = true;
        op.hasher.update(&value);
        Ok(())
    })
}

/// C_Digest (`data` given) or C_DigestFinal (`None`). `out` of `None` asks
/// for the length and a short buffer gets it; both keep the operation.
pub(crate) fn digest(
    h: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    out: Option<&mut [u8]>,
) -> Result<Out, Rv> {
    with(|s| {
        let x = s.session(h)?;
        let op = x.digest.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        // A single-part operation and a multi-part one do not mix: the
        // second kind of call ends it.
        if (data.is_some() && op.multipart) || (data.is_none() && op.single) {
            x.digest = None;
            return Err(CKR_OPERATION_ACTIVE);
        }
        op.single |= data.is_some();
        let len = op.hasher.len();
        let out = match out {
            None => return Ok(Out::Length(len)),
            Some(o) if o.len() < len => return Ok(Out::TooSmall(len)),
            Some(o) => o,
        };
        let mut op = x.digest.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if let Some(d) = data {
            op.hasher.update(d);
        }
        out[..len].copy_from_slice(&op.hasher.finish());
        Ok(Out::Written(len))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_their_standards() {
        // FIPS 180-4 and FIPS 202 example values for "abc".
        let abc = |m| {
            let mut h = Hasher::new(m).unwrap();
            h.update(b"abc");
            hex(&h.finish())
        };
        assert_eq!(
            abc(CKM_SHA256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            abc(CKM_SHA3_256),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
        assert!(abc(CKM_SHA512).starts_with("ddaf35a193617aba"));
        assert!(abc(CKM_SHA3_512).starts_with("b751850b1a57168a"));
        for (m, len) in [
            (CKM_SHA256, 32),
            (CKM_SHA384, 48),
            (CKM_SHA512, 64),
            (CKM_SHA3_256, 32),
            (CKM_SHA3_384, 48),
            (CKM_SHA3_512, 64),
        ] {
            assert_eq!(Hasher::new(m).unwrap().len(), len);
            assert_eq!(Hasher::new(m).unwrap().finish().len(), len);
        }
        assert_eq!(Hasher::new(CKM_SHA_1).err(), Some(CKR_MECHANISM_INVALID));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
