//! The connection to the token: opened lazily and logged in, dropped after a
//! transient failure and opened again (re-initialising the library, so that
//! a token that came back is seen again), with the inline session beside it.

use std::{collections::HashMap, path::Path};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CkError, RvError},
    session::{Session, UserType},
    types::AuthPin,
};

use super::{Pkcs11Config, Pkcs11Sealer, inline::InlineSession, lock, map_err};
use crate::Error;

/// `C_Initialize`, one caller at a time in this process; already initialised
/// (by the other user of the module) is fine. The HSM sealer and a `pkcs11`
/// entropy source on the same module load it from two threads, and a module
/// need not survive two `C_Initialize` calls at once: SoftHSM2's second one
/// resets the first's sessions and login.
pub(crate) fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How long a reconnect waits for a caller inside the inline session.
pub(super) const INLINE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// An open, logged-in session and what it came from.
pub(super) struct Connection {
    // Field order: the session closes before the library is finalised.
    session: Session,
    slot: cryptoki::slot::Slot,
    /// The token's serial number (CK_TOKEN_INFO), as it reports it.
    pub(super) serial: String,
    _ctx: Pkcs11,
}

impl Pkcs11Sealer {
    /// Drop the connection, so the next call reconnects: the inline session
    /// first (the library cannot be loaded afresh while any session of it
    /// lives). A caller still inside the inline session gets
    /// [`INLINE_WAIT`]; if it is still there (a hung token), the connection
    /// stays for now and the next failure tries again, so this thread is
    /// never stuck behind it.
    pub(super) fn disconnect(&mut self) {
        let Some(mut g) = self.inline.lock_within(INLINE_WAIT) else { return };
        *g = None;
        drop(g);
        self.conn = None;
        self.handles.clear();
    }

    /// A key was made or destroyed: the inline session drops its copies and
    /// handles, now if it is free within [`INLINE_WAIT`], else when its
    /// caller finishes (see [`Pkcs11Inline::run`](super::inline::Pkcs11Inline::run)).
    pub(super) fn forget_inline(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.inline.epoch.fetch_add(1, SeqCst);
        let Some(mut g) = self.inline.lock_within(INLINE_WAIT) else { return };
        if let Some(inline) = g.as_mut()
            && !inline.catch_up(self.inline.epoch.load(SeqCst))
        {
            *g = None;
        }
    }

    fn connect(config: &Pkcs11Config) -> Result<Connection, Error> {
        let module: &Path = &config.module;
        let ctx = Pkcs11::new(module).map_err(|e| {
            Error::Backend(format!("cannot load PKCS#11 module {}: {e}", module.display()))
        })?;
        // A library that cannot initialise cannot reach its token (SoftHSM2
        // answers CKR_GENERAL_ERROR while its token store is gone): the
        // backend is unavailable, a state a later connect may end.
        // Already initialised: a `pkcs11` entropy source on the same module
        // holds the library too. The library then stays as it is.
        if let Err(e) = initialize(&ctx) {
            return Err(match map_err(e) {
                Error::Backend(m) => Error::SealerUnavailable(m),
                other => other,
            });
        }
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(map_err)? {
            let info = ctx.get_token_info(slot).map_err(map_err)?;
            if info.label().trim_end() == config.token_label {
                found = Some((slot, info.serial_number().trim_end().to_owned()));
                break;
            }
        }
        let (slot, serial) = found.ok_or_else(|| {
            Error::SealerUnavailable(format!("no token labelled {:?}", config.token_label))
        })?;
        let session = ctx.open_rw_session(slot).map_err(map_err)?;
        let pin = AuthPin::from(config.pin.as_str());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(map_err(e)),
        }
        Ok(Connection { session, slot, serial, _ctx: ctx })
    }

    pub(super) fn session(&mut self) -> Result<&Session, Error> {
        if self.conn.is_none() {
            let conn = Self::connect(&self.config)?;
            // Without a second session the inline path just stays closed.
            if let Ok(session) = conn._ctx.open_rw_session(conn.slot) {
                let epoch = self.inline.epoch.load(std::sync::atomic::Ordering::SeqCst);
                *lock(&self.inline.slot) =
                    Some(InlineSession { session, keys: HashMap::new(), epoch });
            }
            self.conn = Some(conn);
        }
        match &self.conn {
            Some(c) => Ok(&c.session),
            None => Err(Error::SealerUnavailable("not connected".into())),
        }
    }

    /// Run `op` on the session; on a transient failure, drop the connection so
    /// the next call reconnects.
    pub(super) fn with_session<T>(
        &mut self,
        op: impl FnOnce(&Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let result = self.session().and_then(op);
        if let Err(e) = &result
            && e.is_transient()
        {
            self.disconnect();
        }
        result
    }
}
