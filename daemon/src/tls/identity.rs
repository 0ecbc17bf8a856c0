//! Who a verified client certificate is: its names, matched against the
//! `[[tls.client]]` rules in order. The certificate has already been checked
//! against `client_ca` by the handshake; this only reads it.

use x509_parser::{extensions::GeneralName, prelude::FromDer as _};

use crate::config::{Identity, Rights};

/// A client as the REST API sees it.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    /// The matching rule's identity; or, when no rule matches, the subject.
    pub(crate) name: String,
    /// What the matching rule grants (none without a match).
    pub(crate) rights: Rights,
}

/// The client a leaf certificate stands for, under `rules`.
pub(crate) fn client(leaf: &[u8], rules: &[crate::config::ClientRule]) -> Client {
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(leaf) else {
        // The handshake verified it, so it parses; if not, it is nobody.
        return Client { name: "unparsed".into(), rights: Rights::default() };
    };
    let subject = cert.subject().to_string();
    let cns: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        sans.extend(ext.value.general_names.iter().cloned());
    }
    let matches = |id: &Identity| match id {
        Identity::Cn(v) => cns.iter().any(|cn| cn == v),
        Identity::Subject(v) => same_dn(&subject, v),
        Identity::Dns(v) => {
            sans.iter().any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(v)))
        }
        Identity::Uri(v) => sans.iter().any(|n| matches!(n, GeneralName::URI(u) if u == v)),
        Identity::Email(v) => sans
            .iter()
            .any(|n| matches!(n, GeneralName::RFC822Name(e) if e.eq_ignore_ascii_case(v))),
        Identity::Ip(v) => sans.iter().any(|n| match n {
            GeneralName::IPAddress(b) => match (v, b.len()) {
                (std::net::IpAddr::V4(a), 4) => a.octets()[..] == b[..],
                (std::net::IpAddr::V6(a), 16) => a.octets()[..] == b[..],
                _ => false,
            },
            _ => false,
        }),
    };
    match rules.iter().find(|r| matches(&r.identity)) {
        Some(rule) => Client { name: rule.identity.to_string(), rights: rule.rights },
        None => Client { name: format!("subject:{subject}"), rights: Rights::default() },
    }
}

/// RFC 4514 strings compared without the spaces after separators.
fn same_dn(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split(',').map(str::trim).collect::<Vec<_>>().join(",");
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientRule, Right};

    fn cert(cn: &str, sans: &[rcgen::SanType]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "Acme");
        p.subject_alt_names = sans.to_vec();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn rule(id: &str, rights: &[Right]) -> ClientRule {
        ClientRule {
            identity: Identity::parse(id).unwrap(),
            rights: rights.iter().copied().collect(),
        }
    }

    #[test]
    fn the_first_matching_rule_names_the_client() {
        let leaf = cert(
            "gateway-1",
            &[
                rcgen::SanType::DnsName("gw.example".try_into().unwrap()),
                rcgen::SanType::IpAddress("10.0.0.7".parse().unwrap()),
                rcgen::SanType::URI("spiffe://cluster/gw".try_into().unwrap()),
            ],
        );
        let rules = [
            rule("cn:other", &[Right::KeysAdmin]),
            rule("dns:GW.example", &[Right::Random]),
            rule("cn:gateway-1", &[Right::KeysUse]),
        ];
        let c = client(&leaf, &rules);
        assert_eq!(c.name, "dns:gw.example");
        assert!(c.rights.has(Right::Random) && !c.rights.has(Right::KeysUse));
        for (id, want) in [
            ("ip:10.0.0.7", true),
            ("ip:10.0.0.8", false),
            ("uri:spiffe://cluster/gw", true),
            ("subject:CN=gateway-1, O=Acme", true),
            ("subject:CN=gateway-1", false),
            ("cn:gateway", false),
        ] {
            let c = client(&leaf, &[rule(id, &[Right::Gateway])]);
            assert_eq!(c.rights.has(Right::Gateway), want, "{id}");
        }
    }

    #[test]
    fn a_certificate_no_rule_names_has_no_rights() {
        let c = client(&cert("stranger", &[]), &[rule("cn:gateway-1", &[Right::Random])]);
        assert_eq!(c.rights, Rights::default());
        assert!(c.name.starts_with("subject:") && c.name.contains("CN=stranger"), "{}", c.name);
    }
}
