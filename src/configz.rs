//! `GET /configz`: the effective configuration as the kubelet shows it, a KubeletConfiguration
//! (camelCase field names, Go durations) under "kubeletconfig". nodelet's own settings keep
//! the names its config file reads. Pure.

use crate::config::Config;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// A duration as Go prints one: "250ms", "10s", "5m0s", "1h0m0s".
pub fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let nanos = d.subsec_nanos();
    if total == 0 {
        return match nanos {
            0 => "0s".into(),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let fraction = if nanos == 0 { String::new() } else { format!(".{nanos:09}").trim_end_matches('0').to_string() };
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}{fraction}s"),
        (0, _) => format!("{m}m{s}{fraction}s"),
        _ => format!("{h}h{m}m{s}{fraction}s"),
    }
}

fn path(p: &Option<std::path::PathBuf>) -> Value {
    p.as_ref().map_or(Value::Null, |p| p.display().to_string().into())
}

/// The body of /configz.
pub fn configz(config: &Config) -> Value {
    let mut c = json!({
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "enableServer": true,
        "staticPodPath": path(&config.pod_manifest_path),
        "syncFrequency": go_duration(config.sync_frequency),
        "fileCheckFrequency": go_duration(config.file_check_frequency),
        "address": config.address.to_string(),
        "port": config.port,
        "readOnlyPort": config.read_only_port,
        "tlsCertFile": path(&config.tls_cert_file),
        "tlsPrivateKeyFile": path(&config.tls_private_key_file),
        "authentication": {
            "x509": {"clientCAFile": path(&config.client_ca_file)},
            "webhook": {"enabled": config.authentication_token_webhook, "cacheTTL": go_duration(config.auth_cache.authenticated)},
            "anonymous": {"enabled": config.anonymous_auth},
        },
        "authorization": {
            "mode": if config.authorization_webhook { "Webhook" } else { "AlwaysAllow" },
            "webhook": {
                "cacheAuthorizedTTL": go_duration(config.auth_cache.authorized),
                "cacheUnauthorizedTTL": go_duration(config.auth_cache.unauthorized),
            },
        },
        "clusterDomain": config.cluster_domain,
        "clusterDNS": config.cluster_dns.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "nodeStatusUpdateFrequency": go_duration(config.node_status_update_frequency),
        "nodeStatusReportFrequency": go_duration(config.node_status_report_frequency),
        "nodeLeaseDurationSeconds": config.lease_duration.as_secs(),
        "cgroupRoot": config.cgroup_root,
        "cgroupDriver": config.cgroup_driver.as_str(),
        "maxPods": config.max_pods,
        "podCIDR": config.pod_cidr,
        "containerRuntimeEndpoint": format!("unix://{}", config.runtime_socket.display()),
        "podLogsDir": config.pod_logs_dir.display().to_string(),
        "crashLoopBackOff": {
            "maxContainerRestartPeriod": go_duration(config.backoff_max),
        },
        "registerWithTaints": config.taints,
        "nodeLabels": config.node_labels,
        // nodelet's own settings, by the keys of its config file.
        "hostnameOverride": config.node_name,
        "rootDir": config.root_dir.display().to_string(),
        "podInfraContainerImage": config.pod_infra_container_image,
        "nodeIP": config.node_ip.map(|ip| ip.to_string()),
        "cniConfDir": config.cni_conf_dir.display().to_string(),
        "cniBinDir": config.cni_bin_dir.display().to_string(),
        "cniBridge": config.cni_bridge,
        "kubeconfig": path(&config.kubeconfig),
        "proxyKubeconfig": path(&config.proxy_kubeconfig),
        "proxyOnly": config.proxy_only,
        "disableProxy": !config.proxy_enabled,
        "proxyTable": config.proxy_table,
        "allowedUnsafeSysctls": config.allowed_unsafe_sysctls,
        "seccompDefault": config.seccomp_default,
    });
    if let Some(obj) = c.as_object_mut() {
        obj.insert("clusterCIDR".into(), config.cluster_cidr.clone().into());
        let plugin = match config.network_plugin {
            crate::config::NetworkPlugin::Nodelet => "nodelet",
            crate::config::NetworkPlugin::External => "external",
        };
        obj.insert("networkPlugin".into(), plugin.into());
        // Unset options are left out, as Go's omitempty does.
        obj.retain(|_, v| !v.is_null());
        obj.insert("podPidsLimit".into(), config.pod_pids_limit.unwrap_or(-1).into());
        obj.insert("enforceNodeAllocatable".into(), json!([if config.enforce_pods_allocatable { "pods" } else { "none" }]));
        obj.insert("imageMinimumGCAge".into(), go_duration(config.image_gc.min_age).into());
        obj.insert("imageMaximumGCAge".into(), go_duration(config.image_gc.max_age).into());
        obj.insert("resolvConf".into(), config.resolv_conf.as_ref().map_or(String::new(), |p| p.display().to_string()).into());
        obj.insert("logging".into(), json!({"verbosity": config.verbosity}));
        // What the config file set that nodelet does not act on, and its keys of no field.
        obj.insert("nodeletIgnored".into(), json!(config.ignored_fields));
        obj.insert("nodeletUnknownFields".into(), json!(config.unknown_fields));
        let (cpu, memory) = config.reserved;
        if cpu > 0 || memory > 0 {
            let mut reserved = Map::new();
            if cpu > 0 {
                reserved.insert("cpu".into(), format!("{cpu}m").into());
            }
            if memory > 0 {
                reserved.insert("memory".into(), memory.to_string().into());
            }
            // nodelet keeps system- and kube-reserved as one sum.
            obj.insert("systemReserved".into(), reserved.into());
        }
        let eviction = &config.eviction;
        let (hard, soft): (Vec<_>, Vec<_>) = eviction.thresholds.iter().partition(|t| t.is_hard());
        let values = |list: &[&crate::eviction::thresholds::Threshold]| -> Map<String, Value> {
            list.iter().map(|t| (t.signal.to_string(), t.value.to_string().into())).collect()
        };
        obj.insert("evictionHard".into(), values(&hard).into());
        if !soft.is_empty() {
            obj.insert("evictionSoft".into(), values(&soft).into());
            let graces: Map<String, Value> = soft.iter().map(|t| (t.signal.to_string(), go_duration(t.grace.unwrap_or_default()).into())).collect();
            obj.insert("evictionSoftGracePeriod".into(), graces.into());
        }
        let reclaims: Map<String, Value> =
            eviction.thresholds.iter().filter_map(|t| Some((t.signal.to_string(), t.min_reclaim.as_ref()?.to_string().into()))).collect();
        if !reclaims.is_empty() {
            obj.insert("evictionMinimumReclaim".into(), reclaims.into());
        }
        obj.insert("evictionPressureTransitionPeriod".into(), go_duration(eviction.pressure_transition).into());
        obj.insert("evictionMaxPodGracePeriod".into(), eviction.max_pod_grace.as_secs().into());
    }
    json!({ "kubeletconfig": c })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;
    use clap::Parser;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_effective_configuration_under_kubeletconfig() {
        let flags = Flags::try_parse_from([
            "nodelet",
            "--hostname-override",
            "node-a",
            "--cni-plugin",
            "/bin/true",
            "--read-only-port",
            "0",
            "--system-reserved",
            "cpu=100m",
        ])
        .unwrap();
        let body = configz(&Config::from_flags(flags).unwrap());
        let c = &body["kubeletconfig"];
        assert_eq!(c["kind"], "KubeletConfiguration");
        assert_eq!(c["readOnlyPort"], 0);
        assert_eq!(c["port"], 10250);
        assert_eq!(c["syncFrequency"], "10s");
        assert_eq!(c["fileCheckFrequency"], "250ms");
        assert_eq!(c["crashLoopBackOff"]["maxContainerRestartPeriod"], "5m0s");
        assert_eq!(c["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(c["authorization"]["mode"], "AlwaysAllow");
        assert_eq!(c["containerRuntimeEndpoint"], "unix:///run/containerd/containerd.sock");
        assert_eq!(c["systemReserved"]["cpu"], "100m");
        assert!(c.get("staticPodPath").is_none(), "{c:#}");
        assert_eq!(c["evictionHard"], json!({"memory.available": "100Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%", "imagefs.available": "15%"}));
        assert!(c.get("evictionSoft").is_none(), "{c:#}");
        assert_eq!((&c["evictionPressureTransitionPeriod"], &c["evictionMaxPodGracePeriod"]), (&json!("5m0s"), &json!(0)));
        assert_eq!(c["authentication"]["webhook"]["cacheTTL"], "2m0s");
        assert_eq!(c["authorization"]["webhook"], json!({"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"}));
        assert_eq!((&c["resolvConf"], &c["nodeletIgnored"], &c["nodeletUnknownFields"]), (&json!("/etc/resolv.conf"), &json!([]), &json!([])));
    }

    #[test]
    fn fields_the_file_sets_that_nodelet_ignores_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "cpuManagerPolicy: static\nresolvConf: \"\"\nreadOnlyPrt: 1\n").unwrap();
        let flags =
            Flags::try_parse_from(["nodelet", "--hostname-override", "node-a", "--cni-plugin", "/bin/true", "--config", path.to_str().unwrap()]).unwrap();
        let body = configz(&Config::from_flags(flags).unwrap());
        let c = &body["kubeletconfig"];
        assert_eq!((&c["nodeletIgnored"], &c["nodeletUnknownFields"], &c["resolvConf"]), (&json!(["cpuManagerPolicy"]), &json!(["readOnlyPrt"]), &json!("")));
    }

    #[test]
    fn soft_eviction_thresholds_show_with_their_grace_periods_and_minimum_reclaims() {
        let flags = Flags::try_parse_from([
            "nodelet",
            "--hostname-override",
            "node-a",
            "--cni-plugin",
            "/bin/true",
            "--eviction-soft=memory.available<1Gi",
            "--eviction-soft-grace-period=memory.available=90s",
            "--eviction-minimum-reclaim=memory.available=500Mi",
        ])
        .unwrap();
        let body = configz(&Config::from_flags(flags).unwrap());
        let c = &body["kubeletconfig"];
        assert_eq!((&c["evictionSoft"], &c["evictionSoftGracePeriod"]), (&json!({"memory.available": "1Gi"}), &json!({"memory.available": "1m30s"})));
        assert_eq!(c["evictionMinimumReclaim"], json!({"memory.available": "500Mi"}));
    }
}
