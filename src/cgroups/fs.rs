//! The cgroupfs driver: nodelet makes the cgroups itself under the cgroup mount, one directory
//! per controller on v1 (cpu, memory, pids: those it sets; the runtime makes the others as it
//! needs them), one directory with its controllers enabled from the root down on v2.

use super::layout::{CgroupName, Layout, Qos};
use super::resources::{ResourceConfig, Version};
use super::CgroupError;
use std::path::{Path, PathBuf};

/// v1 controllers nodelet makes a cgroup in (the ones whose limits it sets).
const V1_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// v2 controllers nodelet enables for its cgroups' children, where the parent offers them.
const V2_CONTROLLERS: [&str; 5] = ["cpuset", "cpu", "io", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct Cgroupfs {
    pub mount: PathBuf,
    pub version: Version,
    pub layout: Layout,
}

impl Cgroupfs {
    /// The cgroup's directories, one per controller (v1) or one (v2).
    fn dirs(&self, name: &CgroupName, controllers: &[&str]) -> Vec<PathBuf> {
        let relative = self.layout.path(name);
        let relative = relative.trim_start_matches('/');
        match self.version {
            Version::V1 => controllers.iter().map(|c| self.mount.join(c).join(relative)).collect(),
            Version::V2 => vec![self.mount.join(relative)],
        }
    }

    pub fn ensure(&self, name: &CgroupName, resources: &ResourceConfig) -> Result<(), CgroupError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CgroupError::Io { what, path, source }
        };
        if self.version == Version::V2 {
            self.enable_controllers(name)?;
        }
        for dir in self.dirs(name, &V1_CONTROLLERS) {
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            }
        }
        for write in resources.files(self.version) {
            let dir = match self.version {
                Version::V1 => self.mount.join(write.controller).join(self.layout.path(name).trim_start_matches('/')),
                Version::V2 => self.mount.join(self.layout.path(name).trim_start_matches('/')),
            };
            let file = dir.join(write.file);
            std::fs::write(&file, &write.value).map_err(|source| CgroupError::Write { file: file.clone(), value: write.value.clone(), source })?;
        }
        Ok(())
    }

    /// v2: each ancestor of the cgroup (the root included) hands its children the controllers
    /// nodelet's cgroups use, of those it has.
    fn enable_controllers(&self, name: &CgroupName) -> Result<(), CgroupError> {
        let path = self.layout.path(name);
        let mut dir = self.mount.clone();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            let missing: Vec<String> = V2_CONTROLLERS
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c) && !enabled.split_whitespace().any(|e| e == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                let file = dir.join("cgroup.subtree_control");
                std::fs::write(&file, missing.join(" ")).map_err(|source| CgroupError::Write { file, value: missing.join(" "), source })?;
            }
            dir = dir.join(part);
            if i + 1 < parts.len() && !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(|source| CgroupError::Io { what: "creating", path: dir.clone(), source })?;
            }
        }
        Ok(())
    }

    /// Removes the (empty) cgroup from every hierarchy; missing ones are fine, busy ones stay.
    pub fn remove(&self, name: &CgroupName) -> Result<(), CgroupError> {
        let relative = self.layout.path(name);
        let dirs = match self.version {
            Version::V1 => std::fs::read_dir(&self.mount)
                .map(|entries| entries.flatten().map(|e| e.path().join(relative.trim_start_matches('/'))).collect())
                .unwrap_or_default(),
            Version::V2 => self.dirs(name, &[]),
        };
        let mut busy = None;
        for dir in dirs.into_iter().filter(|d| d.is_dir()) {
            if let Err(source) = std::fs::remove_dir(&dir) {
                busy = Some(CgroupError::Io { what: "removing", path: dir, source });
            }
        }
        busy.map_or(Ok(()), Err)
    }

    /// The pods that have a cgroup here, by QoS level.
    pub fn pod_uids(&self) -> Vec<(Qos, String)> {
        let mut out = Vec::new();
        for qos in Qos::ALL {
            let dir = self.dirs(&self.layout.qos(qos), &["memory"]).remove(0);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            out.extend(entries.flatten().filter_map(|e| self.layout.pod_uid_of(&e.file_name().to_string_lossy())).map(|uid| (qos, uid)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::layout::Driver;

    fn fake_v2(dir: &Path) {
        std::fs::write(dir.join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids\n").unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), "memory\n").unwrap();
    }

    #[test]
    fn v2_enables_the_controllers_and_writes_the_limits() {
        let root = tempfile::tempdir().unwrap();
        fake_v2(root.path());
        let fs = Cgroupfs { mount: root.path().into(), version: Version::V2, layout: Layout::new(Driver::Cgroupfs, "/") };
        let pod = fs.layout.pod(Qos::Burstable, "u1");
        // a tmpfs has no controller files of its own: give the levels above the pod theirs
        for level in ["kubepods", "kubepods/burstable"] {
            std::fs::create_dir_all(root.path().join(level)).unwrap();
            fake_v2(&root.path().join(level));
        }
        let r = ResourceConfig { cpu_shares: Some(1024), memory_limit: Some(1 << 20), ..Default::default() };
        fs.ensure(&pod, &r).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        for level in ["", "kubepods/", "kubepods/burstable/"] {
            assert_eq!(read(&format!("{level}cgroup.subtree_control")), "+cpuset +cpu +io +pids", "{level}");
        }
        assert_eq!(read("kubepods/burstable/podu1/cpu.weight"), "39");
        assert_eq!(read("kubepods/burstable/podu1/memory.max"), "1048576");
        assert_eq!(fs.pod_uids(), [(Qos::Burstable, "u1".to_string())]);
    }

    #[test]
    fn v1_makes_a_directory_per_controller_and_removes_them_all() {
        let root = tempfile::tempdir().unwrap();
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            std::fs::create_dir(root.path().join(c)).unwrap();
        }
        let fs = Cgroupfs { mount: root.path().into(), version: Version::V1, layout: Layout::new(Driver::Cgroupfs, "/") };
        let pod = fs.layout.pod(Qos::Guaranteed, "u2");
        fs.ensure(&pod, &ResourceConfig { cpu_quota_us: Some(50_000), pids_limit: Some(10), ..Default::default() }).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("cpu/kubepods/podu2/cpu.cfs_quota_us")).unwrap(), "50000");
        assert_eq!(std::fs::read_to_string(root.path().join("pids/kubepods/podu2/pids.max")).unwrap(), "10");
        assert_eq!(fs.pod_uids(), [(Qos::Guaranteed, "u2".to_string())]);
        // a real cgroup directory is removed with rmdir; files a tmpfs keeps make it busy
        for c in ["cpu", "memory", "pids"] {
            for f in std::fs::read_dir(root.path().join(c).join("kubepods/podu2")).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        fs.remove(&pod).unwrap();
        assert!(!root.path().join("memory/kubepods/podu2").exists());
        fs.remove(&pod).unwrap();
    }
}
