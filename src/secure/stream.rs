//! `/exec`, `/attach` and `/portForward`: CRI answers each with a URL on containerd's streaming
//! server, which already speaks the SPDY and websocket protocols kubectl uses; the upgraded
//! connection is relayed to it byte for byte, as the kubelet does.

use super::lookup::{container_status, find_pod};
use crate::gauge::RELAYED_STREAMS;
use crate::pods::store::PodStore;
use crate::runtime::Cri;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use std::sync::Arc;

/// Exec, attach and port-forward connections being relayed right now.
pub fn active_relays() -> usize {
    RELAYED_STREAMS.get()
}

pub struct StreamContext {
    pub pods: PodStore,
    pub cri: Option<Cri>,
}

/// The query flags and repeated `command` parameters of an exec or attach request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub fn stream_options(query: Option<&str>) -> StreamOptions {
    let mut o = StreamOptions::default();
    for (key, value) in url_pairs(query.unwrap_or("")) {
        let on = matches!(value.as_str(), "1" | "true" | "True");
        match key.as_str() {
            "command" => o.command.push(value),
            "input" | "stdin" => o.stdin = on,
            "output" | "stdout" => o.stdout = on,
            "error" | "stderr" => o.stderr = on,
            "tty" => o.tty = on,
            _ => {}
        }
    }
    o
}

/// Whether the request asks to switch to websocket (rather than SPDY).
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// The ports a port-forward asks for. A websocket client names them in the query
/// (`port=8080&port=53,54`) and must name one; a SPDY client names them per stream later.
pub fn forward_ports(query: Option<&str>, websocket: bool) -> Result<Vec<i32>, String> {
    if !websocket {
        return Ok(vec![]);
    }
    let mut ports = Vec::new();
    for (key, value) in url_pairs(query.unwrap_or("")) {
        if key != "port" {
            continue;
        }
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            match p.parse::<u16>() {
                Ok(0) => return Err(format!("port {p:?} must be > 0")),
                Ok(port) => ports.push(i32::from(port)),
                Err(e) => return Err(format!("unable to parse {p:?} as a port: {e}")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, message + "\n").into_response()
}

/// The running container's runtime ID, or the status and message to answer instead.
fn container_id(pods: &PodStore, namespace: &str, pod: &str, container: &str) -> Result<String, (StatusCode, String)> {
    let Some(found) = find_pod(pods, namespace, pod) else { return Err((StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} not found"))) };
    let Some(status) = container_status(&found, container) else {
        return Err((StatusCode::NOT_FOUND, format!("container {container:?} not found in pod {namespace}/{pod}")));
    };
    if status.state.as_ref().and_then(|s| s.running.as_ref()).is_none() {
        return Err((StatusCode::BAD_REQUEST, format!("container {container:?} in pod {namespace}/{pod} is not running")));
    }
    Ok(status.container_id.as_deref().unwrap_or_default().trim_start_matches("containerd://").to_string())
}

pub async fn exec(
    ctx: Arc<StreamContext>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let Some(cri_client) = ctx.cri.clone() else { return plain(StatusCode::SERVICE_UNAVAILABLE, "no container runtime".into()) };
    let id = match container_id(&ctx.pods, &namespace, &pod, &container) {
        Ok(found) => found,
        Err((status, message)) => return plain(status, message),
    };
    let o = stream_options(query.as_deref());
    if o.command.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "command: at least one command is required".into());
    }
    let request = cri::ExecRequest { container_id: id, cmd: o.command, tty: o.tty, stdin: o.stdin, stdout: o.stdout, stderr: o.stderr && !o.tty };
    match cri_client.exec(request).await {
        Ok(url) => relay(req, &url).await,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn attach(
    ctx: Arc<StreamContext>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let Some(cri_client) = ctx.cri.clone() else { return plain(StatusCode::SERVICE_UNAVAILABLE, "no container runtime".into()) };
    let id = match container_id(&ctx.pods, &namespace, &pod, &container) {
        Ok(found) => found,
        Err((status, message)) => return plain(status, message),
    };
    let o = stream_options(query.as_deref());
    let request = cri::AttachRequest { container_id: id, tty: o.tty, stdin: o.stdin, stdout: o.stdout, stderr: o.stderr && !o.tty };
    match cri_client.attach(request).await {
        Ok(url) => relay(req, &url).await,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn port_forward(ctx: Arc<StreamContext>, Path((namespace, pod)): Path<(String, String)>, RawQuery(query): RawQuery, req: Request) -> Response {
    let Some(cri_client) = ctx.cri.clone() else { return plain(StatusCode::SERVICE_UNAVAILABLE, "no container runtime".into()) };
    let ports = match forward_ports(query.as_deref(), is_websocket(req.headers())) {
        Ok(p) => p,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("port-forward to pod {namespace}/{pod}: {e}")),
    };
    let Some(found) = find_pod(&ctx.pods, &namespace, &pod) else { return plain(StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} not found")) };
    let uid = found.metadata.uid.clone().unwrap_or_default();
    match cri_client.port_forward_for_pod(&uid, ports).await {
        Ok(url) => relay(req, &url).await,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Forwards the client's upgrade request to the streaming URL and, once both sides have
/// switched protocols, copies bytes both ways until either closes.
async fn relay(mut req: Request, url: &str) -> Response {
    let target: Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("runtime gave a bad streaming URL {url:?}: {e}")),
    };
    let Some(authority) = target.authority().map(|a| a.to_string()) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("runtime gave a streaming URL without a host: {url:?}"));
    };
    let stream = match tokio::net::TcpStream::connect(&authority).await {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("connecting to the runtime's streaming server {authority}: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("streaming server {authority}: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut out = hyper::Request::builder().method(req.method().clone()).uri(target.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    for (name, value) in req.headers() {
        if name != header::HOST && name != header::AUTHORIZATION {
            out = out.header(name, value);
        }
    }
    let out = match out.header(header::HOST, authority.as_str()).body(http_body_util::Empty::<bytes::Bytes>::new()) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let client_side = hyper::upgrade::on(&mut req);
    let resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, format!("streaming server {authority}: {e}")),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        return (status, body).into_response();
    }
    let mut back = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in resp.headers() {
        back = back.header(name, value);
    }
    let runtime_side = hyper::upgrade::on(resp);
    let held = RELAYED_STREAMS.hold();
    tokio::spawn(async move {
        let _held = held;
        if let (Ok(client), Ok(runtime)) = (client_side.await, runtime_side.await) {
            let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(runtime));
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        }
    });
    back.body(Body::empty()).unwrap_or_else(|e| plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_from_the_query() {
        let o = stream_options(Some("command=sh&command=-c&command=echo%20hi%3B+exit+3&stdout=1&stderr=true&tty=0"));
        assert_eq!(o.command, vec!["sh", "-c", "echo hi; exit 3"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        assert_eq!(stream_options(None), StreamOptions::default());
    }

    #[test]
    fn websocket_port_forward_names_its_ports() {
        assert_eq!(forward_ports(Some("port=8080&port=53,54"), true), Ok(vec![8080, 53, 54]));
        assert_eq!(forward_ports(None, false), Ok(vec![]));
        assert_eq!(forward_ports(Some("port=8080"), false), Ok(vec![]));
        assert_eq!(forward_ports(None, true).unwrap_err(), "query parameter \"port\" is required");
        assert_eq!(forward_ports(Some("port="), true).unwrap_err(), "query parameter \"port\" cannot be empty");
        assert!(forward_ports(Some("port=0"), true).unwrap_err().contains("must be > 0"));
        assert!(forward_ports(Some("port=http"), true).unwrap_err().contains("unable to parse \"http\""));
        assert!(forward_ports(Some("port=70000"), true).is_err());
    }

    #[test]
    fn tells_websocket_from_spdy() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            h
        };
        assert!(is_websocket(&headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")])));
        assert!(!is_websocket(&headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")])));
        assert!(!is_websocket(&headers(&[("upgrade", "websocket")])));
    }
}
