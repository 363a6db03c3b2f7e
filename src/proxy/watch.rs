//! Feeds the proxier from the apiserver: Services and EndpointSlices of all namespaces, listed
//! then watched (relisted on 410) by kube-runtime's watcher. A list is collected until it is
//! complete, then the proxiers get all of it at once (one sync) and objects that vanished
//! meanwhile are deleted, so an apiserver outage cannot leave stale rules behind. No copy of
//! the objects is kept beyond that (no reflector store): the proxiers' model is the only one,
//! which at 1,000s of Services is most of the agent's memory saved.

use super::Proxier;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

/// What the proxiers (one per address family) do with one kind of object.
trait Feed: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static {
    fn upsert(proxier: &Proxier, object: &Self);
    /// The whole list: upserts each, deletes what it lacks.
    fn replace(proxier: &Proxier, all: &[Self]);
    fn delete(proxier: &Proxier, namespace: &str, name: &str);
    fn plural_static() -> &'static str;
}

/// A 403 from the apiserver, told as what is refused and how to grant it (a node's own
/// credentials may not list EndpointSlices; kube-proxy runs as system:kube-proxy).
fn refusal(error: &watcher::Error, resource: &str) -> Option<String> {
    let api = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(api)) | watcher::Error::WatchStartFailed(kube::Error::Api(api)) => api,
        watcher::Error::WatchError(api) => api,
        _ => return None,
    };
    (api.code == 403).then(|| refusal_message(resource, &api.message))
}

pub fn refusal_message(resource: &str, apiserver_says: &str) -> String {
    format!(
        "the apiserver refuses the Service proxy to list and watch {resource} at cluster scope ({apiserver_says}): \
         give nodelet kube-proxy's credentials with --proxy-kubeconfig (user system:kube-proxy), or bind the \
         ClusterRole system:node-proxier to the proxy's user (kubectl create clusterrolebinding nodelet-proxier \
         --clusterrole=system:node-proxier --user=<user>); retrying with back-off"
    )
}

impl Feed for Service {
    fn upsert(proxier: &Proxier, object: &Self) {
        proxier.upsert_service(object);
    }
    fn replace(proxier: &Proxier, all: &[Self]) {
        proxier.replace_services(all.iter());
    }
    fn delete(proxier: &Proxier, namespace: &str, name: &str) {
        proxier.delete_service(namespace, name);
    }
    fn plural_static() -> &'static str {
        "services"
    }
}

impl Feed for EndpointSlice {
    fn upsert(proxier: &Proxier, object: &Self) {
        proxier.upsert_slice(object);
    }
    fn replace(proxier: &Proxier, all: &[Self]) {
        proxier.replace_slices(all.iter());
    }
    fn delete(proxier: &Proxier, namespace: &str, name: &str) {
        proxier.delete_slice(namespace, name);
    }
    fn plural_static() -> &'static str {
        "endpointslices.discovery.k8s.io"
    }
}

/// Feeds every object to each proxier; each takes the part of its address family.
pub async fn follow(client: kube::Client, proxiers: Vec<Arc<Proxier>>) {
    let services = tokio::spawn(follow_kind::<Service>(client.clone(), proxiers.clone()));
    let slices = tokio::spawn(follow_kind::<EndpointSlice>(client, proxiers));
    let _ = tokio::join!(services, slices);
}

async fn follow_kind<K>(client: kube::Client, proxiers: Vec<Arc<Proxier>>)
where
    K: Feed<DynamicType = ()>,
{
    let api: Api<K> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    // A list being received, until it is complete; managedFields (the largest part of most
    // objects) are dropped on arrival.
    let mut listed: Vec<K> = Vec::new();
    let resource = K::plural_static();
    // Told once: a refused permission is logged when it starts and when it ends, not per retry.
    let mut refused = false;
    while let Some(event) = stream.next().await {
        // Init opens every list attempt, refused or not: only what a list or watch gave counts.
        let answered = matches!(event, Ok(Event::InitApply(_) | Event::InitDone | Event::Apply(_) | Event::Delete(_)));
        if answered && std::mem::take(&mut refused) {
            tracing::info!("the apiserver now lets the proxy watch {resource}");
            proxiers.iter().for_each(|p| p.set_refused(K::plural_static(), None));
        }
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(mut o)) => {
                o.meta_mut().managed_fields = None;
                listed.push(o);
            }
            Ok(Event::InitDone) => {
                let all = std::mem::take(&mut listed);
                proxiers.iter().for_each(|p| K::replace(p, &all));
            }
            Ok(Event::Apply(o)) => proxiers.iter().for_each(|p| K::upsert(p, &o)),
            Ok(Event::Delete(o)) => {
                let (ns, name) = (o.namespace().unwrap_or_default(), o.name_any());
                proxiers.iter().for_each(|p| K::delete(p, &ns, &name));
            }
            Err(e) => match refusal(&e, resource) {
                Some(why) => {
                    if !std::mem::replace(&mut refused, true) {
                        tracing::error!("{why}");
                    }
                    proxiers.iter().for_each(|p| p.set_refused(K::plural_static(), Some(why.clone())));
                }
                None => tracing::warn!(error = %e, "watching {resource} for the proxy failed; retrying with back-off"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_403_is_told_as_the_permission_and_how_to_grant_it() {
        let message = "endpointslices.discovery.k8s.io is forbidden: User \"system:node:vm\" cannot list resource \"endpointslices\"";
        let api = kube::core::Status::failure(message, "Forbidden").with_code(403).boxed();
        let why = refusal(&watcher::Error::InitialListFailed(kube::Error::Api(api.clone())), "endpointslices.discovery.k8s.io").unwrap();
        assert!(why.contains("system:node:vm") && why.contains("--proxy-kubeconfig") && why.contains("system:node-proxier"), "{why}");
        let not_found = kube::core::Status::failure("gone", "NotFound").with_code(404).boxed();
        assert!(refusal(&watcher::Error::InitialListFailed(kube::Error::Api(not_found)), "services").is_none());
    }
}
