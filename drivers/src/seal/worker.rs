//! One thread per sealer: its HSM or TPM handles live there (a PKCS#11
//! sealer's inline session, opened and closed there, is the one handle other
//! threads use, one at a time), and a backend that stops answering must not
//! stall its callers forever.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::mpsc,
    thread,
    time::Duration,
};

use super::{InlineKeys, Sealer};
use crate::Error;

type Job = Box<dyn FnOnce(&mut dyn Sealer) + Send>;

/// A sealer on a thread of its own. Cloning gives another handle to the same
/// thread; calls run one at a time, in order.
#[derive(Clone)]
pub struct SealerWorker {
    tx: mpsc::Sender<Job>,
    kind: &'static str,
    timeout: Duration,
    inline: Option<std::sync::Arc<dyn InlineKeys>>,
}

impl std::fmt::Debug for SealerWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealerWorker")
            .field("kind", &self.kind)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SealerWorker {
    /// Move `sealer` to a new thread. Each call waits at most `timeout`.
    pub fn spawn(mut sealer: Box<dyn Sealer>, timeout: Duration) -> std::io::Result<Self> {
        let kind = sealer.kind();
        let inline = sealer.inline_keys();
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new().name(format!("qkeyd-seal-{kind}")).spawn(move || {
            for job in rx {
                // A panicking backend fails that call (its reply is dropped);
                // the thread keeps serving.
                let _ = catch_unwind(AssertUnwindSafe(|| job(sealer.as_mut())));
            }
        })?;
        Ok(Self { tx, kind, timeout, inline })
    }

    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The backend's [`InlineKeys`], if it has them.
    pub fn inline(&self) -> Option<&dyn InlineKeys> {
        self.inline.as_deref()
    }

    /// How long [`SealerWorker::call`] waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Queue `op` on the sealer's thread and return at once; `done` gets its
    /// result there (or a backend error if the thread has stopped, or if `op`
    /// panicked). For callers that wait their own way (an async task awaiting
    /// a channel, with its own timeout) instead of blocking a thread.
    pub fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Sealer) -> Result<T, Error> + Send + 'static,
        done: impl FnOnce(Result<T, Error>) + Send + 'static,
    ) {
        // Called exactly once: with the result, or from the guard's drop if
        // the job never ran or `op` panicked.
        struct Once<F: FnOnce(Result<T, Error>), T>(Option<F>, std::marker::PhantomData<T>);
        impl<F: FnOnce(Result<T, Error>), T> Drop for Once<F, T> {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f(Err(Error::Backend("the sealer failed while handling the call".into())));
                }
            }
        }
        let mut guard = Once(Some(done), std::marker::PhantomData);
        let job: Job = Box::new(move |s| {
            let r = op(s);
            if let Some(f) = guard.0.take() {
                f(r);
            }
        });
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            // Dropping the job drops the guard, which reports the failure.
            drop(job);
        }
    }

    /// Run `op` on the sealer's thread and wait for it, at most the timeout.
    pub fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Sealer) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, result) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move |s| {
                let _ = reply.send(op(s));
            }))
            .map_err(|_| Error::Backend("the sealer thread has stopped".into()))?;
        match result.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout(self.timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::Backend("the sealer failed while handling the call".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{Sealed, Secret};

    struct Slow(Duration);

    impl Sealer for Slow {
        fn kind(&self) -> &'static str {
            "slow"
        }
        fn seal(&mut self, _: &str, _: &[u8], _: &[u8]) -> Result<Sealed, Error> {
            thread::sleep(self.0);
            Ok(Sealed { backend: "slow".into(), object: None, blob: vec![] })
        }
        #[allow(clippy::panic_in_result_fn)]
        fn unseal(&mut self, _: &Sealed, _: &[u8]) -> Result<Secret, Error> {
            panic!("backend bug")
        }
        fn destroy(&mut self, _: &Sealed) -> Result<(), Error> {
            Ok(())
        }
        fn check(&mut self) -> Result<(), Error> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_backend_times_out_and_a_panicking_one_keeps_serving() {
        let stalled = SealerWorker::spawn(
            Box::new(Slow(Duration::from_millis(300))),
            Duration::from_millis(50),
        )
        .unwrap();
        assert!(matches!(stalled.call(|s| s.seal("a", b"", b"")), Err(Error::Timeout(_))));
        let w =
            SealerWorker::spawn(Box::new(Slow(Duration::ZERO)), Duration::from_secs(30)).unwrap();
        let sealed = Sealed { backend: "slow".into(), object: None, blob: vec![] };
        let err = w.call(move |s| s.unseal(&sealed, b"")).unwrap_err();
        assert!(err.to_string().contains("failed while handling"), "{err}");
        assert!(w.call(|s| s.check()).is_ok());
    }

    #[test]
    fn submit_reports_exactly_once_even_when_the_backend_panics() {
        let w =
            SealerWorker::spawn(Box::new(Slow(Duration::ZERO)), Duration::from_secs(30)).unwrap();
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        w.submit(|s| s.check(), move |r| t.send(r.is_ok()).unwrap());
        let sealed = Sealed { backend: "slow".into(), object: None, blob: vec![] };
        let t = tx.clone();
        w.submit(move |s| s.unseal(&sealed, b"").map(|_| ()), move |r| t.send(r.is_ok()).unwrap());
        drop(tx);
        let got: Vec<bool> = rx.iter().collect();
        assert_eq!(got, vec![true, false]);
    }
}
