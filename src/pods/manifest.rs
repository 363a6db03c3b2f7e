//! Static pod manifests: a file's bytes become a defaulted, validated Pod bound to this node,
//! named and identified the way the kubelet does it. Pure: reading the directory is `source`'s job.

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};

pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Marks the apiserver's copy of a static pod; its value is the static pod's config hash.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Parses one manifest file (YAML or JSON) into a Pod ready to run on `node_name`.
/// `file` only labels errors and feeds the identity; the error says what is wrong, not where.
pub fn parse_static_pod(file: &str, content: &[u8], node_name: &str) -> Result<Pod, String> {
    let text = std::str::from_utf8(content).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.trim().is_empty() {
        return Err("the file is empty".into());
    }
    let value = super::yaml_bounds::parse(text)?;
    check_type_meta(&value)?;
    let mut pod: Pod = serde_yaml::from_value(value).map_err(|e| format!("not a valid Pod: {e}"))?;
    validate(&pod)?;
    apply_defaults(&mut pod, file, content, node_name);
    Ok(pod)
}

fn check_type_meta(value: &serde_yaml::Value) -> Result<(), String> {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
    match (field("apiVersion"), field("kind")) {
        ("v1", "Pod") => Ok(()),
        ("", _) | (_, "") => Err("apiVersion and kind must be \"v1\" and \"Pod\"".into()),
        (api, kind) => Err(format!("expected apiVersion v1 kind Pod, found apiVersion {api} kind {kind}")),
    }
}

/// The checks the apiserver would make that matter for running the pod on this node.
pub fn validate(pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err("metadata.name is required".into());
    }
    check_dns_subdomain("metadata.name", name)?;
    if let Some(ns) = pod.metadata.namespace.as_deref() {
        check_dns_label("metadata.namespace", ns)?;
    }
    let spec = pod.spec.as_ref().ok_or("spec is required")?;
    if spec.containers.is_empty() {
        return Err("spec.containers must have at least one container".into());
    }
    let mut names = HashSet::new();
    let all = spec.init_containers.iter().flatten().map(|c| ("spec.initContainers", c));
    for (field, c) in all.chain(spec.containers.iter().map(|c| ("spec.containers", c))) {
        check_dns_label(&format!("{field}[].name"), &c.name)?;
        if !names.insert(c.name.as_str()) {
            return Err(format!("{field}[].name: duplicate container name {:?}", c.name));
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            return Err(format!("{field}[{}].image is required", c.name));
        }
        if let Some(policy) = c.image_pull_policy.as_deref() {
            if !["Always", "IfNotPresent", "Never"].contains(&policy) {
                return Err(format!("{field}[{}].imagePullPolicy: unsupported value {policy:?}", c.name));
            }
        }
    }
    if let Some(policy) = spec.restart_policy.as_deref() {
        if !["Always", "OnFailure", "Never"].contains(&policy) {
            return Err(format!("spec.restartPolicy: unsupported value {policy:?}"));
        }
    }
    if spec.termination_grace_period_seconds.is_some_and(|g| g < 0) {
        return Err("spec.terminationGracePeriodSeconds must not be negative".into());
    }
    Ok(())
}

/// The defaults the apiserver and the kubelet give a static pod.
fn apply_defaults(pod: &mut Pod, file: &str, content: &[u8], node_name: &str) {
    let meta = &mut pod.metadata;
    let base_name = meta.name.clone().unwrap_or_default();
    meta.name = Some(static_pod_name(&base_name, node_name));
    meta.namespace.get_or_insert_with(|| "default".into());
    let uid = static_pod_uid(file, content, node_name);
    meta.uid = Some(uid.clone());
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.into(), "file".into());
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), uid);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    default_pod_spec(spec);
}

/// Spec defaults shared by every source of pods.
pub fn default_pod_spec(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(super::reasons::DEFAULT_GRACE_PERIOD_SECS);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    let containers = spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut());
    for c in containers {
        let image = c.image.clone().unwrap_or_default();
        c.image_pull_policy.get_or_insert_with(|| default_pull_policy(&image).into());
        c.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy.get_or_insert_with(|| "File".into());
    }
}

/// The kubelet names a static pod after its manifest's name and the node.
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{node_name}")
}

/// A stable identity for a file's content on this node: a changed file is a new pod.
fn static_pod_uid(file: &str, content: &[u8], node_name: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [node_name.as_bytes(), file.as_bytes(), content] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `Always` for an image without a tag or tagged `latest`, else `IfNotPresent`, as the apiserver defaults it.
pub fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last_segment.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn check_dns_label(field: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    ok.then_some(()).ok_or_else(|| format!("{field}: {value:?} is not a valid DNS label (lowercase letters, digits and '-', at most 63)"))
}

fn check_dns_subdomain(field: &str, value: &str) -> Result<(), String> {
    let ok = value.len() <= 253 && value.split('.').all(|part| check_dns_label(field, part).is_ok());
    ok.then_some(()).ok_or_else(|| format!("{field}: {value:?} is not a valid DNS subdomain name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: httpd\n    image: localhost:5000/nodelet/busybox:1\n    command: [httpd, -f]\n";

    #[test]
    fn yaml_manifest_gets_node_suffix_defaults_and_stable_uid() {
        let pod = parse_static_pod("/etc/pods/web.yaml", YAML.as_bytes(), "node-a").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"));
        let again = parse_static_pod("/etc/pods/web.yaml", YAML.as_bytes(), "node-a").unwrap();
        assert_eq!(pod.metadata.uid, again.metadata.uid);
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
    }

    #[test]
    fn changed_content_is_a_new_pod() {
        let a = parse_static_pod("f", YAML.as_bytes(), "n").unwrap();
        let b = parse_static_pod("f", YAML.replace("-f", "-vf").as_bytes(), "n").unwrap();
        assert_ne!(a.metadata.uid, b.metadata.uid);
    }

    #[test]
    fn json_manifest_is_accepted() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j","namespace":"kube-system"},
            "spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"busybox"}]}}"#;
        let pod = parse_static_pod("j.json", json.as_bytes(), "n").unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(pod.spec.unwrap().containers[0].image_pull_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn bad_manifests_name_the_cause() {
        let cases = [
            ("", "empty"),
            ("key: [unclosed", "not valid YAML"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", "kind Service"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n", "at least one container"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c, image: i}]}\n", "metadata.name"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n", "image is required"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i}, {name: c, image: i}]}\n", "duplicate"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {restartPolicy: Sometimes, containers: [{name: c, image: i}]}\n", "restartPolicy"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i, ports: 7}]}\n", "not a valid Pod"),
        ];
        for (text, want) in cases {
            let err = parse_static_pod("f", text.as_bytes(), "n").unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }
}
