//! What a probe or a lifecycle hook does, resolved from the API's handler against the container
//! (named ports) and the pod (its IP as the default host). Pure.

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec { command: Vec<String> },
    Http(HttpTarget),
    Tcp { host: String, port: u16 },
    Grpc { host: String, port: u16, service: String },
    Sleep(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The path and query, starting with '/'.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpTarget {
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}{}", if self.https { "https" } else { "http" }, self.port, self.path)
    }
}

/// The action of a probe; `pod_ip` is the host when the probe names none.
pub fn probe_action(probe: &Probe, c: &Container, pod_ip: &str) -> Result<Action, String> {
    if let Some(exec) = &probe.exec {
        return Ok(Action::Exec { command: exec.command.clone().unwrap_or_default() });
    }
    if let Some(get) = &probe.http_get {
        return http_action(get, c, pod_ip);
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(Action::Tcp { host: host_or(tcp.host.as_deref(), pod_ip), port: resolve_port(&tcp.port, c)? });
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid gRPC port {}", grpc.port))?;
        return Ok(Action::Grpc { host: pod_ip.to_string(), port, service: grpc.service.clone().unwrap_or_default() });
    }
    Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

/// The action of a postStart or preStop hook.
pub fn hook_action(handler: &LifecycleHandler, c: &Container, pod_ip: &str) -> Result<Action, String> {
    if let Some(exec) = &handler.exec {
        return Ok(Action::Exec { command: exec.command.clone().unwrap_or_default() });
    }
    if let Some(get) = &handler.http_get {
        return http_action(get, c, pod_ip);
    }
    if let Some(sleep) = &handler.sleep {
        return Ok(Action::Sleep(Duration::from_secs(sleep.seconds.max(0) as u64)));
    }
    if let Some(tcp) = &handler.tcp_socket {
        // Deprecated and never run by the kubelet either: accepted and skipped.
        return Ok(Action::Tcp { host: host_or(tcp.host.as_deref(), pod_ip), port: resolve_port(&tcp.port, c)? });
    }
    Err("the hook has no handler (exec, httpGet or sleep)".into())
}

fn http_action(get: &k8s_openapi::api::core::v1::HTTPGetAction, c: &Container, pod_ip: &str) -> Result<Action, String> {
    let path = get.path.clone().unwrap_or_default();
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    Ok(Action::Http(HttpTarget {
        https: get.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
        host: host_or(get.host.as_deref(), pod_ip),
        port: resolve_port(&get.port, c)?,
        path,
        headers: get.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect(),
    }))
}

fn host_or(host: Option<&str>, pod_ip: &str) -> String {
    host.filter(|h| !h.is_empty()).unwrap_or(pod_ip).to_string()
}

/// A numbered port, or a named one looked up in the container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port {name:?} in container {:?}", c.name))?,
        },
    };
    u16::try_from(number).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port number: {number}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, HTTPHeader, SleepAction, TCPSocketAction};

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }]),
            ..Default::default()
        }
    }

    #[test]
    fn http_get_resolves_named_port_default_host_and_headers() {
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("healthz?x=1".into()),
                scheme: Some("HTTPS".into()),
                http_headers: Some(vec![HTTPHeader { name: "X-Probe".into(), value: "1".into() }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Action::Http(target) = probe_action(&probe, &container(), "10.88.0.7").unwrap() else { panic!("not http") };
        assert_eq!(target.url(), "https://10.88.0.7:8080/healthz?x=1");
        assert_eq!(target.headers, vec![("X-Probe".to_string(), "1".to_string())]);
    }

    #[test]
    fn unknown_named_port_and_bad_numbers_are_errors_naming_them() {
        let probe = Probe { tcp_socket: Some(TCPSocketAction { port: IntOrString::String("metrics".into()), host: None }), ..Default::default() };
        assert!(probe_action(&probe, &container(), "10.0.0.1").unwrap_err().contains("\"metrics\""));
        let probe = Probe { tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(70000), host: Some("127.0.0.1".into()) }), ..Default::default() };
        assert!(probe_action(&probe, &container(), "10.0.0.1").is_err());
        let probe =
            Probe { tcp_socket: Some(TCPSocketAction { port: IntOrString::String("81".into()), host: Some("127.0.0.1".into()) }), ..Default::default() };
        assert_eq!(probe_action(&probe, &container(), "10.0.0.1").unwrap(), Action::Tcp { host: "127.0.0.1".into(), port: 81 });
    }

    #[test]
    fn hooks_take_sleep_and_refuse_an_empty_handler() {
        let sleep = LifecycleHandler { sleep: Some(SleepAction { seconds: 3 }), ..Default::default() };
        assert_eq!(hook_action(&sleep, &container(), "10.0.0.1").unwrap(), Action::Sleep(Duration::from_secs(3)));
        assert!(hook_action(&LifecycleHandler::default(), &container(), "10.0.0.1").is_err());
    }
}
