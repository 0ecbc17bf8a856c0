//! What became of a handshake: the outcome words of
//! `qkeyd_tls_handshakes_total`, and at most one log line per outcome per
//! [`WINDOW`], so a flood of bad handshakes cannot
//! flood the log.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Instant};

use rustls::{CertificateError, Error, PeerIncompatible};

use crate::refusals::WINDOW;

/// The outcome word for a failed handshake's I/O error.
pub(crate) fn outcome(e: &std::io::Error) -> &'static str {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(tls) => tls_outcome(tls),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "closed",
        None => "io",
    }
}

fn tls_outcome(e: &Error) -> &'static str {
    match e {
        Error::PeerIncompatible(p) => match p {
            PeerIncompatible::NoKxGroupsInCommon
            | PeerIncompatible::KeyShareExtensionRequired
            | PeerIncompatible::NamedGroupsExtensionRequired => "no_shared_group",
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::ServerDoesNotSupportTls12Or13 => "protocol_version",
            _ => "incompatible",
        },
        Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "cert_expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "cert_not_yet_valid"
            }
            CertificateError::UnknownIssuer => "cert_unknown_issuer",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "cert_bad_usage"
            }
            _ => "cert_invalid",
        },
        Error::NoCertificatesPresented => "no_certificate",
        Error::AlertReceived(_) => "peer_alert",
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::PeerSentOversizedRecord
        | Error::PeerMisbehaved(_) => "bad_message",
        _ => "other",
    }
}

/// One WARN line per outcome per window; the rest are only counted.
#[derive(Debug, Default)]
pub(crate) struct LogGate {
    windows: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl LogGate {
    /// Log a refused handshake, unless this outcome was logged within the window.
    pub(crate) fn refused(&self, outcome: &'static str, peer: SocketAddr, detail: &str) {
        let now = Instant::now();
        let unlogged = {
            let mut w = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match w.get_mut(outcome) {
                Some((at, n)) if now.duration_since(*at) < WINDOW => {
                    *n += 1;
                    return;
                }
                Some((at, n)) => {
                    *at = now;
                    std::mem::take(n)
                }
                None => {
                    w.insert(outcome, (now, 0));
                    0
                }
            }
        };
        tracing::warn!(outcome, %peer, detail, unlogged, "TLS handshake refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn each_refusal_has_its_own_word() {
        let cases = [
            (Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon), "no_shared_group"),
            (
                Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired),
                "protocol_version",
            ),
            (Error::InvalidCertificate(CertificateError::Expired), "cert_expired"),
            (Error::InvalidCertificate(CertificateError::NotValidYet), "cert_not_yet_valid"),
            (Error::InvalidCertificate(CertificateError::UnknownIssuer), "cert_unknown_issuer"),
            (Error::InvalidCertificate(CertificateError::InvalidPurpose), "cert_bad_usage"),
            (Error::InvalidCertificate(CertificateError::BadSignature), "cert_invalid"),
            (Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType), "bad_message"),
            (Error::NoCertificatesPresented, "no_certificate"),
        ];
        for (e, want) in cases {
            assert_eq!(outcome(&io(e)), want);
        }
        assert_eq!(outcome(&std::io::ErrorKind::UnexpectedEof.into()), "closed");
        assert_eq!(outcome(&std::io::ErrorKind::ConnectionReset.into()), "io");
    }

    #[test]
    fn one_line_per_outcome_per_window() {
        let gate = LogGate::default();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        gate.refused("timeout", peer, "x");
        gate.refused("timeout", peer, "x");
        gate.refused("bad_message", peer, "x");
        let w = gate.windows.lock().unwrap();
        assert_eq!(w["timeout"].1, 1, "the second timeout is only counted");
        assert_eq!(w["bad_message"].1, 0);
    }
}
