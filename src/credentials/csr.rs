//! The certificate signing requests a node files, shaped as the kubelet shapes them so the
//! cluster's approver and signer accept them unattended. Pure.

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The node's identity towards the apiserver (system:node:<name>).
    Client,
    /// The secure port's serving certificate, for the node's names and addresses.
    Serving { dns_names: Vec<String>, ips: Vec<IpAddr> },
}

impl Purpose {
    /// The signer the cluster signs it with.
    pub fn signer(&self) -> &'static str {
        match self {
            Purpose::Client => "kubernetes.io/kube-apiserver-client-kubelet",
            Purpose::Serving { .. } => "kubernetes.io/kubelet-serving",
        }
    }

    /// The key usages asked for: an ECDSA key signs and never enciphers, so "key encipherment"
    /// (RSA only) is left out, as the kubelet does.
    pub fn usages(&self) -> [&'static str; 2] {
        match self {
            Purpose::Client => ["digital signature", "client auth"],
            Purpose::Serving { .. } => ["digital signature", "server auth"],
        }
    }

    /// The file name prefix in the cert dir: kubelet-client-current.pem, kubelet-server-current.pem.
    pub fn file_prefix(&self) -> &'static str {
        match self {
            Purpose::Client => "kubelet-client",
            Purpose::Serving { .. } => "kubelet-server",
        }
    }

    /// How it is named in logs and messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Purpose::Client => "client certificate",
            Purpose::Serving { .. } => "serving certificate",
        }
    }
}

/// A node's user name, the subject's common name of both its certificates.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// The PEM certificate request for `node`, signed by `key`: subject O=system:nodes,
/// CN=system:node:<node>, and for serving the node's names and addresses as SANs.
pub fn certificate_request(node: &str, purpose: &Purpose, key: &rcgen::KeyPair) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(rcgen::DnType::CommonName, node_user(node));
    if let Purpose::Serving { dns_names, ips } = purpose {
        for name in dns_names {
            params.subject_alt_names.push(rcgen::SanType::DnsName(name.clone().try_into()?));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    }
    params.serialize_request(key)?.pem()
}

/// The CSR object for a request. A bootstrap names it after a digest of its key, node and
/// usages (as the kubelet's `node-csr-` names), so a nodelet restarted while it waits finds its
/// own request again instead of filing another; a renewal lets the apiserver pick a `csr-` name.
pub fn csr_object(request_pem: &str, purpose: &Purpose, name: Option<String>) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta { generate_name: name.is_none().then(|| "csr-".to_string()), name, ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: purpose.signer().to_string(),
            usages: Some(purpose.usages().iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    }
}

/// `node-csr-<digest>` of the public key, the node and the usages.
pub fn digested_name(public_key_der: &[u8], node: &str, purpose: &Purpose) -> String {
    let mut hash = Sha256::new();
    for part in [public_key_der, node_user(node).as_bytes(), b"system:nodes"] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    for usage in purpose.usages() {
        hash.update(usage.as_bytes());
    }
    let digest = hash.finalize();
    // base32 without padding, lower case: a valid object name of fixed length
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::from("node-csr-");
    let (mut acc, mut bits) = (0u32, 0);
    for byte in digest.iter() {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// Where a filed request stands, read from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Issued(Vec<u8>),
    Denied { reason: String, message: String },
    Failed { reason: String, message: String },
}

pub fn outcome(csr: &CertificateSigningRequest) -> Outcome {
    let Some(status) = &csr.status else { return Outcome::Pending };
    for c in status.conditions.iter().flatten() {
        let (reason, message) = (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default());
        match c.type_.as_str() {
            "Denied" if c.status == "True" => return Outcome::Denied { reason, message },
            "Failed" if c.status == "True" => return Outcome::Failed { reason, message },
            _ => {}
        }
    }
    match &status.certificate {
        Some(cert) if !cert.0.is_empty() => Outcome::Issued(cert.0.clone()),
        _ => Outcome::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{CertificateSigningRequestCondition, CertificateSigningRequestStatus};

    fn parse_request(pem: &str) -> x509_parser::certification_request::X509CertificationRequest<'static> {
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let der: &'static [u8] = Box::leak(der.as_ref().to_vec().into_boxed_slice());
        x509_parser::certification_request::X509CertificationRequest::from_der(der).unwrap().1
    }
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;

    #[test]
    fn a_client_request_carries_the_node_subject_and_no_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = certificate_request("node-a", &Purpose::Client, &key).unwrap();
        let req = parse_request(&pem);
        let subject = &req.certification_request_info.subject;
        assert_eq!(subject.to_string(), "O=system:nodes, CN=system:node:node-a");
        assert!(req.requested_extensions().into_iter().flatten().next().is_none(), "a client request asks for no extension");
    }

    #[test]
    fn a_serving_request_names_the_node_addresses() {
        let key = rcgen::KeyPair::generate().unwrap();
        let purpose = Purpose::Serving { dns_names: vec!["node-a".into()], ips: vec!["10.0.0.5".parse().unwrap()] };
        let req = parse_request(&certificate_request("node-a", &purpose, &key).unwrap());
        let sans: Vec<String> = req
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|e| match e {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => {
                    Some(san.general_names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(sans, ["DNSName(node-a)", "IPAddress(0a:00:00:05)"]);
        assert_eq!(purpose.signer(), "kubernetes.io/kubelet-serving");
    }

    #[test]
    fn the_object_asks_the_kubelet_signer_with_the_kubelet_usages() {
        let csr = csr_object("PEM", &Purpose::Client, None);
        assert_eq!(csr.metadata.generate_name.as_deref(), Some("csr-"));
        assert_eq!(csr.spec.signer_name, "kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(csr.spec.usages.unwrap(), ["digital signature", "client auth"]);
        let named = csr_object("PEM", &Purpose::Client, Some("node-csr-x".into()));
        assert_eq!((named.metadata.name.as_deref(), named.metadata.generate_name), (Some("node-csr-x"), None));
    }

    #[test]
    fn the_digested_name_is_stable_and_follows_the_key() {
        let a = digested_name(b"key-a", "n", &Purpose::Client);
        assert_eq!(a, digested_name(b"key-a", "n", &Purpose::Client));
        assert_ne!(a, digested_name(b"key-b", "n", &Purpose::Client));
        assert_ne!(a, digested_name(b"key-a", "m", &Purpose::Client));
        assert!(a.starts_with("node-csr-") && a.len() == 9 + 51, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn the_outcome_is_read_from_the_status() {
        let mut csr = csr_object("PEM", &Purpose::Client, None);
        assert_eq!(outcome(&csr), Outcome::Pending);
        let condition = |type_: &str| CertificateSigningRequestCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some("R".into()),
            message: Some("M".into()),
            ..Default::default()
        };
        csr.status = Some(CertificateSigningRequestStatus { conditions: Some(vec![condition("Approved")]), certificate: None });
        assert_eq!(outcome(&csr), Outcome::Pending, "approved, not yet signed");
        csr.status.as_mut().unwrap().certificate = Some(ByteString(b"CERT".to_vec()));
        assert_eq!(outcome(&csr), Outcome::Issued(b"CERT".to_vec()));
        csr.status = Some(CertificateSigningRequestStatus { conditions: Some(vec![condition("Denied")]), certificate: None });
        assert_eq!(outcome(&csr), Outcome::Denied { reason: "R".into(), message: "M".into() });
    }
}
