//! nodelet's configuration: command-line flags named like the kubelet's, and an optional
//! KubeletConfiguration-style YAML file (`--config`) whose keys they override. Every value is
//! checked at start, and an error names the option or key and what is wrong with it.

use anyhow::{bail, Context};
use clap::Parser;
use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser, Default)]
#[command(name = "nodelet", disable_version_flag = true, about = "A Kubernetes node agent: runs pods through containerd's CRI, with its own CNI plugin")]
pub struct Flags {
    /// Print the version (`Kubernetes v1.35.0+nodelet.<x>`, as kubeadm reads it) and exit;
    /// `--version=raw` prints each part on a line.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub version: Option<String>,
    /// Log verbosity as the kubelet's -v: 0-3 info, 4-5 debug, 6 and above trace. RUST_LOG
    /// overrides it.
    #[arg(short = 'v', long = "v")]
    pub verbosity: Option<u8>,
    /// YAML file with settings (KubeletConfiguration-style keys); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The node's name (default: the host name, lower-cased).
    #[arg(long = "hostname-override")]
    pub hostname_override: Option<String>,
    /// Directory of static pod manifests (YAML or JSON); standalone mode runs these.
    #[arg(long = "pod-manifest-path")]
    pub pod_manifest_path: Option<PathBuf>,
    /// Port of the read-only HTTP server (/healthz, /pods, /spec); 0 disables it. Default 10255.
    #[arg(long = "read-only-port")]
    pub read_only_port: Option<u16>,
    /// Address the servers listen on. Default 0.0.0.0.
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// CRI endpoint, unix:///path. Default unix:///run/containerd/containerd.sock.
    #[arg(long = "container-runtime-endpoint")]
    pub container_runtime_endpoint: Option<String>,
    /// The sandbox (pause) image, pre-pulled so pods start without a registry round trip.
    #[arg(long = "pod-infra-container-image")]
    pub pod_infra_container_image: Option<String>,
    /// Where nodelet keeps its state (pod volumes). Default /var/lib/nodelet.
    #[arg(long = "root-dir")]
    pub root_dir: Option<PathBuf>,
    /// Where pod log directories go. Default /var/log/pods.
    #[arg(long = "pod-logs-dir")]
    pub pod_logs_dir: Option<PathBuf>,
    /// Parent cgroup of all pods (cgroupfs driver). Default /nodelet.
    #[arg(long = "cgroup-root")]
    pub cgroup_root: Option<String>,
    /// The pod network's CIDR on this node. Default 10.88.0.0/16.
    #[arg(long = "pod-cidr")]
    pub pod_cidr: Option<String>,
    /// The node's IP address (default: the address of the interface holding the default route).
    #[arg(long = "node-ip")]
    pub node_ip: Option<IpAddr>,
    /// Cluster DNS server addresses, comma-separated.
    #[arg(long = "cluster-dns", value_delimiter = ',')]
    pub cluster_dns: Option<Vec<IpAddr>>,
    /// Cluster domain. Default cluster.local.
    #[arg(long = "cluster-domain")]
    pub cluster_domain: Option<String>,
    /// CNI configuration directory that containerd reads. Default /etc/cni/net.d.
    #[arg(long = "cni-conf-dir")]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directory that containerd searches. Default /opt/cni/bin.
    #[arg(long = "cni-bin-dir")]
    pub cni_bin_dir: Option<PathBuf>,
    /// The nodelet-cni binary to install. Default: next to the nodelet executable.
    #[arg(long = "cni-plugin")]
    pub cni_plugin: Option<PathBuf>,
    /// Bridge that nodelet-cni creates. Default nodelet0.
    #[arg(long = "cni-bridge")]
    pub cni_bridge: Option<String>,
    /// The whole cluster's pod network (kube-proxy's clusterCIDR), e.g. 10.244.0.0/16: traffic
    /// from pods to it keeps the pods' addresses (other nodes' pods are reached through the
    /// routes nodelet keeps); traffic leaving it is masqueraded. Default: none (all traffic
    /// leaving this node's pod CIDR is masqueraded).
    #[arg(long = "cluster-cidr")]
    pub cluster_cidr: Option<String>,
    /// Who sets up the pod network: `nodelet` (its own CNI plugin, config, bridge and routes to
    /// the other nodes' pod CIDRs) or `external` (a CNI the cluster brings, such as flannel,
    /// Calico or Cilium: nodelet writes and installs nothing, and pods wait for the runtime's
    /// NetworkReady). Default nodelet.
    #[arg(long = "network-plugin")]
    pub network_plugin: Option<String>,
    /// How often the static pod directory is checked, e.g. 250ms. Default 250ms.
    #[arg(long = "file-check-frequency", value_parser = parse_duration)]
    pub file_check_frequency: Option<Duration>,
    /// How often every pod is resynced with the runtime regardless of events. Default 10s.
    #[arg(long = "sync-frequency", value_parser = parse_duration)]
    pub sync_frequency: Option<Duration>,
    /// First delay of the crash-loop back-off. Default 10s.
    #[arg(long = "crash-loop-backoff-initial", value_parser = parse_duration)]
    pub crash_loop_backoff_initial: Option<Duration>,
    /// Longest delay of the crash-loop back-off. Default 5m.
    #[arg(long = "crash-loop-backoff-max", value_parser = parse_duration)]
    pub crash_loop_backoff_max: Option<Duration>,
    /// kubeconfig of the cluster to join; without it nodelet runs standalone (static pods only).
    /// With --bootstrap-kubeconfig it need not exist: nodelet writes it after its TLS bootstrap.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig with bootstrap credentials (a bootstrap token): used when --kubeconfig is
    /// missing or its client certificate expired, to get the node's certificate through a
    /// CertificateSigningRequest.
    #[arg(long = "bootstrap-kubeconfig")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the node's certificates issued by the cluster are kept (kubelet-client-current.pem,
    /// kubelet-server-current.pem) and the self-signed serving pair. Default <root-dir>/pki.
    #[arg(long = "cert-dir")]
    pub cert_dir: Option<PathBuf>,
    /// Renew the client certificate through the cluster before it expires. Default true.
    #[arg(long = "rotate-certificates", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub rotate_certificates: Option<bool>,
    /// Get the secure port's serving certificate from the cluster (a kubelet-serving CSR)
    /// and renew it (KubeletConfiguration serverTLSBootstrap). Default false.
    #[arg(long = "rotate-server-certificates", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub rotate_server_certificates: Option<bool>,
    /// The Node's spec.providerID (cloud or machine-management ID), set at registration.
    #[arg(long = "provider-id")]
    pub provider_id: Option<String>,
    /// Port of the local health endpoint (/healthz), 0 disables it. Default 10248.
    #[arg(long = "healthz-port")]
    pub healthz_port: Option<u16>,
    /// Address the health endpoint listens on. Default 127.0.0.1.
    #[arg(long = "healthz-bind-address")]
    pub healthz_bind_address: Option<IpAddr>,
    /// kubeconfig the Service proxy watches Services and EndpointSlices with (kube-proxy's
    /// identity, system:kube-proxy); default: the node's --kubeconfig.
    #[arg(long = "proxy-kubeconfig")]
    pub proxy_kubeconfig: Option<PathBuf>,
    /// Extra labels for the Node, key=value,...
    #[arg(long = "node-labels", value_delimiter = ',')]
    pub node_labels: Option<Vec<String>>,
    /// Taints the Node is registered with, key=value:Effect,...
    #[arg(long = "register-with-taints", value_delimiter = ',')]
    pub register_with_taints: Option<Vec<String>>,
    /// Pods this node accepts. Default 110.
    #[arg(long = "max-pods")]
    pub max_pods: Option<u32>,
    /// Resources held back for the system, cpu=100m,memory=256Mi.
    #[arg(long = "system-reserved", value_delimiter = ',')]
    pub system_reserved: Option<Vec<String>>,
    /// Resources held back for Kubernetes daemons, cpu=100m,memory=256Mi.
    #[arg(long = "kube-reserved", value_delimiter = ',')]
    pub kube_reserved: Option<Vec<String>>,
    /// Lease duration in seconds. Default 40 (renewed every quarter of it).
    #[arg(long = "node-lease-duration-seconds")]
    pub node_lease_duration_seconds: Option<u32>,
    /// How often the node status is computed (and patched if changed). Default 10s.
    #[arg(long = "node-status-update-frequency", value_parser = parse_duration)]
    pub node_status_update_frequency: Option<Duration>,
    /// Longest time between two node status patches. Default 5m.
    #[arg(long = "node-status-report-frequency", value_parser = parse_duration)]
    pub node_status_report_frequency: Option<Duration>,
    /// The secure port advertised in the Node's daemonEndpoints. Default 10250.
    #[arg(long)]
    pub port: Option<u16>,
    /// Run only the Service proxy (for a node that keeps another kubelet); needs --kubeconfig.
    #[arg(long = "proxy-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub proxy_only: Option<bool>,
    /// Do not run the Service proxy.
    #[arg(long = "disable-proxy", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub disable_proxy: Option<bool>,
    /// The nftables table the proxy owns (family ip). Default nodelet.
    #[arg(long = "proxy-table")]
    pub proxy_table: Option<String>,
    /// Serving certificate of the secure port (default: self-signed, kept in <root-dir>/pki).
    #[arg(long = "tls-cert-file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long = "tls-private-key-file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA whose client certificates authenticate requests to the secure port.
    #[arg(long = "client-ca-file")]
    pub client_ca_file: Option<PathBuf>,
    /// Let unauthenticated requests in as system:anonymous. Default false.
    #[arg(long = "anonymous-auth", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub anonymous_auth: Option<bool>,
    /// Check bearer tokens with the TokenReview API. Default false.
    #[arg(long = "authentication-token-webhook", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub authentication_token_webhook: Option<bool>,
    /// AlwaysAllow or Webhook (SubjectAccessReview). Default AlwaysAllow.
    #[arg(long = "authorization-mode")]
    pub authorization_mode: Option<String>,
    /// Unsafe sysctls (or `prefix*` patterns) pods may set beside the safe set, comma-separated: kernel.msg*,net.core.somaxconn.
    #[arg(long = "allowed-unsafe-sysctls", value_delimiter = ',')]
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    /// RuntimeDefault seccomp for containers whose pod names no profile (else Unconfined). Default false.
    #[arg(long = "seccomp-default", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub seccomp_default: Option<bool>,
    /// A container's log file is rotated when it grows past this size, e.g. 10Mi. Default 10Mi.
    #[arg(long = "container-log-max-size")]
    pub container_log_max_size: Option<String>,
    /// Log files kept per container, the current one included (at least 2). Default 5.
    #[arg(long = "container-log-max-files")]
    pub container_log_max_files: Option<u32>,
    /// Image GC runs when the image file system is at least this full (percent). Default 85.
    #[arg(long = "image-gc-high-threshold")]
    pub image_gc_high_threshold: Option<u8>,
    /// Image GC frees space until the image file system is at most this full (percent). Default 80.
    #[arg(long = "image-gc-low-threshold")]
    pub image_gc_low_threshold: Option<u8>,
    /// An unused image younger than this is never removed. Default 2m.
    #[arg(long = "minimum-image-gc-age", alias = "image-minimum-gc-age", value_parser = parse_duration)]
    pub minimum_image_gc_age: Option<Duration>,
    /// A dead container younger than this is never removed. Default 0.
    #[arg(long = "minimum-container-ttl-duration", value_parser = parse_duration)]
    pub minimum_container_ttl_duration: Option<Duration>,
    /// Dead instances kept per container of a pod (the newest instance aside). Default 1.
    #[arg(long = "maximum-dead-containers-per-container")]
    pub maximum_dead_containers_per_container: Option<u32>,
    /// Dead containers kept on the node in all; -1 for no limit. Default -1.
    #[arg(long = "maximum-dead-containers", allow_hyphen_values = true)]
    pub maximum_dead_containers: Option<i64>,
    /// Hard eviction thresholds, signal<value,...: memory.available<100Mi,nodefs.available<10%.
    /// Default memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%.
    #[arg(long = "eviction-hard", value_delimiter = ',')]
    pub eviction_hard: Option<Vec<String>>,
    /// Soft eviction thresholds, signal<value,...; each needs a grace period.
    #[arg(long = "eviction-soft", value_delimiter = ',')]
    pub eviction_soft: Option<Vec<String>>,
    /// Grace periods of the soft thresholds, signal=duration,...: memory.available=1m30s.
    #[arg(long = "eviction-soft-grace-period", value_delimiter = ',')]
    pub eviction_soft_grace_period: Option<Vec<String>>,
    /// Minimum reclaims, signal=quantity or percent,...: a met threshold stays met until this
    /// much more is available, such as nodefs.available=500Mi. Default none.
    #[arg(long = "eviction-minimum-reclaim", value_delimiter = ',')]
    pub eviction_minimum_reclaim: Option<Vec<String>>,
    /// How long a pressure condition stays after its threshold was last met. Default 5m.
    #[arg(long = "eviction-pressure-transition-period", value_parser = parse_duration)]
    pub eviction_pressure_transition_period: Option<Duration>,
    /// Longest grace (seconds) a pod evicted for a soft threshold gets. Default 0.
    #[arg(long = "eviction-max-pod-grace-period")]
    pub eviction_max_pod_grace_period: Option<u32>,
}

/// Who sets up the pod network (`--network-plugin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPlugin {
    /// nodelet's own: nodelet-cni, its config, the bridge, routes to the other nodes' pod CIDRs.
    Nodelet,
    /// A CNI the cluster brings: nodelet leaves the CNI config and plugins alone.
    External,
}

/// The config file's keys, in KubeletConfiguration's spelling where one exists.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub hostname_override: Option<String>,
    pub static_pod_path: Option<PathBuf>,
    pub read_only_port: Option<u16>,
    pub address: Option<IpAddr>,
    pub container_runtime_endpoint: Option<String>,
    pub pod_infra_container_image: Option<String>,
    pub root_dir: Option<PathBuf>,
    pub pod_logs_dir: Option<PathBuf>,
    pub cgroup_root: Option<String>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "nodeIP")]
    pub node_ip: Option<IpAddr>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<IpAddr>>,
    pub cluster_domain: Option<String>,
    pub cni_conf_dir: Option<PathBuf>,
    pub cni_bin_dir: Option<PathBuf>,
    pub cni_plugin: Option<PathBuf>,
    pub cni_bridge: Option<String>,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    pub network_plugin: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    pub file_check_frequency: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub sync_frequency: Option<Duration>,
    pub crash_loop_back_off: Option<CrashLoopBackOff>,
    pub kubeconfig: Option<PathBuf>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: Option<PathBuf>,
    pub rotate_certificates: Option<bool>,
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: Option<bool>,
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    pub healthz_port: Option<u16>,
    pub healthz_bind_address: Option<IpAddr>,
    pub proxy_kubeconfig: Option<PathBuf>,
    pub node_labels: Option<BTreeMap<String, String>>,
    pub register_with_taints: Option<Vec<Taint>>,
    pub max_pods: Option<u32>,
    pub system_reserved: Option<BTreeMap<String, String>>,
    pub kube_reserved: Option<BTreeMap<String, String>>,
    pub node_lease_duration_seconds: Option<u32>,
    #[serde(default, with = "humantime_serde_opt")]
    pub node_status_update_frequency: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub node_status_report_frequency: Option<Duration>,
    pub port: Option<u16>,
    pub proxy_only: Option<bool>,
    pub disable_proxy: Option<bool>,
    pub proxy_table: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub anonymous_auth: Option<bool>,
    pub authentication_token_webhook: Option<bool>,
    pub authorization_mode: Option<String>,
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    pub seccomp_default: Option<bool>,
    pub container_log_max_size: Option<String>,
    pub container_log_max_files: Option<u32>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<u8>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<u8>,
    #[serde(default, rename = "imageMinimumGCAge", with = "humantime_serde_opt")]
    pub image_minimum_gc_age: Option<Duration>,
    pub eviction_hard: Option<BTreeMap<String, String>>,
    pub eviction_soft: Option<BTreeMap<String, String>>,
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    #[serde(default, with = "humantime_serde_opt")]
    pub eviction_pressure_transition_period: Option<Duration>,
    pub eviction_max_pod_grace_period: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrashLoopBackOff {
    #[serde(default, with = "humantime_serde_opt")]
    pub initial_period: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    pub max_container_restart_period: Option<Duration>,
}

/// Durations in the file are written as "10s", "250ms", "5m".
mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| super::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A boolean flag's value as the kubelet's flags (Go's strconv.ParseBool) take it: a bare
/// `--flag` is true (clap's default_missing_value), `--flag=false` turns it off.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (true or false)")),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration like 250ms, 10s or 5m: {e}"))
}

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
}

impl Config {
    pub fn from_flags(flags: Flags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let eviction = eviction_settings(&flags, &file)?;
        let backoff = file.crash_loop_back_off.unwrap_or_default();
        let node_name = match flags.hostname_override.or(file.hostname_override) {
            Some(name) => name,
            None => nix::unistd::gethostname().context("reading the host name")?.to_string_lossy().into_owned(),
        }
        .to_lowercase();
        let root_dir: PathBuf = flags.root_dir.or(file.root_dir).unwrap_or_else(|| default_root_dir(std::env::args_os().next().as_deref()));
        let endpoint = flags.container_runtime_endpoint.or(file.container_runtime_endpoint).unwrap_or_else(|| "unix:///run/containerd/containerd.sock".into());
        let config = Config {
            node_name,
            pod_manifest_path: flags.pod_manifest_path.or(file.static_pod_path),
            read_only_port: flags.read_only_port.or(file.read_only_port).unwrap_or(10255),
            address: flags.address.or(file.address).unwrap_or(IpAddr::from([0, 0, 0, 0])),
            runtime_socket: parse_endpoint(&endpoint)?,
            pod_infra_container_image: flags
                .pod_infra_container_image
                .or(file.pod_infra_container_image)
                .unwrap_or_else(|| "localhost:5000/nodelet/pause:1".into()),
            root_dir: root_dir.clone(),
            pod_logs_dir: flags.pod_logs_dir.or(file.pod_logs_dir).unwrap_or_else(|| "/var/log/pods".into()),
            cgroup_root: flags.cgroup_root.or(file.cgroup_root).unwrap_or_else(|| "/nodelet".into()),
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
            verbosity: flags.verbosity.unwrap_or(0),
            proxy_kubeconfig: flags.proxy_kubeconfig.or(file.proxy_kubeconfig),
            node_labels: match flags.node_labels {
                Some(list) => parse_pairs("--node-labels", &list)?,
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
            reserved: {
                let system = match flags.system_reserved {
                    Some(l) => parse_pairs("--system-reserved", &l)?,
                    None => file.system_reserved.unwrap_or_default(),
                };
                let kube = match flags.kube_reserved {
                    Some(l) => parse_pairs("--kube-reserved", &l)?,
                    None => file.kube_reserved.unwrap_or_default(),
                };
                let (a, b) = (reserved("--system-reserved", &system)?, reserved("--kube-reserved", &kube)?);
                let sum = |x: i64, y: i64, what: &str| {
                    x.checked_add(y).ok_or_else(|| anyhow::anyhow!("--system-reserved plus --kube-reserved: {what} does not fit in 64 bits"))
                };
                (sum(a.0, b.0, "cpu")?, sum(a.1, b.1, "memory")?)
            },
            lease_duration: Duration::from_secs(flags.node_lease_duration_seconds.or(file.node_lease_duration_seconds).unwrap_or(40).into()),
            node_status_update_frequency: flags.node_status_update_frequency.or(file.node_status_update_frequency).unwrap_or(Duration::from_secs(10)),
            node_status_report_frequency: flags.node_status_report_frequency.or(file.node_status_report_frequency).unwrap_or(Duration::from_secs(300)),
            port: flags.port.or(file.port).unwrap_or(10250),
            proxy_only: flags.proxy_only.or(file.proxy_only).unwrap_or(false),
            proxy_enabled: !flags.disable_proxy.or(file.disable_proxy).unwrap_or(false),
            proxy_table: flags.proxy_table.or(file.proxy_table).unwrap_or_else(|| "nodelet".into()),
            tls_cert_file: flags.tls_cert_file.or(file.tls_cert_file),
            tls_private_key_file: flags.tls_private_key_file.or(file.tls_private_key_file),
            client_ca_file: flags.client_ca_file.or(file.client_ca_file),
            anonymous_auth: flags.anonymous_auth.or(file.anonymous_auth).unwrap_or(false),
            authentication_token_webhook: flags.authentication_token_webhook.or(file.authentication_token_webhook).unwrap_or(false),
            authorization_webhook: match flags.authorization_mode.or(file.authorization_mode).as_deref() {
                None | Some("AlwaysAllow") => false,
                Some("Webhook") => true,
                Some(other) => bail!("--authorization-mode: {other:?} is not AlwaysAllow or Webhook"),
            },
            allowed_unsafe_sysctls: flags
                .allowed_unsafe_sysctls
                .or(file.allowed_unsafe_sysctls)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            seccomp_default: flags.seccomp_default.or(file.seccomp_default).unwrap_or(false),
            container_log_max_size: match flags.container_log_max_size.or(file.container_log_max_size) {
                Some(text) => crate::pods::quantity::bytes(&text)
                    .ok()
                    .filter(|b| *b > 0)
                    .map(|b| b as u64)
                    .ok_or_else(|| anyhow::anyhow!("--container-log-max-size: {text:?} is not a positive size such as 10Mi"))?,
                None => 10 << 20,
            },
            container_log_max_files: flags.container_log_max_files.or(file.container_log_max_files).unwrap_or(5),
            image_gc: crate::gc::images::Policy {
                high_threshold_percent: flags.image_gc_high_threshold.or(file.image_gc_high_threshold_percent).unwrap_or(85),
                low_threshold_percent: flags.image_gc_low_threshold.or(file.image_gc_low_threshold_percent).unwrap_or(80),
                min_age: flags.minimum_image_gc_age.or(file.image_minimum_gc_age).unwrap_or(Duration::from_secs(120)),
            },
            container_gc: crate::gc::containers::Policy {
                min_age: flags.minimum_container_ttl_duration.unwrap_or(Duration::ZERO),
                max_per_pod_container: flags.maximum_dead_containers_per_container.unwrap_or(1) as usize,
                max_containers: flags.maximum_dead_containers.unwrap_or(-1),
            },
            eviction,
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
            bail!("--cgroup-root: {:?} must be an absolute cgroup path such as /nodelet", self.cgroup_root);
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
        // With bootstrap credentials, --kubeconfig is where the node's own will be written.
        let node_kubeconfig = if self.bootstrap_kubeconfig.is_some() { &None } else { &self.kubeconfig };
        for (option, path) in
            [("--kubeconfig", node_kubeconfig), ("--bootstrap-kubeconfig", &self.bootstrap_kubeconfig), ("--proxy-kubeconfig", &self.proxy_kubeconfig)]
        {
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

/// The eviction thresholds and periods from the flags, else the file (a flag's map replaces the
/// file's), else the kubelet's defaults.
fn eviction_settings(flags: &Flags, file: &FileConfig) -> anyhow::Result<crate::eviction::Settings> {
    use crate::eviction::thresholds::{parse_pairs, parse_reclaims, parse_statements, thresholds, Settings, FILE_NAMES, FLAG_NAMES};
    let err = |e: String| anyhow::anyhow!(e);
    let from_flag =
        [flags.eviction_hard.is_some(), flags.eviction_soft.is_some(), flags.eviction_soft_grace_period.is_some(), flags.eviction_minimum_reclaim.is_some()];
    let names = [0, 1, 2, 3].map(|i| if from_flag[i] { FLAG_NAMES[i] } else { FILE_NAMES[i] });
    let hard = match &flags.eviction_hard {
        Some(items) => Some(parse_statements("--eviction-hard", items).map_err(err)?),
        None => file.eviction_hard.clone(),
    };
    let soft = match &flags.eviction_soft {
        Some(items) => parse_statements("--eviction-soft", items).map_err(err)?,
        None => file.eviction_soft.clone().unwrap_or_default(),
    };
    let soft_grace = match &flags.eviction_soft_grace_period {
        Some(items) => parse_pairs("--eviction-soft-grace-period", items).map_err(err)?,
        None => file.eviction_soft_grace_period.clone().unwrap_or_default(),
    };
    let min_reclaim = match &flags.eviction_minimum_reclaim {
        Some(items) => parse_reclaims("--eviction-minimum-reclaim", items).map_err(err)?,
        None => file.eviction_minimum_reclaim.clone().unwrap_or_default(),
    };
    Ok(crate::eviction::Settings {
        thresholds: thresholds(&Settings { hard, soft, soft_grace, min_reclaim, names }).map_err(err)?,
        pressure_transition: flags
            .eviction_pressure_transition_period
            .or(file.eviction_pressure_transition_period)
            .unwrap_or(crate::eviction::thresholds::DEFAULT_PRESSURE_TRANSITION),
        max_pod_grace: Duration::from_secs(flags.eviction_max_pod_grace_period.or(file.eviction_max_pod_grace_period).unwrap_or(0).into()),
    })
}

/// `key=value` items as a map; an item without `=` is an error naming the option.
fn parse_pairs(option: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .filter(|i| !i.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{option}: {item:?} is not key=value"),
        })
        .collect()
}

/// cpu and memory of a reservation, as (millicores, bytes).
fn reserved(option: &str, map: &BTreeMap<String, String>) -> anyhow::Result<(i64, i64)> {
    let mut out = (0, 0);
    for (key, value) in map {
        match key.as_str() {
            "cpu" => out.0 = crate::pods::quantity::cpu_millis(value).map_err(|e| anyhow::anyhow!("{option}: cpu: {e}"))?,
            "memory" => out.1 = crate::pods::quantity::bytes(value).map_err(|e| anyhow::anyhow!("{option}: memory: {e}"))?,
            "ephemeral-storage" | "pid" => {}
            other => bail!("{option}: unknown resource {other:?} (cpu, memory, ephemeral-storage, pid)"),
        }
    }
    Ok(out)
}

fn load_file(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--config: reading {}", path.display()))?;
    let file: FileConfig = serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
    if let Some(kind) = file.kind.as_deref().filter(|k| *k != "KubeletConfiguration") {
        bail!("--config {}: kind {kind:?} should be KubeletConfiguration", path.display());
    }
    if let Some(version) = file.api_version.as_deref().filter(|v| !v.starts_with("kubelet.config.k8s.io/")) {
        bail!("--config {}: apiVersion {version:?} should be kubelet.config.k8s.io/v1beta1", path.display());
    }
    Ok(file)
}

/// The default --root-dir: the kubelet's (/var/lib/kubelet, where kubeadm puts its files and
/// which `kubeadm reset` cleans) when nodelet runs as the kubelet, invoked as `kubelet` (argv[0]'s
/// file name, as the nodelet-kubelet package's unit starts it); else nodelet's own.
pub fn default_root_dir(argv0: Option<&std::ffi::OsStr>) -> PathBuf {
    match argv0.and_then(|a| std::path::Path::new(a).file_name()) {
        Some(name) if name == "kubelet" => "/var/lib/kubelet".into(),
        _ => "/var/lib/nodelet".into(),
    }
}

fn parse_endpoint(endpoint: &str) -> anyhow::Result<PathBuf> {
    match endpoint.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ => bail!("--container-runtime-endpoint: {endpoint:?} must be a unix socket such as unix:///run/containerd/containerd.sock"),
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
