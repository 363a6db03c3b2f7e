//! A test client for the kubelet's streaming protocols over websocket, spoken to a nodelet's
//! secure port (TLS, trusting the node's self-signed certificate):
//! - exec and attach, `v4.channel.k8s.io`: every binary message starts with its channel,
//!   0 stdin, 1 stdout, 2 stderr, 3 error (a metav1.Status JSON, with the exit code when it is
//!   not 0), 4 resize (`{"Width":w,"Height":h}`); the server opens with an empty message on the
//!   lowest output channel. v4 has no way to close stdin alone: closing the socket does.
//! - port-forward, `v4.channel.k8s.io` too: per requested port a data channel (2i) and an error
//!   channel (2i+1); the server's first message on each is the port, 2 bytes little-endian.

use super::Node;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;

/// Longest wait for one message before the test gives up (a hang guard, not a timing check).
const PATIENCE: Duration = Duration::from_secs(60);

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
pub type Socket = tokio_tungstenite::WebSocketStream<Tls>;

/// An answer other than 101 Switching Protocols.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// A TLS connection to the node's secure port.
pub async fn connect_tls(node: &Node) -> Tls {
    let ca = CertificateDer::from_pem_file(node.dir.path().join("root/pki/nodelet.crt")).expect("the node's self-signed serving certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", node.secure_port)).await.expect("connecting to the secure port");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake with the secure port")
}

/// Opens a websocket on `path` asking for `protocol`; an answer other than 101 is `Refused`.
pub async fn open(node: &Node, path: &str, protocol: &str) -> Result<Channels, Refused> {
    let tls = connect_tls(node).await;
    let mut request = format!("wss://127.0.0.1:{}{path}", node.secure_port).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    match tokio_tungstenite::client_async(request, tls).await {
        Ok((ws, response)) => {
            let protocol = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            Ok(Channels { ws, protocol })
        }
        Err(WsError::Http(response)) => {
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            Err(Refused { status: response.status().as_u16(), body })
        }
        Err(e) => panic!("websocket handshake on {path}: {e}"),
    }
}

/// `command=a&command=b` with each argument percent-encoded.
pub fn command_query(command: &[&str]) -> String {
    let encode = |arg: &str| arg.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>();
    command.iter().map(|c| format!("command={}", encode(c))).collect::<Vec<_>>().join("&")
}

/// The exec path of a container with the given command and flags (`stdin=1&tty=1` ...).
pub fn exec_path(namespace: &str, pod: &str, container: &str, command: &[&str], flags: &str) -> String {
    format!("/exec/{namespace}/{pod}/{container}?{}&{flags}", command_query(command))
}

/// What an exec or attach stream brought back once the server closed it.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// The metav1.Status sent on the error channel, if any.
    pub status: Option<serde_json::Value>,
}

impl Outcome {
    /// The exit code the status carries: 0 for Success, the ExitCode cause otherwise.
    pub fn exit_code(&self) -> Option<i32> {
        exit_code(self.status.as_ref()?)
    }
}

pub fn exit_code(status: &serde_json::Value) -> Option<i32> {
    if status["status"] == "Success" {
        return Some(0);
    }
    let causes = status["details"]["causes"].as_array()?;
    let cause = causes.iter().find(|c| c["reason"] == "ExitCode")?;
    cause["message"].as_str()?.parse().ok()
}

/// One multiplexed websocket stream.
pub struct Channels {
    ws: Socket,
    /// The subprotocol the server chose.
    pub protocol: String,
}

impl Channels {
    pub async fn send(&mut self, channel: u8, data: &[u8]) {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(data);
        self.ws.send(Message::binary(frame)).await.expect("sending on the websocket");
    }

    pub async fn stdin(&mut self, data: &str) {
        self.send(STDIN, data.as_bytes()).await;
    }

    pub async fn resize(&mut self, width: u16, height: u16) {
        let size = serde_json::json!({ "Width": width, "Height": height });
        self.send(RESIZE, size.to_string().as_bytes()).await;
    }

    /// The next data message as (channel, payload); None once the stream is closed.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("no websocket message for a minute");
            match next? {
                Ok(Message::Binary(data)) if !data.is_empty() => return Some((data[0], data[1..].to_vec())),
                Ok(Message::Text(text)) => panic!("unexpected text message {text:?} on a binary channel protocol"),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next data message if one comes within `wait`: None if none came, Some(None) once the
    /// stream is closed.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Option<(u8, Vec<u8>)>> {
        tokio::time::timeout(wait, self.recv()).await.ok()
    }

    /// Reads until `channel` has carried `want`, returning all it carried so far.
    pub async fn read_until(&mut self, channel: u8, want: &str) -> String {
        let mut got = String::new();
        while !got.contains(want) {
            match self.recv().await {
                Some((c, data)) if c == channel => got.push_str(&String::from_utf8_lossy(&data)),
                Some(_) => {}
                None => panic!("stream closed before channel {channel} carried {want:?}; it carried {got:?}"),
            }
        }
        got
    }

    /// Reads everything until the server closes the stream.
    pub async fn finish(mut self) -> Outcome {
        let mut out = Outcome::default();
        let mut error = Vec::new();
        while let Some((channel, data)) = self.recv().await {
            match channel {
                STDOUT => out.stdout.push_str(&String::from_utf8_lossy(&data)),
                STDERR => out.stderr.push_str(&String::from_utf8_lossy(&data)),
                ERROR => error.extend_from_slice(&data),
                _ => {}
            }
        }
        if !error.is_empty() {
            out.status =
                Some(serde_json::from_slice(&error).unwrap_or_else(|e| panic!("error channel is not a Status ({e}): {}", String::from_utf8_lossy(&error))));
        }
        out
    }

    /// Closes the websocket as a polite client does.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The underlying socket, to drop or abuse.
    pub fn into_socket(self) -> Socket {
        self.ws
    }
}

/// Runs a command with stdout and stderr (and no stdin) to its end.
pub async fn exec(node: &Node, pod: &str, container: &str, command: &[&str]) -> Outcome {
    let path = exec_path("default", pod, container, command, "stdout=1&stderr=1");
    open(node, &path, CHANNEL_PROTOCOL).await.unwrap_or_else(|r| panic!("exec {command:?} refused: {r:?}")).finish().await
}

/// A websocket port-forward of one port of a pod.
pub struct PortForward {
    channels: Channels,
    pub port: u16,
    data_opened: bool,
    error_opened: bool,
}

impl PortForward {
    pub async fn open(node: &Node, namespace: &str, pod: &str, port: u16) -> Result<PortForward, Refused> {
        let channels = open(node, &format!("/portForward/{namespace}/{pod}?port={port}"), CHANNEL_PROTOCOL).await?;
        Ok(PortForward { channels, port, data_opened: false, error_opened: false })
    }

    pub async fn send(&mut self, data: &[u8]) {
        self.channels.send(0, data).await;
    }

    /// The next bytes from the pod's port: Ok(None) when the stream ends, Err with what the
    /// error channel said.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            let Some((channel, mut data)) = self.channels.recv().await else { return Ok(None) };
            let opened = if channel == 0 { &mut self.data_opened } else { &mut self.error_opened };
            if !*opened {
                assert!(data.len() >= 2, "channel {channel} opened with {data:?}, not a port");
                let port = u16::from_le_bytes([data[0], data[1]]);
                assert_eq!(port, self.port, "channel {channel} opened for port {port}");
                *opened = true;
                data.drain(..2);
            }
            match channel {
                0 if !data.is_empty() => return Ok(Some(data)),
                1 if !data.is_empty() => return Err(String::from_utf8_lossy(&data).into_owned()),
                _ => {}
            }
        }
    }

    /// Everything the pod's port sends until it closes the connection.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, String> {
        let mut all = Vec::new();
        while let Some(data) = self.recv().await? {
            all.extend(data);
        }
        Ok(all)
    }
}

/// A GET on the secure port (with `Connection: close`): the status and the response body.
pub async fn get_stream(node: &Node, path: &str) -> (u16, Body) {
    let tls = connect_tls(node).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("HTTP handshake");
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path).header("host", "127.0.0.1").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (response.status().as_u16(), Body { body: response.into_body(), conn })
}

/// A GET read to its end: (status, body).
pub async fn get(node: &Node, path: &str) -> (u16, String) {
    let (status, mut body) = get_stream(node, path).await;
    let mut text = String::new();
    body.read_to_end(&mut text).await;
    (status, text)
}

/// A streamed response body, such as `logs -f`; dropping it drops the connection.
pub struct Body {
    body: hyper::body::Incoming,
    conn: tokio::task::JoinHandle<hyper::Result<()>>,
}

impl Drop for Body {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Body {
    /// The next chunk; None at the end.
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        use http_body_util::BodyExt;
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.body.frame()).await.expect("no response data for a minute")?;
            if let Ok(data) = frame.expect("reading the response body").into_data() {
                return Some(data.to_vec());
            }
        }
    }

    pub async fn read_until(&mut self, got: &mut String, want: &str) {
        while !got.contains(want) {
            let chunk = self.next_chunk().await.unwrap_or_else(|| panic!("body ended before {want:?}; got {got:?}"));
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    pub async fn read_to_end(&mut self, got: &mut String) {
        while let Some(chunk) = self.next_chunk().await {
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
