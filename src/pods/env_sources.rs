//! Where a container's environment comes from beyond literal values: configMaps and secrets
//! (`valueFrom` and `envFrom`), and the Services of the pod's namespace, which the kubelet turns
//! into `<NAME>_SERVICE_HOST`-style variables. The reads (from the watch-fed caches of
//! `crate::objects`) are here; the rules are pure.

use crate::objects::{Objects, ServiceLink};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
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
        let mut services: Vec<ServiceLink> = Vec::new();
        if links {
            services = objects.services(ns).await?;
        }
        // The apiserver's own Service is always announced, as KUBERNETES_SERVICE_HOST/PORT.
        if ns != "default" || !links {
            services.extend(objects.services("default").await?.into_iter().filter(|s| s.name == "kubernetes"));
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

/// The Docker-link style variables the kubelet derives from Services with a cluster IP. A
/// name given twice (the namespace's own `kubernetes` and the default one) keeps its first.
pub fn service_env(services: &[ServiceLink]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut sorted: Vec<&ServiceLink> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|later, first| later.name == first.name);
    for svc in sorted {
        let Some(first) = svc.ports.first() else { continue };
        let (name, ip) = (svc.name.to_uppercase().replace('-', "_"), &svc.cluster_ip);
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in svc.ports.iter().filter(|p| !p.name.is_empty()) {
            out.push((format!("{name}_SERVICE_PORT_{}", p.name.to_uppercase().replace('-', "_")), p.port.to_string()));
        }
        out.push((format!("{name}_PORT"), format!("{}://{ip}:{}", first.protocol.to_lowercase(), first.port)));
        for p in &svc.ports {
            let prefix = format!("{name}_PORT_{}_{}", p.port, p.protocol.to_uppercase());
            out.push((prefix.clone(), format!("{}://{ip}:{}", p.protocol.to_lowercase(), p.port)));
            out.push((format!("{prefix}_PROTO"), p.protocol.to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::LinkPort;

    fn link(name: &str, ip: &str, port: i32) -> ServiceLink {
        ServiceLink { name: name.into(), cluster_ip: ip.into(), ports: vec![LinkPort { name: String::new(), port, protocol: "TCP".into() }] }
    }

    #[test]
    fn services_become_link_variables() {
        let db = ServiceLink {
            name: "my-db".into(),
            cluster_ip: "10.96.0.5".into(),
            ports: vec![LinkPort { name: "sql".into(), port: 5432, protocol: "TCP".into() }],
        };
        let env: BTreeMap<String, String> = service_env(&[db]).into_iter().collect();
        assert_eq!(env["MY_DB_SERVICE_HOST"], "10.96.0.5");
        assert_eq!(env["MY_DB_SERVICE_PORT"], "5432");
        assert_eq!(env["MY_DB_SERVICE_PORT_SQL"], "5432");
        assert_eq!(env["MY_DB_PORT"], "tcp://10.96.0.5:5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP_ADDR"], "10.96.0.5");
    }

    #[test]
    fn the_namespaces_own_kubernetes_service_wins_over_the_default_one() {
        let env: BTreeMap<String, String> = service_env(&[link("kubernetes", "10.0.0.7", 8443), link("kubernetes", "10.96.0.1", 443)]).into_iter().collect();
        assert_eq!((env["KUBERNETES_SERVICE_HOST"].as_str(), env["KUBERNETES_SERVICE_PORT"].as_str()), ("10.0.0.7", "8443"));
    }
}
