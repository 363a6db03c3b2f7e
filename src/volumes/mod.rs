//! A pod's volumes on this node: emptyDir and hostPath directories, and the volumes whose files
//! nodelet writes itself (configMap, secret, downwardAPI, and projected ones such as the
//! `kube-api-access-*` volume every pod gets on a real cluster, with its bound service account
//! token refreshed before it expires).

pub mod atomic;
pub mod mounts;
pub mod subpath;

use crate::pods::spec::{self, NodeContext, VolumePaths};
use atomic::{check_relative, write_atomically, FileContent};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

const DEFAULT_MODE: i32 = 0o644;
/// An emptyDir's mode: writable by every user a container may run as, as the kubelet makes it.
const EMPTY_DIR_MODE: u32 = 0o777;
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// The volumes are ready; `refresh_at` says when written content (a token) must be renewed.
pub struct Prepared {
    pub paths: VolumePaths,
    pub refresh_at: Option<SystemTime>,
}

/// Creates or refreshes every volume of the pod. Errors name the volume and the cause.
pub async fn prepare(ctx: &NodeContext, pod: &Pod, api: Option<&kube::Client>) -> Result<Prepared, String> {
    let paths = spec::volume_paths(ctx, pod)?;
    private_dir(&spec::pod_data_dir(ctx, pod)).await?;
    let mut refresh_at: Option<SystemTime> = None;
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = paths.get(&volume.name).cloned().expect("volume_paths covers every volume");
        let written = fill(pod, volume, api).await.map_err(|e| format!("volume {:?}: {e}", volume.name))?;
        match written {
            Content::Directory => {
                if dir.starts_with(spec::pod_data_dir(ctx, pod)) || volume.host_path.as_ref().is_some_and(|h| h.type_.as_deref() == Some("DirectoryOrCreate")) {
                    tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("volume {:?}: creating {}: {e}", volume.name, dir.display()))?;
                }
                if volume.empty_dir.is_some() {
                    // As the kubelet: any user the containers run as may write an emptyDir.
                    use std::os::unix::fs::PermissionsExt;
                    tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(EMPTY_DIR_MODE)).await.map_err(|e| format!("volume {:?}: chmod {}: {e}", volume.name, dir.display()))?;
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
                if let Some(at) = refresh {
                    refresh_at = Some(refresh_at.map_or(at, |r: SystemTime| r.min(at)));
                }
            }
        }
    }
    Ok(Prepared { paths, refresh_at })
}

enum Content {
    Directory,
    Files(BTreeMap<String, FileContent>, Option<SystemTime>),
}

async fn fill(pod: &Pod, volume: &Volume, api: Option<&kube::Client>) -> Result<Content, String> {
    let ns = spec::pod_namespace(pod);
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
        add_downward(&mut files, pod, downward.items.as_deref().unwrap_or_default(), downward.default_mode.unwrap_or(DEFAULT_MODE))?;
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
                add_downward(&mut files, pod, downward.items.as_deref().unwrap_or_default(), mode)?;
            }
            if let Some(token) = &source.service_account_token {
                let (value, renew) = request_token(need_api()?, pod, token.audience.clone(), token.expiration_seconds).await?;
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
fn add_items(files: &mut BTreeMap<String, FileContent>, data: BTreeMap<String, Vec<u8>>, items: Option<&[KeyToPath]>, mode: i32, what: &str) -> Result<(), String> {
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

async fn add_config_map(files: &mut BTreeMap<String, FileContent>, client: &kube::Client, ns: &str, name: &str, items: Option<&[KeyToPath]>, optional: Option<bool>, mode: i32) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Some(cm) = get_optional(api.get_opt(name).await, &format!("configmap {ns}/{name}"), optional)? else { return Ok(()) };
    let mut data: BTreeMap<String, Vec<u8>> = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    add_items(files, data, items, mode, &format!("configmap {ns}/{name}"))
}

async fn add_secret(files: &mut BTreeMap<String, FileContent>, client: &kube::Client, ns: &str, name: &str, items: Option<&[KeyToPath]>, optional: Option<bool>, mode: i32) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(secret) = get_optional(api.get_opt(name).await, &format!("secret {ns}/{name}"), optional)? else { return Ok(()) };
    let mut data: BTreeMap<String, Vec<u8>> = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    add_items(files, data, items, mode, &format!("secret {ns}/{name}"))
}

fn get_optional<T>(result: Result<Option<T>, kube::Error>, what: &str, optional: Option<bool>) -> Result<Option<T>, String> {
    match result {
        Ok(Some(v)) => Ok(Some(v)),
        Ok(None) if optional == Some(true) => Ok(None),
        Ok(None) => Err(format!("{what} not found")),
        Err(e) => Err(format!("reading {what}: {e}")),
    }
}

fn add_downward(files: &mut BTreeMap<String, FileContent>, pod: &Pod, items: &[DownwardAPIVolumeFile], mode: i32) -> Result<(), String> {
    for item in items {
        let field = item.field_ref.as_ref().ok_or_else(|| format!("downwardAPI item {:?}: only fieldRef is supported", item.path))?;
        let value = spec::field_value(pod, None, None, &field.field_path).ok_or_else(|| format!("downwardAPI item {:?}: unsupported fieldPath {:?}", item.path, field.field_path))?;
        insert(files, &item.path, value.into_bytes(), item.mode.unwrap_or(mode))?;
    }
    Ok(())
}

/// A token for the pod's service account, bound to the pod; renewed at 80 % of its life or
/// after a day, whichever is sooner, as the kubelet does.
async fn request_token(client: &kube::Client, pod: &Pod, audience: Option<String>, seconds: Option<i64>) -> Result<(String, SystemTime), String> {
    let ns = spec::pod_namespace(pod);
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
    let answer = api.create_token_request(&sa, &PostParams::default(), &request).await.map_err(|e| format!("requesting a token for serviceaccount {ns}/{sa}: {e}"))?;
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
    spec::pod_data_dir(ctx, pod).join("volumes")
}
