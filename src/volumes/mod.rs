//! A pod's volumes on this node: emptyDir and hostPath directories, and the volumes whose files
//! nodelet writes itself (configMap, secret, downwardAPI, and projected ones such as the
//! `kube-api-access-*` volume every pod gets on a real cluster, with its bound service account
//! token refreshed before it expires).

pub mod atomic;
pub mod mounts;
pub mod subpath;

use crate::objects::Objects;
use crate::podinfo::downward::{field_value, resource_value, Allocatable};
use crate::podinfo::{pod_data_dir, pod_namespace, NodeContext, VolumePaths};
use atomic::{check_relative, write_atomically, FileContent};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume};
use kube::api::{Api, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

const DEFAULT_MODE: i32 = 0o644;
/// An emptyDir's mode: writable by every user a container may run as, as the kubelet makes it.
const EMPTY_DIR_MODE: u32 = 0o777;
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// How often written volumes are compared with their sources (configMaps, secrets, the pod's
/// labels): well inside the kubelet's sync period (about a minute); reads come from watch-fed
/// caches and a file set that did not change is not rewritten.
pub const RESYNC: Duration = Duration::from_secs(10);

/// Tokens already written, by (volume, path), with when each must be renewed: a resync keeps
/// them instead of asking the apiserver for a new one each time.
#[derive(Default)]
pub struct Tokens(HashMap<(String, String), (String, SystemTime)>);

/// The volumes are ready; `refresh_at` says when written content (a token) must be renewed.
pub struct Prepared {
    pub paths: VolumePaths,
    pub refresh_at: Option<SystemTime>,
}

/// Creates or refreshes every volume of the pod. Errors name the volume and the cause.
/// `refresh_at` is due again within `RESYNC` when the pod has volumes written from sources that may change.
pub async fn prepare(ctx: &NodeContext, pod: &Pod, api: Option<&Objects>, tokens: &mut Tokens) -> Result<Prepared, String> {
    let paths = volume_paths(ctx, pod)?;
    private_dir(&pod_data_dir(ctx, pod)).await?;
    let mut refresh_at: Option<SystemTime> = None;
    let now = SystemTime::now();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = paths.get(&volume.name).cloned().expect("volume_paths covers every volume");
        let written = fill(pod, volume, api, &ctx.allocatable, tokens, now).await.map_err(|e| format!("volume {:?}: {e}", volume.name))?;
        match written {
            Content::Directory => {
                if dir.starts_with(pod_data_dir(ctx, pod)) || volume.host_path.as_ref().is_some_and(|h| h.type_.as_deref() == Some("DirectoryOrCreate")) {
                    tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("volume {:?}: creating {}: {e}", volume.name, dir.display()))?;
                }
                if let Some(options) = volume.empty_dir.as_ref().and_then(|e| memory_medium_options(e, &ctx.allocatable)) {
                    let target = dir.clone();
                    tokio::task::spawn_blocking(move || mounts::ensure_tmpfs_with(&target, &options))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("volume {:?}: {e}", volume.name))?;
                }
                if volume.empty_dir.is_some() {
                    // As the kubelet: any user the containers run as may write an emptyDir.
                    use std::os::unix::fs::PermissionsExt;
                    tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(EMPTY_DIR_MODE))
                        .await
                        .map_err(|e| format!("volume {:?}: chmod {}: {e}", volume.name, dir.display()))?;
                }
            }
            Content::Files(files, refresh) => {
                let target = dir.clone();
                for parent in [volumes_dir(ctx, pod), dir.parent().map(PathBuf::from).unwrap_or_default()] {
                    private_dir(&parent).await.map_err(|e| format!("volume {:?}: {e}", volume.name))?;
                }
                let in_memory = on_tmpfs(volume);
                let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|sc| sc.fs_group).map(|g| g as u32);
                tokio::task::spawn_blocking(move || {
                    if in_memory {
                        mounts::ensure_tmpfs(&target)?;
                    }
                    write_atomically(&target, &files, fs_group)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("volume {:?}: writing {}: {e}", volume.name, dir.display()))?;
                let at = refresh.map_or(now + RESYNC, |token| token.min(now + RESYNC));
                refresh_at = Some(refresh_at.map_or(at, |r: SystemTime| r.min(at)));
            }
        }
    }
    Ok(Prepared { paths, refresh_at })
}

/// The tmpfs options of a `medium: Memory` emptyDir (None for a disk-backed one): any user may
/// write it, and its size is the sizeLimit, at most the node's allocatable memory, as the kubelet sizes it.
pub fn memory_medium_options(empty_dir: &k8s_openapi::api::core::v1::EmptyDirVolumeSource, node: &Allocatable) -> Option<String> {
    if empty_dir.medium.as_deref() != Some("Memory") {
        return None;
    }
    let limit = empty_dir.size_limit.as_ref().and_then(|q| crate::podinfo::quantity::bytes(&q.0).ok()).filter(|b| *b > 0);
    let size = match (limit, node.memory) {
        (Some(l), n) if n > 0 => Some(l.min(n)),
        (Some(l), _) => Some(l),
        (None, n) if n > 0 => Some(n),
        (None, _) => None,
    };
    Some(match size {
        Some(bytes) => format!("mode=0777,size={bytes}"),
        None => "mode=0777".to_string(),
    })
}

/// Where each volume lives on the host, by the kubelet's layout; kinds nodelet cannot provide
/// are refused with the volume's name.
pub fn volume_paths(ctx: &NodeContext, pod: &Pod) -> Result<VolumePaths, String> {
    let mut paths = VolumePaths::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let kind = if v.empty_dir.is_some() {
            "empty-dir"
        } else if v.config_map.is_some() {
            "configmap"
        } else if v.secret.is_some() {
            "secret"
        } else if v.downward_api.is_some() {
            "downward-api"
        } else if v.projected.is_some() {
            "projected"
        } else if let Some(host) = &v.host_path {
            paths.insert(v.name.clone(), PathBuf::from(&host.path));
            continue;
        } else {
            return Err(format!("volume {:?}: unsupported volume type (emptyDir, hostPath, configMap, secret, downwardAPI and projected are)", v.name));
        };
        paths.insert(v.name.clone(), pod_data_dir(ctx, pod).join("volumes").join(format!("kubernetes.io~{kind}")).join(&v.name));
    }
    Ok(paths)
}

enum Content {
    Directory,
    Files(BTreeMap<String, FileContent>, Option<SystemTime>),
}

async fn fill(pod: &Pod, volume: &Volume, api: Option<&Objects>, node: &Allocatable, tokens: &mut Tokens, now: SystemTime) -> Result<Content, String> {
    let ns = pod_namespace(pod);
    let need_api = || api.ok_or_else(|| "needs an apiserver (run nodelet with --kubeconfig)".to_string());
    let mut files = BTreeMap::new();
    let mut refresh = None;
    if let Some(cm) = &volume.config_map {
        let mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
        add_config_map(&mut files, need_api()?, ns, &cm.name, cm.items.as_deref(), cm.optional, mode).await?;
    } else if let Some(secret) = &volume.secret {
        let mode = secret.default_mode.unwrap_or(DEFAULT_MODE);
        let name = secret.secret_name.clone().unwrap_or_default();
        add_secret(&mut files, need_api()?, ns, &name, secret.items.as_deref(), secret.optional, mode).await?;
    } else if let Some(downward) = &volume.downward_api {
        add_downward(&mut files, pod, downward.items.as_deref().unwrap_or_default(), downward.default_mode.unwrap_or(DEFAULT_MODE), node)?;
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                add_config_map(&mut files, need_api()?, ns, &cm.name, cm.items.as_deref(), cm.optional, mode).await?;
            }
            if let Some(secret) = &source.secret {
                add_secret(&mut files, need_api()?, ns, &secret.name, secret.items.as_deref(), secret.optional, mode).await?;
            }
            if let Some(downward) = &source.downward_api {
                add_downward(&mut files, pod, downward.items.as_deref().unwrap_or_default(), mode, node)?;
            }
            if let Some(token) = &source.service_account_token {
                let key = (volume.name.clone(), token.path.clone());
                let (value, renew) = match tokens.0.get(&key).filter(|(_, renew)| *renew > now) {
                    Some(kept) => kept.clone(),
                    None => {
                        let fresh = request_token(need_api()?.client(), pod, token.audience.clone(), token.expiration_seconds).await?;
                        tokens.0.insert(key, fresh.clone());
                        fresh
                    }
                };
                insert(&mut files, &token.path, value.into_bytes(), mode)?;
                refresh = Some(refresh.map_or(renew, |r: SystemTime| r.min(renew)));
            }
        }
    } else {
        return Ok(Content::Directory);
    }
    Ok(Content::Files(files, refresh))
}

fn insert(files: &mut BTreeMap<String, FileContent>, path: &str, data: Vec<u8>, mode: i32) -> Result<(), String> {
    check_relative(path)?;
    files.insert(path.to_string(), FileContent { data, mode: mode as u32 & 0o777 });
    Ok(())
}

/// The items asked for, or every key under its own name.
fn add_items(
    files: &mut BTreeMap<String, FileContent>,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    what: &str,
) -> Result<(), String> {
    match items {
        Some(items) => {
            for item in items {
                let value = data.get(&item.key).ok_or_else(|| format!("{what} has no key {:?}", item.key))?;
                insert(files, &item.path, value.clone(), item.mode.unwrap_or(mode))?;
            }
        }
        None => {
            for (key, value) in data {
                insert(files, &key, value, mode)?;
            }
        }
    }
    Ok(())
}

async fn add_config_map(
    files: &mut BTreeMap<String, FileContent>,
    api: &Objects,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
) -> Result<(), String> {
    let Some(cm) = get_optional(api.config_map(ns, name).await, &format!("configmap {ns}/{name}"), optional)? else { return Ok(()) };
    let mut data: BTreeMap<String, Vec<u8>> = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    add_items(files, data, items, mode, &format!("configmap {ns}/{name}"))
}

async fn add_secret(
    files: &mut BTreeMap<String, FileContent>,
    api: &Objects,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
) -> Result<(), String> {
    let Some(secret) = get_optional(api.secret(ns, name).await, &format!("secret {ns}/{name}"), optional)? else { return Ok(()) };
    let mut data: BTreeMap<String, Vec<u8>> = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    add_items(files, data, items, mode, &format!("secret {ns}/{name}"))
}

fn get_optional<T>(result: Result<Option<T>, String>, what: &str, optional: Option<bool>) -> Result<Option<T>, String> {
    match result {
        Ok(Some(v)) => Ok(Some(v)),
        Ok(None) if optional == Some(true) => Ok(None),
        Ok(None) => Err(format!("{what} not found")),
        Err(e) => Err(e),
    }
}

fn add_downward(files: &mut BTreeMap<String, FileContent>, pod: &Pod, items: &[DownwardAPIVolumeFile], mode: i32, node: &Allocatable) -> Result<(), String> {
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(field), _) => field_value(pod, None, None, &field.field_path)
                .ok_or_else(|| format!("downwardAPI item {:?}: unsupported fieldPath {:?}", item.path, field.field_path))?,
            (None, Some(resource)) => resource_value(pod, None, resource, node).map_err(|e| format!("downwardAPI item {:?}: {e}", item.path))?,
            (None, None) => return Err(format!("downwardAPI item {:?}: neither fieldRef nor resourceFieldRef", item.path)),
        };
        insert(files, &item.path, value.into_bytes(), item.mode.unwrap_or(mode))?;
    }
    Ok(())
}

/// A token for the pod's service account, bound to the pod; renewed at 80 % of its life or
/// after a day, whichever is sooner, as the kubelet does.
async fn request_token(client: &kube::Client, pod: &Pod, audience: Option<String>, seconds: Option<i64>) -> Result<(String, SystemTime), String> {
    let ns = pod_namespace(pod);
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(seconds.unwrap_or(DEFAULT_TOKEN_SECONDS)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let answer =
        api.create_token_request(&sa, &PostParams::default(), &request).await.map_err(|e| format!("requesting a token for serviceaccount {ns}/{sa}: {e}"))?;
    let status = answer.status.ok_or_else(|| format!("serviceaccount {ns}/{sa}: the token request was answered without a token"))?;
    let now = SystemTime::now();
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(status.expiration_timestamp.0.as_second().max(0) as u64);
    let life = expires.duration_since(now).unwrap_or_default();
    let renew = now + (life.mul_f64(0.8)).min(Duration::from_secs(24 * 3600));
    Ok((status.token, renew))
}

/// Secrets, and projected volumes (which carry the service account token), live in memory
/// only: a tmpfs at the volume's directory, as the kubelet keeps them.
pub fn on_tmpfs(volume: &Volume) -> bool {
    volume.secret.is_some() || volume.projected.is_some()
}

/// Makes `dir` (and what is missing above it) and closes it to other users: 0750, as the
/// kubelet keeps pod directories.
pub async fn private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::create_dir_all(dir).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).await.map_err(|e| format!("setting the mode of {}: {e}", dir.display()))
}

/// Where a pod's nodelet-written volumes live (for clean-up and tests).
pub fn volumes_dir(ctx: &NodeContext, pod: &Pod) -> PathBuf {
    pod_data_dir(ctx, pod).join("volumes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EmptyDirVolumeSource;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    const NODE: Allocatable = Allocatable { cpu_millis: 2000, memory: 1 << 30, ephemeral_storage: 0 };

    fn ctx(root: &std::path::Path) -> NodeContext {
        NodeContext {
            node_name: "n1".into(),
            cgroups: crate::cgroups::Layout::new(crate::cgroups::Driver::Cgroupfs, "/"),
            pod_pids_limit: None,
            pod_log_root: root.join("logs"),
            pod_data_root: root.join("pods"),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: String::new(),
            host_ip: None,
            memory_capacity: 1 << 30,
            allocatable: NODE,
            seccomp_root: root.join("seccomp"),
            seccomp_default: false,
        }
    }

    fn pod(labels: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": labels},
            "spec": {
                "containers": [{"name": "c", "resources": {"limits": {"cpu": "1250m"}, "requests": {"memory": "32Mi"}}}],
                "volumes": [{"name": "info", "downwardAPI": {"items": [
                    {"path": "cpu_limit", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu", "divisor": "1m"}},
                    {"path": "memory_request", "resourceFieldRef": {"containerName": "c", "resource": "requests.memory"}},
                    {"path": "memory_limit", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                ]}}]
            }
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn downward_volume_has_resources_and_is_rewritten_only_when_the_pod_changed() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path());
        let mut tokens = Tokens::default();
        let first = prepare(&ctx, &pod(serde_json::json!({"a": "1"})), None, &mut tokens).await.unwrap();
        let dir = first.paths["info"].clone();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!((read("cpu_limit").as_str(), read("memory_request").as_str()), ("1250", "33554432"));
        assert_eq!(read("memory_limit"), (1u64 << 30).to_string(), "no memory limit: the node's allocatable");
        assert_eq!(read("labels"), "a=\"1\"");
        let next = first.refresh_at.expect("a written volume is looked at again");
        assert!(next <= SystemTime::now() + RESYNC);
        let generation = || std::fs::read_link(dir.join("..data")).unwrap();
        let before = generation();
        prepare(&ctx, &pod(serde_json::json!({"a": "1"})), None, &mut tokens).await.unwrap();
        assert_eq!(generation(), before, "the same content is not rewritten");
        prepare(&ctx, &pod(serde_json::json!({"a": "1", "b": "2"})), None, &mut tokens).await.unwrap();
        assert_ne!(generation(), before);
        assert_eq!(read("labels"), "a=\"1\"\nb=\"2\"");
    }

    #[tokio::test]
    async fn a_bad_downward_item_names_the_volume_and_item() {
        let root = tempfile::tempdir().unwrap();
        let mut p = pod(serde_json::json!({}));
        let volumes = p.spec.as_mut().unwrap().volumes.as_mut().unwrap();
        volumes[0].downward_api.as_mut().unwrap().items.as_mut().unwrap()[0].resource_field_ref.as_mut().unwrap().container_name = None;
        let err = prepare(&ctx(root.path()), &p, None, &mut Tokens::default()).await.err().unwrap();
        assert!(err.contains("volume \"info\"") && err.contains("\"cpu_limit\"") && err.contains("containerName is required"), "{err}");
    }

    #[test]
    fn memory_medium_is_a_world_writable_tmpfs_sized_by_its_limit() {
        let dir = |medium: Option<&str>, limit: Option<&str>| EmptyDirVolumeSource {
            medium: medium.map(String::from),
            size_limit: limit.map(|l| Quantity(l.into())),
        };
        assert_eq!(memory_medium_options(&dir(None, Some("1Mi")), &NODE), None);
        assert_eq!(memory_medium_options(&dir(Some("Memory"), Some("64Mi")), &NODE).unwrap(), "mode=0777,size=67108864");
        assert_eq!(memory_medium_options(&dir(Some("Memory"), Some("2Gi")), &NODE).unwrap(), format!("mode=0777,size={}", 1u64 << 30));
        assert_eq!(memory_medium_options(&dir(Some("Memory"), None), &NODE).unwrap(), format!("mode=0777,size={}", 1u64 << 30));
        assert_eq!(memory_medium_options(&dir(Some("Memory"), None), &Allocatable::default()).unwrap(), "mode=0777");
    }
}
