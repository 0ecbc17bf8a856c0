//! systemd's service notification protocol (`sd_notify(3)`), spoken directly:
//! newline-separated `KEY=VALUE` datagrams to the socket in `$NOTIFY_SOCKET`.
//!
//! Under `Type=notify` systemd waits for `READY=1`. qkeyd sends it once every
//! listener is bound and the DRBG has been seeded: from a healthy source, or,
//! only when the operator turned on `[danger] os_fallback`, from the OS. A
//! daemon that cannot seed stays "activating" and says why in `STATUS=`. The
//! status line follows the pool's state in words, and with `WatchdogSec=` the
//! keep-alive is sent only while the async runtime is still turning over.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    config::EntropyMode,
    pool::{Pool, PoolSnapshot, Serving, SourceState},
};

/// Longest pause between two status looks at the pool.
const TICK: Duration = Duration::from_millis(500);
/// Pause between two tries to seed before READY.
const POLL: Duration = Duration::from_millis(50);

/// Where systemd listens, from the environment it gave us.
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// With `$NOTIFY_SOCKET` set (systemd's `Type=notify`), report
    /// readiness, status and watchdog keep-alives from a thread of its own,
    /// with a heartbeat of the async runtime for the watchdog. Called once
    /// every listener is bound, inside the runtime.
    pub(crate) fn start(pool: Arc<Pool>) -> anyhow::Result<Option<Arc<Self>>> {
        use anyhow::Context as _;
        let Some(notifier) = Self::from_env().context("reading $NOTIFY_SOCKET")? else {
            return Ok(None);
        };
        let notifier = Arc::new(notifier);
        let heartbeat = Heartbeat::new();
        let beat = heartbeat.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                beat.beat();
            }
        });
        notifier.clone().spawn(pool, heartbeat).context("starting the notifier threads")?;
        Ok(Some(notifier))
    }
    /// The notifier systemd asked for, if it asked. `$WATCHDOG_USEC` counts
    /// only when `$WATCHDOG_PID` is unset or names this process.
    pub(crate) fn from_env() -> io::Result<Option<Self>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        let for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Ok(Some(Self { socket: UnixDatagram::unbound()?, addr, watchdog }))
    }

    /// Send one notification.
    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }

    /// Tell the service manager that qkeyd is stopping.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Run the notifier: one thread sends READY once the pool has been seeded,
    /// another STATUS whenever the pool's state in words changes and WATCHDOG
    /// while `alive` keeps moving.
    pub(crate) fn spawn(self: Arc<Self>, pool: Arc<Pool>, alive: Heartbeat) -> io::Result<()> {
        let (me, seeded) = (self.clone(), pool.clone());
        thread::Builder::new().name("qkeyd-ready".into()).spawn(move || me.ready(&seeded))?;
        thread::Builder::new()
            .name("qkeyd-notify".into())
            .spawn(move || self.watch(&pool, &alive))?;
        Ok(())
    }

    /// Wait for the first seed, then say READY.
    fn ready(&self, pool: &Pool) {
        loop {
            // An empty draw instantiates the DRBG from a fresh seed. Only
            // tried once the pool says it could serve, so that a daemon with
            // no healthy source does not wait out a seed timeout every turn.
            let seeded = match pool.serving().map(|_| pool.fill(&mut [])) {
                Some(Ok(Serving::Sources)) => true,
                Some(Ok(Serving::OsFallback)) => pool.snapshot().mode == EntropyMode::OsFallback,
                Some(Err(_)) | None => false,
            };
            if seeded {
                tracing::info!("DRBG seeded; telling the service manager we are ready");
                self.send(&format!("READY=1\nSTATUS={}", status_line(&pool.snapshot())));
                return;
            }
            thread::sleep(POLL);
        }
    }

    fn watch(&self, pool: &Pool, alive: &Heartbeat) {
        let tick = self.watchdog.map_or(TICK, |w| (w / 2).min(TICK));
        let mut last_status = String::new();
        loop {
            let mut lines = Vec::new();
            let status = status_line(&pool.snapshot());
            if status != last_status {
                lines.push(format!("STATUS={status}"));
                last_status = status;
            }
            if self.watchdog.is_some_and(|w| alive.age() < w) {
                lines.push("WATCHDOG=1".to_owned());
            }
            if !lines.is_empty() {
                self.send(&lines.join("\n"));
            }
            thread::sleep(tick);
        }
    }
}

/// Proof that the async runtime still runs tasks: a task stamps it every
/// second, and the watchdog keep-alive is withheld once the stamp is older
/// than the watchdog interval.
#[derive(Clone)]
pub(crate) struct Heartbeat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    /// A heartbeat stamped now.
    pub(crate) fn new() -> Self {
        Self { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    /// Stamp it.
    pub(crate) fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The pool's state in a line of words, loud when it cannot serve from its
/// sources. Names and states only: nothing secret.
pub(crate) fn status_line(snap: &PoolSnapshot) -> String {
    let healthy = snap.sources.iter().filter(|s| s.state == SourceState::Healthy).count();
    let others: Vec<String> = snap
        .sources
        .iter()
        .filter(|s| s.state != SourceState::Healthy)
        .map(|s| format!("{} {}", s.name, state_word(s.state)))
        .collect();
    let others = if others.is_empty() { String::new() } else { format!("; {}", others.join(", ")) };
    let total = snap.sources.len();
    match snap.serving {
        Some(Serving::Sources) => {
            let min_trust = snap
                .sources
                .iter()
                .filter(|s| s.state == SourceState::Healthy)
                .map(|s| s.trust_score)
                .fold(1.0_f64, f64::min);
            format!(
                "serving from {healthy} of {total} sources, lowest trust {min_trust:.2}{others}"
            )
        }
        Some(Serving::OsFallback) => {
            format!("OS FALLBACK: no healthy source, serving getrandom(2){others}")
        }
        None if snap.sources.iter().any(|s| s.state == SourceState::Startup) => {
            format!("starting: sources in their start-up tests{others}")
        }
        None => format!("FAIL-CLOSED: no healthy entropy source, refusing to serve{others}"),
    }
}

fn state_word(state: SourceState) -> &'static str {
    match state {
        SourceState::Startup => "in start-up",
        SourceState::Healthy => "healthy",
        SourceState::Quarantined => "quarantined",
        SourceState::Failed => "failed",
        SourceState::Unavailable => "unavailable",
        SourceState::Distrusted => "distrusted",
    }
}
