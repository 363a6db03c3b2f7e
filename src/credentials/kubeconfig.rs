//! The kubeconfigs nodelet reads (--kubeconfig, --bootstrap-kubeconfig) and the one it writes
//! after a bootstrap: the bootstrap's cluster, with the node's certificate from the cert dir.

use super::certificate::{CertError, Pair};
use kube::config::{Kubeconfig, KubeconfigError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigProblem {
    #[error("{}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("{}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("{}: the client certificate {what}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        what: String,
        #[source]
        source: CertError,
    },
    #[error("{}: the client certificate expired at {expired}", path.display())]
    Expired { path: PathBuf, expired: String },
}

/// A kubeconfig as nodelet uses it: its parsed form, and the client certificate when it
/// authenticates with one.
pub struct Loaded {
    pub path: PathBuf,
    pub kubeconfig: Kubeconfig,
    pub client_pair: Option<Pair>,
}

/// Reads a kubeconfig and the client certificate it names (data, or files relative to it).
pub fn load(path: &Path) -> Result<Loaded, KubeconfigProblem> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| KubeconfigProblem::Unreadable { path: path.into(), source })?;
    let user = current_user(&kubeconfig);
    let read = |data: &Option<String>, file: &Option<String>, what: &str| -> Result<Option<Vec<u8>>, KubeconfigProblem> {
        if let Some(data) = data {
            use base64::Engine;
            return base64::engine::general_purpose::STANDARD.decode(data.trim()).map(Some).map_err(|e| KubeconfigProblem::Certificate {
                path: path.into(),
                what: format!("{what} data"),
                source: CertError::X509(e.to_string()),
            });
        }
        match file {
            Some(file) => std::fs::read(file).map(Some).map_err(|e| KubeconfigProblem::Certificate {
                path: path.into(),
                what: format!("{what} file {file}"),
                source: CertError::X509(e.to_string()),
            }),
            None => Ok(None),
        }
    };
    let client_pair = match user {
        Some(user) => {
            let key_data = user.client_key_data.as_ref().map(|s| secrecy::ExposeSecret::expose_secret(s).to_string());
            let cert = read(&user.client_certificate_data, &user.client_certificate, "certificate")?;
            let key = read(&key_data, &user.client_key, "key")?;
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    Some(Pair::from_pem(&cert, &key).map_err(|source| KubeconfigProblem::Certificate { path: path.into(), what: "and key".into(), source })?)
                }
                _ => None,
            }
        }
        None => None,
    };
    Ok(Loaded { path: path.into(), kubeconfig, client_pair })
}

fn current_user(kubeconfig: &Kubeconfig) -> Option<&kube::config::AuthInfo> {
    let context = kubeconfig.current_context.as_deref()?;
    let user = kubeconfig.contexts.iter().find(|c| c.name == context)?.context.as_ref()?.user.as_deref()?;
    kubeconfig.auth_infos.iter().find(|a| a.name == user)?.auth_info.as_ref()
}

impl Loaded {
    /// The kube client configuration of its current context.
    pub async fn client_config(&self) -> Result<kube::Config, KubeconfigProblem> {
        kube::Config::from_custom_kubeconfig(self.kubeconfig.clone(), &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|source| KubeconfigProblem::Config { path: self.path.clone(), source })
    }

    /// Usable as the node's credentials at `now`: not expired (a kubeconfig with other
    /// credentials, a token say, is taken as it is).
    pub fn check_expiry(&self, now: std::time::SystemTime) -> Result<(), KubeconfigProblem> {
        match &self.client_pair {
            Some(pair) if pair.leaf.expired_at(now) => {
                Err(KubeconfigProblem::Expired { path: self.path.clone(), expired: crate::credentials::store::stamp(pair.leaf.not_after) })
            }
            _ => Ok(()),
        }
    }
}

/// The node's kubeconfig after a bootstrap, as the kubelet writes it: the bootstrap's cluster
/// (server, CA, TLS server name) and the node's certificate and key from `current_pem`.
pub fn node_kubeconfig(bootstrap: &Kubeconfig, current_pem: &Path) -> Result<String, String> {
    let context = bootstrap.current_context.as_deref().ok_or("it has no current-context")?;
    let cluster_name = bootstrap
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| format!("context {context:?} is not in it"))?;
    let cluster = bootstrap
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| format!("cluster {cluster_name:?} is not in it"))?;
    let cluster = serde_json::to_value(&cluster).map_err(|e| e.to_string())?;
    let pem = current_pem.display().to_string();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "contexts": [{"name": "default-context", "context": {"cluster": "default-cluster", "namespace": "default", "user": "default-auth"}}],
        "current-context": "default-context",
        "preferences": {},
        "users": [{"name": "default-auth", "user": {"client-certificate": pem, "client-key": pem}}],
    });
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTSTRAP: &str = "apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Q0E=
contexts:
- name: tls-bootstrap-token-user@kubernetes
  context: {cluster: kubernetes, user: tls-bootstrap-token-user}
current-context: tls-bootstrap-token-user@kubernetes
users:
- name: tls-bootstrap-token-user
  user: {token: abcdef.0123456789abcdef}
";

    #[test]
    fn the_node_kubeconfig_keeps_the_bootstrap_cluster_and_points_at_the_current_pair() {
        let bootstrap = Kubeconfig::from_yaml(BOOTSTRAP).unwrap();
        let text = node_kubeconfig(&bootstrap, Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem")).unwrap();
        let written = Kubeconfig::from_yaml(&text).unwrap();
        let cluster = written.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        let user = written.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate.as_deref(), Some("/var/lib/kubelet/pki/kubelet-client-current.pem"));
        assert_eq!(user.client_key.as_deref(), Some("/var/lib/kubelet/pki/kubelet-client-current.pem"));
        assert!(user.token.is_none());
        assert_eq!(written.current_context.as_deref(), Some("default-context"));
    }

    #[test]
    fn a_token_kubeconfig_has_no_client_pair_and_a_missing_one_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.conf");
        std::fs::write(&path, BOOTSTRAP).unwrap();
        let loaded = load(&path).unwrap();
        assert!(loaded.client_pair.is_none());
        loaded.check_expiry(std::time::SystemTime::now()).unwrap();
        let err = load(&dir.path().join("missing.conf")).err().unwrap().to_string();
        assert!(err.contains("missing.conf"), "{err}");
    }
}
