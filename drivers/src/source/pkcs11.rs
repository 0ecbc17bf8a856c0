//! An HSM's random number generator, through its PKCS#11 module
//! (`C_GenerateRandom`).

use std::{io, path::PathBuf};

use cryptoki::{
    context::Pkcs11,
    error::{Error as CkError, RvError},
    session::{Session, UserType},
    types::AuthPin,
};
use zeroize::Zeroizing;

use crate::{EntropySource, Error, SourceInfo};

/// Bytes asked of the token per `C_GenerateRandom`.
const PER_CALL: usize = 1024;

/// Where the token is, and its PIN if it wants a login before it gives random
/// bytes (SoftHSM2 does not; some HSMs do).
#[derive(Clone)]
pub struct Pkcs11SourceConfig {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN, if a login is needed. Never logged or printed.
    pub pin: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Pkcs11SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11SourceConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("login", &self.pin.is_some())
            .finish()
    }
}

/// Reads `C_GenerateRandom` of a token. The token's output is its own DRBG's
/// (conditioned), so, as with the OS source, the claim is a policy choice and
/// the health tests catch outright failure. The session is opened on the first
/// read and again after any failure, so a token that goes away and comes back
/// is used again after a fresh start-up test.
pub struct Pkcs11Source {
    info: SourceInfo,
    config: Pkcs11SourceConfig,
    // Field order: the session closes before the library handle is dropped.
    session: Option<Session>,
    ctx: Option<Pkcs11>,
}

impl std::fmt::Debug for Pkcs11Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Source")
            .field("info", &self.info)
            .field("config", &self.config)
            .field("open", &self.session.is_some())
            .finish()
    }
}

impl Pkcs11Source {
    /// A source on the token labelled `config.token_label`; nothing is opened yet.
    pub fn new(name: &str, config: Pkcs11SourceConfig, claimed_h: f64) -> Self {
        Self {
            info: SourceInfo {
                name: name.to_owned(),
                kind: "pkcs11",
                identity: format!("pkcs11:{}#{}", config.module.display(), config.token_label),
                bits_per_sample: 8,
                claimed_h,
            },
            config,
            session: None,
            ctx: None,
        }
    }

    fn unavailable(&self, what: String) -> Error {
        Error::Unavailable {
            path: self.config.module.clone(),
            source: Some(io::Error::other(what)),
        }
    }

    fn open(&mut self) -> Result<&Session, Error> {
        if self.session.is_none() {
            let module = &self.config.module;
            let ctx = Pkcs11::new(module)
                .map_err(|e| self.unavailable(format!("loading {}: {e}", module.display())))?;
            // The library may already be initialised in this process (the
            // HSM sealer on the same module): that is fine.
            crate::seal::pkcs11::initialize(&ctx)
                .map_err(|e| self.unavailable(format!("C_Initialize: {e}")))?;
            let mut slot = None;
            for s in ctx.get_slots_with_token().map_err(|e| self.unavailable(e.to_string()))? {
                let info = ctx.get_token_info(s).map_err(|e| self.unavailable(e.to_string()))?;
                if info.label().trim_end() == self.config.token_label {
                    slot = Some(s);
                    break;
                }
            }
            let slot = slot.ok_or_else(|| {
                self.unavailable(format!("no token labelled {:?}", self.config.token_label))
            })?;
            let session = ctx.open_ro_session(slot).map_err(|e| self.unavailable(e.to_string()))?;
            if let Some(pin) = &self.config.pin {
                match session.login(UserType::User, Some(&AuthPin::from(pin.as_str()))) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                    Err(e) => return Err(self.unavailable(format!("login: {e}"))),
                }
            }
            self.ctx = Some(ctx);
            self.session = Some(session);
        }
        self.session.as_ref().ok_or_else(|| Error::Config("no session".into()))
    }
}

impl EntropySource for Pkcs11Source {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let n = buf.len().min(PER_CALL);
        let result = self.open().and_then(|session| {
            session
                .generate_random_slice(&mut buf[..n])
                .map_err(|e| Error::Other(format!("C_GenerateRandom: {e}").into()))
        });
        match result {
            Ok(()) => Ok(n),
            Err(e) => {
                // Open afresh next time: the token may come back.
                self.session = None;
                self.ctx = None;
                Err(match e {
                    Error::Other(m) => self.unavailable(m.to_string()),
                    other => other,
                })
            }
        }
    }
}
