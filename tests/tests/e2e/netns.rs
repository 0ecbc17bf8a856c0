//! Separate hosts on one machine: each in a network namespace of its own,
//! with its own loopback and an `eth0` on a LAN private to the test (a
//! bridge in the root namespace, on an unused 10.x.y.0/24, whose address
//! `.1` is where the root namespace's services listen for the hosts).
//!
//! This needs root and iproute2's `ip`. Where `ip netns add` fails, or with
//! `QKEYD_E2E_NO_NETNS=1` (to run the fallback on a machine that could do
//! better), [`Lan::new`] answers `None` and says once on stderr that the
//! hosts share this machine's loopback instead.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    sync::{
        Mutex, Once, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
};

/// Set to anything but `0` to keep every host on the shared loopback.
const NO_NETNS: &str = "QKEYD_E2E_NO_NETNS";
/// Namespace names: this prefix, the test process's pid, a counter.
const NS_PREFIX: &str = "qkeyd-e2e-";

/// Bridge, veth and namespace names in this process (the tests of one
/// binary run in parallel threads, each with its LAN).
static NEXT: AtomicU32 = AtomicU32::new(0);
/// Held while a LAN picks its subnet and takes it, so that two in this
/// process never pick the same one.
static PICKING: Mutex<()> = Mutex::new(());

/// A bridge in the root namespace with hosts on it; removed on drop.
pub(crate) struct Lan {
    bridge: String,
    /// The first three octets of its /24.
    net: [u8; 3],
    /// How many hosts it has had.
    hosts: u8,
}

impl Lan {
    /// A fresh LAN, or `None` where this machine cannot make namespaces.
    pub(crate) fn new() -> Option<Self> {
        if std::env::var_os(NO_NETNS).is_some_and(|v| v != "0") {
            fallback(&format!("{NO_NETNS} is set"));
            return None;
        }
        sweep();
        let probe = format!("{NS_PREFIX}{}-{}", std::process::id(), next());
        if let Err(e) = ip(&["netns", "add", &probe]) {
            fallback(&e);
            return None;
        }
        let _ = ip(&["netns", "del", &probe]);
        let _picking = PICKING.lock().unwrap_or_else(PoisonError::into_inner);
        let net = free_subnet();
        let lan = Self { bridge: link_name('b'), net, hosts: 0 };
        must(&["link", "add", &lan.bridge, "type", "bridge"]);
        must(&["addr", "add", &format!("{}/24", lan.gateway()), "dev", &lan.bridge]);
        must(&["link", "set", &lan.bridge, "up"]);
        Some(lan)
    }

    /// The bridge's address: where the hosts reach the root namespace.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// A new host: its namespace with `lo` up and an `eth0` on this LAN at
    /// the next free address.
    pub(crate) fn host(&mut self) -> Host {
        assert!(self.hosts < 250, "a /24 holds no more hosts");
        self.hosts += 1;
        let [a, b, c] = self.net;
        let host = Host {
            ns: format!("{NS_PREFIX}{}-{}", std::process::id(), next()),
            addr: Ipv4Addr::new(a, b, c, 1 + self.hosts),
            veth: link_name('v'),
        };
        let (ns, veth) = (host.ns.as_str(), host.veth.as_str());
        must(&["netns", "add", ns]);
        must(&["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        must(&["link", "set", veth, "master", &self.bridge, "up"]);
        must(&["-n", ns, "addr", "add", &format!("{}/24", host.addr), "dev", "eth0"]);
        must(&["-n", ns, "link", "set", "eth0", "up"]);
        must(&["-n", ns, "link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// One host of a [`Lan`]: a network namespace; removed on drop (stop its
/// processes first, or the namespace lives on with them).
pub(crate) struct Host {
    /// The namespace's name, for `ip netns exec`.
    pub(crate) ns: String,
    /// Its address on the LAN.
    pub(crate) addr: Ipv4Addr,
    /// The root namespace's end of its `eth0`.
    veth: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        // The root end first: `eth0` goes with it even if a process still
        // holds the namespace.
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

fn next() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `qk<pid><kind><n>`: at most 15 bytes (IFNAMSIZ) for any Linux pid.
fn link_name(kind: char) -> String {
    format!("qk{}{kind}{}", std::process::id(), next())
}

/// Say once per test binary why the hosts share loopback.
fn fallback(why: &str) {
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        eprintln!(
            "e2e: no network namespaces ({why}): the cluster's nodes share this machine's \
             loopback"
        );
    });
}

/// Run `ip ARGS`; its stdout, or what went wrong.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("ip {}: {}", args.join(" "), err.trim()))
    }
}

fn must(args: &[&str]) {
    ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// A random 10.x.y.0/24 that no address or route of this machine overlaps.
fn free_subnet() -> [u8; 3] {
    let mut used: Vec<(u32, u32)> = Vec::new();
    let addrs = ip(&["-4", "-o", "addr", "show"]).unwrap_or_else(|e| panic!("{e}"));
    let routes = ip(&["-4", "route", "show", "table", "all"]).unwrap_or_else(|e| panic!("{e}"));
    for line in addrs.lines() {
        let mut words = line.split_whitespace().skip_while(|w| *w != "inet").skip(1);
        used.extend(words.next().and_then(cidr));
    }
    for line in routes.lines() {
        used.extend(line.split_whitespace().find_map(cidr));
    }
    for _ in 0..100 {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).expect("getrandom");
        // 10.100.0.0 to 10.199.255.0: clear of the 10.0.0.0/24 the apiservers
        // take for services.
        let net = [10, 100 + r[0] % 100, r[1]];
        let ours = u32::from(Ipv4Addr::new(net[0], net[1], net[2], 0));
        // Agreeing on the shorter prefix of the two (a default route,
        // 0.0.0.0/0, takes no subnet).
        let overlaps = |&(addr, len): &(u32, u32)| {
            let mask = u32::MAX.checked_shl(32 - len.min(24)).unwrap_or(0);
            len > 0 && addr & mask == ours & mask
        };
        if !used.iter().any(overlaps) {
            return net;
        }
    }
    panic!("no free 10.x.y.0/24 for a test LAN; in use: {addrs}\n{routes}");
}

/// `a.b.c.d/len` or `a.b.c.d` as (address, prefix length).
fn cidr(word: &str) -> Option<(u32, u32)> {
    let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len.parse().ok().filter(|l| *l <= 32)?))
}

/// Remove the namespaces and links a test binary that is gone left behind
/// (killed before its drops ran), so that their subnets free up.
fn sweep() {
    let gone = |pid: &str| !pid.is_empty() && !Path::new("/proc").join(pid).exists();
    for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|r| r.split('-').next())
            && pid.bytes().all(|b| b.is_ascii_digit())
            && gone(pid)
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in ip(&["-o", "link", "show"]).unwrap_or_default().lines() {
        // "7: qk1234v3@if2: <BROADCAST,..." (the peer after `@`).
        let name = line.split_whitespace().nth(1).unwrap_or_default();
        let name = name.trim_end_matches(':').split('@').next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("qk") else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let (kind, n) = (rest[pid.len()..].chars().next(), rest[pid.len()..].get(1..));
        let n = n.unwrap_or_default();
        if matches!(kind, Some('b' | 'v'))
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && gone(&pid)
        {
            let _ = ip(&["link", "del", name]);
        }
    }
}
