//! Where pods' cgroups live, named as the kubelet names them (cgroupsPerQOS): under the cgroup
//! root, `kubepods`, then `burstable` or `besteffort` (Guaranteed pods sit in `kubepods` itself),
//! then `pod<uid>`. The cgroupfs driver spells that `/kubepods/burstable/pod<uid>`; the systemd
//! driver `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice` (each
//! slice named after its ancestors, with `-` in a part escaped as `_`). Pure.

/// How cgroups are managed: by writing cgroupfs directly, or through systemd's slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

impl Driver {
    pub fn parse(text: &str) -> Result<Driver, String> {
        match text {
            "cgroupfs" => Ok(Driver::Cgroupfs),
            "systemd" => Ok(Driver::Systemd),
            other => Err(format!("{other:?} is not cgroupfs or systemd")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        }
    }
}

/// The pod's quality of service class, which picks its QoS cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub const ALL: [Qos; 3] = [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort];

    /// The QoS level's part under kubepods (none for Guaranteed).
    fn part(self) -> Option<&'static str> {
        match self {
            Qos::Guaranteed => None,
            Qos::Burstable => Some("burstable"),
            Qos::BestEffort => Some("besteffort"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// A cgroup by its parts, from the hierarchy's root: ["kubepods", "burstable", "pod<uid>"].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupName(pub Vec<String>);

/// The node's layout: the driver and the cgroup root (KubeletConfiguration cgroupRoot, "/").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub driver: Driver,
    root: Vec<String>,
}

impl Layout {
    /// `cgroup_root` as the kubelet takes it: "/" or a cgroupfs path such as "/kubelet" (with
    /// the systemd driver "/kubelet" and "kubelet.slice" name the same).
    pub fn new(driver: Driver, cgroup_root: &str) -> Layout {
        let root = cgroup_root
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| p.strip_suffix(".slice").map(|s| s.rsplit('-').next().unwrap_or(s)).unwrap_or(p).to_string())
            .collect();
        Layout { driver, root }
    }

    /// The pods' top cgroup: kubepods.
    pub fn kubepods(&self) -> CgroupName {
        let mut parts = self.root.clone();
        parts.push("kubepods".into());
        CgroupName(parts)
    }

    /// The QoS level's cgroup (kubepods itself for Guaranteed).
    pub fn qos(&self, qos: Qos) -> CgroupName {
        let mut name = self.kubepods();
        name.0.extend(qos.part().map(String::from));
        name
    }

    pub fn pod(&self, qos: Qos, uid: &str) -> CgroupName {
        let mut name = self.qos(qos);
        name.0.push(format!("pod{uid}"));
        name
    }

    /// The cgroup's path from the hierarchy's root, as the driver spells it: what CRI's
    /// cgroup_parent takes, and where it is under a cgroupfs mount.
    pub fn path(&self, name: &CgroupName) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("/{}", name.0.join("/")),
            Driver::Systemd => {
                let mut path = String::new();
                for i in 0..name.0.len() {
                    path.push('/');
                    path.push_str(&slice_name(&name.0[..=i]));
                }
                if path.is_empty() {
                    path.push('/');
                }
                path
            }
        }
    }

    /// The systemd unit of a cgroup: `kubepods-burstable-pod<uid_>.slice`.
    pub fn unit(&self, name: &CgroupName) -> String {
        slice_name(&name.0)
    }

    /// Where the runtime puts a container of the pod cgroup `pod`: `<pod>/<id>` with cgroupfs,
    /// `<pod slice>/cri-containerd-<id>.scope` with systemd (containerd's naming).
    pub fn container_path(&self, pod: &CgroupName, container_id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/{container_id}", self.path(pod)),
            Driver::Systemd => format!("{}/cri-containerd-{container_id}.scope", self.path(pod)),
        }
    }

    /// The pod UID a cgroup directory name under a QoS level names, if it is a pod's.
    pub fn pod_uid_of(&self, dir_name: &str) -> Option<String> {
        let part = match self.driver {
            Driver::Cgroupfs => dir_name,
            Driver::Systemd => dir_name.strip_suffix(".slice")?.rsplit('-').next()?,
        };
        let uid = part.strip_prefix("pod")?;
        Some(match self.driver {
            Driver::Cgroupfs => uid.to_string(),
            Driver::Systemd => uid.replace('_', "-"),
        })
    }
}

/// systemd's slice for these parts: each part's `-` escaped as `_`, joined by `-`.
fn slice_name(parts: &[String]) -> String {
    if parts.is_empty() {
        return "-.slice".into();
    }
    let escaped: Vec<String> = parts.iter().map(|p| p.replace('-', "_")).collect();
    format!("{}.slice", escaped.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "5a1c0c55-7b25-4f2e-9d6a-2c1d3e4f5a6b";

    #[test]
    fn cgroupfs_paths_are_the_kubelets() {
        let l = Layout::new(Driver::Cgroupfs, "/");
        assert_eq!(l.path(&l.pod(Qos::Burstable, UID)), format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(l.path(&l.pod(Qos::BestEffort, UID)), format!("/kubepods/besteffort/pod{UID}"));
        assert_eq!(l.path(&l.pod(Qos::Guaranteed, UID)), format!("/kubepods/pod{UID}"));
        assert_eq!(l.container_path(&l.pod(Qos::Guaranteed, UID), "abc"), format!("/kubepods/pod{UID}/abc"));
        let rooted = Layout::new(Driver::Cgroupfs, "/kubelet/");
        assert_eq!(rooted.path(&rooted.qos(Qos::Burstable)), "/kubelet/kubepods/burstable");
        assert_eq!(l.pod_uid_of(&format!("pod{UID}")).as_deref(), Some(UID));
        assert_eq!(l.pod_uid_of("burstable"), None);
    }

    #[test]
    fn systemd_slices_are_the_kubelets() {
        let l = Layout::new(Driver::Systemd, "/");
        let pod = l.pod(Qos::Burstable, UID);
        let escaped = UID.replace('-', "_");
        assert_eq!(l.path(&pod), format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{escaped}.slice"));
        assert_eq!(l.unit(&pod), format!("kubepods-burstable-pod{escaped}.slice"));
        assert_eq!(l.path(&l.pod(Qos::Guaranteed, UID)), format!("/kubepods.slice/kubepods-pod{escaped}.slice"));
        assert_eq!(
            l.container_path(&pod, "abc"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{escaped}.slice/cri-containerd-abc.scope")
        );
        assert_eq!(l.pod_uid_of(&format!("kubepods-burstable-pod{escaped}.slice")).as_deref(), Some(UID));
        // kind's cgroupRoot
        let kind = Layout::new(Driver::Systemd, "/kubelet");
        assert_eq!(kind.path(&kind.kubepods()), "/kubelet.slice/kubelet-kubepods.slice");
        assert_eq!(Layout::new(Driver::Systemd, "kubelet.slice"), kind);
    }
}
