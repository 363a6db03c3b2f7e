//! Unit tests of the config file's reading (`config::file`).

use super::*;
use crate::config::CgroupDriver;

const KUBEADM_CLUSTER: &str = include_str!("testdata/kubeadm-cluster-config.yaml");
const KUBEADM_DRY_RUN: &str = include_str!("testdata/kubeadm-dryrun-config.yaml");
const KIND: &str = include_str!("testdata/kind-config.yaml");

/// Every field of KubeletConfiguration v1beta1 (k8s.io/kubelet/config/v1beta1/types.go), nested
/// ones by their dotted path.
const SCHEMA: &[&str] = &[
    "apiVersion",
    "kind",
    "enableServer",
    "staticPodPath",
    "podLogsDir",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "staticPodURL",
    "staticPodURLHeader",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsCipherSuites",
    "tlsCurvePreferences",
    "tlsMinVersion",
    "rotateCertificates",
    "serverTLSBootstrap",
    "authentication.x509.clientCAFile",
    "authentication.webhook.enabled",
    "authentication.webhook.cacheTTL",
    "authentication.anonymous.enabled",
    "authorization.mode",
    "authorization.webhook.cacheAuthorizedTTL",
    "authorization.webhook.cacheUnauthorizedTTL",
    "registryPullQPS",
    "registryBurst",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "eventRecordQPS",
    "eventBurst",
    "enableDebuggingHandlers",
    "enableContentionProfiling",
    "healthzPort",
    "healthzBindAddress",
    "oomScoreAdj",
    "clusterDomain",
    "clusterDNS",
    "streamingConnectionIdleTimeout",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "volumeStatsAggPeriod",
    "kubeletCgroups",
    "systemCgroups",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "cpuManagerPolicy",
    "singleProcessOOMKill",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "draManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "runtimeRequestTimeout",
    "hairpinMode",
    "maxPods",
    "podCIDR",
    "podPidsLimit",
    "resolvConf",
    "runOnce",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "maxOpenFiles",
    "contentType",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "podsPerCore",
    "enableControllerAttachDetach",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "featureGates",
    "failSwapOn",
    "memorySwap.swapBehavior",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy",
    "systemReserved",
    "kubeReserved",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "allowedUnsafeSysctls",
    "volumePluginDir",
    "providerID",
    "kernelMemcgNotification",
    "logging.format",
    "logging.flushFrequency",
    "logging.verbosity",
    "logging.vmodule",
    "logging.options.json.splitStream",
    "logging.options.json.infoBufferSize",
    "logging.options.text.splitStream",
    "logging.options.text.infoBufferSize",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff.maxContainerRestartPeriod",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "memoryThrottlingFactor",
    "memoryReservationPolicy",
    "registerWithTaints",
    "registerNode",
    "tracing.endpoint",
    "tracing.samplingRatePerMillion",
    "localStorageCapacityIsolation",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "failCgroupV1",
    "userNamespaces.idsPerPod",
];

/// `a.b.c` as YAML: `a: {b: {c: value}}`.
fn nested(path: &str, value: &str) -> String {
    path.rsplit('.').fold(value.to_string(), |inner, key| format!("{{{key}: {inner}}}"))
}

#[test]
fn every_field_of_the_schema_is_known() {
    for field in SCHEMA {
        let loaded = parse(&nested(field, "~")).unwrap_or_else(|e| panic!("{field}: {e}"));
        assert!(loaded.unknown.is_empty() && loaded.ignored.is_empty(), "{field}: {loaded:?}");
    }
}

#[test]
fn a_field_is_either_implemented_or_listed_as_not() {
    for (path, _) in fields::NOT_IMPLEMENTED {
        let (_, _, skipped) = read(&nested(path, "~")).unwrap();
        let segments: Vec<&str> = path.split('.').collect();
        assert!(
            matches!(&skipped[..], [one] if segments.starts_with(&one.iter().map(String::as_str).collect::<Vec<_>>())),
            "{path} is read as a field nodelet implements: {skipped:?}"
        );
    }
}

#[test]
fn kubeadms_cluster_file_is_read_with_zero_values_as_defaults() {
    let loaded = parse(KUBEADM_CLUSTER).unwrap();
    assert!(loaded.ignored.is_empty() && loaded.unknown.is_empty(), "{loaded:?}");
    let c = loaded.config;
    assert_eq!(c.cgroup_driver, Some(CgroupDriver::Cgroupfs));
    assert_eq!(c.static_pod_path.as_deref(), Some(Path::new("/etc/kubernetes/manifests")));
    let authn = c.authentication.unwrap();
    assert_eq!(authn.x509.unwrap().client_ca_file.as_deref(), Some(Path::new("/etc/kubernetes/pki/ca.crt")));
    let webhook = authn.webhook.unwrap();
    assert_eq!((webhook.enabled, webhook.cache_ttl), (Some(true), None));
    assert_eq!(authn.anonymous.unwrap().enabled, Some(false));
    let authz = c.authorization.unwrap();
    assert_eq!(authz.mode, Some(true));
    let authz_webhook = authz.webhook.unwrap();
    assert_eq!((authz_webhook.cache_authorized_ttl, authz_webhook.cache_unauthorized_ttl), (None, None));
    assert_eq!(c.cluster_dns, Some(vec!["10.96.0.10".parse().unwrap()]));
    assert_eq!((c.healthz_port, c.healthz_bind_address), (Some(10248), Some("127.0.0.1".parse().unwrap())));
    assert_eq!(c.rotate_certificates, Some(true));
    // `0s` and `""` are absent: the defaults apply.
    assert_eq!((c.sync_frequency, c.file_check_frequency, c.node_status_update_frequency, c.node_status_report_frequency), (None, None, None, None));
    assert_eq!((c.eviction_pressure_transition_period, c.image_minimum_gc_age, c.container_runtime_endpoint), (None, None, None));
    assert_eq!(c.logging.unwrap().verbosity, Some(0));
    assert_eq!(c.crash_loop_back_off.unwrap().max_container_restart_period, None);
}

#[test]
fn kubeadms_defaults_are_read_with_the_systemd_driver() {
    let c = parse(KUBEADM_DRY_RUN).unwrap().config;
    assert_eq!(c.cgroup_driver, Some(CgroupDriver::Systemd));
    assert_eq!(c.resolv_conf.as_deref(), Some(Path::new("/run/systemd/resolve/resolv.conf")));
    assert_eq!(c.container_runtime_endpoint.as_deref(), Some("unix:///var/run/containerd/containerd.sock"));
}

#[test]
fn kinds_file_is_read() {
    let loaded = parse(KIND).unwrap();
    assert!(loaded.ignored.is_empty() && loaded.unknown.is_empty(), "{loaded:?}");
    let c = loaded.config;
    assert_eq!((c.address, c.healthz_bind_address), (Some("::".parse().unwrap()), Some("::".parse().unwrap())));
    assert_eq!((c.cgroup_root.as_deref(), c.image_gc_high_threshold_percent), (Some("/kubelet"), Some(100)));
    assert_eq!(c.eviction_hard.unwrap().get("nodefs.available").map(String::as_str), Some("0%"));
}

#[test]
fn ports_and_resolv_conf_keep_their_zero_meaning() {
    let c = parse("readOnlyPort: 0\nhealthzPort: 0\nport: 0\nmaxPods: 0\nresolvConf: \"\"\n").unwrap().config;
    assert_eq!((c.read_only_port, c.healthz_port), (Some(0), Some(0)));
    assert_eq!((c.port, c.max_pods), (None, None));
    assert_eq!(c.resolv_conf.as_deref(), Some(Path::new("")));
}

#[test]
fn only_unimplemented_fields_set_to_other_than_the_default_are_ignored() {
    let text = "cpuManagerPolicy: static\ncpuManagerReconcilePeriod: 0s\nenableServer: false\nregisterNode: true\nfailSwapOn: true\n\
                logging: {format: json, verbosity: 3, flushFrequency: 5s, options: {text: {infoBufferSize: \"0\"}}}\n\
                shutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 0s\nmemorySwap: {swapBehavior: NoSwap}\nfeatureGates: {}\n\
                streamingConnectionIdleTimeout: 1h\ntopologyManagerPolicy: best-effort\nenforceNodeAllocatable: [pods]\n\
                tracing: {samplingRatePerMillion: 10}\nuserNamespaces: {idsPerPod: 65536}\n";
    let loaded = parse(text).unwrap();
    assert_eq!(loaded.ignored, ["cpuManagerPolicy", "enableServer", "logging.format", "shutdownGracePeriod", "topologyManagerPolicy", "tracing"]);
    assert!(loaded.unknown.is_empty(), "{:?}", loaded.unknown);
    assert_eq!(loaded.config.logging.unwrap().verbosity, Some(3));
}

#[test]
fn keys_of_no_field_are_unknown() {
    let text = "readOnlyPrt: 1\nauthentication: {x509: {clientCAFlie: /x}}\ncrashLoopBackOff: {maxContainerRestartPeriods: 1s}\n\
                memorySwap: {swapBehaviour: x}\nlogging: {options: {yaml: {}}}\n";
    let loaded = parse(text).unwrap();
    assert_eq!(
        loaded.unknown,
        ["readOnlyPrt", "authentication.x509.clientCAFlie", "crashLoopBackOff.maxContainerRestartPeriods", "memorySwap.swapBehaviour", "logging.options.yaml"]
    );
    assert!(loaded.ignored.is_empty());
}

#[test]
fn a_wrong_value_names_the_field_and_the_value() {
    let cases = [
        ("authorization: {mode: Sometimes}", "authorization.mode: \"Sometimes\" is not AlwaysAllow or Webhook"),
        ("cgroupDriver: cgroupsfs", "cgroupDriver: \"cgroupsfs\" is not cgroupfs or systemd"),
        ("syncFrequency: often", "syncFrequency: \"often\" is not a duration"),
        ("authentication: {webhook: {cacheTTL: -1s}}", "authentication.webhook.cacheTTL: \"-1s\""),
        ("readOnlyPort: 70000", "readOnlyPort: invalid value: integer `70000`"),
        ("address: nowhere", "address: \"nowhere\": invalid IP address"),
        ("podCIDR: 10.0.0.0", "podCIDR: \"10.0.0.0\" is not a CIDR"),
        ("cgroupRoot: kubelet", "cgroupRoot: \"kubelet\" must be an absolute cgroup path"),
        ("containerRuntimeEndpoint: tcp://x:1", "containerRuntimeEndpoint: \"tcp://x:1\" must be a unix socket"),
        ("containerLogMaxSize: huge", "containerLogMaxSize: \"huge\" is not a positive size"),
        ("clusterDNS: [10.96.0.10, dns]", "clusterDNS[1]: invalid IP address"),
        ("registerWithTaints: [{key: a, effect: 3}]", "registerWithTaints[0].effect: invalid type"),
        ("evictionHard: [memory.available]", "evictionHard: invalid type: sequence"),
        ("kind: Pod", "kind \"Pod\" should be KubeletConfiguration"),
        ("apiVersion: v1", "apiVersion \"v1\" should be kubelet.config.k8s.io/v1beta1"),
        ("- a", "not a mapping"),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn durations_are_read_as_go_writes_them() {
    let ms = Duration::from_millis;
    for (text, want) in [
        ("0", ms(0)),
        ("0s", ms(0)),
        ("250ms", ms(250)),
        ("1m30s", ms(90_000)),
        ("1.5h", ms(5_400_000)),
        ("2h45m0.5s", ms(9_900_500)),
        ("1us", Duration::from_micros(1)),
        ("3µs", Duration::from_micros(3)),
        ("+10s", ms(10_000)),
        ("5min", ms(300_000)),
    ] {
        assert_eq!(parse_go_duration(text), Ok(want), "{text}");
    }
    for bad in ["", "10", "-1s", "1x", ".s", "often"] {
        let err = parse_go_duration(bad).unwrap_err();
        assert!(err.starts_with(&format!("{bad:?} is not a duration")), "{bad}: {err}");
    }
}
