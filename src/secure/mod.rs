//! The secure port (10250 by default): HTTPS with the kubelet's authentication (client
//! certificates, TokenReview-checked bearer tokens, anonymous if enabled) and authorization
//! (SubjectAccessReview on nodes/<subresource>, or AlwaysAllow). It serves every path of the
//! read-only port (health, pods, spec, configz, metrics, stats), /containerLogs, and /exec,
//! /attach and /portForward relayed to the runtime's streaming server.
//!
//! Pure parts: `attributes` (path to authorization attributes), `logopts` (PodLogOptions),
//! `crilog` (CRI log lines, partials, filters); the live-stream counts are `crate::gauge`. Effectful: `tls`,
//! `auth`, `logs`, `stream`.

pub mod attributes;
pub mod auth;
pub mod crilog;
pub mod logopts;
pub mod logs;
pub mod lookup;
pub mod stream;
pub mod tls;

use crate::server::ReadOnly;
use auth::{Authenticator, Authorizer, User};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use logs::active_streams;
pub use stream::active_relays;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizationMode {
    Webhook,
    AlwaysAllow,
}

#[derive(Clone, Debug)]
pub struct SecureSettings {
    pub addr: SocketAddr,
    pub node_name: String,
    pub node_ips: Vec<IpAddr>,
    /// Where the self-signed serving pair is kept (`<root-dir>/pki`).
    pub cert_dir: PathBuf,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub anonymous: bool,
    pub authentication_webhook: bool,
    pub authorization_mode: AuthorizationMode,
    /// How long webhook answers are kept.
    pub cache_ttls: auth::CacheTtls,
    pub pod_logs_dir: PathBuf,
    /// The runtime exec, attach and port-forward go to; None serves them 503.
    pub cri: Option<crate::runtime::Cri>,
}

impl SecureSettings {
    #[cfg(test)]
    pub(crate) fn for_tests(root: &std::path::Path) -> SecureSettings {
        SecureSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            node_name: "node-t".into(),
            node_ips: vec!["127.0.0.1".parse().unwrap()],
            cert_dir: root.join("pki"),
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            anonymous: false,
            authentication_webhook: false,
            authorization_mode: AuthorizationMode::AlwaysAllow,
            cache_ttls: auth::CacheTtls::default(),
            pod_logs_dir: root.join("logs"),
            cri: None,
        }
    }
}

/// What the listener knows of a connection: its address and the verified client
/// certificate's user, if the client presented one.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub certificate_user: Option<User>,
}

/// The secure port's handshake: TLS within the port's time limit, then the verified client
/// certificate's user, if any.
#[derive(Clone)]
struct TlsHandshake {
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Duration,
}

impl crate::serving::Handshake for TlsHandshake {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Peer = Peer;

    async fn handshake(&self, tcp: tokio::net::TcpStream, addr: SocketAddr) -> Option<(Self::Io, Peer)> {
        let tls = match tokio::time::timeout(self.timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "secure port: TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%addr, "secure port: TLS handshake timed out");
                return None;
            }
        };
        let certificate_user = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| tls::subject(leaf))
            .map(|(cn, orgs)| User::from_certificate(cn, orgs));
        Some((tls, Peer { addr, certificate_user }))
    }
}

struct Security {
    node_name: String,
    authenticator: Authenticator,
    authorizer: Authorizer,
}

fn plain(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

async fn guard(State(sec): State<Arc<Security>>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.clone());
    let certificate_user = peer.as_ref().and_then(|p| p.certificate_user.as_ref());
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let path = req.uri().path().to_string();
    let Some(user) = sec.authenticator.authenticate(certificate_user, authorization).await else {
        tracing::info!(%path, remote = ?peer.map(|p| p.addr), "secure port: unauthorized request refused (401)");
        return plain(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
    };
    let attrs = attributes::request_attributes(req.method().as_str(), &path, &sec.node_name);
    match sec.authorizer.authorize(&user, &attrs).await {
        Ok(true) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Ok(false) => {
            let msg = attributes::forbidden_message(&user.name, &attrs);
            tracing::info!(user = %user.name, %path, verb = %attrs.verb, subresources = ?attrs.subresources, "secure port: request forbidden (403)");
            plain(StatusCode::FORBIDDEN, msg)
        }
        Err(e) => {
            tracing::warn!(user = %user.name, %path, error = %e, "secure port: authorization failed (500)");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization error (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n", user.name, attrs.verb, attrs.subresources.join(" ")),
            )
        }
    }
}

/// The routes of the secure port behind authentication and authorization.
pub fn router(settings: &SecureSettings, state: ReadOnly, api: Option<kube::Client>) -> anyhow::Result<Router> {
    let token_client = if settings.authentication_webhook {
        Some(api.clone().ok_or_else(|| anyhow::anyhow!("--authentication-token-webhook needs an apiserver (--kubeconfig)"))?)
    } else {
        None
    };
    let sec = Arc::new(Security {
        node_name: settings.node_name.clone(),
        authenticator: Authenticator::new(settings.anonymous, token_client, settings.cache_ttls.authenticated),
        authorizer: Authorizer::new(settings.authorization_mode, api, settings.cache_ttls)?,
    });
    let logs = Arc::new(logs::LogsContext { pods: state.pods.clone(), pod_logs_dir: settings.pod_logs_dir.clone() });
    let streams = Arc::new(stream::StreamContext { pods: state.pods.clone(), cri: settings.cri.clone() });
    let (exec_ctx, attach_ctx, forward_ctx) = (streams.clone(), streams.clone(), streams);
    let routes = crate::server::router(state)
        .route("/containerLogs/{namespace}/{pod}/{container}", axum::routing::get(move |path, query| logs::container_logs(logs.clone(), path, query)))
        .route("/exec/{namespace}/{pod}/{container}", axum::routing::any(move |path, query, req| stream::exec(exec_ctx.clone(), path, query, req)))
        .route("/attach/{namespace}/{pod}/{container}", axum::routing::any(move |path, query, req| stream::attach(attach_ctx.clone(), path, query, req)))
        .route("/portForward/{namespace}/{pod}", axum::routing::any(move |path, query, req| stream::port_forward(forward_ctx.clone(), path, query, req)));
    Ok(routes.layer(axum::middleware::from_fn_with_state(sec, guard)))
}

/// A bound secure port, ready to serve.
pub struct SecureServer {
    local: SocketAddr,
    serving: Arc<crate::credentials::identity::Identity>,
    tcp: tokio::net::TcpListener,
    handshake: TlsHandshake,
    app: Router,
}

impl SecureServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The serving certificate, replaceable while the port serves (serverTLSBootstrap).
    pub fn serving_identity(&self) -> Arc<crate::credentials::identity::Identity> {
        self.serving.clone()
    }

    pub async fn run(self) -> anyhow::Result<()> {
        crate::serving::serve(self.tcp, self.app, self.handshake, crate::serving::Limits::KUBELET, "secure").await
    }
}

/// Loads or makes the certificates and binds, so that bad files or a port in use fail at start
/// with the option named.
pub async fn bind(settings: SecureSettings, state: ReadOnly, api: Option<kube::Client>) -> anyhow::Result<SecureServer> {
    let (config, serving) = tls::server_config(&settings)?;
    let app = router(&settings, state, api)?;
    let tcp = tokio::net::TcpListener::bind(settings.addr).await.map_err(|e| anyhow::anyhow!("--port: cannot listen on {}: {e}", settings.addr))?;
    let local = tcp.local_addr().map_err(|e| anyhow::anyhow!("--port: {}: {e}", settings.addr))?;
    tracing::info!(addr = %local, node = %settings.node_name, mode = ?settings.authorization_mode, "secure server listening");
    let handshake = TlsHandshake { acceptor: tokio_rustls::TlsAcceptor::from(config), timeout: crate::serving::Limits::KUBELET.handshake_timeout };
    Ok(SecureServer { local, serving, tcp, handshake, app })
}

pub async fn serve(settings: SecureSettings, state: ReadOnly, api: Option<kube::Client>) -> anyhow::Result<()> {
    bind(settings, state, api).await?.run().await
}
