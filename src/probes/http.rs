//! httpGet probes and hooks: one GET (TLS without verification for HTTPS, as the kubelet),
//! redirects followed on the same host; 2xx and 3xx count as success, a redirect to another host
//! ends the chain as a success with a warning.

use super::action::HttpTarget;
use super::Outcome;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

pub const USER_AGENT: &str = "kube-probe/1.35";
/// The kubelet reads at most this much of a probe's response body.
const MAX_BODY: usize = 10 * 1024;
/// As Go's http client: it gives up after ten redirects.
const MAX_REDIRECTS: usize = 10;

/// What to do with a redirect's Location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    Follow(HttpTarget),
    /// Another host: not followed; the redirect itself is the answer.
    OtherHost,
    Invalid(String),
}

/// Where a redirect from `from` to `location` leads: a relative location stays on the same
/// host; an absolute one is followed only when its host name is the same (the port may differ).
pub fn redirect(from: &HttpTarget, location: &str) -> Redirect {
    let (https, rest) = if let Some(rest) = location.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = location.strip_prefix("https://") {
        (true, rest)
    } else if location.starts_with("//") {
        return redirect(from, &format!("{}:{location}", if from.https { "https" } else { "http" }));
    } else {
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            // Relative to the current path's directory.
            let current = from.path.split('?').next().unwrap_or("/");
            let dir = &current[..current.rfind('/').map_or(0, |i| i + 1)];
            format!("{}{location}", if dir.is_empty() { "/" } else { dir })
        };
        return Redirect::Follow(HttpTarget { path, ..from.clone() });
    };
    let (authority, path) = rest
        .find(['/', '?'])
        .map_or((rest, "/".to_string()), |i| (&rest[..i], if rest[i..].starts_with('?') { format!("/{}", &rest[i..]) } else { rest[i..].to_string() }));
    let (host, port) = match split_authority(authority) {
        Ok(hp) => hp,
        Err(e) => return Redirect::Invalid(e),
    };
    if !host.eq_ignore_ascii_case(&from.host) {
        return Redirect::OtherHost;
    }
    let port = port.unwrap_or(if https { 443 } else { 80 });
    Redirect::Follow(HttpTarget { https, host: from.host.clone(), port, path, headers: from.headers.clone() })
}

fn split_authority(authority: &str) -> Result<(String, Option<u16>), String> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| format!("bad host in redirect: {authority}"))?;
        (rest[..end].to_string(), rest[end + 1..].strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = port.filter(|p| !p.is_empty()).map(|p| p.parse::<u16>().map_err(|_| format!("bad port in redirect: {authority}"))).transpose()?;
    Ok((host, port))
}

/// The outcome of a final response, as the kubelet's HTTP prober judges it.
pub fn judge(status: u16, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        300..=399 => Outcome::Warning(format!("Probe terminated redirects, Response body: {body}")),
        _ => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
    }
}

/// One probe or hook call: the GET with its redirects, all within `timeout`.
pub async fn get(target: &HttpTarget, timeout: Duration) -> Outcome {
    let first = target.url();
    match tokio::time::timeout(timeout, follow(target.clone())).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Outcome::Failure(format!("Get {first:?}: {e}")),
        Err(_) => Outcome::Failure(format!("Get {first:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)")),
    }
}

async fn follow(mut target: HttpTarget) -> Result<Outcome, String> {
    for _ in 0..=MAX_REDIRECTS {
        let (status, location, body) = request(&target).await?;
        let Some(location) = location.filter(|_| (300..400).contains(&status)) else { return Ok(judge(status, &body)) };
        match redirect(&target, &location) {
            Redirect::Follow(next) => target = next,
            Redirect::OtherHost => return Ok(judge(status, &body)),
            Redirect::Invalid(e) => return Err(e),
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// One GET: the status, the Location header and the start of the body.
async fn request(target: &HttpTarget) -> Result<(u16, Option<String>, String), String> {
    let tcp =
        tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| format!("dial tcp {}:{}: {e}", target.host, target.port))?;
    let mut req = hyper::Request::get(&target.path);
    let has = |name: &str| target.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        let default_port = if target.https { 443 } else { 80 };
        let host = if target.host.contains(':') { format!("[{}]", target.host) } else { target.host.clone() };
        req = req.header("Host", if target.port == default_port { host } else { format!("{host}:{}", target.port) });
    }
    if !has("user-agent") {
        req = req.header("User-Agent", USER_AGENT);
    }
    if !has("accept") {
        req = req.header("Accept", "*/*");
    }
    for (name, value) in &target.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req.header("Connection", "close").body(Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    if target.https {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| format!("bad host {:?}: {e}", target.host))?;
        let tls = tokio_rustls::TlsConnector::from(insecure_tls()).connect(name, tcp).await.map_err(|e| format!("tls: {e}"))?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<IO>(io: IO, req: hyper::Request<Empty<bytes::Bytes>>) -> Result<(u16, Option<String>, String), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(String::from);
        let mut body = resp.into_body();
        let mut read = Vec::new();
        while read.len() < MAX_BODY {
            match body.frame().await {
                Some(Ok(frame)) => read.extend_from_slice(frame.data_ref().map(|d| d.as_ref()).unwrap_or_default()),
                Some(Err(e)) => return Err(e.to_string()),
                None => break,
            }
        }
        read.truncate(MAX_BODY);
        Ok((status, location, String::from_utf8_lossy(&read).into_owned()))
    }
    .await;
    conn.abort();
    result
}

/// Probes do not verify the server's certificate, as the kubelet's (InsecureSkipVerify).
pub fn insecure_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> HttpTarget {
        HttpTarget { https: false, host: "10.88.0.7".into(), port: 8080, path: "/a/b".into(), headers: vec![] }
    }

    #[test]
    fn relative_and_same_host_redirects_are_followed() {
        assert_eq!(redirect(&target(), "/healthz"), Redirect::Follow(HttpTarget { path: "/healthz".into(), ..target() }));
        assert_eq!(redirect(&target(), "c"), Redirect::Follow(HttpTarget { path: "/a/c".into(), ..target() }));
        let Redirect::Follow(t) = redirect(&target(), "https://10.88.0.7:8443/x?y=1") else { panic!("not followed") };
        assert_eq!(t.url(), "https://10.88.0.7:8443/x?y=1");
        let Redirect::Follow(t) = redirect(&target(), "http://10.88.0.7") else { panic!("not followed") };
        assert_eq!(t.url(), "http://10.88.0.7:80/");
    }

    #[test]
    fn a_redirect_to_another_host_is_not_followed() {
        assert_eq!(redirect(&target(), "http://0.0.0.0/"), Redirect::OtherHost);
        assert_eq!(redirect(&target(), "//example.com/x"), Redirect::OtherHost);
        assert!(matches!(redirect(&target(), "http://10.88.0.7:notaport/"), Redirect::Invalid(_)));
    }

    #[test]
    fn status_codes_are_judged_as_the_kubelet() {
        assert_eq!(judge(200, ""), Outcome::Success);
        assert_eq!(judge(302, "moved"), Outcome::Warning("Probe terminated redirects, Response body: moved".into()));
        assert_eq!(judge(500, ""), Outcome::Failure("HTTP probe failed with statuscode: 500".into()));
        assert_eq!(judge(404, ""), Outcome::Failure("HTTP probe failed with statuscode: 404".into()));
    }

    #[tokio::test]
    async fn a_local_server_is_probed_with_the_kubelet_user_agent_and_redirects() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let reply = if text.starts_with("GET /old ") {
                    "HTTP/1.1 301 Moved\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                s.write_all(reply.as_bytes()).await.unwrap();
                seen.push(text);
            }
            seen
        });
        let t = HttpTarget { https: false, host: "127.0.0.1".into(), port, path: "/old".into(), headers: vec![("X-Custom".into(), "v".into())] };
        assert_eq!(get(&t, Duration::from_secs(5)).await, Outcome::Success);
        let seen = server.await.unwrap();
        assert!(seen[1].starts_with("GET /new "), "{seen:?}");
        assert!(seen[0].to_ascii_lowercase().contains("user-agent: kube-probe/1.35"), "{seen:?}");
        assert!(seen[0].to_ascii_lowercase().contains("x-custom: v"), "{seen:?}");
    }
}
