//! Status: a real round trip through the backend, one at a time, its answer
//! reused for `status_cache`.
//!
//! A call that finds the answer stale while another call is checking waits
//! for that check (on no thread) and takes its answer, so a crowd of Status
//! calls at the moment the answer expires makes one round trip through the
//! backend, not one each. A cached unsealed KEK never answers Status.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use zeroize::Zeroizing;

use super::{
    Kms, KmsError,
    format::{IV_LEN, aad},
    kek::Route,
    lock,
};

/// A check's answer: the write key id, or why the backend failed.
type Answer = Result<String, Arc<KmsError>>;

/// The last real check and the lock that makes checks one at a time.
pub(super) struct StatusCache {
    /// When the last check ran, and its answer.
    last: Mutex<Option<(Instant, Answer)>>,
    /// Held while a check runs.
    checking: tokio::sync::Mutex<()>,
    /// Real checks since start.
    checks: AtomicU64,
    /// How long an answer is reused.
    ttl: Duration,
    /// The last real check's outcome, for operators.
    outcome: Mutex<Option<CheckOutcome>>,
}

/// How the last real Status check went: no key id, no error text.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(crate) struct CheckOutcome {
    /// Whether the round trip through the backend passed.
    pub(crate) ok: bool,
    /// When it ended, Unix seconds.
    pub(crate) at_unix: u64,
    /// How long it took, seconds.
    pub(crate) seconds: f64,
}

impl StatusCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            last: Mutex::new(None),
            checking: tokio::sync::Mutex::new(()),
            checks: AtomicU64::new(0),
            ttl,
            outcome: Mutex::new(None),
        }
    }

    /// The answer of a check within `ttl`, if there is one.
    fn fresh(&self) -> Option<Result<String, KmsError>> {
        match lock(&self.last).as_ref() {
            Some((at, r)) if at.elapsed() < self.ttl => {
                Some(r.clone().map_err(KmsError::LastCheck))
            }
            _ => None,
        }
    }

    /// Real checks since start.
    pub(super) fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// The last real check's outcome.
    pub(super) fn outcome(&self) -> Option<CheckOutcome> {
        *lock(&self.outcome)
    }

    /// Forget the answer (the write key changed).
    pub(super) fn clear(&self) {
        *lock(&self.last) = None;
    }
}

impl Kms {
    /// Status: the write key id after a real Encrypt/Decrypt round trip
    /// through the backend, reused for `status_cache`. Fails (and so makes
    /// kube-apiserver stop trusting the key) when the backend or the pool
    /// cannot serve.
    pub(crate) async fn status(self: &Arc<Self>) -> Result<String, KmsError> {
        if let Some(r) = self.status.fresh() {
            return r;
        }
        let _one = self.status.checking.lock().await;
        if let Some(r) = self.status.fresh() {
            return r;
        }
        self.status.checks.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = self.probe().await;
        *lock(&self.status.outcome) = Some(CheckOutcome {
            ok: r.is_ok(),
            at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            seconds: started.elapsed().as_secs_f64(),
        });
        // A rotation while the probe ran has made its key id stale: answer
        // with it this once, but do not keep it.
        let current = lock(&self.file).write.clone();
        match r {
            Ok(key_id) => {
                if current.as_ref() == Some(&key_id) {
                    *lock(&self.status.last) = Some((Instant::now(), Ok(key_id.clone())));
                }
                Ok(key_id)
            }
            Err(e) => {
                let e = Arc::new(e);
                *lock(&self.status.last) = Some((Instant::now(), Err(e.clone())));
                Err(KmsError::LastCheck(e))
            }
        }
    }

    /// One round trip of fresh pool bytes through the write KEK's backend.
    async fn probe(self: &Arc<Self>) -> Result<String, KmsError> {
        let permit = self.permit().await?;
        let record = self.write_record(&permit).await?;
        let kek = self.kek(&record, Route::Backend, &permit).await?;
        let mut probe = Zeroizing::new(vec![0u8; 32]);
        self.pool.fill(&mut probe)?;
        let mut iv = [0u8; IV_LEN];
        self.pool.fill(&mut iv)?;
        let a = aad(&record.key_id);
        let body =
            self.seal_with(&kek, Route::Backend, &iv, a.clone(), probe.clone(), &permit).await?;
        let back =
            self.open_with(&kek, Route::Backend, &iv, a, &body, &record.key_id, &permit).await?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&back[..], &probe[..])) {
            return Err(KmsError::RoundTrip(record.key_id));
        }
        Ok(record.key_id)
    }
}
