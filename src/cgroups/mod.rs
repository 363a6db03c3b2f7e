//! Pods' cgroups, made and sized by nodelet before the runtime puts containers in them, as the
//! kubelet's pod container manager does: the kubelet's layout (`layout`: kubepods, QoS levels,
//! pods), the settings (`resources`: shares, quota, memory and pids limits), and the two drivers
//! that apply them: cgroupfs (`fs`, cgroup v1 or v2) and systemd (`systemd`, slices over D-Bus).
//! The `PodCgroups` trait is the seam the pod worker reaches them through.

pub mod fs;
pub mod layout;
pub mod resources;
pub mod systemd;

pub use layout::{CgroupName, Driver, Layout, Qos};
pub use resources::{ResourceConfig, Version};

use std::path::{Path, PathBuf};

/// Where the cgroup file systems are mounted.
pub const MOUNT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {}: {source}", file.display())]
    Write {
        file: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Systemd {
        what: String,
        #[source]
        source: Box<zbus::Error>,
    },
}

/// The cgroup version mounted at `mount`: v2 when it is the unified hierarchy itself.
pub fn detect_version(mount: &Path) -> Version {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    match nix::sys::statfs::statfs(mount) {
        Ok(fs) if fs.filesystem_type().0 == CGROUP2_SUPER_MAGIC => Version::V2,
        _ => Version::V1,
    }
}

/// What the pod worker and the pod manager do to pods' cgroups.
#[async_trait::async_trait]
pub trait PodCgroups: Send + Sync {
    /// Makes the cgroup (and its parents) if missing and applies `resources`.
    async fn ensure(&self, name: &CgroupName, resources: &ResourceConfig) -> Result<(), CgroupError>;
    /// Removes the cgroup once empty; a missing one is fine.
    async fn remove(&self, name: &CgroupName) -> Result<(), CgroupError>;
    /// The pods with a cgroup on this node, by QoS level.
    fn pod_uids(&self) -> Vec<(Qos, String)>;
    fn layout(&self) -> &Layout;
}

/// Removes pod `uid`'s cgroup, whatever its QoS level (the pod's spec may be gone).
pub async fn remove_pod(cgroups: &dyn PodCgroups, uid: &str) {
    for qos in Qos::ALL {
        let name = cgroups.layout().pod(qos, uid);
        if let Err(e) = cgroups.remove(&name).await {
            tracing::debug!(pod_uid = uid, error = %e, "pod cgroup not removed");
        }
    }
}

/// The real driver.
#[derive(Debug, Clone)]
pub enum Manager {
    Cgroupfs(fs::Cgroupfs),
    Systemd(systemd::Systemd),
}

impl Manager {
    /// The driver `driver` on this machine's cgroup mount, its version detected.
    pub async fn new(driver: Driver, cgroup_root: &str) -> Result<Manager, CgroupError> {
        let mount = PathBuf::from(MOUNT);
        let version = detect_version(&mount);
        let layout = Layout::new(driver, cgroup_root);
        tracing::info!(driver = driver.as_str(), version = ?version, "pod cgroups");
        Ok(match driver {
            Driver::Cgroupfs => Manager::Cgroupfs(fs::Cgroupfs { mount, version, layout }),
            Driver::Systemd => Manager::Systemd(systemd::Systemd::connect(mount, version, layout).await?),
        })
    }

    pub fn version(&self) -> Version {
        match self {
            Manager::Cgroupfs(m) => m.version,
            Manager::Systemd(m) => m.version,
        }
    }
}

#[async_trait::async_trait]
impl PodCgroups for Manager {
    async fn ensure(&self, name: &CgroupName, resources: &ResourceConfig) -> Result<(), CgroupError> {
        match self {
            Manager::Cgroupfs(m) => m.ensure(name, resources),
            Manager::Systemd(m) => m.ensure(name, resources).await,
        }
    }

    async fn remove(&self, name: &CgroupName) -> Result<(), CgroupError> {
        match self {
            Manager::Cgroupfs(m) => m.remove(name),
            Manager::Systemd(m) => m.remove(name).await,
        }
    }

    fn pod_uids(&self) -> Vec<(Qos, String)> {
        match self {
            Manager::Cgroupfs(m) => m.pod_uids(),
            Manager::Systemd(m) => m.pod_uids(),
        }
    }

    fn layout(&self) -> &Layout {
        match self {
            Manager::Cgroupfs(m) => &m.layout,
            Manager::Systemd(m) => &m.layout,
        }
    }
}

/// A recording fake for unit tests: remembers what is there and each call.
#[derive(Debug, Default)]
pub struct Recording {
    pub layout: Option<Layout>,
    pub calls: std::sync::Mutex<Vec<String>>,
    pub present: std::sync::Mutex<std::collections::BTreeMap<CgroupName, ResourceConfig>>,
}

impl Recording {
    pub fn new() -> Recording {
        Recording { layout: Some(Layout::new(Driver::Cgroupfs, "/")), ..Default::default() }
    }
}

#[async_trait::async_trait]
impl PodCgroups for Recording {
    async fn ensure(&self, name: &CgroupName, resources: &ResourceConfig) -> Result<(), CgroupError> {
        self.calls.lock().unwrap().push(format!("ensure {}", name.0.join("/")));
        self.present.lock().unwrap().insert(name.clone(), resources.clone());
        Ok(())
    }

    async fn remove(&self, name: &CgroupName) -> Result<(), CgroupError> {
        self.calls.lock().unwrap().push(format!("remove {}", name.0.join("/")));
        self.present.lock().unwrap().remove(name);
        Ok(())
    }

    fn pod_uids(&self) -> Vec<(Qos, String)> {
        let present = self.present.lock().unwrap();
        present.keys().filter_map(|n| Some((Qos::Burstable, n.0.last()?.strip_prefix("pod")?.to_string()))).collect()
    }

    fn layout(&self) -> &Layout {
        self.layout.as_ref().expect("Recording::new")
    }
}
