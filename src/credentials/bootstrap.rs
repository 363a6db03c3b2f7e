//! The node's credentials at start, as the kubelet settles them: a usable --kubeconfig is used
//! as it is; a missing, unreadable or expired one is made again through a TLS bootstrap with
//! --bootstrap-kubeconfig (a key, a CSR the cluster approves, the certificate in the cert dir,
//! and a kubeconfig that points at it).

use super::certificate::Pair;
use super::csr::{digested_name, node_user, Purpose};
use super::identity::Identity;
use super::kubeconfig::{self, Loaded};
use super::request::{self, approve_command, RequestError, Waiting};
use super::store::{stamp, write_private, CertDir};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub kubeconfig: PathBuf,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: CertDir,
}

/// The node's client to the apiserver, and the certificate it presents when it has one.
pub struct NodeCredentials {
    pub client: kube::Client,
    pub identity: Option<Arc<Identity>>,
    /// Whether the certificate was issued by a bootstrap just now (for its renewal time).
    pub bootstrapped: bool,
}

/// Settles the node's credentials, bootstrapping them when needed; a bootstrap waits (and says
/// why in the log) until the cluster issues the certificate.
pub async fn establish(s: &Settings) -> anyhow::Result<NodeCredentials> {
    let mut bootstrapped = false;
    let loaded = match usable_kubeconfig(s) {
        Ok(loaded) => loaded,
        Err(problem) => {
            let Some(bootstrap) = &s.bootstrap_kubeconfig else {
                return Err(problem).context("--kubeconfig (give --bootstrap-kubeconfig to get a certificate from the cluster)");
            };
            tracing::info!(problem = %problem, bootstrap = %bootstrap.display(), "bootstrapping the node's client certificate");
            run_bootstrap(s, bootstrap).await?;
            bootstrapped = true;
            usable_kubeconfig(s).context("--kubeconfig written by the bootstrap")?
        }
    };
    let config = loaded.client_config().await.context("--kubeconfig")?;
    let pair = newest_node_pair(loaded.client_pair, s.cert_dir.load_current(Purpose::Client.file_prefix()), &s.node_name);
    let Some(pair) = pair else {
        // other credentials (a token): used as they are, nothing to renew
        return Ok(NodeCredentials { client: kube::Client::try_from(config).context("--kubeconfig")?, identity: None, bootstrapped });
    };
    tracing::info!(subject = %pair.leaf.common_name, expires = %stamp(pair.leaf.not_after), "node client certificate");
    let identity = Identity::new(&pair, "client certificate").context("--kubeconfig")?;
    let client = super::client::with_identity(&config, identity.clone()).with_context(|| format!("--kubeconfig {}", s.kubeconfig.display()))?;
    Ok(NodeCredentials { client, identity: Some(identity), bootstrapped })
}

fn usable_kubeconfig(s: &Settings) -> Result<Loaded, kubeconfig::KubeconfigProblem> {
    let loaded = kubeconfig::load(&s.kubeconfig)?;
    loaded.check_expiry(SystemTime::now())?;
    Ok(loaded)
}

/// Of the kubeconfig's certificate and the cert dir's current one, the one that lasts longest:
/// a renewed certificate is in the cert dir while a kubeconfig may still embed the first.
fn newest_node_pair(from_kubeconfig: Option<Pair>, from_cert_dir: Option<Pair>, node: &str) -> Option<Pair> {
    let now = SystemTime::now();
    let renewed = from_cert_dir.filter(|p| p.leaf.common_name == node_user(node) && !p.leaf.expired_at(now));
    match (from_kubeconfig, renewed) {
        (Some(a), Some(b)) => Some(if b.leaf.not_after > a.leaf.not_after { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The bootstrap: the node's certificate through the bootstrap credentials, then the node's
/// kubeconfig at --kubeconfig pointing at it.
async fn run_bootstrap(s: &Settings, bootstrap_path: &Path) -> anyhow::Result<()> {
    let bootstrap = kubeconfig::load(bootstrap_path).context("--bootstrap-kubeconfig")?;
    let config = bootstrap.client_config().await.context("--bootstrap-kubeconfig")?;
    let client = kube::Client::try_from(config).context("--bootstrap-kubeconfig")?;
    obtain_and_store(&client, &s.node_name, &Purpose::Client, &s.cert_dir, true, |w| tell_client(&s.node_name, w)).await;
    let text = kubeconfig::node_kubeconfig(&bootstrap.kubeconfig, &s.cert_dir.current(Purpose::Client.file_prefix()))
        .map_err(|e| anyhow::anyhow!("--bootstrap-kubeconfig {}: {e}", bootstrap_path.display()))?;
    if let Some(dir) = s.kubeconfig.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("--kubeconfig: creating {}", dir.display()))?;
    }
    write_private(&s.kubeconfig, text.as_bytes()).context("--kubeconfig")?;
    tracing::info!(kubeconfig = %s.kubeconfig.display(), "bootstrap done: wrote the node's kubeconfig");
    Ok(())
}

/// What a node's client certificate request says in the log while it waits.
pub fn tell_client(node: &str, waiting: Waiting<'_>) {
    match waiting {
        Waiting::Filed { name } => tracing::info!(
            csr = name,
            node,
            "requested the node's client certificate as {name}; waiting for the cluster to approve and issue it (or approve it with `{}`)",
            approve_command(name)
        ),
        Waiting::NotApproved { name, waited } => tracing::warn!(
            csr = name,
            node,
            "the client certificate request {name} is not approved after {}s: the controller-manager approves a node's requests \
             when its bootstrap group may (kubeadm's `init phase bootstrap-token` sets that up); else approve it with `{}`",
            waited.as_secs(),
            approve_command(name)
        ),
    }
}

/// Requests a certificate for `purpose` until one is issued, and stores it with its key in the
/// cert dir. Refusals and failures are said in the log and tried again with back-off; the key
/// is kept across restarts until its certificate is stored. `named` gives the request a
/// digest name (a bootstrap), so a restart finds it again.
pub async fn obtain_and_store(
    client: &kube::Client,
    node: &str,
    purpose: &Purpose,
    cert_dir: &CertDir,
    named: bool,
    mut tell: impl FnMut(Waiting<'_>),
) -> Pair {
    let prefix = purpose.file_prefix();
    let mut backoff = crate::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let attempt = async {
            let key = cert_dir.pending_key_pair(prefix)?;
            let name = named.then(|| digested_name(&key.public_key_der(), node, purpose));
            let (name, cert) = request::obtain(client, node, purpose, &key, name, &mut tell).await?;
            let key_pem = key.serialize_pem();
            let pair = Pair::from_pem(&cert, key_pem.as_bytes()).with_context(|| format!("the certificate issued for {name}"))?;
            cert_dir.store(prefix, &cert, key_pem.as_bytes(), &stamp(SystemTime::now()))?;
            cert_dir.clear_pending_key(prefix);
            tracing::info!(csr = %name, expires = %stamp(pair.leaf.not_after), "{} issued", purpose.describe());
            anyhow::Ok(pair)
        };
        match attempt.await {
            Ok(pair) => return pair,
            Err(e) => {
                // A refused request is not asked again with the same key: the next gets a new one.
                if matches!(
                    e.downcast_ref::<RequestError>(),
                    Some(RequestError::Denied { .. } | RequestError::Failed { .. } | RequestError::Deleted { .. } | RequestError::Taken { .. })
                ) {
                    cert_dir.clear_pending_key(prefix);
                }
                let delay = backoff.fail();
                tracing::warn!(node, "requesting the {} failed: {e:#}; a new request in {delay:?}", purpose.describe());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str, days: u8) -> Pair {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pair::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    #[test]
    fn the_longest_lasting_node_certificate_is_used() {
        let newest = newest_node_pair(Some(pair("system:node:n", 1)), Some(pair("system:node:n", 9)), "n").unwrap();
        assert_eq!(newest.leaf.not_after, pair("x", 9).leaf.not_after);
        let kept = newest_node_pair(Some(pair("system:node:n", 5)), Some(pair("system:node:other", 9)), "n").unwrap();
        assert_eq!(kept.leaf.common_name, "system:node:n", "another node's certificate in the cert dir is not ours");
        assert!(newest_node_pair(None, None, "n").is_none());
    }
}
