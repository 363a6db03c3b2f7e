//! The one way nodelet serves HTTP on its ports (10255 and 10250): accept, a per-port connection
//! limit, an optional handshake (TLS on the secure port) with a timeout, then HTTP/1.1 with the
//! kubelet's limits: a deadline for a request's headers and a cap on their size, so a client that
//! sends half a request, or nothing, cannot hold a connection and its buffers for ever.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// What one port allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From the moment the server waits for a request until its headers are in. hyper starts this
    /// clock as soon as it waits for the next request, so it also closes idle keep-alive
    /// connections: it is the idle timeout too, and stricter than the kubelet's 90 s.
    pub header_read_timeout: Duration,
    /// The request line and headers (the kubelet's MaxHeaderBytes, 1 MiB).
    pub max_header_bytes: usize,
    /// Open connections, handshaking ones included; beyond it a new connection is closed at once.
    pub max_connections: usize,
    /// The TLS handshake, on the secure port.
    pub handshake_timeout: Duration,
}

impl Limits {
    /// 30 s for headers: far longer than any honest client needs on a node's network, short
    /// enough that a flood of half-open requests drains by itself; it is within the kubelet's 90 s
    /// idle timeout, which it also enforces (see `header_read_timeout`).
    pub const KUBELET: Limits =
        Limits { header_read_timeout: Duration::from_secs(30), max_header_bytes: 1 << 20, max_connections: 512, handshake_timeout: Duration::from_secs(10) };
}

/// Turns an accepted TCP connection into the stream HTTP is spoken on and what the handlers learn
/// of the peer (as `ConnectInfo<Peer>`); None drops the connection.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Peer: Clone + Send + Sync + 'static;
    fn handshake(&self, tcp: TcpStream, addr: SocketAddr) -> impl Future<Output = Option<(Self::Io, Self::Peer)>> + Send;
}

/// Plain HTTP: the peer is its address.
#[derive(Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    type Peer = SocketAddr;
    async fn handshake(&self, tcp: TcpStream, addr: SocketAddr) -> Option<(TcpStream, SocketAddr)> {
        Some((tcp, addr))
    }
}

/// Serves `app` on `listener` until the process ends. `port` names the port in logs.
/// Runs a server to its end, saying in the log if it failed (a spawned server has nobody else to
/// tell).
pub async fn log_failure(what: &'static str, server: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(e) = server.await {
        tracing::error!("{what} failed: {e:#}");
    }
}

pub async fn serve<H: Handshake>(listener: TcpListener, app: Router, handshake: H, limits: Limits, port: &'static str) -> anyhow::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(limits.max_header_bytes.max(8192)).keep_alive(true);
    let mut refusals = Refusals::default();
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(refused) = refusals.note(Instant::now()) {
                tracing::warn!(port, limit = limits.max_connections, refused, %addr, "connection limit reached; new connections are closed at once");
            }
            drop(tcp);
            continue;
        };
        let (handshake, app, http) = (handshake.clone(), app.clone(), http.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some((io, peer)) = handshake.handshake(tcp, addr).await else { return };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
                app.clone().oneshot(req)
            });
            // Upgrades (exec, attach, port-forward) leave this connection with their stream; the
            // permit goes with the HTTP connection.
            if let Err(e) = http.serve_connection(TokioIo::new(io), service).with_upgrades().await {
                tracing::debug!(port, %addr, error = %e, "connection ended");
            }
        });
    }
}

/// Counts refused connections so a flood logs one line a minute, not one per connection.
#[derive(Default)]
struct Refusals {
    last_warning: Option<Instant>,
    since: u64,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(60);

    /// The count to report now, if a warning is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        if self.last_warning.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn refusals_warn_once_a_minute() {
        let mut r = Refusals::default();
        let t = Instant::now();
        assert_eq!(r.note(t), Some(1));
        assert_eq!(r.note(t + Duration::from_secs(1)), None);
        assert_eq!(r.note(t + Duration::from_secs(2)), None);
        assert_eq!(r.note(t + Duration::from_secs(61)), Some(3));
    }

    async fn start(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "slow"
        };
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" })).route("/slow", axum::routing::get(slow));
        tokio::spawn(serve(listener, app, Plain, limits, "test"));
        addr
    }

    /// Reads until the server closes (Ok(bytes)) or `wait` passes (Err).
    async fn read_to_close(conn: &mut TcpStream, wait: Duration) -> Result<Vec<u8>, ()> {
        let mut got = Vec::new();
        tokio::time::timeout(wait, conn.read_to_end(&mut got)).await.map_err(|_| ())?.map_err(|_| ())?;
        Ok(got)
    }

    #[tokio::test]
    async fn half_requests_and_idle_connections_are_closed() {
        let limits = Limits { header_read_timeout: Duration::from_millis(300), ..Limits::KUBELET };
        let addr = start(limits).await;
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        assert!(read_to_close(&mut half, Duration::from_secs(5)).await.is_ok(), "a half request is closed");

        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let got = read_to_close(&mut idle, Duration::from_secs(5)).await.expect("an idle keep-alive is closed");
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "the request was answered first");
    }

    #[tokio::test]
    async fn a_response_slower_than_the_header_deadline_is_not_cut() {
        let addr = start(Limits { header_read_timeout: Duration::from_millis(300), ..Limits::KUBELET }).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let got = read_to_close(&mut conn, Duration::from_secs(5)).await.unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("slow"), "{text}");
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let addr = start(Limits { max_header_bytes: 16 << 10, ..Limits::KUBELET }).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 << 10));
        let _ = conn.write_all(big.as_bytes()).await;
        let got = read_to_close(&mut conn, Duration::from_secs(5)).await.unwrap_or_default();
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 431") || got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_held_ones_still_answer() {
        let addr = start(Limits { max_connections: 2, ..Limits::KUBELET }).await;
        let mut held = TcpStream::connect(addr).await.unwrap();
        let _other = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let _ = refused.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let got = read_to_close(&mut refused, Duration::from_secs(5)).await.unwrap_or_default();
        assert!(got.is_empty(), "a connection over the limit gets no answer: {}", String::from_utf8_lossy(&got));
        held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let got = read_to_close(&mut held, Duration::from_secs(5)).await.unwrap();
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }
}
