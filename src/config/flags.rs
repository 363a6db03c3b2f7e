//! nodelet's command line: flags named like the kubelet's (and its own), each an Option so
//! that a flag given overrides the config file's key.

use clap::Parser;
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
    /// The cgroup pods' kubepods level goes under (kind uses /kubelet). Default /.
    #[arg(long = "cgroup-root")]
    pub cgroup_root: Option<String>,
    /// cgroupfs or systemd: must be containerd's (its runc SystemdCgroup). Default cgroupfs.
    #[arg(long = "cgroup-driver")]
    pub cgroup_driver: Option<String>,
    /// The most processes a pod may run (its pod cgroup's pids.max); -1 for no limit. Default -1.
    #[arg(long = "pod-max-pids", allow_hyphen_values = true)]
    pub pod_max_pids: Option<i64>,
    /// Where node allocatable is enforced: "pods" (kubepods gets the allocatable cpu and
    /// memory as its limits) or "none". Default pods.
    #[arg(long = "enforce-node-allocatable", value_delimiter = ',')]
    pub enforce_node_allocatable: Option<Vec<String>>,
    /// The resolv.conf pods inherit (without cluster DNS, or in dnsPolicy Default); "" gives
    /// them none. Default /etc/resolv.conf.
    #[arg(long = "resolv-conf", value_parser = path_or_empty)]
    pub resolv_conf: Option<PathBuf>,
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
    /// Where nodelet-cni keeps its address claims. Default: the plugin's (/var/lib/nodelet/cni).
    /// Nodes sharing a machine's file system (the multi-node test cluster) need one each.
    #[arg(long = "cni-data-dir")]
    pub cni_data_dir: Option<PathBuf>,
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
    /// How long a TokenReview's answer is kept. Default 2m.
    #[arg(long = "authentication-token-webhook-cache-ttl", value_parser = parse_duration)]
    pub authentication_token_webhook_cache_ttl: Option<Duration>,
    /// AlwaysAllow or Webhook (SubjectAccessReview). Default AlwaysAllow.
    #[arg(long = "authorization-mode")]
    pub authorization_mode: Option<String>,
    /// How long a SubjectAccessReview's "allowed" is kept. Default 5m.
    #[arg(long = "authorization-webhook-cache-authorized-ttl", value_parser = parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Option<Duration>,
    /// How long a SubjectAccessReview's "denied" is kept. Default 30s.
    #[arg(long = "authorization-webhook-cache-unauthorized-ttl", value_parser = parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Option<Duration>,
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
    /// An unused image not used for longer is removed whatever the disk's fill; 0s: never. Default 0s.
    #[arg(long = "image-maximum-gc-age", value_parser = parse_duration)]
    pub image_maximum_gc_age: Option<Duration>,
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

/// A boolean flag's value as the kubelet's flags (Go's strconv.ParseBool) take it: a bare
/// `--flag` is true (clap's default_missing_value), `--flag=false` turns it off.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (true or false)")),
    }
}

/// A path, where "" is a choice of its own (clap refuses an empty path by default).
fn path_or_empty(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration like 250ms, 10s or 5m: {e}"))
}
