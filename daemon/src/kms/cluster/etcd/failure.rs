//! What a failed etcd call means: not sent, lost on the way, refused by
//! etcd, or out of time; and a transport failure in words.

use std::{error::Error as _, io};

use tonic::{Code, Status};

use super::tls::tls_hint;

/// How an attempt failed.
pub(super) enum Failure {
    /// No connection: the request was not sent.
    NotSent(String),
    /// Sent, but no answer (or etcd cannot serve now): it may have been applied.
    Lost(String),
    /// etcd answered with an error.
    Refused(String),
    /// The call's time ran out (ours, or tonic's from the `grpc-timeout`
    /// the request carries).
    TimedOut,
}

pub(super) fn classify(status: &Status) -> Failure {
    let mut source = status.source();
    let (mut not_sent, mut timed_out) = (false, false);
    while let Some(e) = source {
        not_sent |= e.is::<tonic::ConnectError>();
        timed_out |= e.is::<tonic::TimeoutExpired>();
        source = e.source();
    }
    if timed_out {
        Failure::TimedOut
    } else if not_sent {
        Failure::NotSent(transport_detail(status))
    } else if status.source().is_some() {
        // Made on this side from a transport error: etcd said nothing.
        Failure::Lost(transport_detail(status))
    } else if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)
    {
        Failure::Lost(status.message().to_owned())
    } else if status.message().is_empty() {
        Failure::Refused(format!("{:?}", status.code()))
    } else {
        Failure::Refused(format!("{} ({:?})", status.message(), status.code()))
    }
}

/// A transport failure in words: the OS's error if that is what it came
/// down to ("connection refused"), else the distinct messages of the chain,
/// with what a TLS error most likely means.
fn transport_detail(status: &Status) -> String {
    // tonic's wrapper of every transport error says nothing more.
    let telling = |text: &str| !text.is_empty() && text != "transport error";
    let mut parts: Vec<String> = Vec::new();
    if telling(status.message()) {
        parts.push(status.message().to_owned());
    }
    let mut hint = "";
    let mut next = status.source();
    while let Some(e) = next {
        let io = e.downcast_ref::<io::Error>();
        if let Some(io) = io
            && io.get_ref().is_none()
            && plain(io.kind())
        {
            return io.kind().to_string();
        }
        // An io::Error's source() skips the error it wraps.
        let tls = e
            .downcast_ref::<rustls::Error>()
            .or_else(|| io.and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>()));
        if let Some(tls) = tls {
            hint = tls_hint(tls);
        }
        let text = e.to_string();
        if telling(&text) && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    let mut detail = parts.join(": ");
    if hint.is_empty() {
        // An alert after the handshake (TLS 1.3 servers check the client
        // certificate then) reaches us through h2, whose error hides the
        // rustls one from source(); its text is rustls' own.
        use rustls::AlertDescription as A;
        hint = [A::CertificateRequired, A::BadCertificate, A::UnknownCA, A::CertificateUnknown]
            .into_iter()
            .map(rustls::Error::AlertReceived)
            .find(|a| detail.contains(&a.to_string()))
            .map_or("", |a| tls_hint(&a));
    }
    if !detail.ends_with(hint) {
        detail.push_str(hint);
    }
    detail
}

/// Whether an OS error's kind says it all ("connection refused").
fn plain(kind: io::ErrorKind) -> bool {
    use io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::AddrNotAvailable
            | K::BrokenPipe
            | K::TimedOut
    )
}
