//! This process's id, without a system call on every PKCS#11 call. The
//! module compares it with the process that initialised it, on every call,
//! to tell a fork's child from its parent; `getpid` each time was a
//! measurable share of a C_GenerateRandom. Once C_Initialize has installed a
//! fork handler (`ffi`: `pthread_atfork`, whose child handler calls
//! [`forked`]), the id is read from memory; until then, or if installing it
//! failed, it is asked for every time.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);
static WATCHED: AtomicBool = AtomicBool::new(false);

/// This process's id.
pub(crate) fn current() -> u32 {
    if WATCHED.load(Ordering::Acquire) {
        return PID.load(Ordering::Acquire);
    }
    std::process::id()
}

/// The fork handler is installed: from now on the remembered id is right.
pub(crate) fn watched() {
    PID.store(std::process::id(), Ordering::Release);
    WATCHED.store(true, Ordering::Release);
}

/// In a fork's child, before anything else runs there.
pub(crate) fn forked() {
    PID.store(std::process::id(), Ordering::Release);
}
