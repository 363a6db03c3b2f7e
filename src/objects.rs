//! ConfigMaps, Secrets and Services as the pods on this node see them, read from caches fed by
//! watches, as the kubelet reads them (its ConfigMapAndSecretChangeDetectionStrategy `Watch`):
//! one watch per configMap or secret a pod here references (`fieldSelector=metadata.name=<name>`,
//! all the Node authorizer lets a node watch), and one cluster-wide watch of Services. A stopped
//! apiserver then changes nothing on the node: the last values seen stay in use. RuntimeClasses
//! (cluster-scoped) are watched by name the same way.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How often watches of objects no pod here references any more are stopped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The kinds a pod references by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
    /// Cluster-scoped: its key's namespace is empty.
    RuntimeClass,
}

type Key = (Kind, String, String);

/// What a watch knows of one object: None until its first list answered, then the object or its absence.
type Slot<T> = Arc<RwLock<Option<Option<T>>>>;

/// Service links by namespace then name, None until the first list answered.
type ServiceCache = Arc<RwLock<Option<HashMap<String, BTreeMap<String, ServiceLink>>>>>;

/// A Service as its link variables see it (`<NAME>_SERVICE_HOST` and the like): its name,
/// cluster IP and ports. A full `Service` is about 1.7 kB before any string; a cluster's worth of
/// them (every node keeps every Service) was the agent's largest single allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLink {
    pub name: String,
    pub cluster_ip: String,
    pub ports: Vec<LinkPort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPort {
    /// Empty for an unnamed port.
    pub name: String,
    pub port: i32,
    /// As the Service says it (TCP when unset).
    pub protocol: String,
}

impl ServiceLink {
    /// The link of a Service that has one: None without a cluster IP (headless, or not yet
    /// given one) or without ports, as the kubelet makes no variables for those.
    pub fn of(service: &Service) -> Option<ServiceLink> {
        let spec = service.spec.as_ref()?;
        let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None")?;
        let ports: Vec<LinkPort> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| LinkPort { name: p.name.clone().unwrap_or_default(), port: p.port, protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()) })
            .collect();
        if ports.is_empty() {
            return None;
        }
        Some(ServiceLink { name: service.metadata.name.clone().unwrap_or_default(), cluster_ip: cluster_ip.to_string(), ports })
    }
}

/// The slot a watch keeps, of its object's kind.
enum AnySlot {
    ConfigMap(Slot<ConfigMap>),
    Secret(Slot<Secret>),
    RuntimeClass(Slot<RuntimeClass>),
}

struct Watched {
    slot: AnySlot,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The caches; cheap to clone (shared).
#[derive(Clone)]
pub struct Objects {
    client: kube::Client,
    watched: Arc<Mutex<HashMap<Key, Watched>>>,
    services: ServiceCache,
}

impl Objects {
    /// Starts the Services watch; `pods` lists the node's pods, whose references keep watches alive.
    pub fn start(client: kube::Client, pods: impl Fn() -> Vec<Pod> + Send + 'static) -> Objects {
        let objects = Objects { client, watched: Arc::default(), services: Arc::default() };
        tokio::spawn(follow_services(objects.client.clone(), objects.services.clone()));
        let sweeper = objects.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let referenced: BTreeSet<Key> = pods().iter().flat_map(references).collect();
                sweeper.watched.lock().expect("object watches poisoned").retain(|key, _| referenced.contains(key));
            }
        });
        objects
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The configMap, None when it does not exist.
    pub async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        self.named(ns, name).await
    }

    /// The secret, None when it does not exist.
    pub async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        self.named(ns, name).await
    }

    /// The RuntimeClass, None when it does not exist.
    pub async fn runtime_class(&self, name: &str) -> Result<Option<RuntimeClass>, String> {
        self.named("", name).await
    }

    /// The object from its watch once that answered, else read directly (the watch starts on
    /// first use).
    async fn named<T: Named>(&self, ns: &str, name: &str) -> Result<Option<T>, String> {
        if let Some(known) = self.slot::<T>(ns, name).read().expect("object slot poisoned").clone() {
            return Ok(known);
        }
        let place = if ns.is_empty() { name.to_string() } else { format!("{ns}/{name}") };
        T::api(self.client.clone(), ns).get_opt(name).await.map_err(|e| format!("reading {} {place}: {e}", T::WHAT))
    }

    /// The links of a namespace's Services, by name: from the cluster-wide watch once it
    /// answered, else listed directly.
    pub async fn services(&self, ns: &str) -> Result<Vec<ServiceLink>, String> {
        if let Some(all) = self.services.read().expect("services cache poisoned").as_ref() {
            return Ok(all.get(ns).map(|links| links.values().cloned().collect()).unwrap_or_default());
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let listed = api.list(&ListParams::default()).await.map_err(|e| format!("listing the services of namespace {ns}: {e}"))?.items;
        let mut links: Vec<ServiceLink> = listed.iter().filter_map(ServiceLink::of).collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(links)
    }

    /// The watch's slot for this object, starting the watch on first use.
    fn slot<T: Named>(&self, ns: &str, name: &str) -> Slot<T> {
        let key = (T::KIND, ns.to_string(), name.to_string());
        let mut watched = self.watched.lock().expect("object watches poisoned");
        if let Some(slot) = watched.get(&key).and_then(|w| T::unwrap(&w.slot)) {
            return slot;
        }
        let slot: Slot<T> = Arc::default();
        let task = tokio::spawn(follow_one(T::api(self.client.clone(), ns), name.to_string(), slot.clone()));
        watched.insert(key, Watched { slot: T::wrap(slot.clone()), task });
        slot
    }
}

/// A kind of object the caches follow by name.
trait Named: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static {
    const KIND: Kind;
    /// How errors name the kind.
    const WHAT: &'static str;
    /// The API of the namespace (ignored for cluster-scoped kinds).
    fn api(client: kube::Client, ns: &str) -> Api<Self>;
    fn wrap(slot: Slot<Self>) -> AnySlot;
    fn unwrap(slot: &AnySlot) -> Option<Slot<Self>>;
}

impl Named for ConfigMap {
    const KIND: Kind = Kind::ConfigMap;
    const WHAT: &'static str = "configmap";
    fn api(client: kube::Client, ns: &str) -> Api<Self> {
        Api::namespaced(client, ns)
    }
    fn wrap(slot: Slot<Self>) -> AnySlot {
        AnySlot::ConfigMap(slot)
    }
    fn unwrap(slot: &AnySlot) -> Option<Slot<Self>> {
        if let AnySlot::ConfigMap(s) = slot {
            Some(s.clone())
        } else {
            None
        }
    }
}

impl Named for Secret {
    const KIND: Kind = Kind::Secret;
    const WHAT: &'static str = "secret";
    fn api(client: kube::Client, ns: &str) -> Api<Self> {
        Api::namespaced(client, ns)
    }
    fn wrap(slot: Slot<Self>) -> AnySlot {
        AnySlot::Secret(slot)
    }
    fn unwrap(slot: &AnySlot) -> Option<Slot<Self>> {
        if let AnySlot::Secret(s) = slot {
            Some(s.clone())
        } else {
            None
        }
    }
}

impl Named for RuntimeClass {
    const KIND: Kind = Kind::RuntimeClass;
    const WHAT: &'static str = "runtimeclass";
    fn api(client: kube::Client, _ns: &str) -> Api<Self> {
        Api::all(client)
    }
    fn wrap(slot: Slot<Self>) -> AnySlot {
        AnySlot::RuntimeClass(slot)
    }
    fn unwrap(slot: &AnySlot) -> Option<Slot<Self>> {
        if let AnySlot::RuntimeClass(s) = slot {
            Some(s.clone())
        } else {
            None
        }
    }
}

/// Keeps `slot` equal to the named object; errors (an apiserver away) keep the last value.
async fn follow_one<T: Named>(api: Api<T>, name: String, slot: Slot<T>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed: Option<T> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed = None,
            Ok(Event::InitApply(o)) => listed = Some(o),
            Ok(Event::InitDone) => *slot.write().expect("object slot poisoned") = Some(listed.take()),
            Ok(Event::Apply(o)) => *slot.write().expect("object slot poisoned") = Some(Some(o)),
            Ok(Event::Delete(_)) => *slot.write().expect("object slot poisoned") = Some(None),
            Err(e) => tracing::debug!(object = %name, error = %e, "watch failed; keeping the last value and retrying"),
        }
    }
}

/// Keeps the links of every namespace's Services.
async fn follow_services(client: kube::Client, cache: ServiceCache) {
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut listed: HashMap<String, BTreeMap<String, ServiceLink>> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(s)) => apply_service(&mut listed, &s),
            Ok(Event::InitDone) => *cache.write().expect("services cache poisoned") = Some(std::mem::take(&mut listed)),
            Ok(Event::Apply(s)) => {
                if let Some(all) = cache.write().expect("services cache poisoned").as_mut() {
                    apply_service(all, &s);
                }
            }
            Ok(Event::Delete(s)) => {
                if let Some(all) = cache.write().expect("services cache poisoned").as_mut() {
                    forget_service(all, &s);
                }
            }
            Err(e) => tracing::debug!(error = %e, "services watch failed; keeping the last list and retrying"),
        }
    }
}

/// Records the Service's link, or forgets it when it has none any more (pure).
fn apply_service(links: &mut HashMap<String, BTreeMap<String, ServiceLink>>, service: &Service) {
    match ServiceLink::of(service) {
        Some(link) => {
            links.entry(service.metadata.namespace.clone().unwrap_or_default()).or_default().insert(link.name.clone(), link);
        }
        None => forget_service(links, service),
    }
}

fn forget_service(links: &mut HashMap<String, BTreeMap<String, ServiceLink>>, service: &Service) {
    let ns = service.metadata.namespace.as_deref().unwrap_or_default();
    let Some(named) = links.get_mut(ns) else { return };
    named.remove(service.metadata.name.as_deref().unwrap_or_default());
    if named.is_empty() {
        links.remove(ns);
    }
}

/// The configMaps and secrets a pod references: volumes (projected too), env, envFrom.
pub fn references(pod: &Pod) -> Vec<Key> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut out = BTreeSet::new();
    let Some(spec) = &pod.spec else { return Vec::new() };
    let mut add = |kind, name: &str| {
        out.insert((kind, ns.clone(), name.to_string()));
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            add(Kind::ConfigMap, &cm.name);
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            add(Kind::Secret, name);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                add(Kind::ConfigMap, &cm.name);
            }
            if let Some(s) = &source.secret {
                add(Kind::Secret, &s.name);
            }
        }
    }
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    for c in containers {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                add(Kind::ConfigMap, &r.name);
            }
            if let Some(r) = &from.secret_ref {
                add(Kind::Secret, &r.name);
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                add(Kind::ConfigMap, &r.name);
            }
            if let Some(r) = &from.secret_key_ref {
                add(Kind::Secret, &r.name);
            }
        }
    }
    if let Some(name) = &spec.runtime_class_name {
        out.insert((Kind::RuntimeClass, String::new(), name.clone()));
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_cover_volumes_projections_env_and_env_from() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "volumes": [
                    {"name": "a", "configMap": {"name": "cm-vol"}},
                    {"name": "b", "secret": {"secretName": "s-vol"}},
                    {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}, {"downwardAPI": {}}]}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s-from"}}]}],
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cm-from"}}],
                    "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-vol", "key": "k"}}}, {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}}]}]
            }
        }))
        .unwrap();
        let refs = references(&pod);
        assert!(refs.iter().all(|(_, ns, _)| ns == "ns"));
        let names: Vec<(Kind, &str)> = refs.iter().map(|(k, _, n)| (*k, n.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (Kind::ConfigMap, "cm-from"),
                (Kind::ConfigMap, "cm-proj"),
                (Kind::ConfigMap, "cm-vol"),
                (Kind::Secret, "s-env"),
                (Kind::Secret, "s-from"),
                (Kind::Secret, "s-proj"),
                (Kind::Secret, "s-vol"),
            ]
        );
    }

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn services_are_kept_as_their_links() {
        let web = service(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}
        }));
        let link = ServiceLink::of(&web).unwrap();
        assert_eq!(link.name, "web");
        assert_eq!(link.cluster_ip, "10.96.0.9");
        assert_eq!(
            link.ports,
            vec![LinkPort { name: String::new(), port: 80, protocol: "TCP".into() }, LinkPort { name: "dns".into(), port: 53, protocol: "UDP".into() }]
        );
        let headless = service(serde_json::json!({"metadata": {"name": "h", "namespace": "ns"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let portless = service(serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.10"}}));
        assert_eq!((ServiceLink::of(&headless), ServiceLink::of(&portless)), (None, None));
    }

    #[test]
    fn a_service_that_loses_its_link_is_forgotten() {
        let mut links = HashMap::new();
        apply_service(
            &mut links,
            &service(serde_json::json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}})),
        );
        assert_eq!(links["ns"]["web"].cluster_ip, "10.96.0.9");
        apply_service(
            &mut links,
            &service(serde_json::json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})),
        );
        assert!(links.is_empty());
    }
}
