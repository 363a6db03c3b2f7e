//! Feeds the proxier from the apiserver: Services and EndpointSlices of all namespaces, listed
//! then watched (relisted on 410). After a relist, objects that vanished meanwhile are deleted,
//! so an apiserver outage cannot leave stale rules behind.

use super::Proxier;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::Arc;

/// What the proxiers (one per address family) do with one kind of object.
trait Feed: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static {
    fn upsert(proxier: &Proxier, object: &Self);
    fn delete(proxier: &Proxier, namespace: &str, name: &str);
}

impl Feed for Service {
    fn upsert(proxier: &Proxier, object: &Self) {
        proxier.upsert_service(object);
    }
    fn delete(proxier: &Proxier, namespace: &str, name: &str) {
        proxier.delete_service(namespace, name);
    }
}

impl Feed for EndpointSlice {
    fn upsert(proxier: &Proxier, object: &Self) {
        proxier.upsert_slice(object);
    }
    fn delete(proxier: &Proxier, namespace: &str, name: &str) {
        proxier.delete_slice(namespace, name);
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
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut relisted: HashSet<(String, String)> = HashSet::new();
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relisted.clear(),
            Ok(Event::InitApply(o)) => {
                relisted.insert(key(&o));
                proxiers.iter().for_each(|p| K::upsert(p, &o));
            }
            Ok(Event::InitDone) => {
                for (ns, name) in known.difference(&relisted) {
                    proxiers.iter().for_each(|p| K::delete(p, ns, name));
                }
                known = std::mem::take(&mut relisted);
            }
            Ok(Event::Apply(o)) => {
                known.insert(key(&o));
                proxiers.iter().for_each(|p| K::upsert(p, &o));
            }
            Ok(Event::Delete(o)) => {
                let (ns, name) = key(&o);
                known.remove(&(ns.clone(), name.clone()));
                proxiers.iter().for_each(|p| K::delete(p, &ns, &name));
            }
            Err(e) => tracing::warn!(error = %e, "watching {} for the proxy failed; retrying", K::plural(&())),
        }
    }
}
