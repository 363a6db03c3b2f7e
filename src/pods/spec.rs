//! Translates a Pod into CRI's sandbox and container configurations. Pure: everything the
//! translation needs from the node arrives in `NodeContext`, so the mapping is unit-tested.

use super::quantity;
use super::security;
use super::status::qos_class;
use crate::podinfo::expand::{self, expand};
use crate::runtime::labels;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::podinfo::downward::field_value;
pub use crate::podinfo::{pod_data_dir, pod_name, pod_namespace, pod_ref, pod_uid, NodeContext, SubPaths, VolumePaths};
pub use crate::volumes::volume_paths;

const CPU_PERIOD: i64 = 100_000;
const MIN_CPU_SHARES: i64 = 2;
const MAX_CPU_SHARES: i64 = 262_144;
const MIN_CPU_QUOTA: i64 = 1_000;

pub fn log_directory(ctx: &NodeContext, pod: &Pod) -> PathBuf {
    ctx.pod_log_root.join(format!("{}_{}_{}", pod_namespace(pod), pod_name(pod), pod_uid(pod)))
}

/// The pod's cgroup: under its QoS level of kubepods, as the kubelet lays them out.
pub fn pod_cgroup(ctx: &NodeContext, pod: &Pod) -> crate::cgroups::CgroupName {
    ctx.cgroups.pod(super::status::qos(&spec(pod)), pod_uid(pod))
}

/// The pod's cgroup as the runtime's cgroup_parent and under a cgroupfs mount takes it.
pub fn pod_cgroup_path(ctx: &NodeContext, pod: &Pod) -> String {
    ctx.cgroups.path(&pod_cgroup(ctx, pod))
}

/// A pod's cpu and memory in total, as its cgroup is sized from them: requests and limits are
/// the sum over its containers, or the largest init container's if more; `*_limited` says
/// whether every container has the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodAmounts {
    pub cpu_request_millis: i64,
    pub cpu_limit_millis: i64,
    pub cpu_limited: bool,
    pub memory_limit: i64,
    pub memory_limited: bool,
}

pub fn pod_amounts(pod: &Pod) -> Result<PodAmounts, String> {
    let spec = spec(pod);
    let amount = |c: &Container, kind: &str, resource: &str| -> Result<Option<i64>, String> {
        let res = c.resources.clone().unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        let map = if kind == "limits" { limits } else { res.requests.unwrap_or_default() };
        // a request not given is the limit's
        let value = map.get(resource).or_else(|| if kind == "requests" { limits_of(c, resource) } else { None });
        value
            .map(|q| if resource == "cpu" { quantity::cpu_millis(&q.0) } else { quantity::bytes(&q.0) })
            .transpose()
            .map_err(|e| format!("container {:?} resources.{kind}.{resource}: {e}", c.name))
    };
    let total = |kind: &str, resource: &str| -> Result<(i64, bool), String> {
        let (mut sum, mut all) = (0i64, true);
        for c in &spec.containers {
            match amount(c, kind, resource)? {
                Some(v) => sum = sum.saturating_add(v),
                None => all = false,
            }
        }
        let mut init_max = 0i64;
        for c in spec.init_containers.iter().flatten() {
            init_max = init_max.max(amount(c, kind, resource)?.unwrap_or(0));
        }
        Ok((sum.max(init_max), all))
    };
    let (cpu_request_millis, _) = total("requests", "cpu")?;
    let (cpu_limit_millis, cpu_limited) = total("limits", "cpu")?;
    let (memory_limit, memory_limited) = total("limits", "memory")?;
    Ok(PodAmounts { cpu_request_millis, cpu_limit_millis, cpu_limited, memory_limit, memory_limited })
}

/// The pod's cgroup settings, as the kubelet's ResourceConfigForPod: cpu shares from the pod's
/// cpu request; the CFS quota and memory limit from its limits when every container has one
/// (always for Guaranteed); the minimum shares and nothing else for BestEffort; `pids_limit`
/// (podPidsLimit) when positive.
pub fn pod_resources(pod: &Pod, pids_limit: Option<i64>) -> Result<crate::cgroups::ResourceConfig, String> {
    use crate::cgroups::{resources, Qos, ResourceConfig};
    let pids_limit = pids_limit.filter(|p| *p > 0);
    let qos = super::status::qos(&spec(pod));
    if qos == Qos::BestEffort {
        return Ok(ResourceConfig { cpu_shares: Some(resources::MIN_SHARES), pids_limit, ..Default::default() });
    }
    let a = pod_amounts(pod)?;
    let guaranteed = qos == Qos::Guaranteed;
    Ok(ResourceConfig {
        cpu_shares: Some(resources::millis_to_shares(a.cpu_request_millis)),
        cpu_quota_us: (guaranteed || a.cpu_limited).then(|| resources::millis_to_quota(a.cpu_limit_millis)),
        memory_limit: (guaranteed || a.memory_limited).then_some(a.memory_limit),
        pids_limit,
    })
}

/// A container's limit of `resource`, which is its request when it sets none.
fn limits_of<'a>(c: &'a Container, resource: &str) -> Option<&'a k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    c.resources.as_ref()?.limits.as_ref()?.get(resource)
}

fn spec(pod: &Pod) -> PodSpec {
    pod.spec.clone().unwrap_or_default()
}

pub fn sandbox_config(ctx: &NodeContext, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
    let spec = spec(pod);
    let mut sandbox_labels: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    sandbox_labels.extend(identity_labels(ctx, pod));
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod_name(pod).chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string());
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: protocol(p.protocol.as_deref()) as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let security = spec.security_context.clone().unwrap_or_default();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: pod_name(pod).into(), uid: pod_uid(pod).into(), namespace: pod_namespace(pod).into(), attempt }),
        hostname: if host_network { String::new() } else { hostname },
        log_directory: log_directory(ctx, pod).to_string_lossy().into_owned(),
        dns_config: Some(dns_config(ctx, pod)),
        port_mappings: ports,
        labels: sandbox_labels,
        annotations: sandbox_annotations(pod),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup_path(ctx, pod),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(&spec)),
                run_as_user: security.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: security.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: supplemental_groups(&security),
                privileged: security::has_privileged_container(&spec),
                // A pod-level Localhost profile without a file is refused on each container's
                // creation, with the reason; the sandbox then gets the runtime's choice.
                seccomp: security::seccomp_profile(&seccomp_settings(ctx), &spec, None).ok(),
                ..Default::default()
            }),
            sysctls: security.sysctls.iter().flatten().map(|s| (crate::pods::admission::sysctls::normalize(&s.name), s.value.clone())).collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// The pod's supplementalGroups plus its fsGroup, as the kubelet gives them to every
/// container: the fsGroup owns the pod's volume files, so the containers must be in it.
fn supplemental_groups(pod_sc: &k8s_openapi::api::core::v1::PodSecurityContext) -> Vec<i64> {
    let mut groups = pod_sc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs_group) = pod_sc.fs_group.filter(|g| !groups.contains(g)) {
        groups.push(fs_group);
    }
    groups
}

/// The pod's annotations plus its grace period, so an orphaned sandbox is still stopped gracefully.
fn sandbox_annotations(pod: &Pod) -> HashMap<String, String> {
    let mut annotations: HashMap<String, String> = pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
    let grace = spec(pod).termination_grace_period_seconds.unwrap_or(super::reasons::DEFAULT_GRACE_PERIOD_SECS);
    annotations.insert(labels::TERMINATION_GRACE.into(), grace.to_string());
    annotations
}

fn identity_labels(ctx: &NodeContext, pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (labels::POD_NAME.to_string(), pod_name(pod).to_string()),
        (labels::POD_NAMESPACE.to_string(), pod_namespace(pod).to_string()),
        (labels::POD_UID.to_string(), pod_uid(pod).to_string()),
        (labels::MANAGED_BY_NODE.to_string(), ctx.node_name.clone()),
    ])
}

fn namespace_options(spec: &PodSpec) -> cri::NamespaceOption {
    let mode = |host: Option<bool>, otherwise: cri::NamespaceMode| (if host.unwrap_or(false) { cri::NamespaceMode::Node } else { otherwise }) as i32;
    let pid_otherwise = if spec.share_process_namespace.unwrap_or(false) { cri::NamespaceMode::Pod } else { cri::NamespaceMode::Container };
    cri::NamespaceOption {
        network: mode(spec.host_network, cri::NamespaceMode::Pod),
        pid: mode(spec.host_pid, pid_otherwise),
        ipc: mode(spec.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    }
}

fn protocol(p: Option<&str>) -> cri::Protocol {
    match p {
        Some("UDP") => cri::Protocol::Udp,
        Some("SCTP") => cri::Protocol::Sctp,
        _ => cri::Protocol::Tcp,
    }
}

/// The pod's DNS settings from its dnsPolicy and dnsConfig, as the kubelet derives them.
pub fn dns_config(ctx: &NodeContext, pod: &Pod) -> cri::DnsConfig {
    let spec = spec(pod);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network.unwrap_or(false);
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut dns = if policy == "None" {
        cri::DnsConfig::default()
    } else if cluster_first && !ctx.cluster_dns.is_empty() {
        let domain = &ctx.cluster_domain;
        let ns = pod_namespace(pod);
        let mut searches = vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.clone()];
        searches.extend(parse_resolv_conf(&ctx.host_resolv_conf).searches);
        cri::DnsConfig { servers: ctx.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
    } else {
        parse_resolv_conf(&ctx.host_resolv_conf)
    };
    if let Some(extra) = spec.dns_config {
        dns.servers.extend(extra.nameservers.unwrap_or_default());
        dns.searches.extend(extra.searches.unwrap_or_default());
        for opt in extra.options.unwrap_or_default() {
            let name = opt.name.unwrap_or_default();
            dns.options.retain(|o| o.split(':').next() != Some(name.as_str()));
            dns.options.push(match opt.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    dns.searches.dedup();
    dns
}

pub fn parse_resolv_conf(text: &str) -> cri::DnsConfig {
    let mut dns = cri::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(String::from)),
            Some("search") | Some("domain") => dns.searches = words.map(String::from).collect(),
            Some("options") => dns.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    dns
}

/// A short hash of a container's spec; a running container whose hash differs is replaced.
pub fn container_hash(container: &Container) -> String {
    let json = serde_json::to_vec(container).unwrap_or_default();
    Sha256::digest(&json)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The container's environment in the kubelet's order: `envFrom` variables, then `env` (with
/// `$(VAR)` references to anything defined before expanded), then service variables not yet
/// defined. `resolve` answers `valueFrom` sources; an unresolvable required one is an error.
/// Service variables are looked up where they are and moved, not copied: there can be thousands.
pub fn container_env(
    container: &Container,
    env_from: Vec<(String, String)>,
    service_env: Vec<(String, String)>,
    mut resolve: impl FnMut(&EnvVar) -> Result<Option<String>, String>,
) -> Result<Vec<(String, String)>, String> {
    let services = expand::vars(&service_env);
    let mut defined: HashMap<String, String> = env_from.iter().cloned().collect();
    let mut ordered: Vec<(String, String)> = env_from;
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(_)) => match resolve(var)? {
                Some(v) => v,
                None => continue,
            },
            (Some(v), None) => expand(v, |name| defined.get(name).map(String::as_str).or_else(|| services.get(name).copied())),
            (None, None) => String::new(),
        };
        defined.insert(var.name.clone(), value.clone());
        ordered.retain(|(k, _)| k != &var.name);
        ordered.push((var.name.clone(), value));
    }
    drop(services);
    ordered.extend(service_env.into_iter().filter(|(key, _)| !defined.contains_key(key)));
    Ok(ordered)
}

/// Volumes whose files nodelet writes (configMap, secret, downwardAPI, projected) reach the
/// container read-only whatever the volumeMount says, so it cannot repoint their `..data` link.
pub fn mounted_read_only(volume: &Volume) -> bool {
    volume.config_map.is_some() || volume.secret.is_some() || volume.downward_api.is_some() || volume.projected.is_some()
}

pub struct ContainerInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub attempt: u32,
    pub env: Vec<(String, String)>,
    pub volumes: &'a VolumePaths,
    /// The bind mounts prepared for the container's subPath mounts (`volumes::subpath::prepare`).
    pub sub_paths: &'a SubPaths,
    /// The pod's managed /etc/hosts file, mounted unless the container mounts its own.
    pub etc_hosts: Option<PathBuf>,
}

/// The kubelet's managed /etc/hosts: loopback names, the pod's address and hostname, hostAliases.
pub fn etc_hosts(pod: &Pod, pod_ip: Option<&str>) -> String {
    let spec = spec(pod);
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip.filter(|ip| !ip.is_empty()) {
        let hostname = spec.hostname.clone().unwrap_or_else(|| pod_name(pod).to_string());
        match &spec.subdomain {
            Some(sub) => out.push_str(&format!("{ip}\t{hostname}.{sub}.{}.svc.cluster.local\t{hostname}\n", pod_namespace(pod))),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    push_host_aliases(&mut out, pod);
    out
}

/// A host-network pod's /etc/hosts: the node's, then the pod's hostAliases.
pub fn host_network_etc_hosts(pod: &Pod, node_hosts: &str) -> String {
    let mut out = node_hosts.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    push_host_aliases(&mut out, pod);
    out
}

fn push_host_aliases(out: &mut String, pod: &Pod) {
    let aliases = spec(pod).host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            out.push_str(&format!("{}\t{}\n", alias.ip, alias.hostnames.unwrap_or_default().join("\t")));
        }
    }
}

/// The CRI config of a container; takes the input so the environment (thousands of variables
/// in a namespace with many Services) moves into it rather than being copied.
pub fn container_config(ctx: &NodeContext, input: ContainerInput) -> Result<cri::ContainerConfig, String> {
    let (pod, c) = (input.pod, input.container);
    let (command, args) = {
        let vars = expand::vars(&input.env);
        let expand_all = |list: &Option<Vec<String>>| list.iter().flatten().map(|s| expand(s, |name| vars.get(name).copied())).collect::<Vec<_>>();
        (expand_all(&c.command), expand_all(&c.args))
    };
    let mut container_labels = identity_labels(ctx, pod);
    container_labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    let annotations = HashMap::from([
        (labels::CONTAINER_HASH.to_string(), container_hash(c)),
        (labels::CONTAINER_RESTART_COUNT.to_string(), input.attempt.to_string()),
        (labels::TERMINATION_GRACE.to_string(), spec(pod).termination_grace_period_seconds.unwrap_or(super::reasons::DEFAULT_GRACE_PERIOD_SECS).to_string()),
        (labels::TERMINATION_MESSAGE_PATH.to_string(), c.termination_message_path.clone().unwrap_or_default()),
    ]);
    let mut mounts = Vec::new();
    let pod_volumes = spec(pod).volumes.unwrap_or_default();
    for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
        let host = input.volumes.get(&m.name).ok_or_else(|| format!("volumeMount {:?}: no volume of that name in the pod", m.name))?;
        let has_sub_path = m.sub_path.as_deref().is_some_and(|s| !s.is_empty()) || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty());
        // A subPath is never joined here: only its resolved bind mount may reach CRI.
        let host = match input.sub_paths.get(&index) {
            Some(prepared) => prepared,
            None if has_sub_path => return Err(format!("volumeMount {:?}: its subPath was not prepared", m.name)),
            None => host,
        };
        let forced = pod_volumes.iter().any(|v| v.name == m.name && mounted_read_only(v));
        mounts.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || forced,
            ..Default::default()
        });
    }
    if let Some(hosts) = &input.etc_hosts {
        if !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            mounts.push(cri::Mount { container_path: "/etc/hosts".into(), host_path: hosts.to_string_lossy().into_owned(), ..Default::default() });
        }
    }
    if let Some(path) = super::termination::container_path(c).filter(|p| !mounts.iter().any(|m| m.container_path == *p)) {
        // The file the worker created for this instance (`termination::prepare`).
        let host = super::termination::host_file(ctx, pod, &c.name, input.attempt);
        mounts.push(cri::Mount { container_path: path.into(), host_path: host.to_string_lossy().into_owned(), ..Default::default() });
    }
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: input.attempt }),
        image: Some(cri::ImageSpec { image: c.image.clone().unwrap_or_default(), ..Default::default() }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: input.env.into_iter().map(|(key, value)| cri::KeyValue { key, value }).collect(),
        mounts,
        labels: container_labels,
        annotations,
        log_path: container_log_path(&c.name, input.attempt).to_string_lossy().into_owned(),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig { resources: Some(linux_resources(ctx, pod, c)?), security_context: Some(container_security(ctx, pod, c)?) }),
        ..Default::default()
    })
}

/// The log file of one container instance, relative to the pod's log directory.
pub fn container_log_path(container: &str, attempt: u32) -> PathBuf {
    Path::new(container).join(format!("{attempt}.log"))
}

/// CPU and memory limits as cgroup settings, the way the kubelet computes them.
pub fn linux_resources(ctx: &NodeContext, pod: &Pod, c: &Container) -> Result<cri::LinuxContainerResources, String> {
    let res = c.resources.clone().unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let requests = res.requests.unwrap_or_default();
    let read =
        |map: &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
         key: &str,
         f: fn(&str) -> Result<i64, String>,
         field: &str| { map.get(key).map(|q| f(&q.0).map_err(|e| format!("container {:?} resources.{field}.{key}: {e}", c.name))).transpose() };
    let cpu_limit = read(&limits, "cpu", quantity::cpu_millis, "limits")?;
    let cpu_request = read(&requests, "cpu", quantity::cpu_millis, "requests")?.or(cpu_limit);
    let memory_limit = read(&limits, "memory", quantity::bytes, "limits")?;
    let memory_request = read(&requests, "memory", quantity::bytes, "requests")?.or(memory_limit);
    let mut out = cri::LinuxContainerResources {
        cpu_period: CPU_PERIOD,
        cpu_shares: cpu_request.map_or(MIN_CPU_SHARES, |m| scale_millis(m, 1024).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)),
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        oom_score_adj: oom_score_adj(ctx, pod, memory_request),
        ..Default::default()
    };
    if let Some(m) = cpu_limit {
        out.cpu_quota = scale_millis(m, CPU_PERIOD).max(MIN_CPU_QUOTA);
    }
    Ok(out)
}

/// `millis * per_unit / 1000` without overflowing on a huge (but valid) quantity: saturates.
fn scale_millis(millis: i64, per_unit: i64) -> i64 {
    i64::try_from(i128::from(millis) * i128::from(per_unit) / 1000).unwrap_or(i64::MAX)
}

/// The kubelet's OOM score by QoS class (the runtime clamps it where negative values are not allowed).
fn oom_score_adj(ctx: &NodeContext, pod: &Pod, memory_request: Option<i64>) -> i64 {
    match qos_class(&spec(pod)) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = memory_request.unwrap_or(0) as i128;
            let capacity = ctx.memory_capacity.max(1) as i128;
            (1000 - (1000 * request) / capacity).clamp(2, 999) as i64
        }
    }
}

fn seccomp_settings(ctx: &NodeContext) -> security::SeccompSettings<'_> {
    security::SeccompSettings { root: &ctx.seccomp_root, default_runtime: ctx.seccomp_default }
}

fn container_security(ctx: &NodeContext, pod: &Pod, c: &Container) -> Result<cri::LinuxContainerSecurityContext, String> {
    let pod_sc = spec(pod).security_context.unwrap_or_default();
    let seccomp = security::seccomp_profile(&seccomp_settings(ctx), &spec(pod), Some(c)).map_err(|e| format!("container {:?} securityContext.{e}", c.name))?;
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    Ok(cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(namespace_options(&spec(pod))),
        run_as_user: sc.run_as_user.or(pod_sc.run_as_user).map(|value| cri::Int64Value { value }),
        run_as_group: sc.run_as_group.or(pod_sc.run_as_group).map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(&pod_sc),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        seccomp: Some(seccomp),
        ..Default::default()
    })
}

/// A container of the pod by name: init, regular or ephemeral.
pub fn find_container(pod: &Pod, name: &str) -> Option<Container> {
    let spec = pod.spec.as_ref()?;
    let found = spec.init_containers.iter().flatten().chain(spec.containers.iter()).find(|c| c.name == name).cloned();
    found.or_else(|| super::ephemeral::containers(pod).into_iter().find(|c| c.name == name))
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
