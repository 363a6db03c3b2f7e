//! A raw HTTPS client for the tests: one TLS connection per request, HTTP/1.1.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use nodelet_test_apiserver::{start, Options, Running};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

pub async fn server() -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let running = start(Options::new(dir.path()).node("n1")).await.unwrap();
    (running, dir)
}

#[derive(Clone)]
pub struct Client {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

pub struct Resp {
    pub code: u16,
    pub body: Value,
}

impl Client {
    /// A client with the certificate of `user` in `groups`, or none.
    pub fn new(running: &Running, user: Option<(&str, &[&str])>) -> Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(running.ca_pem().as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match user {
            Some((name, groups)) => {
                let (cert, key) = running.client_cert(name, groups).unwrap();
                builder
                    .with_client_auth_cert(
                        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                    )
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Client {
            port: running.port,
            tls: Arc::new(config),
            token: None,
        }
    }

    pub fn admin(running: &Running) -> Client {
        Client::new(running, Some(("admin", &["system:masters"])))
    }

    pub fn node(running: &Running, name: &str) -> Client {
        Client::new(
            running,
            Some((&format!("system:node:{name}"), &["system:nodes"])),
        )
    }

    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_string());
        self
    }

    pub fn with_port(mut self, port: u16) -> Client {
        self.port = port;
        self
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> hyper::Response<Incoming> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("accept", "application/json");
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> Resp {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let resp = self.send(method, path, content_type, bytes).await;
        let code = resp.status().as_u16();
        let data = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&data).into()));
        Resp { code, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, "", None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, "application/json", Some(body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call("PUT", path, "application/json", Some(body)).await
    }

    pub async fn patch(&self, path: &str, kind: &str, body: Value) -> Resp {
        self.call(
            "PATCH",
            path,
            &format!("application/{kind}-patch+json"),
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str, opts: Option<Value>) -> Resp {
        self.call("DELETE", path, "application/json", opts).await
    }

    pub async fn watch(&self, path: &str) -> Watch {
        let resp = self.send("GET", path, "", Vec::new()).await;
        assert_eq!(resp.status().as_u16(), 200);
        Watch {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }
}

pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event, or None when the stream ends or nothing comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next event that is not a BOOKMARK.
    pub async fn next_change(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let e = self.next(wait).await?;
            if e["type"] != "BOOKMARK" {
                return Some(e);
            }
        }
    }
}

pub fn pod(name: &str, node: Option<&str>) -> Value {
    let mut p = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = serde_json::json!(n);
    }
    p
}

pub fn node(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready",
            "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}]},
    })
}

pub const SECOND: Duration = Duration::from_secs(1);
