//! The secure port in-process: TLS with a client CA made here, AlwaysAllow, a pod store with a
//! fake pod whose CRI log files the test writes. Needs neither root nor containerd.

use bytes_util::*;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod, PodSpec, PodStatus,
};
use nodelet::health::Health;
use nodelet::pods::store::PodStore;
use nodelet::secure::{AuthorizationMode, SecureSettings};
use nodelet::server::ReadOnly;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod bytes_util {
    pub type Body = http_body_util::Empty<hyper::body::Bytes>;
}

const UID: &str = "uid-1";

struct Fixture {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    pods: PodStore,
    /// <pod-logs-dir>/default_web_uid-1
    pod_dir: PathBuf,
    server_ca: CertificateDer<'static>,
    client: (Vec<CertificateDer<'static>>, String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn container_status(name: &str, state: ContainerState, last: Option<ContainerState>, restarts: i32) -> ContainerStatus {
    ContainerStatus { name: name.into(), restart_count: restarts, state: Some(state), last_state: last, ..Default::default() }
}

fn running() -> ContainerState {
    ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() }
}

fn terminated() -> ContainerState {
    ContainerState { terminated: Some(ContainerStateTerminated { exit_code: 0, ..Default::default() }), ..Default::default() }
}

fn web_pod() -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some("web".into());
    pod.metadata.namespace = Some("default".into());
    pod.metadata.uid = Some(UID.into());
    pod.spec = Some(PodSpec {
        containers: vec![Container { name: "app".into(), ..Default::default() }, Container { name: "late".into(), ..Default::default() }],
        ..Default::default()
    });
    pod
}

fn status(app: ContainerStatus) -> PodStatus {
    let late = container_status(
        "late",
        ContainerState { waiting: Some(ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None }), ..Default::default() },
        None,
        0,
    );
    PodStatus { phase: Some("Running".into()), container_statuses: Some(vec![app, late]), ..Default::default() }
}

const PREVIOUS_LOG: &str = "2024-05-01T09:00:00.000000000Z stdout F old run\n";
const CURRENT_LOG: &str = "\
2024-05-01T10:00:00.000000001Z stdout F one
2024-05-01T10:00:01Z stderr F two
2024-05-01T10:00:02Z stdout P thr
2024-05-01T10:00:02.5Z stdout F ee
2024-05-01T10:00:03Z stdout F four
";

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // A client CA and a client certificate it signed (CN alice, O devs).
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "test-client-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.path().join("client-ca.crt"), ca.pem()).unwrap();
    let mut client_params = CertificateParams::default();
    client_params.distinguished_name.push(DnType::CommonName, "alice");
    client_params.distinguished_name.push(DnType::OrganizationName, "devs");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    let pods = PodStore::default();
    let pod = web_pod();
    pods.set_status(&pod, status(container_status("app", running(), Some(terminated()), 1)));
    let logs_dir = dir.path().join("pod-logs");
    let pod_dir = logs_dir.join(format!("default_web_{UID}"));
    std::fs::create_dir_all(pod_dir.join("app")).unwrap();
    std::fs::write(pod_dir.join("app/0.log"), PREVIOUS_LOG).unwrap();
    std::fs::write(pod_dir.join("app/1.log"), CURRENT_LOG).unwrap();

    let settings = SecureSettings {
        addr: "127.0.0.1:0".parse().unwrap(),
        node_name: "node-secure".into(),
        node_ips: vec!["127.0.0.1".parse().unwrap()],
        cert_dir: dir.path().join("pki"),
        tls_cert_file: None,
        tls_key_file: None,
        client_ca_file: Some(dir.path().join("client-ca.crt")),
        anonymous: false,
        authentication_webhook: false,
        authorization_mode: AuthorizationMode::AlwaysAllow,
        cache_ttls: Default::default(),
        pod_logs_dir: logs_dir,
        cri: None,
    };
    let state = ReadOnly::new(Arc::new(Health::new(Duration::from_secs(3600))), pods.clone());
    let server = nodelet::secure::bind(settings, state, None).await.expect("bind");
    let addr = server.local_addr();
    tokio::spawn(server.run());
    let server_ca = CertificateDer::from_pem_file(dir.path().join("pki/nodelet.crt")).unwrap();
    Fixture { _dir: dir, addr, pods, pod_dir, server_ca, client: (vec![client_cert.der().clone()], client_key.serialize_pem()) }
}

impl Fixture {
    async fn connect(&self, with_cert: bool) -> hyper::client::conn::http1::SendRequest<Body> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
        let config = if with_cert {
            let key = PrivateKeyDer::from_pem_slice(self.client.1.as_bytes()).unwrap();
            builder.with_client_auth_cert(self.client.0.clone(), key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.expect("TLS handshake");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn request(&self, with_cert: bool, path: &str) -> hyper::Response<hyper::body::Incoming> {
        let mut sender = self.connect(with_cert).await;
        let req = hyper::Request::get(path).header("host", "127.0.0.1").body(Body::new()).unwrap();
        sender.send_request(req).await.unwrap()
    }

    async fn get(&self, with_cert: bool, path: &str) -> (u16, String) {
        let resp = self.request(with_cert, path).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn append(&self, file: &str, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(self.pod_dir.join(file)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

/// Reads from a streaming body until `want` is in what was read (or the stream ends).
async fn read_until(body: &mut hyper::body::Incoming, got: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    got.push_str(&String::from_utf8_lossy(data));
                }
            }
            Ok(other) => panic!("stream ended before {want:?}: {other:?}; got {got:?}"),
            Err(_) => panic!("timed out waiting for {want:?}; got {got:?}"),
        }
    }
}

#[tokio::test]
async fn anonymous_is_refused_and_a_client_certificate_is_let_in() {
    let f = start().await;
    let (status, body) = f.get(false, "/healthz").await;
    assert_eq!((status, body.as_str()), (401, "Unauthorized\n"));
    assert_eq!(f.get(false, "/containerLogs/default/web/app").await.0, 401);
    assert_eq!(f.get(true, "/healthz").await, (200, "ok".to_string()));
    let (status, body) = f.get(true, "/pods").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    assert_eq!(f.get(true, "/nothing-here").await.0, 404);
}

#[tokio::test]
async fn container_logs_honour_the_query() {
    let f = start().await;
    let (status, body) = f.get(true, "/containerLogs/default/web/app").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "one\ntwo\nthree\nfour\n");
    assert_eq!(f.get(true, "/containerLogs/default/web/app?tailLines=2").await.1, "three\nfour\n");
    assert_eq!(f.get(true, "/containerLogs/default/web/app?tailLines=1&timestamps=true").await.1, "2024-05-01T10:00:03.000000000Z four\n");
    assert_eq!(f.get(true, "/containerLogs/default/web/app?limitBytes=6").await.1, "one\ntw");
    assert_eq!(f.get(true, "/containerLogs/default/web/app?sinceTime=2024-05-01T10:00:01Z").await.1, "two\nthree\nfour\n");
    assert_eq!(f.get(true, "/containerLogs/default/web/app?previous=true").await.1, "old run\n");
    // previous + follow: the previous run is over, the stream ends by itself
    assert_eq!(f.get(true, "/containerLogs/default/web/app?previous=true&follow=true").await.1, "old run\n");
}

#[tokio::test]
async fn container_logs_errors_are_clear() {
    let f = start().await;
    let (status, body) = f.get(true, "/containerLogs/default/nope/app").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"nope\" does not exist"), "{body}");
    let (status, body) = f.get(true, "/containerLogs/default/web/ghost").await;
    assert_eq!(status, 404);
    assert!(body.contains("container \"ghost\" not found in pod \"web\""), "{body}");
    let (status, body) = f.get(true, "/containerLogs/default/web/app?tailLines=x").await;
    assert_eq!(status, 400);
    assert!(body.contains("tailLines"), "{body}");
    let (status, body) = f.get(true, "/containerLogs/default/web/app?sinceSeconds=5&sinceTime=2024-05-01T10:00:01Z").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = f.get(true, "/containerLogs/default/web/late").await;
    assert_eq!(status, 400);
    assert_eq!(body, "container \"late\" in pod \"web\" is waiting to start: ContainerCreating\n");
}

#[tokio::test]
async fn follow_streams_new_lines_and_ends_with_the_container() {
    let f = start().await;
    let resp = f.request(true, "/containerLogs/default/web/app?follow=true&tailLines=1").await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, "four\n").await;
    assert_eq!(got, "four\n");
    f.append("app/1.log", "2024-05-01T10:00:04Z stdout F five\n2024-05-01T10:00:05Z stderr P si");
    read_until(&mut body, &mut got, "five\n").await;
    f.append("app/1.log", "x\n2024-05-01T10:00:05.1Z stderr F x\n");
    read_until(&mut body, &mut got, "sixx\n").await;
    // The container ends: what was written last is still sent, then the stream ends.
    f.append("app/1.log", "2024-05-01T10:00:06Z stdout F bye\n");
    f.pods.set_status(&web_pod(), status(container_status("app", terminated(), Some(terminated()), 1)));
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect()).await.expect("stream ends").unwrap().to_bytes();
    got.push_str(&String::from_utf8_lossy(&rest));
    assert_eq!(got, "four\nfive\nsixx\nbye\n");
}

#[tokio::test]
async fn a_client_leaving_mid_follow_releases_the_stream() {
    let f = start().await;
    let resp = f.request(true, "/containerLogs/default/web/app?follow=true").await;
    let mut body = resp.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, "four\n").await;
    assert!(nodelet::secure::active_streams() >= 1);
    drop(body);
    // Other tests in this binary stream too, but none follows for long: all end.
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodelet::secure::active_streams() > 0 {
        assert!(Instant::now() < deadline, "follower still running after the client left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stand-in apiserver answering TokenReviews (token "good" is bob in group "ops") and
/// SubjectAccessReviews (bob may get nodes/healthz only), counting the calls.
async fn review_apiserver() -> (kube::Client, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let (c1, c2) = (calls.clone(), calls.clone());
    let app = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(move |axum::Json(mut review): axum::Json<serde_json::Value>| async move {
                c1.fetch_add(1, Ordering::SeqCst);
                let good = review["spec"]["token"] == "good";
                review["status"] = if good {
                    serde_json::json!({"authenticated": true, "user": {"username": "bob", "uid": "b-1", "groups": ["ops"]}})
                } else {
                    serde_json::json!({"authenticated": false})
                };
                axum::Json(review)
            }),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(move |axum::Json(mut review): axum::Json<serde_json::Value>| async move {
                c2.fetch_add(1, Ordering::SeqCst);
                let attrs = &review["spec"]["resourceAttributes"];
                let allowed = review["spec"]["user"] == "bob"
                    && attrs["resource"] == "nodes"
                    && attrs["subresource"] == "healthz"
                    && attrs["name"] == "node-secure"
                    && attrs["verb"] == "get";
                review["status"] = serde_json::json!({"allowed": allowed});
                axum::Json(review)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(url.parse().unwrap());
    (kube::Client::try_from(config).unwrap(), calls)
}

/// A secure port that asks `api` (TokenReview, SubjectAccessReview), anonymous allowed.
struct WebhookPort {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    server_ca: CertificateDer<'static>,
}

impl WebhookPort {
    async fn start(api: kube::Client, cache_ttls: nodelet::secure::auth::CacheTtls) -> WebhookPort {
        let dir = tempfile::tempdir().unwrap();
        let settings = SecureSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            node_name: "node-secure".into(),
            node_ips: vec![],
            cert_dir: dir.path().join("pki"),
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            anonymous: true,
            authentication_webhook: true,
            authorization_mode: AuthorizationMode::Webhook,
            cache_ttls,
            pod_logs_dir: dir.path().join("logs"),
            cri: None,
        };
        let state = ReadOnly::new(Arc::new(Health::new(Duration::from_secs(3600))), PodStore::default());
        let server = nodelet::secure::bind(settings, state, Some(api)).await.expect("bind");
        let addr = server.local_addr();
        tokio::spawn(server.run());
        let server_ca = CertificateDer::from_pem_file(dir.path().join("pki/nodelet.crt")).unwrap();
        WebhookPort { _dir: dir, addr, server_ca }
    }

    /// GET `path` with the bearer `token`, if any: (status, body).
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let (addr, server_ca) = (self.addr, self.server_ca.clone());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server_ca).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", "127.0.0.1");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = sender.send_request(req.body(Body::new()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test]
async fn tokens_and_webhook_authorization() {
    let (api, calls) = review_apiserver().await;
    let port = WebhookPort::start(api, Default::default()).await;
    let get = |path, token| port.get(path, token);
    assert_eq!(get("/healthz", Some("good")).await, (200, "ok".to_string()));
    let (status, body) = get("/pods", Some("good")).await;
    assert_eq!(status, 403);
    assert_eq!(body, "Forbidden (user=bob, verb=get, resource=nodes, subresource(s)=[pods proxy])\n");
    // A refused token is a 401 even with anonymous auth on; no token is anonymous, who may not.
    assert_eq!(get("/healthz", Some("bad")).await.0, 401);
    let (status, body) = get("/healthz", None).await;
    assert_eq!(status, 403);
    assert!(body.contains("user=system:anonymous"), "{body}");
    // Answers are cached: asking again reaches the apiserver no more.
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get("/healthz", Some("good")).await.0, 200);
    assert_eq!(get("/pods", Some("good")).await.0, 403);
    assert_eq!(get("/healthz", Some("bad")).await.0, 401);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before);
}

#[tokio::test]
async fn webhook_answers_are_kept_for_the_configured_ttls() {
    use std::sync::atomic::Ordering::SeqCst;
    let (api, calls) = review_apiserver().await;
    let short = Duration::from_secs(2);
    let ttls = nodelet::secure::auth::CacheTtls { authenticated: short, authorized: short, unauthorized: Duration::from_secs(3600) };
    let port = WebhookPort::start(api, ttls).await;
    // bob: one TokenReview and one SubjectAccessReview for /healthz (allowed), one for /pods
    // (denied: asked for two subresources).
    assert_eq!(port.get("/healthz", Some("good")).await.0, 200);
    assert_eq!(port.get("/pods", Some("good")).await.0, 403);
    let first = calls.load(SeqCst);
    assert_eq!(port.get("/healthz", Some("good")).await.0, 200);
    assert_eq!(calls.load(SeqCst), first, "answered from the caches");
    tokio::time::sleep(short + Duration::from_millis(500)).await;
    // The token and the "allowed" are asked again; the "denied" is still kept.
    assert_eq!(port.get("/healthz", Some("good")).await.0, 200);
    assert_eq!(calls.load(SeqCst), first + 2);
    assert_eq!(port.get("/pods", Some("good")).await.0, 403);
    assert_eq!(calls.load(SeqCst), first + 2);
}
