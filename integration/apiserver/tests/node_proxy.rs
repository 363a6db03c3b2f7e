//! pods/log (and the other node subresources) proxied to a kubelet: a fake kubelet on
//! loopback records what it is asked and by whom; the reviews a kubelet sends in webhook mode.

mod common;

use std::sync::{Arc, Mutex};

use common::{node, pod, server, Client};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nodelet_test_apiserver::auth::user_from_cert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

const PODS: &str = "/api/v1/namespaces/default/pods";

/// What the fake kubelet saw: (client certificate's user and groups, path and query).
type Seen = Arc<Mutex<Vec<(String, Vec<String>, String)>>>;

/// A kubelet stand-in on 127.0.0.1: serves "hello\n" for the logs of container `c` of pod
/// default/p, 400 for `previous`, and requires a client certificate from the apiserver's CA.
async fn fake_kubelet(ca_pem: &str) -> (u16, Seen) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let serving = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![serving.cert.der().clone()],
            PrivateKeyDer::from_pem_slice(serving.key_pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| user_from_cert(c))
                .unwrap();
            let record = record.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let path = req.uri().path_and_query().unwrap().to_string();
                record
                    .lock()
                    .unwrap()
                    .push((user.name.clone(), user.groups.clone(), path.clone()));
                async move {
                    let (code, body) = if path.contains("previous=true") {
                        (
                            400,
                            "previous terminated container \"c\" in pod \"p\" not found",
                        )
                    } else if path.starts_with("/containerLogs/default/p/c") {
                        (200, "hello\n")
                    } else {
                        (404, "not found")
                    };
                    let resp = hyper::Response::builder()
                        .status(code)
                        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service),
            );
        }
    });
    (port, seen)
}

fn node_at(name: &str, address: Option<&str>, port: u16) -> serde_json::Value {
    let mut n = node(name);
    if let Some(a) = address {
        n["status"]["addresses"] =
            json!([{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": a}]);
    }
    n["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
    n
}

#[tokio::test]
async fn logs_are_fetched_from_the_pods_kubelet_with_the_kubelet_client_certificate() {
    let (s, _dir) = server().await;
    let admin = Client::admin(&s);
    let (port, seen) = fake_kubelet(s.ca_pem()).await;
    assert_eq!(
        admin
            .post("/api/v1/nodes", node_at("n1", Some("127.0.0.1"), port))
            .await
            .code,
        201
    );
    assert_eq!(admin.post(PODS, pod("p", Some("n1"))).await.code, 201);

    let logs = admin
        .get(&format!("{PODS}/p/log?tailLines=1&follow=false"))
        .await;
    assert_eq!((logs.code, logs.body), (200, json!("hello\n")));
    let (user, groups, path) = seen.lock().unwrap()[0].clone();
    assert_eq!(user, "kube-apiserver-kubelet-client");
    assert_eq!(groups, ["system:masters"]);
    assert_eq!(path, "/containerLogs/default/p/c?tailLines=1&follow=false");

    // The kubelet's refusal comes back with its code and message.
    let previous = admin
        .get(&format!("{PODS}/p/log?container=c&previous=true"))
        .await;
    assert_eq!(previous.code, 400);
    assert_eq!(
        previous.body["message"],
        "previous terminated container \"c\" in pod \"p\" not found"
    );

    // A node may not read pods' logs; an unknown container is refused before any dial.
    assert_eq!(
        Client::node(&s, "n1")
            .get(&format!("{PODS}/p/log"))
            .await
            .code,
        403
    );
    let wrong = admin.get(&format!("{PODS}/p/log?container=x")).await;
    assert_eq!(
        (wrong.code, wrong.body["message"].clone()),
        (400, json!("container x is not valid for pod p"))
    );
}

#[tokio::test]
async fn unscheduled_pods_and_nodes_without_address_are_clear_errors() {
    let (s, _dir) = server().await;
    let admin = Client::admin(&s);
    assert_eq!(admin.post(PODS, pod("floating", None)).await.code, 201);
    let r = admin.get(&format!("{PODS}/floating/log")).await;
    assert_eq!(
        (r.code, r.body["message"].clone()),
        (400, json!("pod floating does not have a host assigned"))
    );

    assert_eq!(
        admin
            .post("/api/v1/nodes", node_at("bare", None, 10250))
            .await
            .code,
        201
    );
    assert_eq!(
        admin.post(PODS, pod("stranded", Some("bare"))).await.code,
        201
    );
    let r = admin
        .post(
            &format!("{PODS}/stranded/exec?command=true&stdout=true"),
            json!({}),
        )
        .await;
    assert_eq!(r.code, 500);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("node bare has no preferred address"),
        "{:?}",
        r.body
    );

    assert_eq!(
        admin.post(PODS, pod("orphan", Some("gone"))).await.code,
        201
    );
    assert_eq!(admin.get(&format!("{PODS}/orphan/log")).await.code, 404);
}

#[tokio::test]
async fn kubelets_get_answers_to_their_reviews() {
    let (s, _dir) = server().await;
    let kubelet = Client::node(&s, "n1");
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": "kube-apiserver-kubelet-client", "groups": ["system:masters", "system:authenticated"],
        "resourceAttributes": {"verb": "create", "resource": "nodes", "subresource": "proxy", "name": "n1"}}});
    let r = kubelet
        .post("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        .await;
    assert_eq!(
        (r.code, r.body["status"]["allowed"].clone()),
        (201, json!(true))
    );
    let r = kubelet
        .post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            json!({"spec": {"token": "unknown"}}),
        )
        .await;
    assert_eq!(
        (r.code, r.body["status"]["authenticated"].clone()),
        (201, json!(false))
    );
    let outsider = Client::new(&s, Some(("alice", &["devs"])));
    assert_eq!(
        outsider
            .post(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                json!({"spec": {"token": "x"}})
            )
            .await
            .code,
        403
    );
}
