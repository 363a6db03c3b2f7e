//! The connection to a node's kubelet: HTTPS with the apiserver's kubelet-client certificate
//! (CN kube-apiserver-kubelet-client, O system:masters), not checking the kubelet's serving
//! certificate, as kube-apiserver does without --kubelet-certificate-authority. Logs are
//! streamed back; exec, attach and port-forward are relayed byte for byte after the 101.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::auth::Pki;
use crate::error::{ApiError, ApiResult};
use crate::node_target::KubeletTarget;

pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a kubelet's error answer is kept for the Status message.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Accepts any serving certificate, but still checks that the kubelet signed the handshake
/// with the key of the certificate it showed.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The apiserver's client of kubelets.
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

/// Headers that belong to one hop and are not forwarded on a plain (non-upgrade) request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "proxy-connection",
];

impl KubeletClient {
    pub fn new(pki: &Pki) -> anyhow::Result<KubeletClient> {
        let (cert_pem, key_pem) = pki.client(KUBELET_CLIENT_USER, &["system:masters"])?;
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("kubelet client certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("kubelet client key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
            .with_client_auth_cert(certs, key)?;
        // Upgrades (SPDY, websocket) only exist in HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Opens an HTTP/1.1 connection to the kubelet at `authority`.
    async fn connect(
        &self,
        authority: &str,
    ) -> ApiResult<hyper::client::conn::http1::SendRequest<Body>> {
        let dial_error = |e: String| ApiError::internal(format!("error dialing backend: {e}"));
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(authority))
            .await
            .map_err(|_| dial_error(format!("dial tcp {authority}: i/o timeout")))?
            .map_err(|e| dial_error(format!("dial tcp {authority}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .unwrap_or(authority);
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| dial_error(format!("{authority}: {e}")))?;
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| dial_error(format!("TLS handshake with {authority}: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| dial_error(format!("{authority}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Sends `req` (its headers) to the kubelet as `target` and answers what the kubelet
    /// answered: a streamed body, an error Status, or a 101 whose connection is relayed.
    pub async fn forward(
        &self,
        target: &KubeletTarget,
        mut req: Request<Body>,
        upgrade: bool,
    ) -> ApiResult<Response<Body>> {
        let mut sender = self.connect(&target.authority).await?;
        let mut out = Request::builder()
            .method(req.method().clone())
            .uri(target.path_and_query.as_str());
        for (name, value) in req.headers() {
            // The apiserver speaks to the kubelet as itself, not with the user's credentials.
            if name == header::HOST || name == header::AUTHORIZATION {
                continue;
            }
            if !upgrade && HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            out = out.header(name, value);
        }
        let out = out
            .header(header::HOST, target.authority.as_str())
            .body(Body::empty())
            .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
        let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
        let resp = sender
            .send_request(out)
            .await
            .map_err(|e| ApiError::internal(format!("kubelet {}: {e}", target.authority)))?;
        let status = resp.status();
        if upgrade && status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(relay_upgraded(client_side, resp));
        }
        if upgrade {
            // Like the apiserver's upgrade-aware proxy: the kubelet's refusal goes back as is.
            let (parts, body) = resp_body(resp).await;
            let mut back = Response::builder().status(status);
            if let Some(v) = parts.headers.get(header::CONTENT_TYPE) {
                back = back.header(header::CONTENT_TYPE, v);
            }
            return back
                .body(Body::from(body))
                .map_err(|e| ApiError::internal(e.to_string()));
        }
        if !status.is_success() {
            return Err(node_error(status, resp).await);
        }
        let (parts, body) = resp.into_parts();
        let mut back = Response::builder().status(status);
        for name in [
            header::CONTENT_TYPE,
            HeaderName::from_static("cache-control"),
        ] {
            if let Some(v) = parts.headers.get(&name) {
                back = back.header(name, v);
            }
        }
        back.body(Body::new(body))
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// The kubelet's error answer to a plain request, as a Status with its code and message.
async fn node_error(status: StatusCode, resp: hyper::Response<hyper::body::Incoming>) -> ApiError {
    let (_, body) = resp_body(resp).await;
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let message = if message.is_empty() {
        format!(
            "the server responded with the status code {} but did not return more information",
            status.as_u16()
        )
    } else {
        message
    };
    ApiError::new(status.as_u16(), reason, message)
}

/// A response's head and (at most ERROR_BODY_LIMIT bytes of) its body.
async fn resp_body(
    resp: hyper::Response<hyper::body::Incoming>,
) -> (hyper::http::response::Parts, Vec<u8>) {
    let (parts, body) = resp.into_parts();
    let limited = http_body_util::Limited::new(body, ERROR_BODY_LIMIT);
    let bytes = http_body_util::BodyExt::collect(limited)
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (parts, bytes)
}

/// Answers 101 with the kubelet's handshake headers and, once the client's side has switched
/// too, copies bytes both ways until either side closes.
fn relay_upgraded(
    client_side: Option<hyper::upgrade::OnUpgrade>,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Response<Body> {
    let mut back = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in resp.headers() {
        back = back.header(name, value);
    }
    let kubelet_side = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        let Some(client_side) = client_side else {
            return;
        };
        match (client_side.await, kubelet_side.await) {
            (Ok(client), Ok(kubelet)) => {
                let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(kubelet));
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
            (Err(e), _) | (_, Err(e)) => tracing::debug!("node proxy upgrade: {e}"),
        }
    });
    back.body(Body::empty()).unwrap_or_default()
}
