//! The versions nodelet answers with. It speaks the Kubernetes v1.35 API and takes the kubelet's
//! place, so it reports itself in that line, with its own version as semver build metadata:
//! tools that check version skew (kubeadm's preflight, `kubectl version`) parse it as v1.35.0.

/// The Kubernetes release whose kubelet nodelet stands in for.
pub const KUBERNETES: &str = "v1.35.0";

/// The Node's `status.nodeInfo.kubeletVersion` (and kubeProxyVersion).
pub const KUBELET: &str = concat!("v1.35.0+nodelet.", env!("CARGO_PKG_VERSION"));

/// What `nodelet --version` prints: the kubelet's one line, which kubeadm's preflight parses.
pub fn line() -> String {
    format!("Kubernetes {KUBELET}")
}

/// What `nodelet --version=raw` prints: every part on a line of its own.
pub fn raw() -> String {
    format!(
        "kubernetes: {KUBERNETES}\nnodelet: {}\ngitVersion: {KUBELET}\nplatform: {}/{}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    )
}

#[cfg(test)]
mod tests {
    /// kubeadm's preflight (KubeletVersionCheck) reads `kubelet --version` with this pattern and
    /// then parses the capture as a semantic version.
    #[test]
    fn the_version_line_is_one_kubeadm_parses() {
        let line = super::line();
        let version = line.strip_prefix("Kubernetes v").expect(&line);
        let (core, build) = version.split_once('+').expect(version);
        let parts: Vec<u32> = core.split('.').map(|p| p.parse().expect(core)).collect();
        assert_eq!(parts[..2], [1, 35]);
        assert_eq!(parts.len(), 3);
        assert!(build.split('.').all(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')), "{build}");
        assert!(!line.contains('\n'));
    }
}
