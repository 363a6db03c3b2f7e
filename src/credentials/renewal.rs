//! Renewal while nodelet runs: the node's client certificate (rotateCertificates) and, with
//! serverTLSBootstrap, the secure port's serving certificate, each through a new CSR at a
//! jittered 70-90% of its life. The new certificate takes over without a restart.

use super::bootstrap::{obtain_and_store, tell_client};
use super::csr::Purpose;
use super::identity::Identity;
use super::request::{approve_command, Waiting};
use super::store::{stamp, CertDir};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a renewal loop needs.
pub struct Renewal {
    pub client: kube::Client,
    pub identity: Arc<Identity>,
    pub node: String,
    pub cert_dir: CertDir,
    /// Tried when the client certificate expired anyway (nodelet could not renew it in time):
    /// its bootstrap credentials, if they are still there.
    pub bootstrap_kubeconfig: Option<PathBuf>,
}

/// Renews the node's client certificate forever; `issued` says its first was just issued.
pub async fn renew_client(r: Renewal, mut issued: bool) {
    loop {
        wait_for_renewal(&r.identity, issued, Purpose::Client.describe()).await;
        let client = match r.identity.leaf().expired_at(SystemTime::now()) {
            true => bootstrap_client(&r).await.unwrap_or_else(|| r.client.clone()),
            false => r.client.clone(),
        };
        let pair = obtain_and_store(&client, &r.node, &Purpose::Client, &r.cert_dir, false, |w| tell_client(&r.node, w)).await;
        match r.identity.replace(&pair) {
            Ok(()) => tracing::info!(expires = %stamp(pair.leaf.not_after), "renewed the node's client certificate; new connections use it"),
            Err(e) => tracing::error!(error = %e, "the renewed client certificate cannot be used; keeping the current one"),
        }
        issued = true;
    }
}

/// With serverTLSBootstrap: the serving certificate from the cluster (a kubelet-serving CSR for
/// the node's names and addresses), then renewed forever. Until the first is issued the port
/// serves what it started with. A kubelet-serving request needs an approver: nodelet says so
/// once, in the log and as an event on the Node.
pub async fn serve_from_cluster(r: Renewal, purpose: Purpose, events: crate::events::Recorder) {
    // Whether the port already serves an issued certificate (one found in the cert dir at start).
    let mut serving_issued = r.cert_dir.load_current(purpose.file_prefix()).is_some_and(|p| p.leaf == r.identity.leaf());
    let mut just_issued = false;
    loop {
        if serving_issued {
            wait_for_renewal(&r.identity, just_issued, purpose.describe()).await;
        }
        let mut told = false;
        let tell = |w: Waiting<'_>| {
            if let Waiting::Filed { name } = w {
                let message = format!(
                    "requested the secure port's serving certificate as {name} (signer kubernetes.io/kubelet-serving); \
                     nothing in a default cluster approves such requests: approve it with `{}`",
                    approve_command(name)
                );
                if !told {
                    events.record_node(&r.node, crate::events::Kind::Normal, "ServingCertificateRequested", message);
                    told = true;
                }
            }
        };
        let pair = obtain_and_store(&r.client, &r.node, &purpose, &r.cert_dir, false, tell).await;
        match r.identity.replace(&pair) {
            Ok(()) => tracing::info!(expires = %stamp(pair.leaf.not_after), "the secure port serves the certificate the cluster issued"),
            Err(e) => tracing::error!(error = %e, "the issued serving certificate cannot be used; keeping the current one"),
        }
        (serving_issued, just_issued) = (true, true);
    }
}

async fn bootstrap_client(r: &Renewal) -> Option<kube::Client> {
    let path = r.bootstrap_kubeconfig.as_ref()?;
    let loaded = super::kubeconfig::load(path).inspect_err(|e| tracing::warn!(error = %e, "--bootstrap-kubeconfig")).ok()?;
    let config = loaded.client_config().await.ok()?;
    tracing::warn!("the node's client certificate expired before it was renewed: requesting a new one with --bootstrap-kubeconfig");
    kube::Client::try_from(config).ok()
}

/// Sleeps until the identity's certificate is due for renewal (`issued` just now, or found at
/// start). Wakes at least hourly to look at the wall clock again, which a suspended machine or a
/// clock step moves.
async fn wait_for_renewal(identity: &Identity, issued: bool, what: &str) {
    let leaf = identity.leaf();
    let deadline = super::certificate::renewal_deadline(&leaf, SystemTime::now(), rand::random::<f64>(), issued);
    tracing::info!(renew_at = %stamp(deadline), expires = %stamp(leaf.not_after), "{what} renewal scheduled");
    while let Ok(left) = deadline.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_secs(3600))).await;
    }
}
