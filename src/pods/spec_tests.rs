//! Unit tests of `spec`.

use super::*;
use crate::pods::manifest::parse_static_pod;

fn ctx() -> NodeContext {
    NodeContext {
        node_name: "n1".into(),
        cgroups: crate::cgroups::Layout::new(crate::cgroups::Driver::Cgroupfs, "/"),
        pod_pids_limit: None,
        pod_log_root: "/var/log/pods".into(),
        pod_data_root: "/var/lib/nodelet/pods".into(),
        cluster_dns: vec![],
        cluster_domain: "cluster.local".into(),
        host_resolv_conf: "nameserver 127.0.0.53\nsearch lan\noptions edns0\n".into(),
        host_ip: Some("127.0.0.1".into()),
        memory_capacity: 1 << 30,
        allocatable: Default::default(),
        seccomp_root: "/var/lib/nodelet/seccomp".into(),
        seccomp_default: false,
    }
}

fn pod(yaml_spec: &str) -> Pod {
    let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\n  labels: {{app: web}}\nspec:\n{yaml_spec}");
    parse_static_pod("f", text.as_bytes(), "n1").unwrap()
}

#[test]
fn sandbox_carries_identity_logs_cgroup_and_dns() {
    let pod = pod("  containers: [{name: c, image: i, ports: [{containerPort: 80, hostPort: 8080}]}]\n");
    let cfg = sandbox_config(&ctx(), &pod, 2);
    let meta = cfg.metadata.unwrap();
    assert_eq!((meta.name.as_str(), meta.namespace.as_str(), meta.attempt), ("p-n1", "ns", 2));
    assert_eq!(cfg.hostname, "p-n1");
    assert_eq!(cfg.log_directory, format!("/var/log/pods/ns_p-n1_{}", meta.uid));
    assert_eq!(cfg.labels["app"], "web");
    assert_eq!(cfg.labels[labels::MANAGED_BY_NODE], "n1");
    assert_eq!(cfg.linux.unwrap().cgroup_parent, format!("/kubepods/besteffort/pod{}", meta.uid));
    assert_eq!(cfg.dns_config.unwrap().servers, vec!["127.0.0.53"]);
    assert_eq!(cfg.port_mappings[0].host_port, 8080);
}

#[test]
fn cluster_dns_gives_search_path_and_ndots() {
    let mut c = ctx();
    c.cluster_dns = vec!["10.96.0.10".into()];
    let dns = dns_config(&c, &pod("  containers: [{name: c, image: i}]\n"));
    assert_eq!(dns.servers, vec!["10.96.0.10"]);
    assert_eq!(dns.searches, vec!["ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "lan"]);
    assert_eq!(dns.options, vec!["ndots:5"]);
}

#[test]
fn container_gets_expanded_command_env_and_limits() {
    let pod = pod(concat!(
        "  containers:\n  - name: c\n    image: i\n    command: [sh, -c]\n    args: ['echo $(GREETING) $(MISSING)']\n",
        "    workingDir: /tmp\n    env: [{name: WHO, value: world}, {name: GREETING, value: 'hello $(WHO)'}]\n",
        "    resources: {limits: {cpu: 500m, memory: 64Mi}}\n",
    ));
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let services = vec![("WEB_SERVICE_HOST".to_string(), "10.96.0.9".to_string()), ("WHO".to_string(), "ignored".to_string())];
    let env = container_env(c, vec![("FROM".into(), "cm".into())], services, |_| Ok(None)).unwrap();
    assert_eq!(env[0], ("FROM".to_string(), "cm".to_string()));
    assert!(env.contains(&("WEB_SERVICE_HOST".to_string(), "10.96.0.9".to_string())));
    assert!(env.contains(&("WHO".to_string(), "world".to_string())) && !env.contains(&("WHO".to_string(), "ignored".to_string())));
    let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k != "FROM" && k != "WEB_SERVICE_HOST").collect();
    assert_eq!(env[1], ("GREETING".to_string(), "hello world".to_string()));
    let vols = VolumePaths::new();
    let cfg =
        container_config(&ctx(), ContainerInput { pod: &pod, container: c, attempt: 3, env, volumes: &vols, sub_paths: &SubPaths::new(), etc_hosts: None })
            .unwrap();
    assert_eq!(cfg.command, vec!["sh", "-c"]);
    assert_eq!(cfg.args, vec!["echo hello world $(MISSING)"]);
    assert_eq!(cfg.working_dir, "/tmp");
    assert_eq!(cfg.log_path, "c/3.log");
    assert_eq!(cfg.labels[labels::CONTAINER_NAME], "c");
    let r = cfg.linux.unwrap().resources.unwrap();
    assert_eq!((r.cpu_quota, r.cpu_period, r.cpu_shares, r.memory_limit_in_bytes), (50_000, 100_000, 512, 64 << 20));
    assert_eq!(r.oom_score_adj, -997);
}

#[test]
fn bad_quantity_names_container_and_field() {
    let pod = pod("  containers: [{name: c, image: i, resources: {limits: {cpu: lots}}}]\n");
    let err = linux_resources(&ctx(), &pod, &pod.spec.as_ref().unwrap().containers[0]).unwrap_err();
    assert!(err.contains("\"c\" resources.limits.cpu"), "{err}");
}

#[test]
fn huge_quantities_are_refused_or_clamped_never_wrapped() {
    let pod = pod("  containers: [{name: c, image: i, resources: {limits: {memory: 8Ei}}}]\n");
    let err = linux_resources(&ctx(), &pod, &pod.spec.as_ref().unwrap().containers[0]).unwrap_err();
    assert!(err.contains("\"c\" resources.limits.memory") && err.contains("too large"), "{err}");
    let pod = pod_with_cpu("9000000000000000");
    let r = linux_resources(&ctx(), &pod, &pod.spec.as_ref().unwrap().containers[0]).unwrap();
    assert_eq!((r.cpu_shares, r.cpu_quota), (MAX_CPU_SHARES, i64::MAX));
}

fn pod_with_cpu(cpu: &str) -> Pod {
    pod(&format!("  containers: [{{name: c, image: i, resources: {{limits: {{cpu: '{cpu}'}}}}}}]\n"))
}

#[test]
fn security_context_reaches_cri() {
    use k8s_cri::v1::security_profile::ProfileType;
    let pod = pod(concat!(
        "  securityContext: {seccompProfile: {type: RuntimeDefault}, sysctls: [{name: net/ipv4/ip_local_port_range, value: '2000 3000'}]}\n",
        "  containers:\n  - {name: a, image: i}\n  - {name: b, image: i, securityContext: {privileged: true, seccompProfile: {type: Unconfined}}}\n",
    ));
    let sandbox = sandbox_config(&ctx(), &pod, 0).linux.unwrap();
    let sc = sandbox.security_context.unwrap();
    assert!(sc.privileged);
    assert_eq!(sc.seccomp.unwrap().profile_type, ProfileType::RuntimeDefault as i32);
    assert_eq!(sandbox.sysctls.get("net.ipv4.ip_local_port_range").map(String::as_str), Some("2000 3000"));
    let vols = VolumePaths::new();
    let cs = &pod.spec.as_ref().unwrap().containers;
    let config = |c| {
        container_config(
            &ctx(),
            ContainerInput { pod: &pod, container: c, attempt: 0, env: vec![], volumes: &vols, sub_paths: &SubPaths::new(), etc_hosts: None },
        )
    };
    let seccomp = |c| config(c).unwrap().linux.unwrap().security_context.unwrap().seccomp.unwrap().profile_type;
    assert_eq!((seccomp(&cs[0]), seccomp(&cs[1])), (ProfileType::RuntimeDefault as i32, ProfileType::Unconfined as i32));
    let bad = self::pod("  containers: [{name: a, image: i, securityContext: {seccompProfile: {type: Localhost}}}]\n");
    let c = &bad.spec.as_ref().unwrap().containers[0];
    let err = container_config(
        &ctx(),
        ContainerInput { pod: &bad, container: c, attempt: 0, env: vec![], volumes: &vols, sub_paths: &SubPaths::new(), etc_hosts: None },
    )
    .unwrap_err();
    assert!(err.contains("container \"a\" securityContext.seccompProfile"), "{err}");
}

#[test]
fn volumes_map_to_host_paths() {
    let pod = pod(concat!(
        "  volumes: [{name: scratch, emptyDir: {}}, {name: host, hostPath: {path: /srv}}]\n",
        "  containers: [{name: c, image: i, volumeMounts: [{name: scratch, mountPath: /s}, {name: host, mountPath: /h, readOnly: true}]}]\n",
    ));
    let vols = volume_paths(&ctx(), &pod).unwrap();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let cfg = container_config(
        &ctx(),
        ContainerInput {
            pod: &pod,
            container: c,
            attempt: 0,
            env: vec![],
            volumes: &vols,
            sub_paths: &SubPaths::new(),
            etc_hosts: Some("/p/etc-hosts".into()),
        },
    )
    .unwrap();
    assert!(cfg.mounts[0].host_path.ends_with("/volumes/kubernetes.io~empty-dir/scratch"));
    assert_eq!((cfg.mounts[1].host_path.as_str(), cfg.mounts[1].readonly), ("/srv", true));
    assert_eq!((cfg.mounts[2].container_path.as_str(), cfg.mounts[2].host_path.as_str()), ("/etc/hosts", "/p/etc-hosts"));
    // The termination message file of this instance, at the defaulted path.
    let uid = pod_uid(&pod);
    assert_eq!((cfg.mounts[3].container_path.as_str(), cfg.mounts[3].readonly), ("/dev/termination-log", false));
    assert_eq!(cfg.mounts[3].host_path, format!("/var/lib/nodelet/pods/{uid}/containers/c/termination-log-0"));
}

#[test]
fn written_volumes_are_read_only_and_sub_paths_only_through_their_bind_mount() {
    let pod = pod(concat!(
        "  volumes: [{name: info, downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}]}}, {name: scratch, emptyDir: {}}]\n",
        "  containers: [{name: c, image: i, volumeMounts: [{name: info, mountPath: /i, readOnly: false}, {name: scratch, mountPath: /s, subPath: escape}]}]\n",
    ));
    let vols = volume_paths(&ctx(), &pod).unwrap();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let input = |sub_paths| ContainerInput { pod: &pod, container: c, attempt: 0, env: vec![], volumes: &vols, sub_paths, etc_hosts: None };
    let none = SubPaths::new();
    let err = container_config(&ctx(), input(&none)).unwrap_err();
    assert!(err.contains("\"scratch\"") && err.contains("not prepared"), "{err}");
    let prepared = SubPaths::from([(1, PathBuf::from("/p/volume-subpaths/scratch/c/1"))]);
    let cfg = container_config(&ctx(), input(&prepared)).unwrap();
    assert!(cfg.mounts[0].readonly, "a downwardAPI volume is read-only even when the mount says otherwise");
    assert_eq!((cfg.mounts[1].host_path.as_str(), cfg.mounts[1].readonly), ("/p/volume-subpaths/scratch/c/1", false));
}

#[test]
fn containers_join_the_fs_group() {
    let pod = pod("  securityContext: {fsGroup: 2000, supplementalGroups: [5, 2000]}\n  containers: [{name: c, image: i}]\n");
    let sc = sandbox_config(&ctx(), &pod, 0).linux.unwrap().security_context.unwrap();
    assert_eq!(sc.supplemental_groups, vec![5, 2000]);
    let pod = self::pod("  securityContext: {fsGroup: 2000}\n  containers: [{name: c, image: i}]\n");
    let vols = VolumePaths::new();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let cfg = container_config(
        &ctx(),
        ContainerInput { pod: &pod, container: c, attempt: 0, env: vec![], volumes: &vols, sub_paths: &SubPaths::new(), etc_hosts: None },
    )
    .unwrap();
    assert_eq!(cfg.linux.unwrap().security_context.unwrap().supplemental_groups, vec![2000]);
}

#[test]
fn a_host_network_pod_gets_the_nodes_hosts_and_its_aliases() {
    let pod = pod("  hostNetwork: true\n  hostAliases: [{ip: 10.1.2.3, hostnames: [db]}]\n  containers: [{name: c, image: i}]\n");
    let hosts = host_network_etc_hosts(&pod, "127.0.0.1 localhost\n10.0.0.1 node1");
    assert_eq!(hosts, "127.0.0.1 localhost\n10.0.0.1 node1\n\n# Entries added by HostAliases.\n10.1.2.3\tdb\n");
}

#[test]
fn etc_hosts_has_the_pod_and_its_aliases() {
    let pod = pod("  hostAliases: [{ip: 10.1.2.3, hostnames: [db, db.local]}]\n  containers: [{name: c, image: i}]\n");
    let hosts = etc_hosts(&pod, Some("10.88.0.7"));
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
    assert!(hosts.contains("10.88.0.7\tp-n1\n"), "{hosts}");
    assert!(hosts.contains("10.1.2.3\tdb\tdb.local\n"), "{hosts}");
}
