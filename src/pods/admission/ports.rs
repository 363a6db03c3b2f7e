//! The kubelet's host port check (the scheduler's NodePorts): a pod whose hostPort is already
//! taken by a pod admitted here is refused. A port on 0.0.0.0 (or no hostIP) conflicts with the
//! same port on every address; protocols are apart.

use super::{predicate_failed, Context, RejectReason, Rejection};
use k8s_openapi::api::core::v1::Pod;

const DESCRIPTION: &str = "node(s) didn't have free ports for the requested pod ports";

/// A host port a pod takes: (protocol, host IP, port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    fn conflicts(&self, other: &HostPort) -> bool {
        let any = |ip: &str| ip == "0.0.0.0" || ip == "::";
        self.port == other.port && self.protocol == other.protocol && (any(&self.ip) || any(&other.ip) || self.ip == other.ip)
    }
}

/// The host ports of a pod; with the host's network a containerPort is its hostPort, as the
/// apiserver defaults it.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    let host_network = spec.host_network.unwrap_or(false);
    let containers = spec.init_containers.iter().flatten().chain(spec.containers.iter());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0).or(host_network.then_some(p.container_port))?;
            let ip = p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
            Some(HostPort { protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port })
        })
        .collect()
}

/// The rule: none of the pod's host ports is in use by an admitted pod.
pub fn admit(pod: &Pod, ctx: &Context) -> Result<(), Rejection> {
    let wanted = host_ports(pod);
    if wanted.is_empty() {
        return Ok(());
    }
    let taken: Vec<HostPort> = ctx.admitted.iter().flat_map(|p| host_ports(p)).collect();
    if wanted.iter().any(|w| taken.iter().any(|t| w.conflicts(t))) {
        return Err(predicate_failed(RejectReason::NodePorts, DESCRIPTION));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::admission::AdmissionConfig;
    use crate::pods::manifest::parse_static_pod;

    fn pod(ports: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\nspec:\n  containers: [{{name: c, image: i, ports: {ports}}}]\n");
        parse_static_pod("f", text.as_bytes(), "n1").unwrap()
    }

    fn admitted(pod_: &Pod, others: &[&Pod]) -> Result<(), Rejection> {
        admit(pod_, &Context { config: &AdmissionConfig::default(), admitted: others })
    }

    #[test]
    fn a_taken_host_port_is_refused_by_protocol_and_address() {
        let web = pod("[{containerPort: 80, hostPort: 8080}]");
        let err = admitted(&pod("[{containerPort: 81, hostPort: 8080}]"), &[&web]).unwrap_err();
        assert_eq!(err.reason.as_str(), "NodePorts");
        assert_eq!(err.message, "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports");
        assert_eq!(admitted(&pod("[{containerPort: 80, hostPort: 8080, protocol: UDP}]"), &[&web]), Ok(()));
        assert_eq!(admitted(&pod("[{containerPort: 80, hostPort: 8081}]"), &[&web]), Ok(()));
        assert_eq!(admitted(&pod("[{containerPort: 80}]"), &[&web]), Ok(()), "no hostPort takes nothing");
        let on_one = pod("[{containerPort: 80, hostPort: 9090, hostIP: 127.0.0.1}]");
        assert_eq!(admitted(&pod("[{containerPort: 80, hostPort: 9090, hostIP: 127.0.0.2}]"), &[&on_one]), Ok(()));
        assert!(admitted(&pod("[{containerPort: 80, hostPort: 9090}]"), &[&on_one]).is_err(), "0.0.0.0 overlaps every address");
    }

    #[test]
    fn host_network_container_ports_are_host_ports() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: i, ports: [{containerPort: 10256}]}]\n";
        let host = parse_static_pod("h", text.as_bytes(), "n1").unwrap();
        assert_eq!(host_ports(&host), vec![HostPort { protocol: "TCP".into(), ip: "0.0.0.0".into(), port: 10256 }]);
        assert!(admitted(&pod("[{containerPort: 1, hostPort: 10256}]"), &[&host]).is_err());
    }
}
