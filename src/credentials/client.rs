//! A kube client whose client certificate is the node's current one: rustls takes it from the
//! `Identity` at each handshake, and every connection ends when that certificate is replaced.
//! Built from kube's own layers (base URI, auth) over a hyper client, as kube's documentation
//! shows for a custom client.

use super::identity::Identity;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_util::sync::WaitForCancellationFutureOwned;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("its certificate authority: {0}")]
    Roots(#[source] rustls::Error),
    #[error("its cluster has no certificate authority (certificate-authority or certificate-authority-data): the apiserver's certificate cannot be checked")]
    NoRoots,
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("tls-server-name {0:?} is not a valid server name")]
    ServerName(String),
    #[error("{0}")]
    Kube(#[source] kube::Error),
}

/// A client for `config`'s cluster (server, CA, TLS server name, any token) that presents
/// `identity` as its client certificate.
pub fn with_identity(config: &kube::Config, identity: Arc<Identity>) -> Result<kube::Client, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots.add(der.clone().into()).map_err(ClientError::Roots)?;
    }
    if roots.is_empty() {
        return Err(ClientError::NoRoots);
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity.clone());
    // A resumed TLS session keeps the client certificate of the handshake it resumes: after a
    // renewal the apiserver would still see the old one (and refuse it once expired).
    tls.resumption = rustls::client::Resumption::disabled();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(config.connect_timeout);
    // dead peers of long watches are found by the kernel, not by a read timeout
    tcp.set_keepalive(Some(std::time::Duration::from_secs(30)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only();
    let builder = match &config.tls_server_name {
        Some(name) => builder
            .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name.clone().try_into().map_err(|_| ClientError::ServerName(name.clone()))?)),
        None => builder,
    };
    let https = builder.enable_http1().wrap_connector(ClosingConnector { tcp, identity });
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(ClientError::Kube)?)
        .map_err(BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// Opens TCP connections that end when the certificate they were opened under is replaced.
#[derive(Clone)]
struct ClosingConnector {
    tcp: HttpConnector,
    identity: Arc<Identity>,
}

impl tower::Service<hyper::Uri> for ClosingConnector {
    type Response = Closing<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let replaced = self.identity.replaced();
        let connecting = self.tcp.call(uri);
        Box::pin(async move { Ok(Closing { io: connecting.await?, replaced: Box::pin(replaced.cancelled_owned()), closed: false }) })
    }
}

struct Closing<T> {
    io: T,
    replaced: Pin<Box<WaitForCancellationFutureOwned>>,
    closed: bool,
}

impl<T> Closing<T> {
    /// An error once the certificate is replaced: hyper drops the connection and a watch on it
    /// reconnects with the new certificate.
    fn check(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        if !self.closed && self.replaced.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        match self.closed {
            true => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the client certificate was renewed")),
            false => Ok(()),
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Closing<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Closing<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for Closing<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}
