//! Unit tests of `config`.

use super::*;
use clap::Parser;

fn flags(args: &[&str]) -> Flags {
    let mut all = vec!["nodelet", "--hostname-override", "node-a", "--cni-plugin", "/bin/true"];
    all.extend_from_slice(args);
    Flags::try_parse_from(all).unwrap()
}

#[test]
fn defaults_follow_the_kubelet() {
    let c = Config::from_flags(flags(&[])).unwrap();
    assert_eq!(c.read_only_port, 10255);
    assert_eq!(c.runtime_socket, PathBuf::from("/run/containerd/containerd.sock"));
    assert_eq!(c.backoff_initial, Duration::from_secs(10));
    assert_eq!(c.backoff_max, Duration::from_secs(300));
    assert_eq!(c.pod_logs_dir, PathBuf::from("/var/log/pods"));
}

#[test]
fn the_pod_network_settings_come_from_flags_or_the_file() {
    let c = Config::from_flags(flags(&[])).unwrap();
    assert_eq!((c.cluster_cidr.as_deref(), c.network_plugin), (None, NetworkPlugin::Nodelet));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "kind: KubeletConfiguration\nclusterCIDR: 10.244.0.0/16\nnetworkPlugin: external\n").unwrap();
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap()])).unwrap();
    assert_eq!((c.cluster_cidr.as_deref(), c.network_plugin), (Some("10.244.0.0/16"), NetworkPlugin::External));
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap(), "--network-plugin", "nodelet", "--cluster-cidr", "10.8.0.0/14"])).unwrap();
    assert_eq!((c.cluster_cidr.as_deref(), c.network_plugin), (Some("10.8.0.0/14"), NetworkPlugin::Nodelet));
}

#[test]
fn the_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "kind: KubeletConfiguration\nreadOnlyPort: 0\npodCIDR: 10.1.0.0/24\ncrashLoopBackOff: {initialPeriod: 1s, maxContainerRestartPeriod: 4s}\n",
    )
    .unwrap();
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap(), "--pod-cidr", "10.2.0.0/24"])).unwrap();
    assert_eq!(c.read_only_port, 0);
    assert_eq!(c.pod_cidr, "10.2.0.0/24");
    assert_eq!((c.backoff_initial, c.backoff_max), (Duration::from_secs(1), Duration::from_secs(4)));
}

#[test]
fn errors_name_the_option() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--pod-cidr", "10.0.0.0"], "--pod-cidr"),
        (vec!["--container-runtime-endpoint", "tcp://x"], "--container-runtime-endpoint"),
        (vec!["--pod-manifest-path", "/nonexistent/dir"], "--pod-manifest-path"),
        (vec!["--crash-loop-backoff-initial", "5s", "--crash-loop-backoff-max", "1s"], "--crash-loop-backoff-max"),
        (vec!["--cgroup-root", "nodelet"], "--cgroup-root"),
        (vec!["--node-labels", "novalue"], "--node-labels"),
        (vec!["--register-with-taints", "k=v:Maybe"], "--register-with-taints"),
        (vec!["--system-reserved", "cpu=lots"], "--system-reserved"),
        (vec!["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig"),
        (vec!["--proxy-kubeconfig", "/nonexistent/kubeconfig"], "--proxy-kubeconfig"),
        (vec!["--proxy-only"], "--proxy-only"),
        (vec!["--authorization-mode", "Sometimes"], "--authorization-mode"),
        (vec!["--proxy-table", "bad name"], "--proxy-table"),
        (vec!["--cluster-cidr", "10.244.0.0"], "--cluster-cidr"),
        (vec!["--cluster-cidr", "10.244.1.0/16"], "--cluster-cidr"),
        (vec!["--network-plugin", "flannel"], "--network-plugin"),
        (vec!["--allowed-unsafe-sysctls", "kernel.msg*,vm.swappiness"], "--allowed-unsafe-sysctls"),
    ];
    for (args, option) in cases {
        let err = Config::from_flags(flags(&args)).unwrap_err().to_string();
        assert!(err.contains(option), "{args:?}: {err}");
    }
    let err = Flags::try_parse_from(["nodelet", "--read-only-port", "x"]).unwrap_err().to_string();
    assert!(err.contains("--read-only-port"), "{err}");
    let err = Flags::try_parse_from(["nodelet", "--sync-frequency", "often"]).unwrap_err().to_string();
    assert!(err.contains("--sync-frequency"), "{err}");
}

#[test]
fn unsafe_sysctls_and_seccomp_default_from_flags_and_file() {
    let c = Config::from_flags(flags(&["--allowed-unsafe-sysctls", "kernel.msg*,net.core.somaxconn", "--seccomp-default"])).unwrap();
    assert_eq!(c.allowed_unsafe_sysctls, vec!["kernel.msg*", "net.core.somaxconn"]);
    assert!(c.seccomp_default);
    let c = Config::from_flags(flags(&[])).unwrap();
    assert!(c.allowed_unsafe_sysctls.is_empty() && !c.seccomp_default);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "allowedUnsafeSysctls: [fs.mqueue.*]\nseccompDefault: true\n").unwrap();
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap(), "--seccomp-default=false"])).unwrap();
    assert_eq!(c.allowed_unsafe_sysctls, vec!["fs.mqueue.*"]);
    assert!(!c.seccomp_default);
}

#[test]
fn boolean_flags_take_the_bare_form_and_explicit_values_as_the_kubelet_does() {
    let c = Config::from_flags(flags(&["--authentication-token-webhook", "--anonymous-auth=false", "--disable-proxy"])).unwrap();
    assert!(c.authentication_token_webhook && !c.anonymous_auth && !c.proxy_enabled);
    let c = Config::from_flags(flags(&["--authentication-token-webhook=true", "--anonymous-auth=True", "--disable-proxy=false"])).unwrap();
    assert!(c.authentication_token_webhook && c.anonymous_auth && c.proxy_enabled);
    // A bare boolean flag never swallows the next word, as with Go's pflag.
    let f = flags(&["--authentication-token-webhook", "--read-only-port", "0"]);
    assert_eq!((f.authentication_token_webhook, f.read_only_port), (Some(true), Some(0)));
    let err = Flags::try_parse_from(["nodelet", "--anonymous-auth=maybe"]).unwrap_err().to_string();
    assert!(err.contains("--anonymous-auth") && err.contains("not a boolean"), "{err}");
}

#[test]
fn the_proxy_kubeconfig_comes_from_the_flag_or_the_file_and_needs_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let (node, proxy) = (dir.path().join("node.kubeconfig"), dir.path().join("proxy.kubeconfig"));
    std::fs::write(&node, "").unwrap();
    std::fs::write(&proxy, "").unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, format!("proxyKubeconfig: {}\n", proxy.display())).unwrap();
    let c = Config::from_flags(flags(&["--config", config.to_str().unwrap(), "--kubeconfig", node.to_str().unwrap()])).unwrap();
    assert_eq!(c.proxy_kubeconfig.as_deref(), Some(proxy.as_path()));
    let c = Config::from_flags(flags(&["--kubeconfig", node.to_str().unwrap(), "--proxy-kubeconfig", proxy.to_str().unwrap()])).unwrap();
    assert_eq!(c.proxy_kubeconfig.as_deref(), Some(proxy.as_path()));
    assert_eq!(Config::from_flags(flags(&["--kubeconfig", node.to_str().unwrap()])).unwrap().proxy_kubeconfig, None);
    let err = Config::from_flags(flags(&["--proxy-kubeconfig", proxy.to_str().unwrap()])).unwrap_err().to_string();
    assert!(err.contains("--proxy-kubeconfig") && err.contains("--kubeconfig"), "{err}");
}

#[test]
fn log_rotation_and_gc_settings_follow_the_kubelet() {
    let c = Config::from_flags(flags(&[])).unwrap();
    assert_eq!((c.container_log_max_size, c.container_log_max_files), (10 << 20, 5));
    assert_eq!((c.image_gc.high_threshold_percent, c.image_gc.low_threshold_percent, c.image_gc.min_age), (85, 80, Duration::from_secs(120)));
    assert_eq!((c.container_gc.min_age, c.container_gc.max_per_pod_container, c.container_gc.max_containers), (Duration::ZERO, 1, -1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "containerLogMaxSize: 1Mi\ncontainerLogMaxFiles: 3\nimageGCHighThresholdPercent: 70\nimageGCLowThresholdPercent: 60\nimageMinimumGCAge: 5m\nimageMaximumGCAge: 168h\n",
    )
    .unwrap();
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap(), "--image-gc-low-threshold", "50", "--maximum-dead-containers", "-1"])).unwrap();
    assert_eq!((c.container_log_max_size, c.container_log_max_files, c.image_gc.max_age), (1 << 20, 3, Duration::from_secs(168 * 3600)));
    assert_eq!((c.image_gc.high_threshold_percent, c.image_gc.low_threshold_percent, c.image_gc.min_age), (70, 50, Duration::from_secs(300)));
    let c = Config::from_flags(flags(&["--container-log-max-size", "2Ki", "--image-minimum-gc-age", "1s", "--maximum-dead-containers-per-container", "2"]))
        .unwrap();
    assert_eq!((c.container_log_max_size, c.image_gc.min_age, c.container_gc.max_per_pod_container), (2048, Duration::from_secs(1), 2));
    for (args, option) in [
        (vec!["--container-log-max-size", "huge"], "--container-log-max-size"),
        (vec!["--container-log-max-files", "1"], "--container-log-max-files"),
        (vec!["--image-gc-high-threshold", "101"], "--image-gc-high-threshold"),
        (vec!["--image-gc-high-threshold", "50", "--image-gc-low-threshold", "50"], "--image-gc-low-threshold"),
        (vec!["--image-maximum-gc-age", "1m"], "--image-maximum-gc-age: 60s must be longer than --image-minimum-gc-age 120s"),
    ] {
        let err = Config::from_flags(flags(&args)).unwrap_err().to_string();
        assert!(err.contains(option), "{args:?}: {err}");
    }
}

#[test]
fn eviction_thresholds_from_flags_and_file() {
    use crate::eviction::thresholds::{Signal, Value};
    let c = Config::from_flags(flags(&[])).unwrap();
    assert_eq!(c.eviction, crate::eviction::Settings::default());
    assert_eq!(c.eviction.thresholds.len(), 4);
    assert_eq!((c.eviction.pressure_transition, c.eviction.max_pod_grace), (Duration::from_secs(300), Duration::ZERO));
    let c = Config::from_flags(flags(&[
        "--eviction-hard=memory.available<1Gi,nodefs.available<20%",
        "--eviction-soft",
        "memory.available<2Gi",
        "--eviction-soft-grace-period=memory.available=1m30s",
        "--eviction-pressure-transition-period=30s",
        "--eviction-max-pod-grace-period=15",
    ]))
    .unwrap();
    let t = &c.eviction.thresholds;
    assert_eq!(t.len(), 3);
    assert_eq!((t[0].signal, t[0].grace), (Signal::MemoryAvailable, None));
    assert_eq!((t[1].signal, &t[1].value), (Signal::NodefsAvailable, &Value::Percent(0.2)));
    assert_eq!((t[2].signal, t[2].grace), (Signal::MemoryAvailable, Some(Duration::from_secs(90))));
    assert_eq!((c.eviction.pressure_transition, c.eviction.max_pod_grace), (Duration::from_secs(30), Duration::from_secs(15)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "evictionHard: {imagefs.available: 5%}\nevictionSoft: {nodefs.available: 30%}\nevictionSoftGracePeriod: {nodefs.available: 2m}\nevictionPressureTransitionPeriod: 1m\nevictionMaxPodGracePeriod: 20\n",
    )
    .unwrap();
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap(), "--eviction-max-pod-grace-period", "5"])).unwrap();
    let t = &c.eviction.thresholds;
    assert_eq!((t.len(), t[0].signal, t[1].signal, t[1].grace), (2, Signal::ImagefsAvailable, Signal::NodefsAvailable, Some(Duration::from_secs(120))));
    assert_eq!((c.eviction.pressure_transition, c.eviction.max_pod_grace), (Duration::from_secs(60), Duration::from_secs(5)));
    std::fs::write(&path, "evictionHard: {memory.free: 1Gi}\n").unwrap();
    let err = Config::from_flags(flags(&["--config", path.to_str().unwrap()])).unwrap_err().to_string();
    assert!(err.contains(&format!("--config {}: evictionHard: memory.free: \"1Gi\": unsupported eviction signal", path.display())), "{err}");
    for (args, option) in [
        (vec!["--eviction-hard", "memory.available=1Gi"], "--eviction-hard"),
        (vec!["--eviction-hard", "nodefs.available<200%"], "--eviction-hard: nodefs.available<200%"),
        (vec!["--eviction-soft", "memory.available<1Gi"], "--eviction-soft: memory.available<1Gi: no grace period"),
        (vec!["--eviction-soft", "memory.available<1Gi", "--eviction-soft-grace-period", "memory.available=later"], "--eviction-soft-grace-period"),
    ] {
        let err = Config::from_flags(flags(&args)).unwrap_err().to_string();
        assert!(err.contains(option), "{args:?}: {err}");
    }
}

#[test]
fn run_as_kubelet_the_root_dir_is_the_kubelets() {
    use std::ffi::OsStr;
    for (argv0, root) in [
        (Some("/usr/bin/kubelet"), "/var/lib/kubelet"),
        (Some("kubelet"), "/var/lib/kubelet"),
        (Some("/usr/bin/nodelet"), "/var/lib/nodelet"),
        (Some("/usr/bin/kubelet-old"), "/var/lib/nodelet"),
        (None, "/var/lib/nodelet"),
    ] {
        assert_eq!(default_root_dir(runs_as_kubelet(argv0.map(OsStr::new))), PathBuf::from(root), "{argv0:?}");
    }
    // This test binary is not called kubelet: nodelet's own default.
    assert_eq!(Config::from_flags(flags(&[])).unwrap().root_dir, PathBuf::from("/var/lib/nodelet"));
}

/// The packages' /etc/nodelet/config.yaml (packaging/config.yaml).
fn packaged_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/config.yaml")
}

#[test]
fn the_packaged_config_file_is_accepted_as_it_is() {
    let path = packaged_config();
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap()])).unwrap();
    // all commented out: nodelet's defaults
    assert_eq!((c.read_only_port, c.pod_cidr.as_str()), (10255, "10.88.0.0/16"));
}

#[test]
fn the_packaged_config_files_commented_keys_are_all_known() {
    // `#key: value` lines (and their `#  nested` lines) are the examples, `# text` the prose:
    // uncommented, the examples must still be keys nodelet reads, with values it takes.
    let text = std::fs::read_to_string(packaged_config()).unwrap();
    let examples: String = text.lines().filter(|l| !l.starts_with("# ") && *l != "#").map(|l| format!("{}\n", l.strip_prefix('#').unwrap_or(l))).collect();
    let file: file::KubeletConfiguration = serde_yaml::from_str(&examples).unwrap_or_else(|e| panic!("{e}\n{examples}"));
    assert_eq!(file.static_pod_path, Some(PathBuf::from("/etc/nodelet/manifests")));
    assert_eq!(file.max_pods, Some(110));
    assert!(file.register_with_taints.is_some_and(|t| t.len() == 1));
    // and none is a key nodelet would warn about (unknown, or not implemented)
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, examples.replace("/etc/nodelet/manifests", dir.path().to_str().unwrap())).unwrap();
    let c = Config::from_flags(flags(&["--config", path.to_str().unwrap()])).unwrap_or_else(|e| panic!("{e:#}\n{examples}"));
    assert_eq!((c.unknown_fields.as_slice(), c.ignored_fields.as_slice()), (&[][..], &[][..]), "{examples}");
    assert!(examples.lines().filter(|l| !l.starts_with(' ') && !l.starts_with('-') && l.contains(':')).count() > 30, "{examples}");
}

/// A config file in a directory of its own, with a manifest directory beside it.
struct File {
    dir: tempfile::TempDir,
}

impl File {
    fn new(text: &str) -> File {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), text).unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        File { dir }
    }

    /// The file's configuration with `args` besides; the static pod path is the test's own.
    fn config(&self, args: &[&str]) -> anyhow::Result<Config> {
        let (path, manifests) = (self.dir.path().join("config.yaml"), self.dir.path().join("manifests"));
        let mut all = vec!["--config", path.to_str().unwrap(), "--pod-manifest-path", manifests.to_str().unwrap()];
        all.extend_from_slice(args);
        Config::from_flags(flags(&all))
    }
}

#[test]
fn kubeadms_cluster_file_runs_with_the_defaults_where_it_writes_zero() {
    let c = File::new(include_str!("config/testdata/kubeadm-cluster-config.yaml")).config(&[]).unwrap();
    assert!(c.authorization_webhook && c.authentication_token_webhook && !c.anonymous_auth);
    assert_eq!(c.client_ca_file.as_deref(), Some(std::path::Path::new("/etc/kubernetes/pki/ca.crt")));
    assert_eq!(c.auth_cache, crate::secure::auth::CacheTtls::default());
    assert_eq!(
        (c.sync_frequency, c.file_check_frequency, c.node_status_update_frequency),
        (Duration::from_secs(10), Duration::from_millis(250), Duration::from_secs(10))
    );
    assert_eq!(
        (c.eviction.pressure_transition, c.image_gc.min_age, c.backoff_max),
        (Duration::from_secs(300), Duration::from_secs(120), Duration::from_secs(300))
    );
    assert_eq!(c.runtime_socket, PathBuf::from("/run/containerd/containerd.sock"));
    assert_eq!((c.healthz.port(), c.read_only_port, c.port), (10248, 10255, 10250));
    assert_eq!(c.resolv_conf.as_deref(), Some(std::path::Path::new("/etc/resolv.conf")));
    assert!(c.ignored_fields.is_empty() && c.unknown_fields.is_empty(), "{:?} {:?}", c.ignored_fields, c.unknown_fields);
}

#[test]
fn kubeadms_defaults_take_the_systemd_driver_and_a_flag_overrides_it() {
    let file = File::new(include_str!("config/testdata/kubeadm-dryrun-config.yaml"));
    let c = file.config(&[]).unwrap();
    assert_eq!((c.cgroup_driver, c.cgroup_root.as_str()), (CgroupDriver::Systemd, "/"));
    assert_eq!(c.resolv_conf.as_deref(), Some(std::path::Path::new("/run/systemd/resolve/resolv.conf")));
    assert_eq!(c.runtime_socket, PathBuf::from("/var/run/containerd/containerd.sock"));
    assert_eq!(file.config(&["--cgroup-driver", "cgroupfs"]).unwrap().cgroup_driver, CgroupDriver::Cgroupfs);
    assert_eq!(Config::from_flags(flags(&[])).unwrap().cgroup_driver, CgroupDriver::Cgroupfs);
    let err = Config::from_flags(flags(&["--cgroup-driver", "cgroups"])).unwrap_err().to_string();
    assert_eq!(err, "--cgroup-driver: \"cgroups\" is not cgroupfs or systemd");
}

#[test]
fn pod_pids_and_node_allocatable_enforcement() {
    let c = Config::from_flags(flags(&[])).unwrap();
    assert_eq!((c.pod_pids_limit, c.enforce_pods_allocatable), (None, true));
    let c = Config::from_flags(flags(&["--pod-max-pids", "100", "--enforce-node-allocatable", "none"])).unwrap();
    assert_eq!((c.pod_pids_limit, c.enforce_pods_allocatable), (Some(100), false));
    assert_eq!(Config::from_flags(flags(&["--pod-max-pids", "-1"])).unwrap().pod_pids_limit, None);
    let c = File::new("podPidsLimit: 64\nenforceNodeAllocatable: [pods]\n").config(&[]).unwrap();
    assert_eq!((c.pod_pids_limit, c.enforce_pods_allocatable, c.ignored_fields.is_empty()), (Some(64), true, true));
    let err = File::new("enforceNodeAllocatable: [pods, system-reserved]\n").config(&[]).unwrap_err().to_string();
    assert!(err.contains("enforceNodeAllocatable: \"system-reserved\" is not supported"), "{err}");
}

#[test]
fn kinds_file_turns_disk_eviction_off() {
    let c = File::new(include_str!("config/testdata/kind-config.yaml")).config(&["--cgroup-driver=cgroupfs"]).unwrap();
    assert!(c.eviction.thresholds.is_empty(), "{:?}", c.eviction.thresholds);
    assert_eq!((c.address, c.healthz.ip()), ("::".parse().unwrap(), "::".parse().unwrap()));
    assert_eq!((c.cgroup_root.as_str(), c.image_gc.high_threshold_percent), ("/kubelet", 100));
    assert!(c.ignored_fields.is_empty());
    // mergeDefaultEvictionSettings keeps the defaults of the signals not given.
    let c = File::new("evictionHard: {nodefs.available: 0%, memory.available: 1Gi}\nmergeDefaultEvictionSettings: true\n").config(&[]).unwrap();
    let t: Vec<String> = c.eviction.thresholds.iter().map(|t| format!("{}<{}", t.signal, t.value)).collect();
    assert_eq!(t, ["imagefs.available<15%", "memory.available<1Gi", "nodefs.inodesFree<5%"]);
}

#[test]
fn zero_means_the_default_but_a_zero_port_is_off() {
    let file = File::new(
        "syncFrequency: 0s\nnodeStatusUpdateFrequency: 0s\nnodeLeaseDurationSeconds: 0\nmaxPods: 0\nport: 0\nreadOnlyPort: 0\nhealthzPort: 0\n\
         authentication: {webhook: {cacheTTL: 0s}}\nauthorization: {webhook: {cacheAuthorizedTTL: 0s, cacheUnauthorizedTTL: 0s}}\n\
         crashLoopBackOff: {maxContainerRestartPeriod: 0s}\nimageMinimumGCAge: 0s\nevictionPressureTransitionPeriod: 0s\n",
    );
    let c = file.config(&[]).unwrap();
    assert_eq!(
        (c.sync_frequency, c.node_status_update_frequency, c.lease_duration),
        (Duration::from_secs(10), Duration::from_secs(10), Duration::from_secs(40))
    );
    assert_eq!((c.max_pods, c.port, c.read_only_port, c.healthz.port()), (110, 10250, 0, 0));
    assert_eq!(c.auth_cache, crate::secure::auth::CacheTtls::default());
    assert_eq!(
        (c.backoff_max, c.image_gc.min_age, c.eviction.pressure_transition),
        (Duration::from_secs(300), Duration::from_secs(120), Duration::from_secs(300))
    );
}

#[test]
fn the_auth_caches_take_the_configured_ttls_and_flags_win() {
    let file = File::new("authentication: {webhook: {cacheTTL: 10s}}\nauthorization: {webhook: {cacheAuthorizedTTL: 1m, cacheUnauthorizedTTL: 1s}}\n");
    let c = file.config(&[]).unwrap();
    let ttls = |c: &Config| (c.auth_cache.authenticated, c.auth_cache.authorized, c.auth_cache.unauthorized);
    assert_eq!(ttls(&c), (Duration::from_secs(10), Duration::from_secs(60), Duration::from_secs(1)));
    let c = file.config(&["--authentication-token-webhook-cache-ttl=3s", "--authorization-webhook-cache-unauthorized-ttl=0s"]).unwrap();
    assert_eq!(ttls(&c), (Duration::from_secs(3), Duration::from_secs(60), Duration::ZERO));
}

#[test]
fn flags_override_the_nested_file_keys() {
    let file = File::new(
        "authentication: {anonymous: {enabled: true}, webhook: {enabled: true}, x509: {clientCAFile: /file/ca.crt}}\n\
         authorization: {mode: Webhook}\nlogging: {verbosity: 4}\ncgroupDriver: cgroupfs\nresolvConf: /file/resolv.conf\n",
    );
    let c = file.config(&[]).unwrap();
    assert!(c.anonymous_auth && c.authentication_token_webhook && c.authorization_webhook);
    assert_eq!((c.client_ca_file.as_deref(), c.verbosity), (Some(std::path::Path::new("/file/ca.crt")), 4));
    let c = file
        .config(&[
            "--anonymous-auth=false",
            "--authentication-token-webhook=false",
            "--authorization-mode=AlwaysAllow",
            "--client-ca-file=/flag/ca.crt",
            "-v",
            "2",
            "--resolv-conf=",
        ])
        .unwrap();
    assert!(!c.anonymous_auth && !c.authentication_token_webhook && !c.authorization_webhook);
    assert_eq!((c.client_ca_file.as_deref(), c.verbosity, c.resolv_conf), (Some(std::path::Path::new("/flag/ca.crt")), 2, None));
    // The flat keys nodelet read before still work; the nested ones win over them.
    let c = File::new("anonymousAuth: true\nauthorizationMode: Webhook\nclientCAFile: /flat/ca.crt\nauthentication: {x509: {clientCAFile: /nested/ca.crt}}\n")
        .config(&[])
        .unwrap();
    assert!(c.anonymous_auth && c.authorization_webhook);
    assert_eq!(c.client_ca_file.as_deref(), Some(std::path::Path::new("/nested/ca.crt")));
}

#[test]
fn unimplemented_and_unknown_fields_are_listed_not_refused() {
    let c = File::new("cpuManagerPolicy: static\ncpuManagerReconcilePeriod: 0s\nreadOnlyPrt: 1\nserializeImagePulls: false\n").config(&[]).unwrap();
    assert_eq!((c.ignored_fields, c.unknown_fields), (vec!["cpuManagerPolicy".to_string()], vec!["readOnlyPrt".to_string()]));
}

#[test]
fn a_wrong_file_value_stops_nodelet_naming_the_file_the_field_and_the_value() {
    let cases = [
        ("evictionHard: {memory.available: lots}", "evictionHard: memory.available: \"lots\" is not a quantity or percentage"),
        ("authorization: {mode: Sometimes}", "authorization.mode: \"Sometimes\" is not AlwaysAllow or Webhook"),
        ("systemReserved: {cpu: lots}", "systemReserved: cpu: "),
        ("kubeReserved: {gpu: '1'}", "kubeReserved: unknown resource \"gpu\""),
        ("imageGCHighThresholdPercent: 300", "imageGCHighThresholdPercent: invalid value"),
    ];
    for (text, want) in cases {
        let file = File::new(text);
        let err = file.config(&[]).unwrap_err().to_string();
        let prefix = format!("--config {}: ", file.dir.path().join("config.yaml").display());
        assert!(err.starts_with(&prefix) && err.contains(want), "{text}: {err}");
    }
}
