//! Where a pod's log, exec, attach or port-forward request goes on its node, decided as
//! kube-apiserver decides it: the container (named, or defaulted), the node's address and
//! kubelet port, and the kubelet's path and query. Pure: objects in, a target or an error out.

use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// The pod subresources that are proxied to the node's kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSubresource {
    Log,
    Exec,
    Attach,
    PortForward,
}

impl NodeSubresource {
    pub fn parse(sub: &str) -> Option<NodeSubresource> {
        match sub {
            "log" => Some(NodeSubresource::Log),
            "exec" => Some(NodeSubresource::Exec),
            "attach" => Some(NodeSubresource::Attach),
            "portforward" => Some(NodeSubresource::PortForward),
            _ => None,
        }
    }

    /// Exec, attach and port-forward switch protocols; logs are a plain (streamed) GET.
    pub fn upgrades(self) -> bool {
        self != NodeSubresource::Log
    }

    /// The authorization verb: `get` for logs; `create` for the streaming ones, whichever
    /// HTTP method carried them (GET is how websocket clients ask).
    pub fn verb(self) -> &'static str {
        match self {
            NodeSubresource::Log => "get",
            _ => "create",
        }
    }
}

/// A request to send to a kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletTarget {
    /// `host:port` (IPv6 hosts in brackets).
    pub authority: String,
    /// Path and query, e.g. `/exec/ns/pod/c?output=1&command=true`.
    pub path_and_query: String,
}

/// The PodLogOptions the kubelet understands (`container` goes into the path).
const LOG_OPTIONS: &[&str] = &[
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
];

const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// The container a request is for: the one asked for (which must exist), else the one the
/// default-container annotation names, else the pod's only container; 400 otherwise.
pub fn choose_container(pod: &Value, asked: Option<&str>) -> ApiResult<String> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let spec = &pod["spec"];
    let mut all = names(&spec["initContainers"]);
    all.extend(names(&spec["containers"]));
    all.extend(names(&spec["ephemeralContainers"]));
    if let Some(name) = asked.filter(|n| !n.is_empty()) {
        if !all.iter().any(|c| c == name) {
            return Err(ApiError::bad_request(format!(
                "container {name} is not valid for pod {pod_name}"
            )));
        }
        return Ok(name.to_string());
    }
    // kubectl applies this annotation itself; the server honours it too, for other clients.
    if let Some(name) = pod["metadata"]["annotations"][DEFAULT_CONTAINER_ANNOTATION].as_str() {
        if all.iter().any(|c| c == name) {
            return Ok(name.to_string());
        }
    }
    let main = names(&spec["containers"]);
    match main.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// The node's address to dial (InternalIP first, then ExternalIP, then Hostname) and its
/// kubelet port (status.daemonEndpoints.kubeletEndpoint.Port, 10250 when unset).
pub fn kubelet_authority(node: &Value) -> ApiResult<String> {
    let node_name = node["metadata"]["name"].as_str().unwrap_or("");
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let of_type = |kind: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    };
    let Some(host) = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| of_type(kind))
    else {
        return Err(ApiError::internal(format!(
            "node {node_name} has no preferred address (InternalIP, ExternalIP or Hostname); known addresses: {}",
            Value::Array(addresses.clone())
        )));
    };
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0 && *p <= u16::MAX as u64)
        .unwrap_or(10250);
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        Ok(format!("[{host}]:{port}"))
    } else {
        Ok(format!("{host}:{port}"))
    }
}

fn flag(query: &[(String, String)], key: &str) -> bool {
    query
        .iter()
        .any(|(k, v)| k == key && matches!(v.as_str(), "true" | "1" | "True"))
}

fn value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn encode(pairs: &[(String, String)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// The kubelet request for subresource `sub` of `pod` (already bound: `node` is its Node),
/// with the client's query parameters translated as kube-apiserver translates them.
pub fn kubelet_target(
    sub: NodeSubresource,
    pod: &Value,
    node: &Value,
    query: &[(String, String)],
) -> ApiResult<KubeletTarget> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let mut params: Vec<(String, String)> = Vec::new();
    let path = match sub {
        NodeSubresource::Log => {
            let container = choose_container(pod, value(query, "container"))?;
            params.extend(
                query
                    .iter()
                    .filter(|(k, _)| LOG_OPTIONS.contains(&k.as_str()))
                    .cloned(),
            );
            format!("/containerLogs/{ns}/{name}/{container}")
        }
        NodeSubresource::Exec | NodeSubresource::Attach => {
            let container = choose_container(pod, value(query, "container"))?;
            let (stdin, stdout, stderr, tty) = (
                flag(query, "stdin"),
                flag(query, "stdout"),
                flag(query, "stderr"),
                flag(query, "tty"),
            );
            if !stdin && !stdout && !stderr {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            for (on, key) in [
                (stdin, "input"),
                (stdout, "output"),
                (stderr, "error"),
                (tty, "tty"),
            ] {
                if on {
                    params.push((key.into(), "1".into()));
                }
            }
            if sub == NodeSubresource::Exec {
                let commands: Vec<_> = query.iter().filter(|(k, _)| k == "command").collect();
                if commands.is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container",
                    ));
                }
                params.extend(commands.into_iter().cloned());
                format!("/exec/{ns}/{name}/{container}")
            } else {
                format!("/attach/{ns}/{name}/{container}")
            }
        }
        NodeSubresource::PortForward => {
            params.extend(
                query
                    .iter()
                    .filter(|(k, _)| k == "ports")
                    .map(|(_, v)| ("port".to_string(), v.clone())),
            );
            format!("/portForward/{ns}/{name}")
        }
    };
    let path_and_query = if params.is_empty() {
        path
    } else {
        format!("{path}?{}", encode(&params))
    };
    Ok(KubeletTarget {
        authority: kubelet_authority(node)?,
        path_and_query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str]) -> Value {
        let cs: Vec<Value> = containers.iter().map(|n| json!({"name": n})).collect();
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1", "containers": cs}})
    }

    fn node() -> Value {
        json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10333}}}})
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_only_container_is_the_default() {
        assert_eq!(choose_container(&pod(&["main"]), None).unwrap(), "main");
        assert_eq!(choose_container(&pod(&["main"]), Some("")).unwrap(), "main");
    }

    #[test]
    fn several_containers_need_a_name_or_the_annotation() {
        let mut p = pod(&["a", "b"]);
        let e = choose_container(&p, None).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("choose one of: [a b]"), "{}", e.message);
        assert_eq!(choose_container(&p, Some("b")).unwrap(), "b");
        let e = choose_container(&p, Some("c")).unwrap_err();
        assert_eq!(e.message, "container c is not valid for pod p");
        p["metadata"]["annotations"] = json!({DEFAULT_CONTAINER_ANNOTATION: "b"});
        assert_eq!(choose_container(&p, None).unwrap(), "b");
    }

    #[test]
    fn internal_ip_and_the_advertised_port_are_dialled() {
        assert_eq!(kubelet_authority(&node()).unwrap(), "127.0.0.1:10333");
        let bare = json!({"metadata": {"name": "n2"}, "status": {"addresses": [{"type": "InternalIP", "address": "::1"}]}});
        assert_eq!(kubelet_authority(&bare).unwrap(), "[::1]:10250");
        let none = json!({"metadata": {"name": "n3"}, "status": {}});
        let e = kubelet_authority(&none).unwrap_err();
        assert_eq!(e.code, 500);
        assert!(
            e.message.contains("node n3 has no preferred address"),
            "{}",
            e.message
        );
    }

    #[test]
    fn log_options_pass_through_and_the_container_goes_into_the_path() {
        let query = q(&[
            ("container", "main"),
            ("follow", "true"),
            ("tailLines", "3"),
            ("pretty", "true"),
        ]);
        let t = kubelet_target(NodeSubresource::Log, &pod(&["main"]), &node(), &query).unwrap();
        assert_eq!(
            t.path_and_query,
            "/containerLogs/ns/p/main?follow=true&tailLines=3"
        );
    }

    #[test]
    fn exec_options_become_the_kubelets_stream_flags() {
        let query = q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "exit 3"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("stderr", "true"),
        ]);
        let t = kubelet_target(NodeSubresource::Exec, &pod(&["main"]), &node(), &query).unwrap();
        assert_eq!(
            t.path_and_query,
            "/exec/ns/p/main?input=1&output=1&error=1&command=sh&command=-c&command=exit+3"
        );
        let e = kubelet_target(
            NodeSubresource::Exec,
            &pod(&["main"]),
            &node(),
            &q(&[("command", "true")]),
        )
        .unwrap_err();
        assert!(e.message.contains("at least 1 of stdin, stdout, stderr"));
        let e = kubelet_target(
            NodeSubresource::Exec,
            &pod(&["main"]),
            &node(),
            &q(&[("stdout", "1")]),
        )
        .unwrap_err();
        assert!(e.message.contains("at least one command"));
        let t = kubelet_target(
            NodeSubresource::Attach,
            &pod(&["main"]),
            &node(),
            &q(&[("stdout", "1"), ("tty", "true")]),
        )
        .unwrap();
        assert_eq!(t.path_and_query, "/attach/ns/p/main?output=1&tty=1");
    }

    #[test]
    fn port_forward_names_the_pod_and_its_ports() {
        let t = kubelet_target(
            NodeSubresource::PortForward,
            &pod(&["a", "b"]),
            &node(),
            &q(&[("ports", "8080")]),
        )
        .unwrap();
        assert_eq!(t.path_and_query, "/portForward/ns/p?port=8080");
        assert_eq!(t.authority, "127.0.0.1:10333");
    }
}
