//! Pods' cgroups on this machine (cgroup v1, the cgroupfs driver): the kubelet's layout
//! (kubepods, its QoS levels, a cgroup per pod), pod-level limits from the pod's resources and
//! podPidsLimit, kubepods held to the node's allocatable, a pod's cgroup gone with the pod, and
//! a cgroup driver that does not match containerd's stopping nodelet with both named.

mod common;
#[allow(dead_code)]
#[path = "chaos_support/containerd.rs"]
mod containerd;

use common::{busybox_pod_with, eventually, pod_cgroup_dir, Node};
use std::process::Command;
use std::time::Duration;

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

#[test]
fn pods_get_the_kubelets_cgroups_with_their_limits() {
    let node = Node::start("cgroups", &["--pod-max-pids", "64"]);
    // Burstable: limits on every container, requests below them.
    node.write_manifest(
        "burstable.yaml",
        &busybox_pod_with("burstable", "sleep 3600", "", "    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 250m, memory: 48Mi}}\n"),
    );
    node.write_manifest("besteffort.yaml", &busybox_pod_with("besteffort", "sleep 3600", "", ""));
    node.write_manifest("guaranteed.yaml", &busybox_pod_with("guaranteed", "sleep 3600", "", "    resources: {limits: {cpu: 200m, memory: 32Mi}}\n"));
    let uid = |pod: &serde_json::Value| pod["metadata"]["uid"].as_str().unwrap().to_string();
    let burstable = uid(&node.wait_running("burstable"));
    let besteffort = uid(&node.wait_running("besteffort"));
    let guaranteed = uid(&node.wait_running("guaranteed"));

    let dir = |controller: &str, uid: &str| pod_cgroup_dir(controller, uid).unwrap_or_else(|| panic!("no {controller} cgroup for pod {uid}"));
    assert!(dir("memory", &burstable).ends_with(format!("kubepods/burstable/pod{burstable}")));
    assert!(dir("memory", &besteffort).ends_with(format!("kubepods/besteffort/pod{besteffort}")));
    assert!(dir("memory", &guaranteed).ends_with(format!("kubepods/pod{guaranteed}")));
    // pod-level limits: the sums of the containers' (the kubelet's ResourceConfigForPod)
    assert_eq!(read(&dir("memory", &burstable).join("memory.limit_in_bytes")), (48u64 << 20).to_string());
    assert_eq!(read(&dir("cpu", &burstable).join("cpu.cfs_quota_us")), "25000");
    assert_eq!(read(&dir("cpu", &burstable).join("cpu.shares")), "102");
    assert_eq!(read(&dir("pids", &burstable).join("pids.max")), "64");
    assert_eq!(read(&dir("memory", &guaranteed).join("memory.limit_in_bytes")), (32u64 << 20).to_string());
    assert_eq!(read(&dir("cpu", &besteffort).join("cpu.shares")), "2");
    assert_eq!(read(&dir("cpu", &besteffort).join("cpu.cfs_quota_us")), "-1");
    // the containers are in their pod's cgroup
    let procs = read(&dir("memory", &burstable).join("cgroup.procs"));
    let children = std::fs::read_dir(dir("memory", &burstable)).unwrap().flatten().filter(|e| e.path().is_dir()).count();
    assert!(procs.is_empty() && children >= 2, "sandbox and container cgroups under the pod's: {children}");
    // kubepods is held to the node's allocatable memory; besteffort has the least cpu shares
    let kubepods = std::path::Path::new("/sys/fs/cgroup/memory/kubepods/memory.limit_in_bytes");
    let limit: u64 = read(kubepods).parse().unwrap();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap() * 1024;
    assert!(limit <= total && limit > total / 2, "kubepods memory limit {limit} of {total}");
    assert_eq!(read(std::path::Path::new("/sys/fs/cgroup/cpu/kubepods/besteffort/cpu.shares")), "2");

    // A pod removed takes its cgroup with it.
    node.remove_manifest("burstable.yaml");
    node.wait_gone("burstable", Duration::from_secs(60));
    eventually("the pod's cgroup removed", Duration::from_secs(30), || pod_cgroup_dir("memory", &burstable).is_none());
}

#[test]
fn a_cgroup_driver_unlike_containerds_stops_nodelet_naming_both() {
    let root = tempfile::Builder::new().prefix("nodelet-cgroup-driver-").tempdir().unwrap();
    let runtime = containerd::PrivateContainerd::start_with("cgroup-driver", root.path(), &[("SystemdCgroup = false", "SystemdCgroup = true")]);
    let out = Command::new(common::nodelet_binary())
        // CNI files of its own: the machine's are in use by other tests' pods
        .args(["--hostname-override", "cgroup-driver", "--disable-proxy", "--cni-plugin", common::cni_plugin_binary().to_str().unwrap()])
        .args(["--cni-bin-dir", root.path().join("cni-bin").to_str().unwrap(), "--cni-conf-dir", root.path().join("cni-conf").to_str().unwrap()])
        .args(["--container-runtime-endpoint", &runtime.endpoint(), "--root-dir", root.path().join("root").to_str().unwrap()])
        .args(["--healthz-port", "0", "--read-only-port", "0", "--port", "0", "--pod-logs-dir", root.path().join("logs").to_str().unwrap()])
        .output()
        .unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{output}");
    assert!(output.contains("cgroupDriver (--cgroup-driver) is \"cgroupfs\"") && output.contains("SystemdCgroup = true"), "{output}");
}
