//! Certificates (CA, serving, clients), kubeconfig files, authentication of a client
//! certificate or a bearer token, and authorization: system:masters may do anything, nodes
//! get the Node authorizer and NodeRestriction rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::Value;

use crate::discovery::ResourceDef;
use crate::error::{ApiError, ApiResult};
use crate::store::Store;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// The node name of a node's credentials (`system:node:<name>` in group `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        if !self.groups.iter().any(|g| g == "system:nodes") {
            return None;
        }
        self.name.strip_prefix("system:node:")
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// The CA and the certificates made from it.
pub struct Pki {
    ca_key: KeyPair,
    ca_cert: Certificate,
    pub ca_pem: String,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "nodelet-test-apiserver-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Pki {
    /// Loads the CA from `dir` (ca.crt, ca.key) or makes a new one there.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Pki> {
        let key_path = dir.join("ca.key");
        let crt_path = dir.join("ca.crt");
        if key_path.exists() && crt_path.exists() {
            let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)
                .context("reading ca.key")?;
            // Re-signing the same subject with the same key gives an issuer that verifies
            // against the ca.crt handed out before.
            let ca_cert = ca_params().self_signed(&ca_key)?;
            let ca_pem = std::fs::read_to_string(&crt_path)?;
            return Ok(Pki {
                ca_key,
                ca_cert,
                ca_pem,
            });
        }
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params().self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        std::fs::write(&key_path, ca_key.serialize_pem())?;
        std::fs::write(&crt_path, &ca_pem)?;
        Ok(Pki {
            ca_key,
            ca_cert,
            ca_pem,
        })
    }

    /// A serving certificate for 127.0.0.1, ::1 and localhost: (cert DER, key DER).
    pub fn serving(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1))));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }

    /// A client certificate with CN=`user`, O=each group: (cert PEM, key PEM).
    pub fn client(&self, user: &str, groups: &[&str]) -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        dn.push(DnType::CommonName, user);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes a kubeconfig for `user` to `path`.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        port: u16,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<()> {
        let (cert, key) = self.client(user, groups)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: nodelet-test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {user}@nodelet-test\n  context:\n    cluster: nodelet-test\n    user: {user}\ncurrent-context: {user}@nodelet-test\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\npreferences: {{}}\n",
            ca = b64(&self.ca_pem),
            cert = b64(&cert),
            key = b64(&key),
        );
        crate::store::write_atomic(path, text.as_bytes())
    }

    /// Writes `node-<name>.kubeconfig` in `dir` for node `name` and returns its path.
    pub fn write_node_kubeconfig(
        &self,
        dir: &Path,
        port: u16,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("node-{name}.kubeconfig"));
        self.write_kubeconfig(
            &path,
            port,
            &format!("system:node:{name}"),
            &["system:nodes"],
        )?;
        Ok(path)
    }

    /// The TLS configuration: our serving certificate, client certificates verified against
    /// the CA when given (a request without one is answered 401 by the HTTP layer).
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(
            self.ca_cert.der().to_vec(),
        ))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let (cert, key) = self.serving()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Reads one DER TLV: (tag, content, rest).
fn der_next(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The user named by a (CA-verified) client certificate: CN is the name, each O a group.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert, _) = der_next(der)?;
    let (_, mut tbs, _) = der_next(cert)?;
    // Skip the optional [0] version, serial, signature algorithm, issuer and validity.
    let (tag, _, rest) = der_next(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..4 {
        tbs = der_next(tbs)?.2;
    }
    let (_, mut subject, _) = der_next(tbs)?;
    let mut user = User {
        name: String::new(),
        groups: Vec::new(),
    };
    while !subject.is_empty() {
        let (_, mut set, rest) = der_next(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, atv, rest) = der_next(set)?;
            set = rest;
            let (_, oid, value) = der_next(atv)?;
            let (_, value, _) = der_next(value)?;
            let value = String::from_utf8_lossy(value).to_string();
            match oid {
                [0x55, 0x04, 0x03] => user.name = value,
                [0x55, 0x04, 0x0a] => user.groups.push(value),
                _ => {}
            }
        }
    }
    (!user.name.is_empty()).then_some(user)
}

/// What a request does, for authorization.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub def: &'a ResourceDef,
    pub sub: Option<&'a str>,
    pub namespace: &'a str,
    /// The object's name: from the path, or from the body for a create.
    pub name: &'a str,
    /// `metadata.name` asked for by a field selector on list/watch.
    pub selected_name: Option<&'a str>,
    pub body: Option<&'a Value>,
}

impl Attributes<'_> {
    fn resource(&self) -> String {
        match self.sub {
            Some(s) => format!("{}/{}", self.def.plural, s),
            None => self.def.plural.to_string(),
        }
    }

    fn deny(&self, user: &User, why: &str) -> ApiError {
        let scope = if self.def.namespaced && !self.namespace.is_empty() {
            format!("in the namespace \"{}\"", self.namespace)
        } else {
            "at the cluster scope".to_string()
        };
        let mut msg = format!(
            "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            user.name,
            self.verb,
            self.resource(),
            self.def.group
        );
        if !why.is_empty() {
            msg.push_str(": ");
            msg.push_str(why);
        }
        let name = if self.verb == "create" && self.sub.is_none() {
            ""
        } else {
            self.name
        };
        ApiError::forbidden(self.def.group, self.def.plural, name, msg)
    }
}

const NO_RELATION: &str = "no relationship found between node '{}' and this object";

/// Decides whether `user` may do what `a` describes.
pub fn authorize(store: &Store, user: &User, a: &Attributes) -> ApiResult<()> {
    if user.is_master() {
        return Ok(());
    }
    let Some(node) = user.node_name() else {
        return Err(a.deny(user, ""));
    };
    let no_relation = || a.deny(user, &NO_RELATION.replace("{}", node));
    let read = matches!(a.verb, "get" | "list" | "watch");
    let key = a.def.key();
    let allowed = match (key.as_str(), a.sub) {
        ("nodes", None | Some("status")) => match a.verb {
            "get" | "list" | "watch" => true,
            "create" | "update" | "patch" | "delete" => a.name == node,
            _ => false,
        },
        ("pods", None) => {
            match a.verb {
                "get" | "list" | "watch" => true,
                "create" => {
                    let pod = a.body.cloned().unwrap_or(Value::Null);
                    if pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null() {
                        return Err(ApiError::forbidden(
                        "",
                        "pods",
                        a.name,
                        format!("pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"),
                    ));
                    }
                    if pod["spec"]["nodeName"].as_str() != Some(node) {
                        return Err(ApiError::forbidden(
                        "",
                        "pods",
                        a.name,
                        format!("node \"{node}\" can only create pods with spec.nodeName set to itself"),
                    ));
                    }
                    true
                }
                "delete" => pod_bound_to(store, a.namespace, a.name, node),
                _ => false,
            }
        }
        ("pods", Some("status")) => match a.verb {
            "get" => true,
            "update" | "patch" => {
                if !pod_bound_to(store, a.namespace, a.name, node) {
                    return Err(no_relation());
                }
                true
            }
            _ => false,
        },
        ("services" | "endpoints" | "endpointslices.discovery.k8s.io" | "namespaces", None) => read,
        ("configmaps" | "secrets" | "serviceaccounts", None) if read => {
            let name = if a.verb == "get" {
                Some(a.name)
            } else {
                a.selected_name
            };
            match name {
                Some(n) if referenced_by_node_pod(store, &key, a.namespace, n, node) => true,
                _ => return Err(no_relation()),
            }
        }
        ("serviceaccounts", Some("token")) if a.verb == "create" => {
            let r = &a.body.cloned().unwrap_or(Value::Null)["spec"]["boundObjectRef"];
            let ok = r["kind"] == "Pod"
                && r["name"]
                    .as_str()
                    .and_then(|p| store.get("pods", a.namespace, p))
                    .is_some_and(|pod| {
                        pod["spec"]["nodeName"].as_str() == Some(node)
                            && pod["spec"]["serviceAccountName"].as_str() == Some(a.name)
                            && (r["uid"].is_null() || r["uid"] == pod["metadata"]["uid"])
                    });
            if !ok {
                return Err(no_relation());
            }
            true
        }
        ("leases.coordination.k8s.io", None) => {
            a.namespace == "kube-node-lease"
                && matches!(a.verb, "get" | "create" | "update" | "patch" | "delete")
                && a.name == node
        }
        ("events" | "events.events.k8s.io", None) => {
            matches!(a.verb, "create" | "update" | "patch")
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(a.deny(user, ""))
    }
}

fn pod_bound_to(store: &Store, ns: &str, name: &str, node: &str) -> bool {
    store
        .get("pods", ns, name)
        .is_some_and(|p| p["spec"]["nodeName"].as_str() == Some(node))
}

/// Whether a pod bound to `node` in `ns` refers to the configmap/secret/serviceaccount `name`.
fn referenced_by_node_pod(store: &Store, resource: &str, ns: &str, name: &str, node: &str) -> bool {
    let (pods, _) = store.list("pods", Some(ns));
    pods.iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .any(|p| pod_refers_to(p, resource, name))
}

pub fn pod_refers_to(pod: &Value, resource: &str, name: &str) -> bool {
    let spec = &pod["spec"];
    if resource == "serviceaccounts" {
        return spec["serviceAccountName"].as_str().unwrap_or("default") == name;
    }
    let (vol_key, vol_name, env_ref, env_from) = match resource {
        "secrets" => ("secret", "secretName", "secretKeyRef", "secretRef"),
        _ => ("configMap", "name", "configMapKeyRef", "configMapRef"),
    };
    let is = |v: &Value| v.as_str() == Some(name);
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if is(&v[vol_key][vol_name]) {
            return true;
        }
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            if is(&s[vol_key]["name"]) {
                return true;
            }
        }
    }
    if resource == "secrets"
        && spec["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| is(&s["name"]))
    {
        return true;
    }
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .any(|list| {
            spec[*list].as_array().into_iter().flatten().any(|c| {
                c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| is(&e["valueFrom"][env_ref]["name"]))
                    || c["envFrom"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|e| is(&e[env_from]["name"]))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_of_issued_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let (pem, _) = pki.client("system:node:n1", &["system:nodes"]).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let user = user_from_cert(&der).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, vec!["system:nodes".to_string()]);
        assert_eq!(user.node_name(), Some("n1"));
    }
}
