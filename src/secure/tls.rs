//! The secure port's TLS: the serving certificate (given by --tls-cert-file and
//! --tls-private-key-file, or self-signed once and kept in the cert dir), client certificates
//! checked against --client-ca-file, and the subject (CN, O) of a verified client certificate.

use super::SecureSettings;
use crate::credentials::certificate::{Leaf, Pair};
use crate::credentials::identity::Identity;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

pub const CERT_FILE: &str = "nodelet.crt";
pub const KEY_FILE: &str = "nodelet.key";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("reading certificate {}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("reading private key {}: {e}", key.display()))?;
    Ok((certs, key))
}

/// The serving certificate chain and key: the given files, else the self-signed pair in the
/// cert dir, made on first use (SANs: node name, host name, node IPs, 127.0.0.1) and reused.
pub fn serving_identity(s: &SecureSettings) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    match (&s.tls_cert_file, &s.tls_key_file) {
        (Some(c), Some(k)) => return load_pair(c, k).context("--tls-cert-file/--tls-private-key-file"),
        (Some(_), None) => anyhow::bail!("--tls-cert-file is set but --tls-private-key-file is not"),
        (None, Some(_)) => anyhow::bail!("--tls-private-key-file is set but --tls-cert-file is not"),
        (None, None) => {}
    }
    let cert = s.cert_dir.join(CERT_FILE);
    let key = s.cert_dir.join(KEY_FILE);
    if cert.exists() && key.exists() {
        return load_pair(&cert, &key);
    }
    let (cert_pem, key_pem) = self_signed(s)?;
    std::fs::create_dir_all(&s.cert_dir).with_context(|| format!("creating cert dir {}", s.cert_dir.display()))?;
    write_private(&key, key_pem.as_bytes())?;
    std::fs::write(&cert, cert_pem.as_bytes()).with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "wrote a self-signed serving certificate for the secure port");
    load_pair(&cert, &key)
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data).with_context(|| format!("writing {}", path.display()))
}

fn self_signed(s: &SecureSettings) -> anyhow::Result<(String, String)> {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
    let mut names: Vec<String> = vec![s.node_name.clone()];
    if let Some(h) = host.filter(|h| !h.is_empty() && *h != s.node_name) {
        names.push(h);
    }
    let mut params = CertificateParams::default();
    let now = k8s_openapi::jiff::Zoned::now().with_time_zone(k8s_openapi::jiff::tz::TimeZone::UTC);
    let start = now.date().yesterday().unwrap_or(now.date());
    let end = start.saturating_add(k8s_openapi::jiff::Span::new().years(1));
    params.not_before = rcgen::date_time_ymd(start.year().into(), start.month() as u8, start.day() as u8);
    params.not_after = rcgen::date_time_ymd(end.year().into(), end.month() as u8, end.day() as u8);
    params.distinguished_name.push(DnType::CommonName, format!("{}@{}", s.node_name, now.timestamp().as_second()));
    for n in &names {
        if let Ok(ip) = n.parse() {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        } else {
            params.subject_alt_names.push(SanType::DnsName(n.clone().try_into().with_context(|| format!("DNS name {n:?}"))?));
        }
    }
    let mut ips = s.node_ips.clone();
    ips.push(std::net::Ipv4Addr::LOCALHOST.into());
    ips.dedup();
    for ip in ips {
        if !params.subject_alt_names.contains(&SanType::IpAddress(ip)) {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    let key = KeyPair::generate().context("generating the serving key")?;
    let cert = params.self_signed(&key).context("signing the serving certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The rustls server configuration: the serving certificate taken from a replaceable identity
/// at each handshake (it starts as `serving_identity`'s; a certificate the cluster issues later
/// takes its place), and client certificates verified against the client CA when one is given
/// (a client without a certificate is still let in, to authenticate by token or as anonymous).
pub fn server_config(s: &SecureSettings) -> anyhow::Result<(Arc<ServerConfig>, Arc<Identity>)> {
    let (certs, key) = serving_identity(s)?;
    let leaf = Leaf::parse(certs.first().map(|c| c.as_ref()).unwrap_or_default()).context("the serving certificate")?;
    let identity = Identity::new(&Pair { chain: certs, key, leaf }, "serving certificate").context("the serving certificate and key")?;
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &s.client_ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("--client-ca-file: reading {}: {e}", ca.display()))?;
            for c in certs {
                roots.add(c).map_err(|e| anyhow::anyhow!("--client-ca-file: {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                anyhow::bail!("--client-ca-file: {}: no certificate in it", ca.display());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| anyhow::anyhow!("--client-ca-file: {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(identity.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), identity))
}

/// The common name and organizations of a certificate's subject: the user and groups of a
/// client certificate, as the apiserver and kubelet read them.
pub fn subject(cert_der: &[u8]) -> Option<(String, Vec<String>)> {
    Leaf::parse(cert_der).ok().map(|leaf| (leaf.common_name, leaf.organizations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    #[test]
    fn reads_common_name_and_organizations() {
        let mut params = CertificateParams::new(vec!["x".into()]).unwrap();
        params.distinguished_name.push(DnType::OrganizationName, "system:masters");
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver-kubelet-client");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cn, orgs) = subject(cert.der()).unwrap();
        assert_eq!(cn, "kube-apiserver-kubelet-client");
        assert_eq!(orgs, ["system:masters"]);
        assert!(subject(b"\x30\x03garbage").is_none());
    }

    #[test]
    fn self_signed_pair_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = SecureSettings::for_tests(dir.path());
        let (a, _) = serving_identity(&s).unwrap();
        let (b, _) = serving_identity(&s).unwrap();
        assert_eq!(a, b);
        assert!(dir.path().join("pki").join(CERT_FILE).exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join("pki").join(KEY_FILE)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        server_config(&s).unwrap();
    }
}
