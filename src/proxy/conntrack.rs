//! UDP conntrack cleanup. A UDP "connection" lives in conntrack as long as packets keep
//! coming, so a client keeps sending to an endpoint that is gone (or, after a reject, keeps a
//! flow that was never NATed). After the ruleset changed, the flows that point at removed
//! endpoints, and the un-NATed flows of frontends that just got endpoints, are deleted.

use super::apply::Netns;
use super::model::{usable_endpoints, Family, Protocol, ServiceEntry};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

/// A set of conntrack flows to delete (always UDP).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flow {
    /// Flows to a Service address that were DNATed to `endpoint`.
    ToEndpoint { frontend: IpAddr, endpoint: IpAddr },
    /// Flows to a node port (on any address) that were DNATed to `endpoint`.
    NodePortToEndpoint { node_port: u16, endpoint: IpAddr },
    /// Flows to a Service address and port, NATed or not (the frontend had no endpoints).
    ToFrontend { frontend: IpAddr, port: u16 },
    /// Flows to a node port, NATed or not.
    ToNodePort { node_port: u16 },
}

impl Flow {
    /// conntrack(8) arguments deleting these flows from the table of `family`.
    pub fn args(&self, family: Family) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-f", family.conntrack(), "-p", "udp"].iter().map(|s| s.to_string()).collect();
        match self {
            Flow::ToEndpoint { frontend, endpoint } => a.extend(["--orig-dst".into(), frontend.to_string(), "--dst-nat".into(), endpoint.to_string()]),
            Flow::NodePortToEndpoint { node_port, endpoint } => {
                a.extend(["--orig-port-dst".into(), node_port.to_string(), "--dst-nat".into(), endpoint.to_string()])
            }
            Flow::ToFrontend { frontend, port } => a.extend(["--orig-dst".into(), frontend.to_string(), "--orig-port-dst".into(), port.to_string()]),
            Flow::ToNodePort { node_port } => a.extend(["--orig-port-dst".into(), node_port.to_string()]),
        }
        a
    }
}

/// The UDP flows made stale by a Service port going from `old` to `new` (pure).
pub fn stale_flows(old: Option<&ServiceEntry>, new: Option<&ServiceEntry>, node_name: &str) -> Vec<Flow> {
    let mut out = BTreeSet::new();
    let used = |e: Option<&ServiceEntry>, external: bool| -> BTreeSet<IpAddr> {
        let Some(e) = e else { return BTreeSet::new() };
        let local = if external { e.port.external_local } else { e.port.internal_local };
        usable_endpoints(&e.endpoints, local, node_name).iter().map(|ep| ep.ip).collect()
    };
    let Some(old_port) = old.map(|e| &e.port) else {
        // a new Service: flows to its addresses were never NATed
        if let Some(n) = new.filter(|n| n.port.protocol == Protocol::Udp) {
            if !used(Some(n), false).is_empty() {
                for ip in &n.port.cluster_ips {
                    out.insert(Flow::ToFrontend { frontend: *ip, port: n.port.port });
                }
            }
            if !used(Some(n), true).is_empty() {
                for ip in n.port.external_ips.iter().chain(&n.port.lb_ips) {
                    out.insert(Flow::ToFrontend { frontend: *ip, port: n.port.port });
                }
                if let Some(np) = n.port.node_port {
                    out.insert(Flow::ToNodePort { node_port: np });
                }
            }
        }
        return out.into_iter().collect();
    };
    if old_port.protocol != Protocol::Udp {
        return Vec::new();
    }
    for external in [false, true] {
        let before = used(old, external);
        let after = used(new, external);
        let frontends: Vec<IpAddr> =
            if external { old_port.external_ips.iter().chain(&old_port.lb_ips).copied().collect() } else { old_port.cluster_ips.clone() };
        for gone in before.difference(&after) {
            for f in &frontends {
                out.insert(Flow::ToEndpoint { frontend: *f, endpoint: *gone });
            }
            if external {
                if let Some(np) = old_port.node_port {
                    out.insert(Flow::NodePortToEndpoint { node_port: np, endpoint: *gone });
                }
            }
        }
        if before.is_empty() && !after.is_empty() {
            let new_port = &new.expect("after is not empty").port;
            for f in &frontends {
                out.insert(Flow::ToFrontend { frontend: *f, port: new_port.port });
            }
            if external {
                if let Some(np) = new_port.node_port {
                    out.insert(Flow::ToNodePort { node_port: np });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Runs conntrack(8), in the proxy's network namespace when it has one.
#[derive(Clone, Debug)]
pub struct Conntrack {
    pub program: PathBuf,
    pub family: Family,
    pub netns: Netns,
}

impl Conntrack {
    /// Deletes the flows; failures are logged, never fatal (the flows age out eventually).
    pub async fn delete(&self, flows: &[Flow]) {
        for flow in flows {
            let args = flow.args(self.family);
            let mut cmd = tokio::process::Command::new(&self.program);
            cmd.args(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
            self.netns.enter_on_exec(&mut cmd);
            match cmd.output().await {
                // conntrack exits 1 when nothing matched
                Ok(out) if out.status.success() || out.status.code() == Some(1) => {
                    tracing::debug!(args = ?args, "conntrack flows deleted")
                }
                Ok(out) => {
                    tracing::warn!(args = ?args, status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "conntrack cleanup failed")
                }
                Err(e) => tracing::warn!(program = %self.program.display(), error = %e, "running conntrack failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Endpoint, ServiceKey, ServiceName, ServicePort};

    fn entry(proto: Protocol, eps: &[[u8; 4]]) -> ServiceEntry {
        ServiceEntry {
            id: 1,
            port: ServicePort {
                key: ServiceKey { service: ServiceName::new("ns", "dns"), port_name: "dns".into(), protocol: proto },
                protocol: proto,
                port: 53,
                node_port: Some(30053),
                cluster_ips: vec![[10, 96, 0, 10].into()],
                external_ips: vec![],
                lb_ips: vec![],
                affinity_timeout: None,
                external_local: false,
                internal_local: false,
            },
            endpoints: eps
                .iter()
                .map(|ip| Endpoint { ip: (*ip).into(), port: 5353, node_name: None, ready: true, serving: true, terminating: false })
                .collect(),
        }
    }

    #[test]
    fn removed_udp_endpoint_flows_are_deleted() {
        let old = entry(Protocol::Udp, &[[10, 88, 0, 5], [10, 88, 0, 6]]);
        let new = entry(Protocol::Udp, &[[10, 88, 0, 6]]);
        let flows = stale_flows(Some(&old), Some(&new), "n1");
        assert_eq!(
            flows,
            vec![
                Flow::ToEndpoint { frontend: [10, 96, 0, 10].into(), endpoint: [10, 88, 0, 5].into() },
                Flow::NodePortToEndpoint { node_port: 30053, endpoint: [10, 88, 0, 5].into() },
            ]
        );
        assert_eq!(flows[0].args(Family::V4).join(" "), "-D -f ipv4 -p udp --orig-dst 10.96.0.10 --dst-nat 10.88.0.5");
        assert!(stale_flows(Some(&old), None, "n1").len() == 4);
    }

    #[test]
    fn first_endpoint_clears_un_nated_flows() {
        let old = entry(Protocol::Udp, &[]);
        let new = entry(Protocol::Udp, &[[10, 88, 0, 6]]);
        let flows = stale_flows(Some(&old), Some(&new), "n1");
        assert_eq!(flows, vec![Flow::ToFrontend { frontend: [10, 96, 0, 10].into(), port: 53 }, Flow::ToNodePort { node_port: 30053 },]);
        assert_eq!(stale_flows(None, Some(&new), "n1"), flows);
    }

    #[test]
    fn tcp_needs_nothing() {
        let old = entry(Protocol::Tcp, &[[10, 88, 0, 5]]);
        assert!(stale_flows(Some(&old), None, "n1").is_empty());
    }
}
