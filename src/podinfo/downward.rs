//! The downward API's values: pod fields (`fieldRef`) and container resources
//! (`resourceFieldRef`), for env variables and downwardAPI volume files alike. Pure.

use super::pod_namespace;
use super::quantity;
use k8s_openapi::api::core::v1::{Pod, ResourceFieldSelector};

/// The node's allocatable resources, which stand in for a limit a container does not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

impl Allocatable {
    /// Capacity less what is reserved for the system, as the Node object reports it.
    pub fn from_capacity(cores: u32, memory: i64, reserved_cpu_millis: i64, reserved_memory: i64, ephemeral_storage: i64) -> Allocatable {
        Allocatable { cpu_millis: (i64::from(cores) * 1000 - reserved_cpu_millis).max(0), memory: (memory - reserved_memory).max(0), ephemeral_storage }
    }
}

/// Values for `fieldRef`s that nodelet can answer itself.
pub fn field_value(pod: &Pod, pod_ip: Option<&str>, host_ip: Option<&str>, path: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => Some(pod_namespace(pod).to_string()),
        "metadata.uid" => pod.metadata.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.map(|s| s.service_account_name.clone().unwrap_or_else(|| "default".into())),
        "status.podIP" => pod_ip.map(String::from),
        "status.hostIP" => host_ip.map(String::from),
        // Whole maps, as the kubelet writes them: one `key="value"` line each, sorted by key.
        "metadata.labels" => Some(format_map(pod.metadata.labels.as_ref())),
        "metadata.annotations" => Some(format_map(pod.metadata.annotations.as_ref())),
        p if p.starts_with("metadata.labels['") => {
            let key = p.trim_start_matches("metadata.labels['").trim_end_matches("']");
            pod.metadata.labels.as_ref().and_then(|l| l.get(key).cloned())
        }
        p if p.starts_with("metadata.annotations['") => {
            let key = p.trim_start_matches("metadata.annotations['").trim_end_matches("']");
            pod.metadata.annotations.as_ref().and_then(|l| l.get(key).cloned())
        }
        _ => None,
    }
}

fn format_map(map: Option<&std::collections::BTreeMap<String, String>>) -> String {
    map.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
}

/// The value of a `resourceFieldRef` for the container `default_container` (env) or the one the
/// selector names (volumes, where `containerName` is required): `limits.cpu`, `limits.memory`,
/// `limits.ephemeral-storage`, `requests.*` (and hugepages), divided by the divisor (default 1)
/// and rounded up, as the kubelet does. A limit the container does not set is the node's
/// allocatable; a request it does not set is its limit (the apiserver's default) or 0.
pub fn resource_value(pod: &Pod, default_container: Option<&str>, selector: &ResourceFieldSelector, node: &Allocatable) -> Result<String, String> {
    let name = selector
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(default_container)
        .ok_or_else(|| format!("resourceFieldRef {:?}: containerName is required", selector.resource))?;
    let spec = pod.spec.as_ref();
    let container = spec
        .into_iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .find(|c| c.name == name)
        .ok_or_else(|| format!("resourceFieldRef {:?}: the pod has no container {name:?}", selector.resource))?;
    let resources = container.resources.clone().unwrap_or_default();
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(|| unsupported(&selector.resource))?;
    let limits = resources.limits.unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();
    let is_cpu = resource == "cpu";
    let parse = |text: &str| -> Result<i128, String> {
        let what = || format!("container {name:?} resources.{kind}.{resource}");
        if is_cpu {
            quantity::parse_milli(text).map_err(|e| format!("{}: {e}", what()))
        } else {
            quantity::bytes(text).map(i128::from).map_err(|e| format!("{}: {e}", what()))
        }
    };
    let fallback = match resource {
        "cpu" => Some(i128::from(node.cpu_millis)),
        "memory" => Some(i128::from(node.memory)),
        "ephemeral-storage" => Some(i128::from(node.ephemeral_storage)),
        r if r.starts_with("hugepages-") => None,
        _ => return Err(unsupported(&selector.resource)),
    };
    let limit = limits.get(resource).map(|q| parse(&q.0)).transpose()?;
    let value = match kind {
        "limits" => limit.or(fallback).unwrap_or(0),
        "requests" => match requests.get(resource) {
            Some(q) => parse(&q.0)?,
            None => limit.unwrap_or(0),
        },
        _ => return Err(unsupported(&selector.resource)),
    };
    let divisor = match selector.divisor.as_ref().map(|q| q.0.trim()).filter(|d| !d.is_empty()) {
        Some(d) => if is_cpu { quantity::parse_milli(d) } else { quantity::bytes(d).map(i128::from) }
            .map_err(|e| format!("resourceFieldRef {:?}: divisor: {e}", selector.resource))?,
        None if is_cpu => 1000,
        None => 1,
    };
    // The apiserver hands an unset divisor over as "0": it means 1, as the kubelet reads it.
    let divisor = if divisor == 0 {
        if is_cpu {
            1000
        } else {
            1
        }
    } else {
        divisor
    };
    if divisor < 0 {
        return Err(format!("resourceFieldRef {:?}: divisor must be positive", selector.resource));
    }
    Ok(ceil_div(value, divisor).to_string())
}

fn ceil_div(value: i128, divisor: i128) -> i128 {
    value / divisor + i128::from(value % divisor != 0)
}

fn unsupported(resource: &str) -> String {
    format!("resourceFieldRef: unsupported resource {resource:?} (limits.cpu, limits.memory, limits.ephemeral-storage, requests.* and hugepages are)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"b": "2", "a": "x y"}},
            "spec": {"containers": [{"name": "c", "resources": resources}, {"name": "bare"}]}
        }))
        .unwrap()
    }

    fn sel(container: Option<&str>, resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector { container_name: container.map(String::from), resource: resource.into(), divisor: divisor.map(|d| Quantity(d.into())) }
    }

    const NODE: Allocatable = Allocatable { cpu_millis: 3900, memory: 8 << 30, ephemeral_storage: 100 << 30 };

    #[test]
    fn limits_and_requests_with_divisors_round_up() {
        let p = pod(serde_json::json!({"limits": {"cpu": "1250m", "memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}}));
        let v = |r, d| resource_value(&p, None, &sel(Some("c"), r, d), &NODE).unwrap();
        assert_eq!(v("limits.cpu", None), "2", "cpu is rounded up to whole cores by default");
        assert_eq!(v("limits.cpu", Some("1m")), "1250");
        assert_eq!(v("limits.cpu", Some("100m")), "13");
        assert_eq!(v("requests.cpu", None), "1");
        assert_eq!(v("requests.cpu", Some("1m")), "250");
        assert_eq!(v("limits.memory", None), "67108864");
        assert_eq!(v("limits.memory", Some("1Mi")), "64");
        assert_eq!(v("requests.memory", Some("1Mi")), "32");
        assert_eq!(v("requests.memory", Some("1G")), "1");
    }

    #[test]
    fn missing_limits_are_the_node_allocatable_and_missing_requests_the_limit() {
        let p = pod(serde_json::json!({"limits": {"memory": "64Mi"}}));
        let v = |c, r, d| resource_value(&p, None, &sel(Some(c), r, d), &NODE).unwrap();
        assert_eq!(v("c", "limits.cpu", Some("1m")), "3900");
        assert_eq!(v("c", "limits.cpu", None), "4");
        assert_eq!(v("bare", "limits.memory", None), (8u64 << 30).to_string());
        assert_eq!(v("bare", "limits.ephemeral-storage", Some("1Gi")), "100");
        assert_eq!(v("c", "requests.memory", Some("1Mi")), "64");
        assert_eq!(v("bare", "requests.cpu", None), "0");
    }

    #[test]
    fn env_defaults_to_its_own_container_volumes_must_name_one() {
        let p = pod(serde_json::json!({"limits": {"cpu": "2"}}));
        assert_eq!(resource_value(&p, Some("c"), &sel(None, "limits.cpu", None), &NODE).unwrap(), "2");
        let err = resource_value(&p, None, &sel(None, "limits.cpu", None), &NODE).unwrap_err();
        assert!(err.contains("containerName is required"), "{err}");
        let err = resource_value(&p, None, &sel(Some("nope"), "limits.cpu", None), &NODE).unwrap_err();
        assert!(err.contains("no container \"nope\""), "{err}");
        let err = resource_value(&p, None, &sel(Some("c"), "limits.gpu", None), &NODE).unwrap_err();
        assert!(err.contains("unsupported resource \"limits.gpu\""), "{err}");
        // "0" is how the apiserver sends a divisor nobody set: it means 1.
        assert_eq!(resource_value(&p, None, &sel(Some("c"), "limits.cpu", Some("0")), &NODE).unwrap(), "2");
        let err = resource_value(&p, None, &sel(Some("c"), "limits.cpu", Some("-1")), &NODE).unwrap_err();
        assert!(err.contains("divisor"), "{err}");
    }

    #[test]
    fn whole_label_map_is_sorted_quoted_lines() {
        let p = pod(serde_json::json!({}));
        assert_eq!(field_value(&p, None, None, "metadata.labels").unwrap(), "a=\"x y\"\nb=\"2\"");
        assert_eq!(field_value(&p, None, None, "metadata.labels['b']").unwrap(), "2");
    }
}
