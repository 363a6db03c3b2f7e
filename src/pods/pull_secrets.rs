//! imagePullSecrets as CRI registry credentials: the pod's dockerconfigjson (or legacy
//! dockercfg) secrets are searched for the image's registry, as the kubelet's keyring does.

use k8s_cri::v1::AuthConfig;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize, Default, Clone)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

/// The registry host of an image reference ("docker.io" when it names none).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The credentials for `image` among dockerconfig documents (the content of the secrets' keys).
pub fn auth_for(image: &str, configs: &[(String, Vec<u8>)]) -> Option<AuthConfig> {
    let registry = registry_of(image);
    for (key, data) in configs {
        let auths: BTreeMap<String, Entry> =
            if key == ".dockerconfigjson" { serde_json::from_slice::<DockerConfig>(data).ok()?.auths } else { serde_json::from_slice(data).ok()? };
        for (server, entry) in auths {
            let host = server.trim_start_matches("https://").trim_start_matches("http://").split('/').next().unwrap_or("");
            let matches = host == registry || (registry == "docker.io" && (host == "index.docker.io" || host == "registry-1.docker.io"));
            if matches {
                return Some(AuthConfig {
                    username: entry.username,
                    password: entry.password,
                    auth: entry.auth,
                    server_address: host.to_string(),
                    ..Default::default()
                });
            }
        }
    }
    None
}

/// Reads the pod's imagePullSecrets; a missing one is skipped with a warning, as the kubelet does.
pub async fn read(client: &kube::Client, pod: &Pod) -> Vec<(String, Vec<u8>)> {
    let ns = super::spec::pod_namespace(pod);
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut configs = Vec::new();
    for reference in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
        match api.get_opt(&reference.name).await {
            Ok(Some(secret)) => {
                for (key, value) in secret.data.unwrap_or_default() {
                    if key == ".dockerconfigjson" || key == ".dockercfg" {
                        configs.push((key, value.0));
                    }
                }
            }
            Ok(None) => tracing::warn!(pod = %super::spec::pod_ref(pod), secret = %reference.name, "imagePullSecret not found; pulling without it"),
            Err(e) => tracing::warn!(pod = %super::spec::pod_ref(pod), secret = %reference.name, error = %e, "reading an imagePullSecret failed"),
        }
    }
    configs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_images() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("localhost:5000/nodelet/busybox:1"), "localhost:5000");
        assert_eq!(registry_of("registry.example.com/a/b"), "registry.example.com");
    }

    #[test]
    fn the_matching_registry_gives_the_credentials() {
        let json = br#"{"auths":{"localhost:5000":{"username":"u","password":"p","auth":"dTpw"},"https://index.docker.io/v1/":{"auth":"ZDpo"}}}"#.to_vec();
        let configs = vec![(".dockerconfigjson".to_string(), json)];
        let auth = auth_for("localhost:5000/x:1", &configs).unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str(), auth.server_address.as_str()), ("u", "p", "localhost:5000"));
        assert_eq!(auth_for("busybox", &configs).unwrap().auth, "ZDpo");
        assert!(auth_for("quay.io/x", &configs).is_none());
        let legacy = vec![(".dockercfg".to_string(), br#"{"quay.io":{"auth":"cTp3"}}"#.to_vec())];
        assert_eq!(auth_for("quay.io/x", &legacy).unwrap().auth, "cTp3");
    }
}
