//! The requests: seeds, the key list, key generation, and the operations on
//! session keys (in this connection's memory) and vault keys (sealed at rest,
//! opened for `key_cache`).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use qkeyd_p11_proto::{self as proto, KeyEntry, Response, Secret};
use zeroize::Zeroizing;

use super::{Conn, MAX_SESSION_KEYS, ModuleError, Outcome, SESSION_KEYS, Server, SessionKey};
use crate::vault::{self, Algorithm, OpenKey, PrivateKey};

impl Server {
    pub(super) fn hello(&self, version: u32) -> Outcome {
        if version != proto::VERSION {
            return Err(ModuleError::Version(version));
        }
        Ok(Response::Hello {
            version: proto::VERSION,
            daemon: env!("CARGO_PKG_VERSION").into(),
            serial: self.serial.clone(),
        })
    }

    pub(super) fn seed(&self, len: u32) -> Outcome {
        if !(1..=proto::MAX_SEED).contains(&len) {
            return Err(ModuleError::SeedLength);
        }
        let mut buf = Zeroizing::new(vec![0u8; len as usize]);
        self.pool.fill(&mut buf)?;
        Ok(Response::Seed(Secret::from(buf)))
    }

    pub(super) fn list(&self) -> Outcome {
        let keys = self.vault.current()?;
        Ok(Response::Keys(keys.into_iter().map(vault_entry).collect()))
    }

    pub(super) fn generate(
        &self,
        conn: &mut Conn,
        alg: Algorithm,
        token: bool,
        label: &str,
    ) -> Outcome {
        if token {
            let info = self.vault.create(alg, label)?;
            tracing::info!(key = %info.id, alg = %alg, "PKCS#11 token key created");
            return Ok(Response::Key(vault_entry(self.vault.current_key(&info.id)?)));
        }
        if conn.session.len() >= MAX_SESSION_KEYS {
            return Err(ModuleError::TooManySessionKeys(MAX_SESSION_KEYS));
        }
        if label.len() > vault::MAX_LABEL {
            return Err(ModuleError::LabelLength);
        }
        let mut seed = Zeroizing::new(vec![0u8; alg.seed_len()]);
        self.pool.fill_fresh(&mut seed)?;
        let key = PrivateKey::from_seed(alg, &seed)?;
        qkeyd_pqc::pairwise_consistency(&key, &*self.random32()?)?;
        let public_key = key.public_key();
        let reference = format!("s/{}", SESSION_KEYS.fetch_add(1, Ordering::Relaxed) + 1);
        conn.session.insert(
            reference.clone(),
            SessionKey { key: key.expand(), public_key: public_key.clone() },
        );
        Ok(Response::Key(KeyEntry {
            key: reference,
            alg,
            label: label.to_owned(),
            token: false,
            public_key,
        }))
    }

    pub(super) fn random32(&self) -> Result<Zeroizing<[u8; 32]>, ModuleError> {
        let mut b = Zeroizing::new([0u8; 32]);
        self.pool.fill(&mut b[..])?;
        Ok(b)
    }

    /// A vault key, unsealed once and kept for `key_cache` after its last use.
    pub(super) fn open(
        &self,
        conn: &mut Conn,
        id: &str,
        version: u32,
    ) -> Result<Arc<OpenKey>, ModuleError> {
        let now = Instant::now();
        let k = (id.to_owned(), version);
        if let Some((key, used)) = conn.open.get_mut(&k) {
            *used = now;
            return Ok(key.clone());
        }
        let key = Arc::new(self.vault.open_key(id, Some(version))?);
        if !self.key_cache.is_zero() {
            conn.open.insert(k, (key.clone(), now));
        }
        Ok(key)
    }

    pub(super) fn sign(
        &self,
        conn: &mut Conn,
        key: &str,
        msg: &[u8],
        ctx: &[u8],
        deterministic: bool,
    ) -> Outcome {
        let sig = match parse_ref(key)? {
            KeyRef::Session => {
                let k = conn.session_key(key)?;
                let rnd = if deterministic { Zeroizing::new([0; 32]) } else { self.random32()? };
                k.key.sign(msg, ctx, &rnd)?
            }
            KeyRef::Vault(id, v) => {
                let k = self.open(conn, id, v)?;
                self.vault.sign_open(&k, msg, ctx, deterministic)?
            }
            KeyRef::Secret => return Err(ModuleError::no_such_key(key)),
        };
        Ok(Response::Signature(sig))
    }

    pub(super) fn verify(
        &self,
        conn: &Conn,
        key: &str,
        msg: &[u8],
        ctx: &[u8],
        sig: &[u8],
    ) -> Outcome {
        let ok = match parse_ref(key)? {
            KeyRef::Session => {
                let k = conn.session_key(key)?;
                qkeyd_pqc::verify(k.key.alg(), &k.public_key, msg, ctx, sig)?
            }
            KeyRef::Vault(id, v) => self.vault.verify(id, Some(v), msg, ctx, sig)?.1,
            KeyRef::Secret => return Err(ModuleError::no_such_key(key)),
        };
        Ok(Response::Verified(ok))
    }

    /// ML-KEM encapsulation to a key: (ciphertext, shared secret).
    pub(super) fn encapsulated(
        &self,
        conn: &Conn,
        key: &str,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), ModuleError> {
        let (ct, secret) = match parse_ref(key)? {
            KeyRef::Session => {
                let k = conn.session_key(key)?;
                qkeyd_pqc::encapsulate(k.key.alg(), &k.public_key, &*self.random32()?)?
            }
            KeyRef::Vault(id, v) => {
                let e = self.vault.encapsulate(id, Some(v))?;
                (e.ciphertext, e.shared_secret)
            }
            KeyRef::Secret => return Err(ModuleError::no_such_key(key)),
        };
        Ok((ct, Zeroizing::new(secret.to_vec())))
    }

    pub(super) fn encapsulate(&self, conn: &Conn, key: &str) -> Outcome {
        let (ct, secret) = self.encapsulated(conn, key)?;
        Ok(Response::Encapsulated { ct, secret: Secret::from(secret) })
    }

    /// ML-KEM decapsulation with a key: the shared secret.
    pub(super) fn decapsulated(
        &self,
        conn: &mut Conn,
        key: &str,
        ct: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ModuleError> {
        let secret = match parse_ref(key)? {
            KeyRef::Session => conn.session_key(key)?.key.decapsulate(ct)?,
            KeyRef::Vault(id, v) => {
                let k = self.open(conn, id, v)?;
                self.vault.decapsulate_open(&k, ct)?
            }
            KeyRef::Secret => return Err(ModuleError::no_such_key(key)),
        };
        Ok(Zeroizing::new(secret.to_vec()))
    }

    pub(super) fn decapsulate(&self, conn: &mut Conn, key: &str, ct: &[u8]) -> Outcome {
        Ok(Response::SharedSecret(Secret::from(self.decapsulated(conn, key, ct)?)))
    }

    pub(super) fn destroy(&self, conn: &mut Conn, key: &str) -> Outcome {
        match parse_ref(key)? {
            KeyRef::Session => {
                conn.session.remove(key).ok_or_else(|| ModuleError::no_such_key(key))?;
            }
            KeyRef::Secret => {
                conn.secrets.remove(key).ok_or_else(|| ModuleError::no_such_key(key))?;
            }
            KeyRef::Vault(id, _) => {
                self.vault.destroy(id)?;
                conn.open.retain(|(i, _), _| i != id);
                tracing::info!(key = %id, "PKCS#11 token key destroyed");
            }
        }
        Ok(Response::Done)
    }
}

enum KeyRef<'a> {
    /// A session key pair (`s/N`).
    Session,
    /// A secret key held for the connection (`k/N`).
    Secret,
    /// A vault key version.
    Vault(&'a str, u32),
}

fn parse_ref(key: &str) -> Result<KeyRef<'_>, ModuleError> {
    if key.starts_with("s/") {
        return Ok(KeyRef::Session);
    }
    if key.starts_with("k/") {
        return Ok(KeyRef::Secret);
    }
    let (id, v) = key.split_once('/').ok_or_else(|| ModuleError::no_such_key(key))?;
    let v = v.parse().map_err(|_| ModuleError::no_such_key(key))?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ModuleError::no_such_key(key));
    }
    Ok(KeyRef::Vault(id, v))
}

fn vault_entry(k: vault::CurrentKey) -> KeyEntry {
    KeyEntry {
        key: format!("{}/{}", k.id, k.version),
        alg: k.alg,
        label: k.label,
        token: true,
        public_key: k.public_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references_parse_strictly() {
        assert!(matches!(parse_ref("s/3"), Ok(KeyRef::Session)));
        assert!(matches!(parse_ref("k/3"), Ok(KeyRef::Secret)));
        assert!(matches!(parse_ref("00ff/2"), Ok(KeyRef::Vault("00ff", 2))));
        for bad in ["", "/1", "00ff", "00ff/x", "../etc/1", "zz/1", "00ff/-1"] {
            assert!(matches!(parse_ref(bad), Err(ModuleError::NoSuchKey(_))), "{bad:?}");
        }
    }
}
