//! nodelet's configuration: command-line flags named like the kubelet's (`flags`), and an
//! optional KubeletConfiguration v1beta1 file (`--config`, as kubeadm and kind write it: `file`,
//! with the fields nodelet does not act on listed in `fields`) whose keys they override. Every
//! value is checked at start, and an error names the option, or the file and its field, and what
//! is wrong with it.

mod fields;
pub mod file;
mod flags;
mod maps;

pub use flags::{parse_bool, parse_duration, Flags};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Taint;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The settled configuration nodelet runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub pod_manifest_path: Option<PathBuf>,
    pub read_only_port: u16,
    pub address: IpAddr,
    pub runtime_socket: PathBuf,
    pub pod_infra_container_image: String,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub cgroup_root: String,
    pub cgroup_driver: CgroupDriver,
    /// podPidsLimit (--pod-max-pids): each pod cgroup's pids.max; None for no limit.
    pub pod_pids_limit: Option<i64>,
    /// enforceNodeAllocatable has "pods": kubepods is limited to the node's allocatable.
    pub enforce_pods_allocatable: bool,
    pub pod_cidr: String,
    pub node_ip: Option<IpAddr>,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_plugin: PathBuf,
    pub cni_bridge: String,
    /// The cluster's pod network (--cluster-cidr), kept unmasqueraded.
    pub cluster_cidr: Option<String>,
    /// nodelet-cni's address claims (--cni-data-dir); None: the plugin's default.
    pub cni_data_dir: Option<PathBuf>,
    pub network_plugin: NetworkPlugin,
    pub file_check_frequency: Duration,
    pub sync_frequency: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub kubeconfig: Option<PathBuf>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub rotate_certificates: bool,
    pub server_tls_bootstrap: bool,
    pub provider_id: Option<String>,
    /// The health endpoint's address; port 0 disables it.
    pub healthz: std::net::SocketAddr,
    /// -v as the kubelet's, for the log filter when RUST_LOG is not set.
    pub verbosity: u8,
    pub proxy_kubeconfig: Option<PathBuf>,
    pub node_labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub max_pods: u32,
    /// system- plus kube-reserved: (cpu millicores, memory bytes).
    pub reserved: (i64, i64),
    pub lease_duration: Duration,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub port: u16,
    pub proxy_only: bool,
    pub proxy_enabled: bool,
    pub proxy_table: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub anonymous_auth: bool,
    pub authentication_token_webhook: bool,
    pub authorization_webhook: bool,
    pub allowed_unsafe_sysctls: Vec<String>,
    pub seccomp_default: bool,
    /// Log rotation: (size in bytes past which a log is rotated, files kept per container).
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    pub image_gc: crate::gc::images::Policy,
    pub container_gc: crate::gc::containers::Policy,
    pub eviction: crate::eviction::Settings,
    /// The resolv.conf pods inherit; None: none (`resolvConf: ""`).
    pub resolv_conf: Option<PathBuf>,
    /// How long the secure port keeps TokenReview and SubjectAccessReview answers.
    pub auth_cache: crate::secure::auth::CacheTtls,
    /// Fields of the config file nodelet does not act on that it sets to other than the default.
    pub ignored_fields: Vec<String>,
    /// Keys of the config file that are no KubeletConfiguration field (typos).
    pub unknown_fields: Vec<String>,
}

/// Who sets up the pod network (`--network-plugin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPlugin {
    /// nodelet's own: nodelet-cni, its config, the bridge, routes to the other nodes' pod CIDRs.
    Nodelet,
    /// A CNI the cluster brings: nodelet leaves the CNI config and plugins alone.
    External,
}

/// The cgroup driver (KubeletConfiguration cgroupDriver, --cgroup-driver).
pub use crate::cgroups::Driver as CgroupDriver;

impl Config {
    pub fn from_flags(flags: Flags) -> anyhow::Result<Config> {
        let loaded = match &flags.config {
            Some(path) => file::load(path)?,
            None => file::Loaded::default(),
        };
        let in_file = |e: String| match &flags.config {
            Some(path) if !e.starts_with("--") => anyhow::anyhow!("--config {}: {e}", path.display()),
            _ => anyhow::anyhow!(e),
        };
        let file = loaded.config;
        let cgroup_driver = match flags.cgroup_driver.as_deref() {
            Some(text) => CgroupDriver::parse(text).map_err(|e| anyhow::anyhow!("--cgroup-driver: {e}"))?,
            None => file.cgroup_driver.unwrap_or(CgroupDriver::Cgroupfs),
        };
        let enforce = flags.enforce_node_allocatable.clone().or(file.enforce_node_allocatable.clone());
        let enforce_pods_allocatable = enforce_pods(enforce.as_deref(), flags.enforce_node_allocatable.is_some()).map_err(in_file)?;
        let eviction = maps::eviction_settings(&flags, &file).map_err(in_file)?;
        let reserved = maps::reserved(&flags, &file).map_err(in_file)?;
        let auth = AuthSettings::new(&flags, &file)?;
        let backoff = file.crash_loop_back_off.unwrap_or_default();
        let node_name = match flags.hostname_override.or(file.hostname_override) {
            Some(name) => name,
            None => nix::unistd::gethostname().context("reading the host name")?.to_string_lossy().into_owned(),
        }
        .to_lowercase();
        let as_kubelet = runs_as_kubelet(std::env::args_os().next().as_deref());
        let root_dir: PathBuf = flags.root_dir.or(file.root_dir).unwrap_or_else(|| default_root_dir(as_kubelet));
        let endpoint = flags.container_runtime_endpoint.or(file.container_runtime_endpoint).unwrap_or_else(|| "unix:///run/containerd/containerd.sock".into());
        let config = Config {
            node_name,
            pod_manifest_path: flags.pod_manifest_path.or(file.static_pod_path),
            read_only_port: flags.read_only_port.or(file.read_only_port).unwrap_or(10255),
            address: flags.address.or(file.address).unwrap_or(IpAddr::from([0, 0, 0, 0])),
            runtime_socket: parse_endpoint(&endpoint).map_err(|e| anyhow::anyhow!("--container-runtime-endpoint: {e}"))?,
            pod_infra_container_image: flags
                .pod_infra_container_image
                .or(file.pod_infra_container_image)
                .unwrap_or_else(|| "localhost:5000/nodelet/pause:1".into()),
            root_dir: root_dir.clone(),
            pod_logs_dir: flags.pod_logs_dir.or(file.pod_logs_dir).unwrap_or_else(|| "/var/log/pods".into()),
            cgroup_root: flags.cgroup_root.or(file.cgroup_root).unwrap_or_else(|| "/".into()),
            cgroup_driver,
            pod_pids_limit: flags.pod_max_pids.or(file.pod_pids_limit).filter(|p| *p > 0),
            enforce_pods_allocatable,
            pod_cidr: flags.pod_cidr.or(file.pod_cidr).unwrap_or_else(|| "10.88.0.0/16".into()),
            node_ip: flags.node_ip.or(file.node_ip),
            cluster_dns: flags.cluster_dns.or(file.cluster_dns).unwrap_or_default(),
            cluster_domain: flags.cluster_domain.or(file.cluster_domain).unwrap_or_else(|| "cluster.local".into()),
            cni_conf_dir: flags.cni_conf_dir.or(file.cni_conf_dir).unwrap_or_else(|| "/etc/cni/net.d".into()),
            cni_bin_dir: flags.cni_bin_dir.or(file.cni_bin_dir).unwrap_or_else(|| "/opt/cni/bin".into()),
            cni_plugin: match flags.cni_plugin.or(file.cni_plugin) {
                Some(path) => path,
                None => std::env::current_exe().context("locating the nodelet executable")?.with_file_name("nodelet-cni"),
            },
            cni_bridge: flags.cni_bridge.or(file.cni_bridge).unwrap_or_else(|| "nodelet0".into()),
            cluster_cidr: flags.cluster_cidr.or(file.cluster_cidr).filter(|c| !c.is_empty()),
            cni_data_dir: flags.cni_data_dir.or(file.cni_data_dir),
            network_plugin: match flags.network_plugin.or(file.network_plugin).as_deref() {
                None | Some("nodelet") => NetworkPlugin::Nodelet,
                Some("external") => NetworkPlugin::External,
                Some(other) => bail!("--network-plugin: {other:?} is not nodelet or external"),
            },
            file_check_frequency: flags.file_check_frequency.or(file.file_check_frequency).unwrap_or(Duration::from_millis(250)),
            sync_frequency: flags.sync_frequency.or(file.sync_frequency).unwrap_or(Duration::from_secs(10)),
            backoff_initial: flags.crash_loop_backoff_initial.or(backoff.initial_period).unwrap_or(Duration::from_secs(10)),
            backoff_max: flags.crash_loop_backoff_max.or(backoff.max_container_restart_period).unwrap_or(Duration::from_secs(300)),
            kubeconfig: flags.kubeconfig.or(file.kubeconfig),
            bootstrap_kubeconfig: flags.bootstrap_kubeconfig.or(file.bootstrap_kubeconfig),
            cert_dir: flags.cert_dir.or(file.cert_dir).unwrap_or_else(|| root_dir.join("pki")),
            rotate_certificates: flags.rotate_certificates.or(file.rotate_certificates).unwrap_or(true),
            server_tls_bootstrap: flags.rotate_server_certificates.or(file.server_tls_bootstrap).unwrap_or(false),
            provider_id: flags.provider_id.or(file.provider_id).filter(|id| !id.is_empty()),
            healthz: std::net::SocketAddr::new(
                flags.healthz_bind_address.or(file.healthz_bind_address).unwrap_or(IpAddr::from([127, 0, 0, 1])),
                flags.healthz_port.or(file.healthz_port).unwrap_or(10248),
            ),
            verbosity: flags.verbosity.or(file.logging.and_then(|l| l.verbosity).map(|v| v.min(u8::MAX.into()) as u8)).unwrap_or(0),
            proxy_kubeconfig: flags.proxy_kubeconfig.or(file.proxy_kubeconfig),
            node_labels: match flags.node_labels {
                Some(list) => maps::parse_pairs("--node-labels", &list).map_err(anyhow::Error::msg)?,
                None => file.node_labels.unwrap_or_default(),
            },
            taints: match flags.register_with_taints {
                Some(list) => list
                    .iter()
                    .map(|t| crate::node::object::parse_taint(t))
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("--register-with-taints: {e}"))?,
                None => file.register_with_taints.unwrap_or_default(),
            },
            max_pods: flags.max_pods.or(file.max_pods).unwrap_or(110),
            reserved,
            lease_duration: Duration::from_secs(flags.node_lease_duration_seconds.or(file.node_lease_duration_seconds).unwrap_or(40).into()),
            node_status_update_frequency: flags.node_status_update_frequency.or(file.node_status_update_frequency).unwrap_or(Duration::from_secs(10)),
            node_status_report_frequency: flags.node_status_report_frequency.or(file.node_status_report_frequency).unwrap_or(Duration::from_secs(300)),
            port: flags.port.or(file.port).unwrap_or(10250),
            proxy_only: flags.proxy_only.or(file.proxy_only).unwrap_or(false),
            // As the kubelet (kubeadm clusters run kube-proxy), the Service proxy is asked for.
            proxy_enabled: !flags.disable_proxy.or(file.disable_proxy).unwrap_or(as_kubelet),
            proxy_table: flags.proxy_table.or(file.proxy_table).unwrap_or_else(|| "nodelet".into()),
            tls_cert_file: flags.tls_cert_file.or(file.tls_cert_file),
            tls_private_key_file: flags.tls_private_key_file.or(file.tls_private_key_file),
            client_ca_file: auth.client_ca_file,
            anonymous_auth: auth.anonymous,
            authentication_token_webhook: auth.token_webhook,
            authorization_webhook: auth.authorization_webhook,
            auth_cache: auth.cache,
            allowed_unsafe_sysctls: flags
                .allowed_unsafe_sysctls
                .or(file.allowed_unsafe_sysctls)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            seccomp_default: flags.seccomp_default.or(file.seccomp_default).unwrap_or(false),
            container_log_max_size: match flags.container_log_max_size.or(file.container_log_max_size) {
                Some(text) => parse_log_size(&text).map_err(|e| anyhow::anyhow!("--container-log-max-size: {e}"))?,
                None => 10 << 20,
            },
            container_log_max_files: flags.container_log_max_files.or(file.container_log_max_files).unwrap_or(5),
            image_gc: crate::gc::images::Policy {
                high_threshold_percent: flags.image_gc_high_threshold.or(file.image_gc_high_threshold_percent).unwrap_or(85),
                low_threshold_percent: flags.image_gc_low_threshold.or(file.image_gc_low_threshold_percent).unwrap_or(80),
                min_age: flags.minimum_image_gc_age.or(file.image_minimum_gc_age).unwrap_or(Duration::from_secs(120)),
                max_age: flags.image_maximum_gc_age.or(file.image_maximum_gc_age).unwrap_or(Duration::ZERO),
            },
            container_gc: crate::gc::containers::Policy {
                min_age: flags.minimum_container_ttl_duration.unwrap_or(Duration::ZERO),
                max_per_pod_container: flags.maximum_dead_containers_per_container.unwrap_or(1) as usize,
                max_containers: flags.maximum_dead_containers.unwrap_or(-1),
            },
            eviction,
            resolv_conf: match flags.resolv_conf.or(file.resolv_conf) {
                Some(path) if path.as_os_str().is_empty() => None,
                Some(path) => Some(path),
                None => Some("/etc/resolv.conf".into()),
            },
            ignored_fields: loaded.ignored,
            unknown_fields: loaded.unknown,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.node_name.is_empty() || self.node_name.len() > 253 || !self.node_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            bail!("--hostname-override: {:?} is not a valid node name (a DNS subdomain)", self.node_name);
        }
        parse_cidr(&self.pod_cidr).map_err(|e| anyhow::anyhow!("--pod-cidr: {e}"))?;
        if let Some(cidr) = &self.cluster_cidr {
            let (addr, prefix) = parse_cidr(cidr).map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
            if u32::from(addr) & !(u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)) != u32::from(addr) {
                bail!("--cluster-cidr: {cidr:?} has host bits set (write the network address, such as 10.244.0.0/16)");
            }
        }
        if !self.cgroup_root.starts_with('/') {
            bail!("--cgroup-root: {:?} must be an absolute cgroup path such as / or /kubelet", self.cgroup_root);
        }
        if self.cni_bridge.is_empty() || self.cni_bridge.len() > 15 {
            bail!("--cni-bridge: {:?} must be an interface name of 1 to 15 characters", self.cni_bridge);
        }
        for (option, d) in [
            ("--file-check-frequency", self.file_check_frequency),
            ("--sync-frequency", self.sync_frequency),
            ("--crash-loop-backoff-initial", self.backoff_initial),
        ] {
            if d.is_zero() {
                bail!("{option}: must be greater than zero");
            }
        }
        if self.backoff_max < self.backoff_initial {
            bail!("--crash-loop-backoff-max: {:?} is shorter than --crash-loop-backoff-initial {:?}", self.backoff_max, self.backoff_initial);
        }
        if self.proxy_only && (self.kubeconfig.is_none() || !self.proxy_enabled) {
            bail!("--proxy-only: needs --kubeconfig (Services come from the apiserver) and the proxy enabled");
        }
        if self.proxy_table.is_empty() || self.proxy_table.len() > 64 || !self.proxy_table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            bail!("--proxy-table: {:?} is not a valid nftables table name", self.proxy_table);
        }
        if self.lease_duration.is_zero() {
            bail!("--node-lease-duration-seconds: must be greater than zero");
        }
        // With bootstrap credentials, --kubeconfig is where the node's own will be written; the
        // bootstrap file itself is read only when needed (kubeadm removes it after the join).
        let node_kubeconfig = if self.bootstrap_kubeconfig.is_some() { &None } else { &self.kubeconfig };
        for (option, path) in [("--kubeconfig", node_kubeconfig), ("--proxy-kubeconfig", &self.proxy_kubeconfig)] {
            if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                bail!("{option}: {} is not a file", path.display());
            }
        }
        crate::pods::admission::sysctls::Allowlist::new(&self.allowed_unsafe_sysctls).map_err(|e| anyhow::anyhow!("--allowed-unsafe-sysctls: {e}"))?;
        if self.container_log_max_files < 2 {
            bail!("--container-log-max-files: {} must be at least 2 (the current file and one rotated)", self.container_log_max_files);
        }
        if self.image_gc.high_threshold_percent > 100 {
            bail!("--image-gc-high-threshold: {} is not a percentage between 0 and 100", self.image_gc.high_threshold_percent);
        }
        if self.image_gc.low_threshold_percent >= self.image_gc.high_threshold_percent {
            bail!(
                "--image-gc-low-threshold: {} must be below --image-gc-high-threshold {}",
                self.image_gc.low_threshold_percent,
                self.image_gc.high_threshold_percent
            );
        }
        let (min_age, max_age) = (self.image_gc.min_age, self.image_gc.max_age);
        if !max_age.is_zero() && max_age <= min_age {
            bail!("--image-maximum-gc-age: {max_age:?} must be longer than --image-minimum-gc-age {min_age:?}");
        }
        if self.bootstrap_kubeconfig.is_some() && self.kubeconfig.is_none() {
            bail!("--bootstrap-kubeconfig: needs --kubeconfig, the path where the node's own kubeconfig is written after the bootstrap");
        }
        if self.proxy_kubeconfig.is_some() && self.kubeconfig.is_none() {
            bail!("--proxy-kubeconfig: needs --kubeconfig (without it nodelet runs standalone, with no Service proxy)");
        }
        if let Some(dir) = &self.pod_manifest_path {
            if !dir.is_dir() {
                bail!("--pod-manifest-path: {} is not a directory", dir.display());
            }
        }
        Ok(())
    }
}

/// The secure port's authentication and authorization: flags, else the file's nested
/// `authentication`/`authorization` (else its flat keys, nodelet's older spelling).
struct AuthSettings {
    client_ca_file: Option<PathBuf>,
    anonymous: bool,
    token_webhook: bool,
    authorization_webhook: bool,
    cache: crate::secure::auth::CacheTtls,
}

impl AuthSettings {
    fn new(flags: &Flags, file: &file::KubeletConfiguration) -> anyhow::Result<AuthSettings> {
        let authn = file.authentication.as_ref();
        let authz = file.authorization.as_ref();
        let authn_webhook = authn.and_then(|a| a.webhook.as_ref());
        let authz_webhook = authz.and_then(|a| a.webhook.as_ref());
        let defaults = crate::secure::auth::CacheTtls::default();
        let authorization_webhook = match &flags.authorization_mode {
            Some(mode) => parse_authorization_mode(mode).map_err(|e| anyhow::anyhow!("--authorization-mode: {e}"))?,
            None => authz.and_then(|a| a.mode).or(file.authorization_mode).unwrap_or(false),
        };
        Ok(AuthSettings {
            client_ca_file: flags
                .client_ca_file
                .clone()
                .or_else(|| authn.and_then(|a| a.x509.as_ref()?.client_ca_file.clone()))
                .or(file.client_ca_file.clone()),
            anonymous: flags.anonymous_auth.or(authn.and_then(|a| a.anonymous.as_ref()?.enabled)).or(file.anonymous_auth).unwrap_or(false),
            token_webhook: flags.authentication_token_webhook.or(authn_webhook.and_then(|w| w.enabled)).or(file.authentication_token_webhook).unwrap_or(false),
            authorization_webhook,
            cache: crate::secure::auth::CacheTtls {
                authenticated: flags.authentication_token_webhook_cache_ttl.or(authn_webhook.and_then(|w| w.cache_ttl)).unwrap_or(defaults.authenticated),
                authorized: flags
                    .authorization_webhook_cache_authorized_ttl
                    .or(authz_webhook.and_then(|w| w.cache_authorized_ttl))
                    .unwrap_or(defaults.authorized),
                unauthorized: flags
                    .authorization_webhook_cache_unauthorized_ttl
                    .or(authz_webhook.and_then(|w| w.cache_unauthorized_ttl))
                    .unwrap_or(defaults.unauthorized),
            },
        })
    }
}

/// AlwaysAllow (false) or Webhook (true).
fn parse_authorization_mode(text: &str) -> Result<bool, String> {
    match text {
        "AlwaysAllow" => Ok(false),
        "Webhook" => Ok(true),
        other => Err(format!("{other:?} is not AlwaysAllow or Webhook")),
    }
}

/// Whether enforceNodeAllocatable (--enforce-node-allocatable) asks for "pods" (the default).
/// nodelet has no system- or kube-reserved cgroups to enforce on: those are refused.
fn enforce_pods(values: Option<&[String]>, from_flag: bool) -> Result<bool, String> {
    let name = if from_flag { "--enforce-node-allocatable" } else { "enforceNodeAllocatable" };
    let Some(values) = values else { return Ok(true) };
    let mut pods = false;
    for value in values.iter().filter(|v| !v.is_empty()) {
        match value.as_str() {
            "pods" => pods = true,
            "none" => {}
            other => return Err(format!("{name}: {other:?} is not supported: nodelet enforces node allocatable on pods only (\"pods\" or \"none\")")),
        }
    }
    Ok(pods)
}

/// A container log size such as 10Mi, in bytes.
fn parse_log_size(text: &str) -> Result<u64, String> {
    crate::pods::quantity::bytes(text).ok().filter(|b| *b > 0).map(|b| b as u64).ok_or_else(|| format!("{text:?} is not a positive size such as 10Mi"))
}

/// The path of a CRI endpoint `unix:///path`.
fn parse_endpoint(endpoint: &str) -> Result<PathBuf, String> {
    match endpoint.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ => Err(format!("{endpoint:?} must be a unix socket such as unix:///run/containerd/containerd.sock")),
    }
}

/// The host resolv.conf pods inherit (`resolv_conf`; None: none). A file that cannot be read
/// is a warning, and pods get an empty one, as the kubelet does.
pub fn host_resolv_conf(resolv_conf: Option<&std::path::Path>) -> String {
    let Some(path) = resolv_conf else { return String::new() };
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        tracing::warn!("resolvConf: reading {}: {e}; pods get an empty host resolv.conf", path.display());
        String::new()
    })
}

/// Logs, once at start, the file's fields nodelet ignores and its unknown keys.
pub fn warn_about_file(config: &Config) {
    if !config.ignored_fields.is_empty() {
        tracing::warn!("config file fields nodelet does not implement (ignored): {}", config.ignored_fields.join(", "));
    }
    if !config.unknown_fields.is_empty() {
        tracing::warn!("config file: unknown field(s), not in KubeletConfiguration (ignored): {}", config.unknown_fields.join(", "));
    }
}

/// Whether nodelet runs as the kubelet: invoked as `kubelet` (argv[0]'s file name, as the
/// nodelet-kubelet package installs it for kubeadm).
pub fn runs_as_kubelet(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0.and_then(|a| std::path::Path::new(a).file_name()).is_some_and(|name| name == "kubelet")
}

/// The default --root-dir: the kubelet's (/var/lib/kubelet, where kubeadm puts its files and
/// which `kubeadm reset` cleans) when nodelet runs as the kubelet; else nodelet's own.
pub fn default_root_dir(as_kubelet: bool) -> PathBuf {
    if as_kubelet {
        "/var/lib/kubelet".into()
    } else {
        "/var/lib/nodelet".into()
    }
}

/// An IPv4 CIDR as (network address, prefix length).
pub fn parse_cidr(text: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (addr, prefix) = text.split_once('/').ok_or_else(|| format!("{text:?} is not a CIDR such as 10.88.0.0/16"))?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p)).ok_or_else(|| format!("{text:?}: the prefix length must be between 8 and 30"))?;
    Ok((addr, prefix))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
