//! A small etcd v3 KV client: Range, Put, DeleteRange and Txn over tonic, from
//! our own subset of etcd's API (`proto/etcd_kv.proto`, compiled by protox,
//! so no `protoc`; the `etcd-client` crate needs one).
//!
//! Each endpoint gets its own channel, dialled on first use, so a node starts
//! with etcd down. A call goes to the endpoint that last answered; it moves
//! on to the next one when the connection could not be made (nothing was
//! sent) and, for reads, after any transport failure. A write that may have
//! reached etcd is not sent twice: a repeated compare-and-swap would report
//! a race it won as lost. Every call, all attempts included, ends within the
//! configured timeout; one that got no answer drops that endpoint's
//! connection, so the next call dials afresh instead of waiting on a dead
//! one.
//!
//! `https://` endpoints speak rustls on aws-lc-rs (X25519MLKEM768 offered
//! first), trusting only etcd's CA, with an optional client certificate.
//! `http://` is for loopback only. The client key is read into a zeroizing
//! buffer, and its parsed form is cleared once the signing key is built; it
//! appears in no `Debug` and no error.

use std::{
    fmt,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rustls::pki_types::ServerName;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tonic::{
    Status,
    transport::{Channel, Endpoint, Uri},
};

/// Code generated from `proto/etcd_kv.proto` (package `etcdserverpb`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;

/// The largest answer taken (tonic's default is 4 MiB): a `list` of the
/// cluster's prefix returns every record and envelope at once.
const MAX_ANSWER: usize = 64 << 20;

/// A connection to an etcd cluster. Cheap to clone: clones share the
/// connections.
#[derive(Clone)]
pub(crate) struct Etcd {
    inner: Arc<Inner>,
}

/// A key as etcd holds it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Kv {
    /// The key.
    pub(crate) key: Vec<u8>,
    /// Its value.
    pub(crate) value: Vec<u8>,
    /// The revision that created the key (since it was last deleted).
    pub(crate) create_revision: i64,
    /// The revision that last changed it.
    pub(crate) mod_revision: i64,
}

/// The state of a key range, as [`Etcd::stamp`] sums it up: equal stamps
/// mean nothing in the range changed between them.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Stamp {
    /// Keys in the range.
    pub(crate) count: i64,
    /// The highest revision that changed one of them (0: none).
    pub(crate) mod_revision: i64,
}

/// A condition of a [`Etcd::txn`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Cmp {
    /// The key does not exist (its create revision is 0).
    Absent(Vec<u8>),
    /// The key was last changed at this revision (so: exists, unchanged).
    ModRevision(Vec<u8>, i64),
}

/// A write of a [`Etcd::txn`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Op {
    /// Store a value under a key.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a key.
    Delete(Vec<u8>),
    /// Delete every key that starts with this (non-empty) prefix.
    DeletePrefix(Vec<u8>),
}

/// Why an etcd call or setting failed. Names endpoints and files, never
/// key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EtcdError {
    /// No answer: the connection failed, the call timed out, or etcd said
    /// it cannot serve now (Unavailable, DeadlineExceeded). Each endpoint
    /// tried and why, `URL: reason`, joined by `; `.
    #[error("etcd is unreachable at {0}")]
    Unreachable(String),
    /// etcd answered with an error (permission denied, a bad request…):
    /// `URL: message (code)`.
    #[error("etcd refused the request at {0}")]
    Refused(String),
    /// The settings cannot work: a bad endpoint URL, an unreadable or
    /// unusable TLS file, an empty prefix to delete.
    #[error("{0}")]
    Config(String),
}

/// The first key after every key that starts with `prefix`: etcd's range end
/// for a prefix (clientv3 `GetPrefixRangeEnd`). The last byte below 0xff is
/// incremented and what follows it dropped; a prefix of only 0xff bytes (or
/// none) has no such key, and gets `[0]`, which etcd reads as "to the end".
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

impl Etcd {
    /// A client of the etcd cluster at `endpoints`. Checks the settings and
    /// builds the TLS configuration; connects to nothing yet, and needs no
    /// runtime until the first call.
    pub(crate) fn new(
        endpoints: Vec<String>,
        tls: Option<Tls>,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::Config("no etcd endpoints: give etcd's client URLs".into()));
        }
        if timeout.is_zero() {
            return Err(EtcdError::Config("the etcd timeout must be above zero".into()));
        }
        let urls = endpoints.iter().map(|e| parse_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        let https = urls.iter().find(|u| u.https);
        let tls = match (&tls, https) {
            (None, Some(u)) => {
                return Err(EtcdError::Config(format!(
                    "etcd endpoint {} is https://, which needs ca_file: the CA that signed \
                     etcd's server certificate",
                    u.url
                )));
            }
            (Some(_), None) => {
                return Err(EtcdError::Config(
                    "etcd ca_file, cert_file and key_file are for https:// endpoints, and \
                     every endpoint is http://: use https:// or drop them"
                        .into(),
                ));
            }
            (Some(tls), Some(_)) => Some(TlsConnector::from(Arc::new(
                client_config(tls).map_err(|p| EtcdError::Config(p.anonymous()))?,
            ))),
            (None, None) => None,
        };
        // Several endpoints share the budget, so a dead first one leaves
        // time to try the others.
        let connect_timeout = timeout / u32::try_from(urls.len()).unwrap_or(u32::MAX);
        let members = urls
            .into_iter()
            .map(|u| Member::new(u, tls.as_ref(), connect_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { inner: Arc::new(Inner { members, preferred: AtomicUsize::new(0), timeout }) })
    }

    /// The key `key`, if it exists (a linearizable read).
    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<Kv>, EtcdError> {
        let req = pb::RangeRequest { key: key.to_vec(), ..Default::default() };
        let resp = self.range(req).await?;
        Ok(resp.kvs.into_iter().next().map(Kv::from))
    }

    /// Every key that starts with `prefix` (non-empty), in key order.
    pub(crate) async fn list(&self, prefix: &[u8]) -> Result<Vec<Kv>, EtcdError> {
        let req = pb::RangeRequest {
            key: non_empty(prefix)?.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        let resp = self.range(req).await?;
        Ok(resp.kvs.into_iter().map(Kv::from).collect())
    }

    /// What changes whenever anything under `prefix` does: the number of
    /// keys and the highest modification revision among them (one key,
    /// without its value). A put raises the revision; a delete alone lowers
    /// the count; revisions are never reused.
    pub(crate) async fn stamp(&self, prefix: &[u8]) -> Result<Stamp, EtcdError> {
        let req = pb::RangeRequest {
            key: non_empty(prefix)?.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: pb::range_request::SortOrder::Descend.into(),
            sort_target: pb::range_request::SortTarget::Mod.into(),
            keys_only: true,
            ..Default::default()
        };
        let resp = self.range(req).await?;
        Ok(Stamp {
            count: resp.count,
            mod_revision: resp.kvs.first().map_or(0, |kv| kv.mod_revision),
        })
    }

    /// One Range request; a read changes nothing, so any failure moves on
    /// to the next endpoint.
    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, EtcdError> {
        self.call(Retry::AfterAnyFailure, |mut c, t| {
            let req = timed(req.clone(), t);
            async move { c.range(req).await }
        })
        .await
    }

    /// Store `value` under `key`; the store's revision after the write.
    pub(crate) async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, EtcdError> {
        let req = pb::PutRequest { key: key.to_vec(), value: value.to_vec(), ..Default::default() };
        let resp = self
            .call(Retry::IfNotSent, |mut c, t| {
                let req = timed(req.clone(), t);
                async move { c.put(req).await }
            })
            .await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// If every condition of `compares` holds, apply `then` (atomically) and
    /// return true; else change nothing and return false.
    pub(crate) async fn txn(&self, compares: Vec<Cmp>, then: Vec<Op>) -> Result<bool, EtcdError> {
        let req = pb::TxnRequest {
            compare: compares.into_iter().map(pb::Compare::from).collect(),
            success: then.into_iter().map(request_op).collect::<Result<_, _>>()?,
            failure: Vec::new(),
        };
        let resp = self
            .call(Retry::IfNotSent, |mut c, t| {
                let req = timed(req.clone(), t);
                async move { c.txn(req).await }
            })
            .await?;
        Ok(resp.succeeded)
    }

    /// Run `rpc` (given a client and the time left) on the endpoints in
    /// turn, starting with the one that last answered, until one answers or
    /// `retry` forbids another attempt, all within the timeout.
    async fn call<T, F, Fut>(&self, retry: Retry, rpc: F) -> Result<T, EtcdError>
    where
        F: Fn(KvClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let inner = &*self.inner;
        let n = inner.members.len();
        let deadline = Instant::now() + inner.timeout;
        let start = inner.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for i in (start..n).chain(0..start) {
            let Some(m) = inner.members.get(i) else { break };
            let client = KvClient::new(m.channel()).max_decoding_message_size(MAX_ANSWER);
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = tokio::time::timeout_at(deadline, rpc(client, left)).await;
            let failure = match outcome {
                Ok(Ok(resp)) => {
                    inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => classify(&status),
                Err(_elapsed) => Failure::TimedOut,
            };
            // Whatever happens next, the next call starts elsewhere.
            let _ = inner.preferred.compare_exchange(
                i,
                (i + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            match failure {
                Failure::Refused(why) => {
                    return Err(EtcdError::Refused(format!("{}: {why}", m.url)));
                }
                Failure::NotSent(why) => failures.push(format!("{}: {why}", m.url)),
                Failure::Lost(why) => {
                    failures.push(format!("{}: {why}", m.url));
                    if retry == Retry::IfNotSent || Instant::now() >= deadline {
                        break;
                    }
                }
                Failure::TimedOut => {
                    m.hang_up();
                    failures.push(format!("{}: no answer within {:?}", m.url, inner.timeout));
                    break;
                }
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&str> = self.inner.members.iter().map(|m| m.url.as_str()).collect();
        f.debug_struct("Etcd")
            .field("endpoints", &urls)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl From<pb::KeyValue> for Kv {
    fn from(kv: pb::KeyValue) -> Self {
        Self {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

impl From<Cmp> for pb::Compare {
    fn from(c: Cmp) -> Self {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let (key, target, value) = match c {
            Cmp::Absent(key) => (key, CompareTarget::Create, TargetUnion::CreateRevision(0)),
            Cmp::ModRevision(key, rev) => (key, CompareTarget::Mod, TargetUnion::ModRevision(rev)),
        };
        Self {
            result: CompareResult::Equal.into(),
            target: target.into(),
            key,
            target_union: Some(value),
            range_end: Vec::new(),
        }
    }
}

/// The shared state of the clones of an [`Etcd`].
struct Inner {
    members: Vec<Member>,
    /// The member to try first: the last that answered.
    preferred: AtomicUsize,
    timeout: Duration,
}

/// One endpoint.
struct Member {
    /// `scheme://host:port`, for messages.
    url: String,
    endpoint: Endpoint,
    /// How an `https://` endpoint is dialled; `None` for `http://`.
    dial: Option<Dial>,
    /// The channel, made on first use and dropped when a call hangs.
    channel: Mutex<Option<Channel>>,
}

impl Member {
    fn new(
        u: Url,
        tls: Option<&TlsConnector>,
        connect_timeout: Duration,
    ) -> Result<Self, EtcdError> {
        let bad = |e: tonic::transport::Error| {
            EtcdError::Config(format!("etcd endpoint {} is not usable: {e}", u.url))
        };
        let endpoint = Endpoint::from_shared(u.url.clone()).map_err(bad)?.tcp_nodelay(true);
        let dial = match (u.https, tls) {
            (false, _) => None,
            (true, Some(tls)) => {
                let name = ServerName::try_from(u.host.clone())
                    .map_err(|e| EtcdError::Config(format!("etcd endpoint {}: {e}", u.url)))?;
                Some(Dial {
                    host: u.host.clone(),
                    port: u.port,
                    name,
                    tls: tls.clone(),
                    timeout: connect_timeout,
                })
            }
            (true, None) => {
                return Err(EtcdError::Config(format!("etcd endpoint {} needs ca_file", u.url)));
            }
        };
        // The TLS dialler bounds its own connect, so that a timeout is a
        // connect error (nothing sent) like any other.
        let endpoint =
            if dial.is_none() { endpoint.connect_timeout(connect_timeout) } else { endpoint };
        Ok(Self { url: u.url, endpoint, dial, channel: Mutex::new(None) })
    }

    /// The channel, dialled lazily (this needs the tokio runtime).
    fn channel(&self) -> Channel {
        let mut slot = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert_with(|| match &self.dial {
            None => self.endpoint.connect_lazy(),
            Some(dial) => {
                let dial = dial.clone();
                self.endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    dial.clone().connect()
                }))
            }
        })
        .clone()
    }

    /// Drop the connection; the next call dials again.
    fn hang_up(&self) {
        drop(self.channel.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// Whether a call may be sent again to another endpoint.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Retry {
    /// After any failure (reads, which change nothing).
    AfterAnyFailure,
    /// Only if it surely never reached etcd (writes).
    IfNotSent,
}

/// A checked endpoint URL.
struct Url {
    /// `scheme://host:port`.
    url: String,
    https: bool,
    /// Without IPv6 brackets.
    host: String,
    port: u16,
}

fn parse_endpoint(s: &str) -> Result<Url, EtcdError> {
    // Before anything echoes the URL: user info may hold a password.
    if s.contains('@') {
        return Err(EtcdError::Config(
            "an etcd endpoint holds user info (user@host): etcd's users are not supported, \
             use a client certificate"
                .into(),
        ));
    }
    let bad = |why: &str| EtcdError::Config(format!("etcd endpoint {s:?} {why}"));
    let (scheme, _) =
        s.split_once("://").ok_or_else(|| bad("is not a URL: use https://host:port"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("is not http:// or https://")),
    };
    let uri: Uri = s.parse().map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("has a path: give only scheme://host:port"));
    }
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return Err(bad("needs a host and a port (etcd's client port is 2379)"));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback {
        return Err(bad("is plain http:// to another host: use https://"));
    }
    let scheme = if https { "https" } else { "http" };
    Ok(Url { url: format!("{scheme}://{host}:{port}"), https, host: bare, port })
}

fn non_empty(prefix: &[u8]) -> Result<&[u8], EtcdError> {
    if prefix.is_empty() {
        return Err(EtcdError::Config(
            "an empty etcd prefix would be every key in etcd: refused".into(),
        ));
    }
    Ok(prefix)
}

fn request_op(op: Op) -> Result<pb::RequestOp, EtcdError> {
    use pb::request_op::Request;
    let request = match op {
        Op::Put(key, value) => {
            Request::RequestPut(pb::PutRequest { key, value, ..Default::default() })
        }
        Op::Delete(key) => {
            Request::RequestDeleteRange(pb::DeleteRangeRequest { key, ..Default::default() })
        }
        Op::DeletePrefix(prefix) => Request::RequestDeleteRange(pb::DeleteRangeRequest {
            range_end: prefix_end(non_empty(&prefix)?),
            key: prefix,
            prev_kv: false,
        }),
    };
    Ok(pb::RequestOp { request: Some(request) })
}

/// `msg` as a request that tells etcd how long the caller waits.
fn timed<T>(msg: T, left: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(left);
    req
}

mod failure;
mod tls;

use failure::{Failure, classify};
use tls::{Dial, client_config};
pub(crate) use tls::{Tls, load_tls};

#[cfg(test)]
mod tests;
