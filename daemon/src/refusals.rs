//! Refused connections on qkeyd's sockets: every one counted in
//! `qkeyd_connections_refused_total{socket, reason}`, at most one log line per
//! [`WINDOW`] per socket, so a flood of connections cannot flood the log.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::IntCounterVec;

/// At most one refusal line per socket in this long.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// One socket's refusals.
pub(crate) struct Refusals {
    socket: &'static str,
    counter: IntCounterVec,
    window: Mutex<Window>,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").field("socket", &self.socket).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Window {
    /// When the last line was logged.
    logged: Option<Instant>,
    /// Refusals since then that were only counted.
    unlogged: u64,
}

impl Refusals {
    /// Refusals on `socket` (the metric's `socket` label), counted in `counter`.
    pub(crate) fn new(socket: &'static str, counter: IntCounterVec) -> Self {
        Self { socket, counter, window: Mutex::new(Window::default()) }
    }

    /// Count a refusal for `reason` (a fixed word), and call `log` with the
    /// number of refusals since the last line, unless a line was logged in the
    /// last [`WINDOW`].
    pub(crate) fn refuse(&self, reason: &'static str, log: impl FnOnce(u64)) {
        self.refuse_at(Instant::now(), reason, log);
    }

    /// Refusals counted for `reason`.
    #[cfg(test)]
    pub(crate) fn counted(&self, reason: &str) -> u64 {
        self.counter.with_label_values(&[self.socket, reason]).get()
    }

    fn refuse_at(&self, now: Instant, reason: &'static str, log: impl FnOnce(u64)) {
        self.counter.with_label_values(&[self.socket, reason]).inc();
        let unlogged = {
            let mut w = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if w.logged.is_some_and(|t| now.duration_since(t) < WINDOW) {
                w.unlogged += 1;
                return;
            }
            w.logged = Some(now);
            std::mem::take(&mut w.unlogged)
        };
        log(unlogged);
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    #[test]
    fn a_flood_is_counted_whole_and_logged_once_per_window() {
        let counter = IntCounterVec::new(Opts::new("r", "r"), &["socket", "reason"]).unwrap();
        let r = Refusals::new("module", counter.clone());
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for i in 0..225u32 {
            let reason = if i % 2 == 0 { "uid" } else { "uid_share" };
            r.refuse_at(t0 + Duration::from_millis(u64::from(i)), reason, |n| lines.push(n));
        }
        assert_eq!(lines, [0], "one line for the whole burst");
        assert_eq!(counter.with_label_values(&["module", "uid"]).get(), 113);
        assert_eq!(counter.with_label_values(&["module", "uid_share"]).get(), 112);
        // The next line, a window later, says how many went unlogged.
        r.refuse_at(t0 + WINDOW + Duration::from_secs(1), "uid", |n| lines.push(n));
        assert_eq!(lines, [0, 224]);
    }
}
