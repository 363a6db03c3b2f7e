//! Where a container's environment comes from beyond literal values: configMaps and secrets
//! (`valueFrom` and `envFrom`), and the Services of the pod's namespace, which the kubelet turns
//! into `<NAME>_SERVICE_HOST`-style variables. The reads (from the watch-fed caches of
//! `crate::objects`) are here; the rules are pure.

use crate::objects::Objects;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Service};
use std::collections::{BTreeMap, HashMap};

/// What the container's env references, read once before the container is created.
#[derive(Default)]
pub struct EnvSources {
    config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    secrets: HashMap<String, Option<BTreeMap<String, String>>>,
    pub service_env: Vec<(String, String)>,
}

impl EnvSources {
    pub async fn gather(api: Option<&Objects>, pod: &Pod, c: &Container) -> Result<EnvSources, String> {
        let mut sources = EnvSources::default();
        let Some(objects) = api else { return Ok(sources) };
        let ns = super::spec::pod_namespace(pod);
        let mut config_maps: Vec<String> = c.env_from.iter().flatten().filter_map(|f| f.config_map_ref.as_ref().map(|r| r.name.clone())).collect();
        let mut secrets: Vec<String> = c.env_from.iter().flatten().filter_map(|f| f.secret_ref.as_ref().map(|r| r.name.clone())).collect();
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else { continue };
            config_maps.extend(from.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
        for name in config_maps {
            let cm = objects.config_map(ns, &name).await?;
            sources.config_maps.insert(name, cm.map(|cm| cm.data.unwrap_or_default()));
        }
        for name in secrets {
            let secret = objects.secret(ns, &name).await?;
            let data = secret.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect());
            sources.secrets.insert(name, data);
        }
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        let mut services: Vec<Service> = Vec::new();
        if links {
            services = objects.services(ns).await?;
        }
        // The apiserver's own Service is always announced, as KUBERNETES_SERVICE_HOST/PORT.
        if ns != "default" || !links {
            services.extend(objects.services("default").await?.into_iter().filter(|s| s.metadata.name.as_deref() == Some("kubernetes")));
        }
        sources.service_env = service_env(&services);
        Ok(sources)
    }

    /// Variables from `envFrom`, in order, later sources overriding earlier ones.
    pub fn env_from(&self, c: &Container) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            let (data, what, optional) = if let Some(r) = &from.config_map_ref {
                (self.config_maps.get(&r.name).cloned().flatten(), format!("configmap {:?}", r.name), r.optional)
            } else if let Some(r) = &from.secret_ref {
                (self.secrets.get(&r.name).cloned().flatten(), format!("secret {:?}", r.name), r.optional)
            } else {
                continue;
            };
            match data {
                Some(data) => {
                    for (k, v) in data {
                        out.retain(|(key, _)| *key != format!("{prefix}{k}"));
                        out.push((format!("{prefix}{k}"), v));
                    }
                }
                None if optional == Some(true) => {}
                None => return Err(format!("envFrom: {what} not found")),
            }
        }
        Ok(out)
    }

    /// A `valueFrom` reference to a configMap or secret key; None for an optional miss.
    pub fn key_ref(&self, var: &EnvVar) -> Option<Result<Option<String>, String>> {
        let from = var.value_from.as_ref()?;
        let (map, name, key, optional, what) = if let Some(r) = &from.config_map_key_ref {
            (&self.config_maps, &r.name, &r.key, r.optional, "configmap")
        } else if let Some(r) = &from.secret_key_ref {
            (&self.secrets, &r.name, &r.key, r.optional, "secret")
        } else {
            return None;
        };
        let value = map.get(name).cloned().flatten().and_then(|d| d.get(key).cloned());
        Some(match (value, optional) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(true)) => Ok(None),
            (None, _) => Err(format!("env {:?}: {what} {name:?} has no key {key:?} (or does not exist)", var.name)),
        })
    }
}

/// The Docker-link style variables the kubelet derives from Services with a cluster IP.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.name.clone());
    sorted.dedup_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    for svc in sorted {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = svc.metadata.name.clone().unwrap_or_default().to_uppercase().replace('-', "_");
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{name}_SERVICE_PORT_{}", port_name.to_uppercase().replace('-', "_")), p.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((format!("{name}_PORT"), format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port)));
        for p in ports {
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto(p).to_uppercase());
            out.push((prefix.clone(), format!("{}://{ip}:{}", proto(p).to_lowercase(), p.port)));
            out.push((format!("{prefix}_PROTO"), proto(p).to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_become_link_variables() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-db", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]}
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }))
        .unwrap();
        let env: BTreeMap<String, String> = service_env(&[svc, headless]).into_iter().collect();
        assert_eq!(env["MY_DB_SERVICE_HOST"], "10.96.0.5");
        assert_eq!(env["MY_DB_SERVICE_PORT"], "5432");
        assert_eq!(env["MY_DB_SERVICE_PORT_SQL"], "5432");
        assert_eq!(env["MY_DB_PORT"], "tcp://10.96.0.5:5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP_ADDR"], "10.96.0.5");
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS")));
    }
}
