//! Using a key: read its record, unseal it, sign, verify, encapsulate,
//! decapsulate and derive, each use in the audit log before its result
//! leaves the vault.

use hkdf::SimpleHkdf;
use sha3::Sha3_256;
use zeroize::Zeroizing;

use qkeyd_pqc::{Error as AlgError, PrivateKey};

use super::{
    DecapsulateError, Encapsulated, MAX_DERIVE, OpenKey, Vault, VaultError,
    audit::{Event, Op},
    store::{StoreError, VersionRecord},
};

impl Vault {
    pub(super) fn record(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<VersionRecord, VaultError> {
        let v = match version {
            Some(v) => v,
            None => *self
                .store
                .versions(id)?
                .last()
                .ok_or_else(|| VaultError::NoSuchKey { id: id.to_owned(), version: None })?,
        };
        Ok(self.store.read(id, v)?)
    }

    /// Unseal a version and check it is the key the record describes.
    fn private(&self, r: &VersionRecord) -> Result<PrivateKey, VaultError> {
        let (sealed, aad) = (r.sealed.clone(), r.aad());
        let seed = self.sealer.call(move |s| s.unseal(&sealed, &aad))?;
        let key = PrivateKey::from_seed(r.alg, seed.expose())?;
        if key.public_key() != r.public_key_bytes()? {
            return Err(VaultError::Store(StoreError::Corrupt(format!(
                "key {} v{}: the unsealed seed does not match the public key",
                r.id, r.version
            ))));
        }
        Ok(key)
    }

    /// Sign with the current (or given) version.
    pub(crate) fn sign(
        &self,
        id: &str,
        version: Option<u32>,
        msg: &[u8],
        ctx: &[u8],
    ) -> Result<(u32, Vec<u8>), VaultError> {
        self.not_reserved(id)?;
        let r = self.record(id, version)?;
        if r.alg.is_kem() {
            return Err(
                AlgError::WrongKind { op: "sign", need: "ML-DSA", alg: r.alg.name() }.into()
            );
        }
        let key = self.private(&r)?;
        let sig = key.sign(msg, ctx, &*self.random::<32>()?)?;
        self.audit.used(&use_event(Op::Sign, &r), "ok")?;
        Ok((r.version, sig))
    }

    /// Unseal a version (the current one if `version` is `None`) for
    /// [`Vault::sign_open`] and [`Vault::decapsulate_open`].
    pub(crate) fn open_key(&self, id: &str, version: Option<u32>) -> Result<OpenKey, VaultError> {
        self.not_reserved(id)?;
        self.open_any(id, version)
    }

    /// [`Vault::open_key`] of the current version of a reserved key, for its
    /// owner inside the daemon.
    pub(crate) fn open_reserved(&self, id: &str) -> Result<OpenKey, VaultError> {
        self.open_any(id, None)
    }

    fn open_any(&self, id: &str, version: Option<u32>) -> Result<OpenKey, VaultError> {
        let generation = self.destroyed.load(std::sync::atomic::Ordering::Acquire);
        let r = self.record(id, version)?;
        let key = self.private(&r)?.expand();
        Ok(OpenKey {
            id: id.to_owned(),
            version: r.version,
            alg: r.alg,
            fingerprint: r.fingerprint,
            key,
            generation,
        })
    }

    /// Refuse an open key whose version was destroyed since it was opened
    /// (the disk is asked only if some key was destroyed since).
    fn still_there(&self, k: &OpenKey) -> Result<(), VaultError> {
        if self.destroyed.load(std::sync::atomic::Ordering::Acquire) == k.generation
            || self.store.versions(&k.id)?.contains(&k.version)
        {
            Ok(())
        } else {
            Err(VaultError::NoSuchKey { id: k.id.clone(), version: Some(k.version) })
        }
    }

    /// Sign with an open key: hedged with fresh pool randomness, or with
    /// rnd = 0 (FIPS 204's deterministic variant) if `deterministic`.
    pub(crate) fn sign_open(
        &self,
        k: &OpenKey,
        msg: &[u8],
        ctx: &[u8],
        deterministic: bool,
    ) -> Result<Vec<u8>, VaultError> {
        self.still_there(k)?;
        let rnd = if deterministic { Zeroizing::new([0; 32]) } else { self.random::<32>()? };
        let sig = k.key.sign(msg, ctx, &rnd)?;
        self.audit.used(&k.event(Op::Sign), "ok")?;
        Ok(sig)
    }

    /// Decapsulate with an open key.
    pub(crate) fn decapsulate_open(
        &self,
        k: &OpenKey,
        ct: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        self.still_there(k)?;
        let secret = k.key.decapsulate(ct)?;
        self.audit.used(&k.event(Op::Decapsulate), "ok")?;
        Ok(secret)
    }

    /// Verify against the given version, or (`None`) against each version,
    /// newest first. Answers the version that verified (the one given, if
    /// any) and whether it did; `(None, false)` if no version was given and
    /// none verified.
    pub(crate) fn verify(
        &self,
        id: &str,
        version: Option<u32>,
        msg: &[u8],
        ctx: &[u8],
        sig: &[u8],
    ) -> Result<(Option<u32>, bool), VaultError> {
        let mut candidates = match version {
            Some(v) => vec![v],
            None => self.store.versions(id)?,
        };
        candidates.reverse();
        let mut tried = None;
        for v in candidates {
            let r = self.store.read(id, v)?;
            if qkeyd_pqc::verify(r.alg, &r.public_key_bytes()?, msg, ctx, sig)? {
                self.audit.used(&use_event(Op::Verify, &r), "valid")?;
                return Ok((Some(v), true));
            }
            tried = Some(r);
        }
        let r = tried.ok_or_else(|| VaultError::NoSuchKey { id: id.to_owned(), version })?;
        let ev = Event {
            version,
            fingerprint: if version.is_some() { &r.fingerprint } else { "" },
            ..use_event(Op::Verify, &r)
        };
        self.audit.used(&ev, "invalid")?;
        Ok((version, false))
    }

    /// Encapsulate to the current (or given) version.
    pub(crate) fn encapsulate(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<Encapsulated, VaultError> {
        let r = self.record(id, version)?;
        let m = self.random::<32>()?;
        let (ciphertext, shared_secret) =
            qkeyd_pqc::encapsulate(r.alg, &r.public_key_bytes()?, &m)?;
        self.audit.used(&use_event(Op::Encapsulate, &r), "ok")?;
        Ok(Encapsulated { version: r.version, ciphertext, shared_secret })
    }

    /// Decapsulate with the given version; without one, with the only version
    /// (a key with several needs the version: [`DecapsulateError::VersionRequired`]).
    pub(crate) fn decapsulate(
        &self,
        id: &str,
        version: Option<u32>,
        ct: &[u8],
    ) -> Result<(u32, Zeroizing<[u8; 32]>), DecapsulateError> {
        let (r, k) = self.decapsulate_unaudited("decapsulate", id, version, ct)?;
        self.audit.used(&use_event(Op::Decapsulate, &r), "ok")?;
        Ok((r.version, k))
    }

    /// Decapsulate (as [`Vault::decapsulate`]), then HKDF-SHA3-256 (RFC 5869)
    /// the shared secret into `len` bytes with `salt` and `info`.
    pub(crate) fn derive(
        &self,
        id: &str,
        version: Option<u32>,
        ct: &[u8],
        salt: &[u8],
        info: &[u8],
        len: usize,
    ) -> Result<(u32, Zeroizing<Vec<u8>>), DecapsulateError> {
        if !(1..=MAX_DERIVE).contains(&len) {
            return Err(VaultError::DeriveLength(len).into());
        }
        let (r, k) = self.decapsulate_unaudited("derive", id, version, ct)?;
        let mut okm = Zeroizing::new(vec![0u8; len]);
        SimpleHkdf::<Sha3_256>::new(Some(salt), &k[..])
            .expand(info, &mut okm)
            .map_err(|_| VaultError::DeriveLength(len))?;
        self.audit.used(&use_event(Op::Derive, &r), "ok")?;
        Ok((r.version, okm))
    }

    /// The decapsulation behind [`Vault::decapsulate`] and [`Vault::derive`],
    /// which audit it each under its own name.
    fn decapsulate_unaudited(
        &self,
        op: &'static str,
        id: &str,
        version: Option<u32>,
        ct: &[u8],
    ) -> Result<(VersionRecord, Zeroizing<[u8; 32]>), DecapsulateError> {
        let r = match version {
            Some(v) => self.store.read(id, v)?,
            None => {
                let versions = self.store.versions(id)?;
                let last = *versions
                    .last()
                    .ok_or_else(|| VaultError::NoSuchKey { id: id.to_owned(), version: None })?;
                let r = self.store.read(id, last)?;
                if r.alg.is_kem() && versions.len() > 1 {
                    return Err(DecapsulateError::VersionRequired { id: id.to_owned(), versions });
                }
                r
            }
        };
        if !r.alg.is_kem() {
            return Err(AlgError::WrongKind { op, need: "ML-KEM", alg: r.alg.name() }.into());
        }
        let want = r.alg.output_len();
        if ct.len() != want {
            return Err(AlgError::Length {
                what: "ciphertext",
                alg: r.alg.name(),
                want,
                got: ct.len(),
            }
            .into());
        }
        let key = self.private(&r)?;
        let k = key.decapsulate(ct)?;
        Ok((r, k))
    }
}

fn use_event(op: Op, r: &VersionRecord) -> Event<'_> {
    Event { op, id: &r.id, version: Some(r.version), alg: Some(r.alg), fingerprint: &r.fingerprint }
}

impl OpenKey {
    fn event(&self, op: Op) -> Event<'_> {
        Event {
            op,
            id: &self.id,
            version: Some(self.version),
            alg: Some(self.alg),
            fingerprint: &self.fingerprint,
        }
    }
}
