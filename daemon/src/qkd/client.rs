//! A GS QKD 014 client: one KME, reached over mutual TLS (rustls on
//! aws-lc-rs, the hybrid group offered first) with this SAE's certificate.
//!
//! A KME's answers carry keys, so no error here ever quotes an answer's
//! body: a 2xx answer that does not parse is named by its JSON position
//! only, and an error answer by its 014 `message` (which a KME writes for
//! people) and status.

use serde::{Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use super::api::{ErrorAnswer, KeyContainer, KeyIdEntry, KeyIds, KeyRequest, Status};
use crate::{
    config::KmeSettings,
    tls::client::{self, ClientTlsError},
};

/// Why a KME call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum KmeError {
    /// The TLS files of `[qkd.kme.NAME]` cannot be used.
    #[error("KME {kme}: {source}")]
    Files {
        /// The KME's name.
        kme: String,
        /// Which file and why.
        #[source]
        source: ClientTlsError,
    },
    /// A request URL that HTTP cannot carry.
    #[error("KME {kme}: {url} is not a usable URL: {why}")]
    BadUrl {
        /// The KME's name.
        kme: String,
        /// The URL.
        url: String,
        /// What the HTTP library said.
        why: String,
    },
    /// No answer: refused, timed out, or the TLS handshake failed.
    #[error("KME {kme} is unreachable at {url}{hint}")]
    Unreachable {
        /// The KME's name.
        kme: String,
        /// Its URL.
        url: String,
        /// What a TLS failure most likely means.
        hint: &'static str,
        /// The transport's error (boxed: it is large).
        #[source]
        source: Box<ureq::Error>,
    },
    /// An error answer (4xx, 5xx).
    #[error("KME {kme} answered {status} to {what}: {message}{details}")]
    Refused {
        /// The KME's name.
        kme: String,
        /// The call, e.g. `GET status of slave b`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The 014 `message`, or a note that there was none.
        message: String,
        /// The 014 `details` as ` (details: JSON)`, or empty.
        details: String,
    },
    /// A 2xx answer that is not the 014 message it should be.
    #[error("KME {kme} answered {what} with something that is not GS QKD 014's: {why}")]
    BadAnswer {
        /// The KME's name.
        kme: String,
        /// The call.
        what: String,
        /// Where the JSON went wrong (no content).
        why: String,
    },
}

/// One KME.
pub(crate) struct Kme {
    settings: KmeSettings,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Kme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kme")
            .field("name", &self.settings.name)
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

impl Kme {
    /// A client of the KME of `settings`; its TLS files are read and checked now.
    pub(crate) fn new(settings: &KmeSettings) -> Result<Self, KmeError> {
        let agent = client::mutual_tls_agent(
            &settings.url,
            &settings.ca_file,
            &settings.cert_file,
            &settings.key_file,
            settings.timeout,
        )
        .map_err(|source| KmeError::Files { kme: settings.name.clone(), source })?;
        Ok(Self { settings: settings.clone(), agent })
    }

    /// `GET /api/v1/keys/{slave}/status`.
    pub(crate) fn status(&self, slave: &str) -> Result<Status, KmeError> {
        self.call("GET", &format!("{slave}/status"), None::<&()>, &format!("status of {slave}"))
    }

    /// `POST /api/v1/keys/{slave}/enc_keys`: new keys shared with `slave`.
    pub(crate) fn enc_keys(
        &self,
        slave: &str,
        request: &KeyRequest,
    ) -> Result<KeyContainer, KmeError> {
        self.call(
            "POST",
            &format!("{slave}/enc_keys"),
            Some(request),
            &format!("enc_keys for {slave}"),
        )
    }

    /// `POST /api/v1/keys/{master}/dec_keys`: the keys `master` took with
    /// `enc_keys` for this SAE.
    pub(crate) fn dec_keys(
        &self,
        master: &str,
        key_ids: &[&str],
    ) -> Result<KeyContainer, KmeError> {
        let body = KeyIds {
            key_ids: key_ids
                .iter()
                .map(|id| KeyIdEntry { key_id: (*id).to_owned(), key_id_extension: None })
                .collect(),
            key_ids_extension: None,
        };
        self.call(
            "POST",
            &format!("{master}/dec_keys"),
            Some(&body),
            &format!("dec_keys from {master}"),
        )
    }

    /// The KME's name in the config.
    pub(crate) fn name(&self) -> &str {
        &self.settings.name
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        what: &str,
    ) -> Result<T, KmeError> {
        let s = &self.settings;
        let url = format!("{}/api/v1/keys/{path}", s.url);
        // Our own message types always serialise.
        let body = body.and_then(|b| serde_json::to_vec(b).ok());
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.unwrap_or_default()).map_err(|e| KmeError::BadUrl {
            kme: s.name.clone(),
            url: url.clone(),
            why: e.to_string(),
        })?;
        let mut resp = self.agent.run(req).map_err(|source| KmeError::Unreachable {
            kme: s.name.clone(),
            url: s.url.clone(),
            hint: hint(&source, &s.url),
            source: Box::new(source),
        })?;
        let status = resp.status().as_u16();
        let text = Zeroizing::new(resp.body_mut().read_to_string().map_err(|source| {
            KmeError::Unreachable {
                kme: s.name.clone(),
                url: s.url.clone(),
                hint: "",
                source: Box::new(source),
            }
        })?);
        answer(&s.name, what, status, &text)
    }
}

/// A KME's answer `text` with HTTP `status` to call `what`: the message
/// of a 2xx, else the 014 error.
pub(crate) fn answer<T: DeserializeOwned>(
    kme: &str,
    what: &str,
    status: u16,
    text: &str,
) -> Result<T, KmeError> {
    if !(200..300).contains(&status) {
        let (message, details) = match serde_json::from_str::<ErrorAnswer>(text) {
            Ok(e) => {
                let details = if e.details.is_empty() {
                    String::new()
                } else {
                    format!(" (details: {})", serde_json::Value::from(e.details))
                };
                (e.message, details)
            }
            Err(_) => ("(no GS QKD 014 error message)".to_owned(), String::new()),
        };
        return Err(KmeError::Refused {
            kme: kme.to_owned(),
            what: what.to_owned(),
            status,
            message,
            details,
        });
    }
    serde_json::from_str(text).map_err(|e| KmeError::BadAnswer {
        kme: kme.to_owned(),
        what: what.to_owned(),
        // Category and position only: serde's message may quote a value.
        why: format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()),
    })
}

/// What a transport failure most likely means, for a KME.
fn hint(err: &ureq::Error, url: &str) -> &'static str {
    match client::hint(err, url) {
        "" => match err {
            ureq::Error::Timeout(_) => " (no answer within timeout_secs)",
            _ => "",
        },
        // The CLI's hints name its flags; here the same files are ca_file,
        // cert_file and key_file.
        h if h.contains("--client-cert") => {
            " (it wants a client certificate it trusts: cert_file and key_file)"
        }
        h if h.contains("--ca-file") => {
            " (its certificate does not chain to a certificate in ca_file)"
        }
        h if h.contains("--url") => " (its certificate does not name the host of url)",
        h => h,
    }
}

#[cfg(test)]
mod tests;
