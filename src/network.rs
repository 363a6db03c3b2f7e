//! The pod network's installation: nodelet writes the CNI network configuration that containerd
//! reads and installs its own plugin binary where containerd looks for plugins.

use anyhow::Context;
use std::path::{Path, PathBuf};

pub const NETWORK_NAME: &str = "nodelet";
pub const PLUGIN_NAME: &str = "nodelet-cni";
pub const CONFLIST_NAME: &str = "10-nodelet.conflist";

pub struct CniInstall {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub plugin_source: PathBuf,
    pub bridge: String,
    pub pod_cidr: String,
    /// The cluster's pod network (--cluster-cidr): pods' traffic to it is not masqueraded.
    pub cluster_cidr: Option<String>,
    /// The pods' interface MTU: the node's uplink's (host-gw adds no header).
    pub mtu: Option<u32>,
    /// Where the plugin keeps its address claims (--cni-data-dir); None: the plugin's default.
    pub data_dir: Option<PathBuf>,
}

/// The conflist containerd hands to the plugin (CNI spec 1.0.0). The cluster CIDR is named only
/// when it contains the pod CIDR (the plugin refuses one that does not).
fn conflist(install: &CniInstall) -> String {
    let mut plugin = serde_json::json!({
        "type": PLUGIN_NAME,
        "bridge": install.bridge,
        "subnet": install.pod_cidr,
        "ipMasq": true,
    });
    if let Some(cluster) = install.cluster_cidr.as_deref().filter(|c| contains(c, &install.pod_cidr)) {
        plugin["clusterCIDR"] = cluster.into();
    }
    if let Some(mtu) = install.mtu {
        plugin["mtu"] = mtu.into();
    }
    if let Some(dir) = &install.data_dir {
        plugin["dataDir"] = dir.display().to_string().into();
    }
    let doc = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [plugin],
    });
    serde_json::to_string_pretty(&doc).expect("static JSON") + "\n"
}

/// Whether CIDR `outer` contains CIDR `inner` (both IPv4; false when either does not parse).
pub fn contains(outer: &str, inner: &str) -> bool {
    use crate::node_routes::plan::Cidr;
    match (outer.parse::<Cidr>(), inner.parse::<Cidr>()) {
        (Ok(o), Ok(i)) => o.prefix <= i.prefix && o.contains(i.addr),
        _ => false,
    }
}

impl CniInstall {
    pub fn install(&self) -> anyhow::Result<()> {
        let plugin =
            std::fs::read(&self.plugin_source).with_context(|| format!("reading the CNI plugin {} (set --cni-plugin)", self.plugin_source.display()))?;
        write_if_changed(&self.bin_dir.join(PLUGIN_NAME), &plugin, 0o755)?;
        write_if_changed(&self.conflist_path(), self.conflist().as_bytes(), 0o644)
    }

    pub fn conflist_path(&self) -> PathBuf {
        self.conf_dir.join(CONFLIST_NAME)
    }

    pub fn conflist(&self) -> String {
        conflist(self)
    }

    /// True when the network config on disk is the one nodelet writes.
    pub fn config_in_place(&self) -> bool {
        std::fs::read_to_string(self.conflist_path()).is_ok_and(|current| current == self.conflist())
    }

    /// Writes the network config again, even unchanged: a new file (rename) is the event that
    /// makes the runtime reload its CNI config.
    pub fn rewrite_config(&self) -> anyhow::Result<()> {
        write_replacing(&self.conflist_path(), self.conflist().as_bytes(), 0o644)
    }
}

/// Writes through a temporary file and a rename, so containerd never reads half a file and a
/// running plugin binary is replaced, not rewritten in place.
fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|current| current == content) {
        return Ok(());
    }
    write_replacing(path, content, mode)
}

fn write_replacing(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp_prefix = format!(".{}.tmp-", path.file_name().unwrap_or_default().to_string_lossy());
    remove_abandoned_temporaries(dir, &tmp_prefix);
    let tmp = dir.join(format!("{tmp_prefix}{}", std::process::id()));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    tracing::info!(file = %path.display(), "installed");
    Ok(())
}

/// Temporary files left by a nodelet killed mid-write: their PID no longer runs.
fn remove_abandoned_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(pod_cidr: &str, cluster_cidr: Option<&str>, mtu: Option<u32>) -> CniInstall {
        CniInstall {
            conf_dir: "/c".into(),
            bin_dir: "/b".into(),
            plugin_source: "/p".into(),
            bridge: "nodelet0".into(),
            pod_cidr: pod_cidr.into(),
            cluster_cidr: cluster_cidr.map(String::from),
            mtu,
            data_dir: None,
        }
    }

    #[test]
    fn conflist_names_the_plugin_bridge_and_subnet() {
        let doc: serde_json::Value = serde_json::from_str(&install("10.88.0.0/16", None, None).conflist()).unwrap();
        assert_eq!(doc["cniVersion"], "1.0.0");
        assert_eq!(doc["plugins"][0]["type"], PLUGIN_NAME);
        assert_eq!(doc["plugins"][0]["bridge"], "nodelet0");
        assert_eq!(doc["plugins"][0]["subnet"], "10.88.0.0/16");
        assert!(doc["plugins"][0].get("clusterCIDR").is_none() && doc["plugins"][0].get("mtu").is_none());
    }

    #[test]
    fn conflist_names_the_cluster_cidr_that_holds_the_subnet_and_the_mtu() {
        let doc: serde_json::Value = serde_json::from_str(&install("10.244.3.0/24", Some("10.244.0.0/16"), Some(1450)).conflist()).unwrap();
        assert_eq!(doc["plugins"][0]["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(doc["plugins"][0]["mtu"], 1450);
        // Waiting for the node's CIDR, the default --pod-cidr is outside the cluster's.
        let doc: serde_json::Value = serde_json::from_str(&install("10.88.0.0/16", Some("10.244.0.0/16"), None).conflist()).unwrap();
        assert!(doc["plugins"][0].get("clusterCIDR").is_none());
        assert!(contains("10.244.0.0/16", "10.244.3.0/24") && !contains("10.244.3.0/24", "10.244.0.0/16") && !contains("x", "10.0.0.0/8"));
    }

    #[test]
    fn install_writes_once_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugin");
        std::fs::write(&plugin, b"binary").unwrap();
        let install = CniInstall {
            conf_dir: dir.path().join("net.d"),
            bin_dir: dir.path().join("bin"),
            plugin_source: plugin,
            bridge: "b0".into(),
            pod_cidr: "10.1.0.0/24".into(),
            cluster_cidr: None,
            mtu: None,
            data_dir: Some(dir.path().join("claims")),
        };
        install.install().unwrap();
        install.install().unwrap();
        assert_eq!(std::fs::read(dir.path().join("bin").join(PLUGIN_NAME)).unwrap(), b"binary");
        let written = std::fs::read_to_string(dir.path().join("net.d").join(CONFLIST_NAME)).unwrap();
        assert!(written.contains("10.1.0.0/24") && written.contains(dir.path().join("claims").to_str().unwrap()), "{written}");
        assert_eq!(std::fs::read_dir(dir.path().join("net.d")).unwrap().count(), 1, "no temporary file left");
    }
}
