//! Secret keys the daemon holds for one connection (`k/N`): generated,
//! kept from an ML-KEM encapsulation or decapsulation, or derived
//! with HKDF; and AES-GCM with them, or with a key the module holds and
//! sends (one that is not sensitive). A held key's value is never in a
//! response: that is what lets the module promise that nothing of a
//! sensitive key leaves the daemon.

use std::sync::atomic::Ordering;

use aes_gcm::{
    Aes128Gcm, Aes256Gcm, AesGcm, KeyInit as _, Nonce,
    aead::{Aead as _, Payload, consts::U12},
};
use qkeyd_p11_proto::{self as proto, KeySource, Prf, Response, Secret};
use zeroize::Zeroizing;

use super::{Conn, MAX_SESSION_KEYS, ModuleError, Outcome, SESSION_KEYS, Server};
use crate::vault::Algorithm;

/// AES-GCM's IV and tag, in bytes.
const GCM_IV: usize = 12;
const GCM_TAG: usize = 16;

impl Server {
    /// Hold `value` for the connection: its new reference.
    fn hold(&self, conn: &mut Conn, value: Zeroizing<Vec<u8>>) -> Result<String, ModuleError> {
        if conn.session.len() + conn.secrets.len() >= MAX_SESSION_KEYS {
            return Err(ModuleError::TooManySessionKeys(MAX_SESSION_KEYS));
        }
        let key = format!("k/{}", SESSION_KEYS.fetch_add(1, Ordering::Relaxed) + 1);
        conn.secrets.insert(key.clone(), value);
        Ok(key)
    }

    fn held(&self, conn: &mut Conn, value: Zeroizing<Vec<u8>>) -> Outcome {
        let len = value.len() as u32;
        Ok(Response::Secret { key: self.hold(conn, value)?, len })
    }

    /// The bytes of a key an operation names.
    fn secret_of<'a>(conn: &'a Conn, k: &'a KeySource) -> Result<&'a [u8], ModuleError> {
        match k {
            KeySource::Held(key) => conn
                .secrets
                .get(key)
                .map(|v| v.as_slice())
                .ok_or_else(|| ModuleError::no_such_key(key)),
            KeySource::Value(v) => Ok(v.expose()),
        }
    }

    pub(super) fn generate_secret(&self, conn: &mut Conn, len: u32) -> Outcome {
        let len = len as usize;
        if !(1..=proto::MAX_SECRET).contains(&len) {
            return Err(ModuleError::SecretLength(len));
        }
        let mut value = Zeroizing::new(vec![0u8; len]);
        self.pool.fill_fresh(&mut value)?;
        self.held(conn, value)
    }

    pub(super) fn decapsulate_kept(&self, conn: &mut Conn, key: &str, ct: &[u8]) -> Outcome {
        let secret = self.decapsulated(conn, key, ct)?;
        self.held(conn, secret)
    }

    pub(super) fn encapsulate_kept(&self, conn: &mut Conn, key: &str) -> Outcome {
        let (ct, secret) = self.encapsulated(conn, key)?;
        Ok(Response::EncapsulatedKept { ct, key: self.hold(conn, secret)? })
    }

    pub(super) fn encapsulate_to(
        &self,
        conn: &mut Conn,
        alg: Algorithm,
        public_key: &[u8],
        keep: bool,
    ) -> Outcome {
        let (ct, secret) = qkeyd_pqc::encapsulate(alg, public_key, &*self.random32()?)?;
        let secret = Zeroizing::new(secret.to_vec());
        if keep {
            return Ok(Response::EncapsulatedKept { ct, key: self.hold(conn, secret)? });
        }
        Ok(Response::Encapsulated { ct, secret: Secret::from(secret) })
    }

    pub(super) fn verify_with(
        &self,
        alg: Algorithm,
        public_key: &[u8],
        msg: &[u8],
        ctx: &[u8],
        sig: &[u8],
    ) -> Outcome {
        Ok(Response::Verified(qkeyd_pqc::verify(alg, public_key, msg, ctx, sig)?))
    }

    /// HKDF (RFC 5869): extract, expand, or both; `len` bytes out (expand),
    /// or the pseudorandom key (extract only, `len` the hash's length).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn derive(
        &self,
        conn: &mut Conn,
        base: &KeySource,
        prf: Prf,
        (extract, expand): (bool, bool),
        salt: &[u8],
        info: &[u8],
        len: u32,
        keep: bool,
    ) -> Outcome {
        let len = len as usize;
        if !(1..=proto::MAX_SECRET).contains(&len) {
            return Err(ModuleError::SecretLength(len));
        }
        let ikm = Self::secret_of(conn, base)?;
        let out = hkdf(prf, extract, expand, salt, ikm, info, len)?;
        if keep {
            return self.held(conn, out);
        }
        Ok(Response::SharedSecret(Secret::from(out)))
    }

    pub(super) fn aes_gcm(
        &self,
        conn: &Conn,
        key: &KeySource,
        encrypt: bool,
        iv: &[u8],
        aad: &[u8],
        data: &[u8],
    ) -> Outcome {
        let k = Self::secret_of(conn, key)?;
        let iv: [u8; GCM_IV] =
            iv.try_into().map_err(|_| ModuleError::Gcm("the IV must be 12 bytes"))?;
        if !encrypt && data.len() < GCM_TAG {
            return Err(ModuleError::AuthFailed);
        }
        let nonce = Nonce::from(iv);
        let payload = Payload { msg: data, aad };
        let out = match (k.len(), encrypt) {
            (16, true) => {
                Aes128Gcm::new_from_slice(k).ok().and_then(|c| c.encrypt(&nonce, payload).ok())
            }
            (16, false) => {
                Aes128Gcm::new_from_slice(k).ok().and_then(|c| c.decrypt(&nonce, payload).ok())
            }
            (24, true) => AesGcm::<aes::Aes192, U12>::new_from_slice(k)
                .ok()
                .and_then(|c| c.encrypt(&nonce, payload).ok()),
            (24, false) => AesGcm::<aes::Aes192, U12>::new_from_slice(k)
                .ok()
                .and_then(|c| c.decrypt(&nonce, payload).ok()),
            (32, true) => {
                Aes256Gcm::new_from_slice(k).ok().and_then(|c| c.encrypt(&nonce, payload).ok())
            }
            (32, false) => {
                Aes256Gcm::new_from_slice(k).ok().and_then(|c| c.decrypt(&nonce, payload).ok())
            }
            _ => return Err(ModuleError::Gcm("an AES key is 16, 24 or 32 bytes")),
        };
        match out {
            Some(o) => Ok(Response::Output(o)),
            None if encrypt => Err(ModuleError::Gcm("AES-GCM refused the input")),
            None => Err(ModuleError::AuthFailed),
        }
    }
}

/// HKDF with `prf`: extract and expand, extract only (the PRK, `len` equal
/// to the hash's length), or expand only (`ikm` is the PRK).
fn hkdf(
    prf: Prf,
    extract: bool,
    expand: bool,
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, ModuleError> {
    macro_rules! run {
        ($h:ty) => {{
            type H = hkdf::Hkdf<$h>;
            let hash_len = <$h as sha2::digest::OutputSizeUser>::output_size();
            let mut out = Zeroizing::new(vec![0u8; len]);
            match (extract, expand) {
                (true, true) => H::new(Some(salt), ikm)
                    .expand(info, &mut out)
                    .map_err(|_| ModuleError::SecretLength(len))?,
                (true, false) => {
                    if len != hash_len {
                        return Err(ModuleError::SecretLength(len));
                    }
                    let (prk, _) = H::extract(Some(salt), ikm);
                    out.copy_from_slice(&prk);
                }
                (false, true) => H::from_prk(ikm)
                    .map_err(|_| {
                        ModuleError::Hkdf("the base key of expand alone is shorter than the hash")
                    })?
                    .expand(info, &mut out)
                    .map_err(|_| ModuleError::SecretLength(len))?,
                (false, false) => return Err(ModuleError::Hkdf("neither extract nor expand")),
            }
            Ok(out)
        }};
    }
    match prf {
        Prf::Sha256 => run!(sha2::Sha256),
        Prf::Sha384 => run!(sha2::Sha384),
        Prf::Sha512 => run!(sha2::Sha512),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn hkdf_matches_rfc_5869() {
        // RFC 5869 A.1 (SHA-256).
        let ikm = [0x0b; 22];
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let okm = hkdf(Prf::Sha256, true, true, &salt, &ikm, &info, 42).unwrap();
        assert_eq!(
            hex::encode(&*okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        let prk = hkdf(Prf::Sha256, true, false, &salt, &ikm, &[], 32).unwrap();
        assert_eq!(
            hex::encode(&*prk),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
        );
        // Expand alone from that PRK gives the same output.
        assert_eq!(hkdf(Prf::Sha256, false, true, &[], &prk, &info, 42).unwrap(), okm);
        assert!(matches!(
            hkdf(Prf::Sha256, true, false, &salt, &ikm, &[], 31),
            Err(ModuleError::SecretLength(31))
        ));
        assert!(matches!(
            hkdf(Prf::Sha256, false, false, &salt, &ikm, &[], 32),
            Err(ModuleError::Hkdf(_))
        ));
        assert!(matches!(
            hkdf(Prf::Sha512, false, true, &[], &[1; 32], &[], 32),
            Err(ModuleError::Hkdf(_))
        ));
        assert_eq!(hkdf(Prf::Sha384, true, true, &[], &ikm, &[], 64).unwrap().len(), 64);
    }
}
