//! What both the pod workers (`pods`) and the volumes (`volumes`) need to know about the node and
//! a pod: the node's context, the pod's identity and directories, quantities, `$(VAR)` expansion
//! and the downward API's values. It imports neither, so neither imports the other for these.

pub mod downward;
pub mod expand;
pub mod quantity;

use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use std::path::PathBuf;

/// What the translation needs to know about the node.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node_name: String,
    /// Where pods' cgroups are (the kubelet's layout under the cgroup root, for the driver).
    pub cgroups: crate::cgroups::Layout,
    /// podPidsLimit: the most processes a pod may run; None for no limit.
    pub pod_pids_limit: Option<i64>,
    /// Where pod log directories go: /var/log/pods.
    pub pod_log_root: PathBuf,
    /// Where nodelet keeps per-pod data such as emptyDir volumes.
    pub pod_data_root: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host's resolv.conf text, used for dnsPolicy Default and without cluster DNS.
    pub host_resolv_conf: String,
    pub host_ip: Option<String>,
    pub memory_capacity: i64,
    /// The node's allocatable resources: the downward API's value of a limit a container does not set.
    pub allocatable: downward::Allocatable,
    /// The kubelet's seccomp profile root, `<root-dir>/seccomp`: Localhost profiles live there.
    pub seccomp_root: PathBuf,
    /// SeccompDefault: RuntimeDefault for containers that name no profile.
    pub seccomp_default: bool,
}

pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// "namespace/name", how logs and errors name a pod.
pub fn pod_ref(pod: &Pod) -> String {
    format!("{}/{}", pod_namespace(pod), pod_name(pod))
}

pub fn pod_data_dir(ctx: &NodeContext, pod: &Pod) -> PathBuf {
    ctx.pod_data_root.join(pod_uid(pod))
}

/// Host paths of the pod's volumes, by volume name.
pub type VolumePaths = HashMap<String, PathBuf>;

/// The host paths prepared for a container's subPath mounts (bind mounts of the resolved
/// subPath), by the mount's index in its volumeMounts.
pub type SubPaths = HashMap<usize, PathBuf>;
