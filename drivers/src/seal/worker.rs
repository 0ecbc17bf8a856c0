//! One thread per sealer: HSM and TPM handles are not shared between threads,
//! and a backend that stops answering must not stall its callers forever.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::mpsc,
    thread,
    time::Duration,
};

use super::{SealError, Sealer};

type Job = Box<dyn FnOnce(&mut dyn Sealer) + Send>;

/// A sealer on a thread of its own. Cloning gives another handle to the same
/// thread; calls run one at a time, in order.
#[derive(Clone)]
pub struct SealerWorker {
    tx: mpsc::Sender<Job>,
    kind: &'static str,
    timeout: Duration,
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
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new().name(format!("qkeyd-seal-{kind}")).spawn(move || {
            for job in rx {
                // A panicking backend fails that call (its reply is dropped);
                // the thread keeps serving.
                let _ = catch_unwind(AssertUnwindSafe(|| job(sealer.as_mut())));
            }
        })?;
        Ok(Self { tx, kind, timeout })
    }

    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Run `op` on the sealer's thread and wait for it, at most the timeout.
    pub fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Sealer) -> Result<T, SealError> + Send + 'static,
    ) -> Result<T, SealError> {
        let (reply, result) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move |s| {
                let _ = reply.send(op(s));
            }))
            .map_err(|_| SealError::Backend("the sealer thread has stopped".into()))?;
        match result.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(SealError::Timeout(self.timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(SealError::Backend("the sealer failed while handling the call".into()))
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
        fn seal(&mut self, _: &str, _: &[u8], _: &[u8]) -> Result<Sealed, SealError> {
            thread::sleep(self.0);
            Ok(Sealed { backend: "slow".into(), object: None, blob: vec![] })
        }
        #[allow(clippy::panic_in_result_fn)]
        fn unseal(&mut self, _: &Sealed, _: &[u8]) -> Result<Secret, SealError> {
            panic!("backend bug")
        }
        fn destroy(&mut self, _: &Sealed) -> Result<(), SealError> {
            Ok(())
        }
        fn check(&mut self) -> Result<(), SealError> {
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
        assert!(matches!(stalled.call(|s| s.seal("a", b"", b"")), Err(SealError::Timeout(_))));
        let w =
            SealerWorker::spawn(Box::new(Slow(Duration::ZERO)), Duration::from_secs(30)).unwrap();
        let sealed = Sealed { backend: "slow".into(), object: None, blob: vec![] };
        let err = w.call(move |s| s.unseal(&sealed, b"")).unwrap_err();
        assert!(err.to_string().contains("failed while handling"), "{err}");
        assert!(w.call(|s| s.check()).is_ok());
    }
}
