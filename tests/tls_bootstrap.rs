//! The node's certificates from the cluster, on a real control plane of each test's own:
//! nodelet's own TLS bootstrap with --bootstrap-kubeconfig, renewal of short-lived client
//! certificates while a `kubectl logs -f` stream and nodelet's watches go on, a bootstrap again
//! after the certificate expired while nodelet was stopped, a denied request said with the
//! command that approves the next, and the serving certificate from a kubelet-serving CSR.

mod common;
mod e2e_support;

use common::eventually;
use e2e_support::{ControlPlane, E2e};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, ListParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

fn cert_dir(e2e: &E2e) -> PathBuf {
    e2e.node.dir.path().join("root/pki")
}

/// `openssl verify` of a PEM file against the cluster CA: issued by the cluster.
fn issued_by(cert: &Path, ca: &Path) -> bool {
    Command::new("openssl").args(["verify", "-CAfile"]).arg(ca).arg(cert).output().is_ok_and(|o| o.status.success())
}

fn client_leaf(e2e: &E2e) -> nodelet::credentials::certificate::Leaf {
    let pem = std::fs::read(cert_dir(e2e).join("kubelet-client-current.pem")).unwrap();
    nodelet::credentials::certificate::Pair::from_pem(&pem, &pem).unwrap().leaf
}

fn csrs(e2e: &E2e) -> Vec<CertificateSigningRequest> {
    let api: Api<CertificateSigningRequest> = Api::all(e2e.admin_client());
    e2e.block_on(api.list(&ListParams::default())).unwrap().items
}

fn condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn busybox_pod(name: &str, script: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": common::BUSYBOX, "command": ["sh", "-c", script]}]}})
}

#[test]
fn a_node_bootstraps_renews_its_certificate_while_streams_go_on_and_bootstraps_again_after_expiry() {
    // 30 s certificates: renewed every 21-27 s (the signer backdates them by 5 minutes).
    let plane = ControlPlane::private_with("tls-renew", &[("CLUSTER_SIGNING_DURATION", "30s")]);
    let join = plane.prepare_for_kubeadm(None);
    let files = tempfile::tempdir().unwrap();
    let bootstrap = plane.bootstrap_kubeconfig(&join.token, files.path());
    let kubeconfig = files.path().join("kubelet.conf");
    let ca = plane.ca_file();
    let mut e2e = E2e::start_on("tls-renew", &["--bootstrap-kubeconfig", bootstrap.to_str().unwrap()], plane, &kubeconfig);
    e2e.wait_node_ready();

    // The certificate the cluster issued through a bootstrap-token request.
    let current = cert_dir(&e2e).join("kubelet-client-current.pem");
    assert!(issued_by(&current, &ca), "{} is not signed by the cluster CA", current.display());
    let leaf = client_leaf(&e2e);
    assert_eq!(
        (leaf.common_name.as_str(), leaf.organizations.as_slice()),
        (format!("system:node:{}", e2e.node.name).as_str(), &["system:nodes".to_string()][..])
    );
    let bootstrap_csr =
        csrs(&e2e).into_iter().find(|c| c.spec.username.as_deref().is_some_and(|u| u.starts_with("system:bootstrap:"))).expect("the bootstrap CSR");
    assert!(condition(&bootstrap_csr, "Approved"), "{bootstrap_csr:?}");
    assert_eq!(bootstrap_csr.spec.signer_name, "kubernetes.io/kube-apiserver-client-kubelet");
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(written.contains(current.to_str().unwrap()), "the node kubeconfig points at the current pair:\n{written}");

    // A log stream through the apiserver and the secure port, across renewals.
    e2e.create_pod(busybox_pod("ticker", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"));
    let ticker = e2e.wait_phase_running("ticker");
    let mut stream = e2e.kubectl().spawn(&["logs", "-f", "ticker"]);
    stream.wait_line("the first tick", Duration::from_secs(30), |l| l.starts_with("tick"));

    let renewed = |e2e: &E2e| e2e.node.log().matches("renewed the node's client certificate").count();
    eventually("two renewals of the client certificate", Duration::from_secs(120), || renewed(&e2e) >= 2);
    let after_renewals = Instant::now();
    let renewed_files = std::fs::read_dir(cert_dir(&e2e)).unwrap().filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().ends_with(".pem")).count();
    assert!(renewed_files >= 4, "the bootstrap's and two renewals' files beside the current link: {renewed_files}");
    assert!(issued_by(&current, &ca));

    // The stream still carries new lines; a new pod is seen through the renewed watch and runs;
    // the Lease is renewed with the new certificate; nothing was refused.
    let line = stream.wait_line("a tick after the renewals", Duration::from_secs(10), |l| l.starts_with("tick"));
    assert!(after_renewals.elapsed() < Duration::from_secs(10), "{line}");
    e2e.create_pod(busybox_pod("after", "sleep 3600"));
    e2e.wait_phase_running("after");
    let lease = e2e.lease_renew_time();
    eventually("the Lease renewed after the renewals", Duration::from_secs(30), || e2e.lease_renew_time() != lease);
    let log = e2e.node.log();
    assert!(!log.contains("Unauthorized"), "a request was refused:\n{log}");

    // Stopped until its certificate expired, nodelet bootstraps again and adopts its pods.
    e2e.node.kill9();
    let expiry = client_leaf(&e2e).not_after;
    while SystemTime::now() <= expiry + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(200));
    }
    e2e.node.spawn();
    eventually("a new bootstrap after the expiry", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(e2e.node.log_file()).unwrap_or_default();
        log.contains("client certificate expired") && log.contains("bootstrap done")
    });
    let lease = e2e.lease_renew_time();
    eventually("the Lease renewed after the new bootstrap", Duration::from_secs(30), || e2e.lease_renew_time() != lease);
    let again = e2e.wait_phase_running("ticker");
    let id = |pod: &serde_json::Value| pod["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(id(&again), id(&ticker), "the running container is adopted");
    assert_eq!(again["status"]["containerStatuses"][0]["restartCount"], 0);
}

#[test]
fn a_denied_request_is_said_with_the_command_that_approves_the_next_and_the_serving_certificate_comes_from_the_cluster() {
    let plane = ControlPlane::private("tls-deny");
    // A bootstrap token whose requests nobody approves: no kubeadm auto-approval here.
    let admin = e2e_support::kubectl::Kubectl::new(&plane.admin_kubeconfig(), "kube-system");
    let (id, secret) = ("nodlet", "0123456789abcdef");
    let token_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "stringData": {"token-id": id, "token-secret": secret, "usage-bootstrap-authentication": "true"},
    });
    admin.run(&["apply", "-f", "-"], token_secret.to_string().as_bytes());
    admin.ok(&["create", "clusterrolebinding", "nodelet-test-bootstrappers", "--clusterrole=system:node-bootstrapper", "--group=system:bootstrappers"]);
    let files = tempfile::tempdir().unwrap();
    let bootstrap = plane.bootstrap_kubeconfig(&format!("{id}.{secret}"), files.path());
    let kubeconfig = files.path().join("kubelet.conf");
    let ca = plane.ca_file();
    let e2e = E2e::start_on("tls-deny", &["--bootstrap-kubeconfig", bootstrap.to_str().unwrap(), "--rotate-server-certificates"], plane, &kubeconfig);
    let kubectl = e2e_support::kubectl::Kubectl::new(&e2e.admin_kubeconfig, "default");

    let pending = |e2e: &E2e, signer: &str, except: &[String]| {
        csrs(e2e)
            .into_iter()
            .filter(|c| c.spec.signer_name == signer && !condition(c, "Denied") && !condition(c, "Approved"))
            .filter_map(|c| c.metadata.name)
            .find(|n| !except.contains(n))
    };
    let client_signer = "kubernetes.io/kube-apiserver-client-kubelet";
    let mut first = None;
    eventually("the node's client certificate request", Duration::from_secs(30), || {
        first = pending(&e2e, client_signer, &[]);
        first.is_some()
    });
    let first = first.unwrap();
    assert!(e2e.node.log().contains(&format!("kubectl certificate approve {first}")), "the request is named with its command:\n{}", e2e.node.log());
    kubectl.ok(&["certificate", "deny", &first]);
    eventually("the denial said in the log", Duration::from_secs(30), || e2e.node.log().contains(&format!("{first} was denied")));
    let mut second = None;
    eventually("a new request after the denial", Duration::from_secs(30), || {
        second = pending(&e2e, client_signer, std::slice::from_ref(&first));
        second.is_some()
    });
    let second = second.unwrap();
    eventually("the new request named with its command", Duration::from_secs(10), || e2e.node.log().contains(&format!("kubectl certificate approve {second}")));
    kubectl.ok(&["certificate", "approve", &second]);
    e2e.wait_node_ready();

    // The serving certificate: requested, said once in the log and on the Node, then served.
    let mut serving = None;
    eventually("the serving certificate request", Duration::from_secs(30), || {
        serving = pending(&e2e, "kubernetes.io/kubelet-serving", &[]);
        serving.is_some()
    });
    let serving = serving.unwrap();
    let approve = format!("kubectl certificate approve {serving}");
    eventually("a Node event naming the request", Duration::from_secs(30), || {
        kubectl
            .ok(&["get", "events", "--field-selector", &format!("involvedObject.kind=Node,involvedObject.name={}", e2e.node.name), "-o", "json"])
            .contains(&approve)
    });
    assert_eq!(e2e.node.log().matches("ServingCertificateRequested").count(), 1, "said once");
    kubectl.ok(&["certificate", "approve", &serving]);
    let served = files.path().join("served.pem");
    eventually("the secure port serving the issued certificate", Duration::from_secs(30), || {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509", e2e.node.secure_port))
            .output()
            .unwrap();
        std::fs::write(&served, &out.stdout).unwrap();
        out.status.success() && issued_by(&served, &ca)
    });
    let text = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&served).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("IP Address:127.0.0.1") && text.contains(&format!("DNS:{}", e2e.node.name)), "{text}");
    assert!(cert_dir(&e2e).join("kubelet-server-current.pem").exists());
}
