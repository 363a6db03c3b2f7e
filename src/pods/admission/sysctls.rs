//! The kubelet's sysctl admission: a pod may set the safe sysctls, and others only when
//! `--allowed-unsafe-sysctls` names them (exactly, or by a `prefix*` pattern); a sysctl of the
//! network or IPC namespace is refused when the pod shares that namespace with the host.

use super::{AdmissionConfig, RejectReason, Rejection};
use k8s_openapi::api::core::v1::Pod;
use std::fmt;

/// The kubelet's safe set (v1.35): namespaced, and without effect on other pods. All are
/// namespaced on the kernels nodelet supports (the kubelet drops some only before Linux 4.15).
pub const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// The kernel namespace a sysctl belongs to; a sysctl of none cannot be set per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Net,
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
        })
    }
}

/// The namespace of a sysctl (dotted name) or of a pattern's prefix, as the kubelet knows them.
pub fn namespace_of(name: &str) -> Option<Namespace> {
    if name == "kernel.sem" || ["kernel.shm", "kernel.msg", "fs.mqueue."].iter().any(|p| name.starts_with(p)) {
        Some(Namespace::Ipc)
    } else if name.starts_with("net.") {
        Some(Namespace::Net)
    } else {
        None
    }
}

/// A sysctl name with dots between its parts: a name whose first separator is '/' has its
/// '/' and '.' swapped ("net/ipv4/conf/eth0.100/rp_filter" -> "net.ipv4.conf.eth0/100.rp_filter").
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The sysctls this node lets pods set: exact names and `prefix*` patterns, each with its namespace.
#[derive(Debug, Clone)]
pub struct Allowlist {
    exact: Vec<(String, Namespace)>,
    prefixes: Vec<(String, Namespace)>,
}

impl Default for Allowlist {
    /// The safe set alone.
    fn default() -> Self {
        Allowlist::new(&[]).expect("the safe sysctls are namespaced")
    }
}

impl Allowlist {
    /// The safe set plus the `unsafe_patterns` of `--allowed-unsafe-sysctls`; a pattern that is
    /// malformed or not known to be namespaced is an error naming it.
    pub fn new(unsafe_patterns: &[String]) -> Result<Allowlist, String> {
        let mut list = Allowlist { exact: Vec::new(), prefixes: Vec::new() };
        for pattern in SAFE.iter().map(|s| s.to_string()).chain(unsafe_patterns.iter().cloned()) {
            if !valid_pattern(&pattern) {
                return Err(format!(
                    "sysctl {pattern:?} must have at most 253 characters and be dot- or slash-separated lower-case segments, optionally ending in '*'"
                ));
            }
            let pattern = normalize(&pattern);
            match pattern.strip_suffix('*') {
                Some(prefix) => {
                    let ns = namespace_of(prefix).ok_or_else(|| format!("the sysctls {pattern:?} are not known to be namespaced"))?;
                    list.prefixes.push((prefix.to_string(), ns));
                }
                None => {
                    let ns = namespace_of(&pattern).ok_or_else(|| format!("the sysctl {pattern:?} is not known to be namespaced"))?;
                    list.exact.push((pattern, ns));
                }
            }
        }
        Ok(list)
    }

    /// Why the pod may not set `name`, if it may not.
    fn check(&self, name: &str, host_network: bool, host_ipc: bool) -> Result<(), String> {
        let name = normalize(name);
        let found = self.exact.iter().find(|(n, _)| *n == name).or_else(|| self.prefixes.iter().find(|(p, _)| name.starts_with(p.as_str())));
        match found {
            None => Err(format!("{name:?} not allowlisted")),
            Some((_, ns @ Namespace::Net)) if host_network => Err(format!("{name:?} not allowed with host {ns} enabled")),
            Some((_, ns @ Namespace::Ipc)) if host_ipc => Err(format!("{name:?} not allowed with host {ns} enabled")),
            Some(_) => Ok(()),
        }
    }
}

/// Segments of lower-case letters, digits, '-' and '_' joined by '.' or '/', with an optional
/// trailing '*' (which may follow a separator: "net.*").
fn valid_pattern(pattern: &str) -> bool {
    let (body, wildcard) = match pattern.strip_suffix('*') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    let body = if wildcard { body.strip_suffix(['.', '/']).unwrap_or(body) } else { body };
    let segment_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    pattern.len() <= 253 && (body.is_empty() && wildcard || body.split(['.', '/']).all(segment_ok))
}

/// The rule: every sysctl of the pod must be allowed.
pub fn admit(pod: &Pod, config: &AdmissionConfig) -> Result<(), Rejection> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
    let (host_network, host_ipc) = (spec.host_network.unwrap_or(false), spec.host_ipc.unwrap_or(false));
    for sysctl in spec.security_context.iter().flat_map(|sc| sc.sysctls.iter().flatten()) {
        config
            .sysctls
            .check(&sysctl.name, host_network, host_ipc)
            .map_err(|e| Rejection { reason: RejectReason::SysctlForbidden, message: format!("forbidden sysctl: {e}") })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> Allowlist {
        Allowlist::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_are_normalised_to_dots() {
        assert_eq!(normalize("net/ipv4/ip_local_port_range"), "net.ipv4.ip_local_port_range");
        assert_eq!(normalize("net/ipv4/conf/eth0.100/rp_filter"), "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(normalize("net.ipv4.conf.eth0/100.rp_filter"), "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(normalize("kernel"), "kernel");
    }

    #[test]
    fn the_safe_set_is_allowed_and_others_only_when_listed() {
        let safe = list(&[]);
        for name in SAFE {
            assert_eq!(safe.check(name, false, false), Ok(()), "{name}");
        }
        assert_eq!(safe.check("net/ipv4/tcp_syncookies", false, false), Ok(()));
        assert_eq!(safe.check("kernel.msgmax", false, false), Err("\"kernel.msgmax\" not allowlisted".into()));
        assert_eq!(safe.check("net.core.somaxconn", false, false), Err("\"net.core.somaxconn\" not allowlisted".into()));
        let wider = list(&["kernel.msg*", "net.core.somaxconn"]);
        assert_eq!(wider.check("kernel.msgmax", false, false), Ok(()));
        assert_eq!(wider.check("kernel.msgmnb", false, false), Ok(()));
        assert_eq!(wider.check("net.core.somaxconn", false, false), Ok(()));
        assert!(wider.check("kernel.sem", false, false).is_err());
    }

    #[test]
    fn host_namespaces_forbid_their_sysctls() {
        let wider = list(&["kernel.msg*"]);
        assert_eq!(wider.check("net.ipv4.ip_local_port_range", true, false), Err("\"net.ipv4.ip_local_port_range\" not allowed with host net enabled".into()));
        assert_eq!(wider.check("net.ipv4.ip_local_port_range", false, true), Ok(()));
        assert_eq!(wider.check("kernel.shm_rmid_forced", false, true), Err("\"kernel.shm_rmid_forced\" not allowed with host ipc enabled".into()));
        assert_eq!(wider.check("kernel.msgmax", false, true), Err("\"kernel.msgmax\" not allowed with host ipc enabled".into()));
        assert_eq!(wider.check("kernel.msgmax", true, false), Ok(()));
    }

    #[test]
    fn bad_or_unnamespaced_patterns_are_refused_by_name() {
        for (pattern, says) in [
            ("vm.swappiness", "not known to be namespaced"),
            ("kernel.*", "not known to be namespaced"),
            ("Kernel.Msg*", "must have"),
            ("net..x", "must have"),
            ("net.*x", "must have"),
        ] {
            let err = Allowlist::new(&[pattern.to_string()]).unwrap_err();
            assert!(err.contains(pattern) && err.contains(says), "{pattern}: {err}");
        }
        assert!(Allowlist::new(&["net.*".into(), "fs.mqueue.*".into(), "kernel.sem".into(), "net/core/somaxconn".into()]).is_ok());
    }

    #[test]
    fn the_rule_checks_every_sysctl_of_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"hostNetwork": true, "containers": [], "securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}}
        }))
        .unwrap();
        let err = admit(&pod, &AdmissionConfig::default()).unwrap_err();
        assert_eq!(err.message, "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled");
    }
}
