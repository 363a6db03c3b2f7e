//! The object store: every object as JSON, one global resourceVersion counter, a bounded
//! history of changes for watches, fan-out of new changes over a broadcast channel, and
//! persistence to a JSON file.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change: the object's state after the change (its last state for a deletion).
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: EventType,
    /// The resource key (`pods`, `leases.coordination.k8s.io`).
    pub resource: String,
    pub namespace: String,
    pub object: Value,
}

/// What a mutation closure decides to do with the object it was shown.
pub enum Outcome {
    /// Store this object (created or updated).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Leave the store unchanged and answer with this object.
    Unchanged(Value),
}

type Objects = BTreeMap<String, BTreeMap<(String, String), Value>>;

struct State {
    rv: u64,
    objects: Objects,
    history: VecDeque<Arc<Change>>,
    /// A watch from a resourceVersion below this one cannot be served.
    oldest_servable: u64,
    window: usize,
    dirty: bool,
}

pub struct Store {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Change>>,
    file: Option<PathBuf>,
}

/// A watch registered with the store: the past changes to replay, then the live feed.
pub struct Subscription {
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
    /// The resourceVersion the store had when the watch was registered.
    pub start_rv: u64,
}

impl Store {
    /// A store that keeps `window` changes for watches, loaded from `file` if it exists.
    pub fn open(file: Option<PathBuf>, window: usize) -> anyhow::Result<Store> {
        let mut rv = 0;
        let mut objects = Objects::new();
        if let Some(path) = file.as_deref().filter(|p| p.exists()) {
            let text = std::fs::read_to_string(path)?;
            let saved: Value = serde_json::from_str(&text)?;
            rv = saved["resourceVersion"].as_u64().unwrap_or(0);
            if let Some(map) = saved["objects"].as_object() {
                for (resource, items) in map {
                    let bucket = objects.entry(resource.clone()).or_default();
                    for item in items.as_array().into_iter().flatten() {
                        let ns = item["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
                        bucket.insert((ns, name), item.clone());
                    }
                }
            }
        }
        let (tx, _) = broadcast::channel(4096);
        Ok(Store {
            state: Mutex::new(State {
                rv,
                objects,
                history: VecDeque::new(),
                oldest_servable: rv,
                window: window.max(1),
                dirty: false,
            }),
            tx,
            file,
        })
    }

    pub fn current_rv(&self) -> u64 {
        self.state.lock().unwrap().rv
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(resource)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource (in one namespace if `ns` is Some), with the list's resourceVersion.
    pub fn list(&self, resource: &str, ns: Option<&str>) -> (Vec<Value>, u64) {
        let st = self.state.lock().unwrap();
        let items = st
            .objects
            .get(resource)
            .map(|bucket| {
                bucket
                    .iter()
                    .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, st.rv)
    }

    /// Runs `f` on the current object (None if absent) under the store lock, and applies what it
    /// decides: a new resourceVersion is given to every written or deleted object.
    /// Returns the object as stored (or as it was at deletion) and whether anything changed.
    pub fn mutate<F>(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        f: F,
    ) -> ApiResult<(Value, Option<EventType>)>
    where
        F: FnOnce(Option<&Value>) -> ApiResult<Outcome>,
    {
        let mut st = self.state.lock().unwrap();
        let key = (ns.to_string(), name.to_string());
        let current = st.objects.get(resource).and_then(|b| b.get(&key));
        let existed = current.is_some();
        match f(current)? {
            Outcome::Unchanged(v) => Ok((v, None)),
            Outcome::Put(mut obj) => {
                st.rv += 1;
                let rv = st.rv;
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                st.objects
                    .entry(resource.to_string())
                    .or_default()
                    .insert(key, obj.clone());
                let kind = if existed {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                self.record(&mut st, kind, resource, ns, obj.clone());
                Ok((obj, Some(kind)))
            }
            Outcome::Delete => {
                let Some(mut obj) = st.objects.get_mut(resource).and_then(|b| b.remove(&key))
                else {
                    return Err(ApiError::internal("delete of an absent object"));
                };
                st.rv += 1;
                let rv = st.rv;
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.record(&mut st, EventType::Deleted, resource, ns, obj.clone());
                Ok((obj, Some(EventType::Deleted)))
            }
        }
    }

    /// Removes every namespaced object of namespace `ns`.
    pub fn delete_namespace_contents(&self, ns: &str) {
        let mut st = self.state.lock().unwrap();
        let resources: Vec<String> = st.objects.keys().cloned().collect();
        for resource in resources {
            let keys: Vec<(String, String)> = st.objects[&resource]
                .keys()
                .filter(|(o_ns, _)| o_ns == ns)
                .cloned()
                .collect();
            for key in keys {
                let mut obj = st.objects.get_mut(&resource).unwrap().remove(&key).unwrap();
                st.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                self.record(&mut st, EventType::Deleted, &resource, ns, obj);
            }
        }
    }

    fn record(&self, st: &mut State, kind: EventType, resource: &str, ns: &str, object: Value) {
        let change = Arc::new(Change {
            rv: st.rv,
            kind,
            resource: resource.to_string(),
            namespace: ns.to_string(),
            object,
        });
        st.history.push_back(change.clone());
        while st.history.len() > st.window {
            let dropped = st.history.pop_front().unwrap();
            st.oldest_servable = dropped.rv;
        }
        st.dirty = true;
        // No receiver is fine: nobody watches.
        let _ = self.tx.send(change);
    }

    /// Registers a watch for changes after `from_rv` (None: from now on).
    /// Fails with 410 Expired when `from_rv` is older than the retained history.
    pub fn subscribe(&self, from_rv: Option<u64>) -> ApiResult<Subscription> {
        let st = self.state.lock().unwrap();
        let live = self.tx.subscribe();
        let replay = match from_rv {
            None => Vec::new(),
            Some(rv) if rv < st.oldest_servable => {
                return Err(ApiError::gone_expired(rv, st.oldest_servable))
            }
            // A resourceVersion from the future: the real server waits for it; we serve from now.
            Some(rv) => st.history.iter().filter(|c| c.rv > rv).cloned().collect(),
        };
        Ok(Subscription {
            replay,
            live,
            start_rv: st.rv,
        })
    }

    /// The current objects of a resource, and a watch for every change after them.
    pub fn snapshot_and_subscribe(
        &self,
        resource: &str,
        ns: Option<&str>,
    ) -> (Vec<Value>, Subscription) {
        let st = self.state.lock().unwrap();
        let live = self.tx.subscribe();
        let items = st
            .objects
            .get(resource)
            .map(|b| {
                b.iter()
                    .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (
            items,
            Subscription {
                replay: Vec::new(),
                live,
                start_rv: st.rv,
            },
        )
    }

    /// Writes the store to its file if it changed since the last save.
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let text = {
            let mut st = self.state.lock().unwrap();
            if !st.dirty {
                return Ok(());
            }
            st.dirty = false;
            let mut objects = serde_json::Map::new();
            for (resource, bucket) in &st.objects {
                objects.insert(
                    resource.clone(),
                    Value::Array(bucket.values().cloned().collect()),
                );
            }
            serde_json::to_string(&json!({"resourceVersion": st.rv, "objects": objects}))?
        };
        write_atomic(path, text.as_bytes())
    }
}

pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
