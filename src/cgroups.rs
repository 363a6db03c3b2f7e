//! nodelet's own cgroup hierarchy (cgroupfs driver): the runtime creates each pod's cgroup under
//! it; nodelet removes a pod's cgroup once the pod is gone, in every controller's hierarchy.

use std::path::Path;

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// Removes the (empty) cgroup `relative` from every hierarchy; missing or busy ones are left.
pub fn remove_pod_cgroup(relative: &str) {
    let Ok(controllers) = std::fs::read_dir(CGROUP_MOUNT) else { return };
    for controller in controllers.flatten() {
        let path = controller.path().join(relative.trim_start_matches('/'));
        if Path::new(&path).is_dir() {
            if let Err(e) = std::fs::remove_dir(&path) {
                tracing::debug!(cgroup = %path.display(), error = %e, "pod cgroup not removed");
            }
        }
    }
}

/// UIDs of the pod cgroups under nodelet's root (read from the memory hierarchy).
pub fn pod_cgroup_uids(cgroup_root: &str) -> Vec<String> {
    let dir = Path::new(CGROUP_MOUNT).join("memory").join(cgroup_root.trim_start_matches('/'));
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("pod")).map(String::from)).collect()
}
