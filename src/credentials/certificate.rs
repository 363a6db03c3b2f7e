//! What nodelet reads of a certificate (its validity and subject) and when it renews one. Pure.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in it")]
    NoCertificate,
    #[error("no private key in it")]
    NoKey,
    #[error("not PEM: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("not an X.509 certificate: {0}")]
    X509(String),
}

/// A certificate chain and its private key, as read from PEM (a kubelet-*-current.pem file holds
/// both; a kubeconfig may give them apart).
#[derive(Debug)]
pub struct Pair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub leaf: Leaf,
}

impl Clone for Pair {
    fn clone(&self) -> Pair {
        Pair { chain: self.chain.clone(), key: self.key.clone_key(), leaf: self.leaf.clone() }
    }
}

/// The facts of a leaf certificate nodelet acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub common_name: String,
    pub organizations: Vec<String>,
}

impl Leaf {
    pub fn parse(der: &[u8]) -> Result<Leaf, CertError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| CertError::X509(e.to_string()))?;
        let at = |t: x509_parser::time::ASN1Time| UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
        let subject = cert.subject();
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue| attr.as_str().map(str::to_string).ok();
        let leaf = Leaf {
            not_before: at(cert.validity().not_before),
            not_after: at(cert.validity().not_after),
            common_name: subject.iter_common_name().find_map(text).unwrap_or_default(),
            organizations: subject.iter_organization().filter_map(text).collect(),
        };
        Ok(leaf)
    }

    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// The life left, zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

impl Pair {
    /// A chain and key from PEM text; both may be in `cert_pem` (then `key_pem` may be the same).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Pair, CertError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().map_err(CertError::Pem)?;
        let leaf = Leaf::parse(chain.first().ok_or(CertError::NoCertificate)?)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey,
            other => CertError::Pem(other),
        })?;
        Ok(Pair { chain, key, leaf })
    }
}

/// When to renew a certificate: at a jittered 70-90% of its life, as the kubelet's certificate
/// manager does (`jitter` in 0..1 picks the point). The cluster's signer backdates a certificate's
/// start by five minutes, so a short-lived one can arrive already past that point: a certificate
/// just `issued` is then renewed at 70-90% of the life it has left, never in a tight loop. One
/// found past the point at start (nodelet was down) is renewed at once.
pub fn renewal_deadline(leaf: &Leaf, now: SystemTime, jitter: f64, issued: bool) -> SystemTime {
    let share = 0.7 + 0.2 * jitter.clamp(0.0, 1.0);
    let life = leaf.not_after.duration_since(leaf.not_before).unwrap_or_default();
    let planned = leaf.not_before + life.mul_f64(share);
    if planned > now || !issued {
        return planned;
    }
    now + leaf.remaining(now).mul_f64(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(start: u64, end: u64) -> Leaf {
        Leaf {
            not_before: UNIX_EPOCH + Duration::from_secs(start),
            not_after: UNIX_EPOCH + Duration::from_secs(end),
            common_name: String::new(),
            organizations: vec![],
        }
    }

    #[test]
    fn renewal_falls_between_seventy_and_ninety_percent_of_the_life() {
        let l = leaf(1000, 2000);
        let at = |j| renewal_deadline(&l, UNIX_EPOCH + Duration::from_secs(1100), j, true);
        assert_eq!(at(0.0), UNIX_EPOCH + Duration::from_secs(1700));
        assert_eq!(at(1.0), UNIX_EPOCH + Duration::from_secs(1900));
        assert_eq!(at(7.0), UNIX_EPOCH + Duration::from_secs(1900), "jitter is clamped");
    }

    #[test]
    fn a_backdated_short_certificate_is_renewed_within_what_is_left_of_it() {
        // 60 s certificate backdated 300 s: its 70% point is long past when it arrives.
        let l = leaf(1000, 1360);
        let now = UNIX_EPOCH + Duration::from_secs(1300);
        assert_eq!(renewal_deadline(&l, now, 0.0, true), UNIX_EPOCH + Duration::from_secs(1342));
        // found so at start, it is renewed at once (the deadline is in the past)
        assert!(renewal_deadline(&l, now, 0.0, false) < now);
    }

    #[test]
    fn reads_validity_and_subject() {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        params.distinguished_name.push(DnType::CommonName, "system:node:n1");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 1, 2);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let pair = Pair::from_pem(pem.as_bytes(), pem.as_bytes()).unwrap();
        assert_eq!(pair.leaf.common_name, "system:node:n1");
        assert_eq!(pair.leaf.organizations, ["system:nodes"]);
        assert_eq!(pair.leaf.not_after.duration_since(pair.leaf.not_before).unwrap(), Duration::from_secs(86400));
        assert!(matches!(Pair::from_pem(cert.pem().as_bytes(), cert.pem().as_bytes()), Err(CertError::NoKey)));
        assert!(matches!(Pair::from_pem(b"", b""), Err(CertError::NoCertificate)));
    }
}
