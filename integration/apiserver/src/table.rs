//! Server-side printing: the `Table` (meta.k8s.io/v1) answer that `kubectl get` asks for.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::discovery::ResourceDef;

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// kubectl's short human durations: 45s, 12m, 5h, 3d.
pub fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(|t| humantime::parse_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..10800 => format!("{}m", secs / 60),
        10800..172800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn pod_row(p: &Value) -> Vec<Value> {
    let statuses = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = p["spec"]["containers"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let mut status = p["status"]["reason"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| s(&p["status"]["phase"]));
    for c in &statuses {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            status = r.to_string();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            status = r.to_string();
        }
    }
    if !p["metadata"]["deletionTimestamp"].is_null() {
        status = "Terminating".into();
    }
    let or_none = |v: String| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v
        }
    };
    vec![
        json!(s(&p["metadata"]["name"])),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(&p["metadata"]["creationTimestamp"])),
        json!(or_none(s(&p["status"]["podIP"]))),
        json!(or_none(s(&p["spec"]["nodeName"]))),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn node_row(n: &Value) -> Vec<Value> {
    let ready = n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready",
            Some("False") => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if n["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(str::to_string)
        })
        .collect();
    roles.sort();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let addr = |ty: &str| {
        n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == ty)
            .map(|a| s(&a["address"]))
            .unwrap_or_else(|| "<none>".into())
    };
    let info = &n["status"]["nodeInfo"];
    vec![
        json!(s(&n["metadata"]["name"])),
        json!(status),
        json!(roles),
        json!(age(&n["metadata"]["creationTimestamp"])),
        json!(s(&info["kubeletVersion"])),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(s(&info["osImage"])),
        json!(s(&info["kernelVersion"])),
        json!(s(&info["containerRuntimeVersion"])),
    ]
}

fn service_row(v: &Value) -> Vec<Value> {
    let ports: Vec<String> = v["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    vec![
        json!(s(&v["metadata"]["name"])),
        json!(s(&v["spec"]["type"])),
        json!(s(&v["spec"]["clusterIP"])),
        json!("<none>"),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        json!(age(&v["metadata"]["creationTimestamp"])),
    ]
}

type RowFn = fn(&Value) -> Vec<Value>;

/// The columns and one row per object for the resource type `def`.
pub fn render(
    def: &ResourceDef,
    items: &[Value],
    rv: Option<u64>,
    query: &HashMap<String, String>,
) -> Value {
    let (columns, row): (Vec<Value>, RowFn) = match def.key().as_str() {
        "pods" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "integer", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            pod_row,
        ),
        "nodes" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
                col("Internal-IP", "string", 1),
                col("External-IP", "string", 1),
                col("OS-Image", "string", 1),
                col("Kernel-Version", "string", 1),
                col("Container-Runtime", "string", 1),
            ],
            node_row,
        ),
        "namespaces" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            |n| {
                vec![
                    json!(s(&n["metadata"]["name"])),
                    json!(s(&n["status"]["phase"])),
                    json!(age(&n["metadata"]["creationTimestamp"])),
                ]
            },
        ),
        "services" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Cluster-IP", "string", 0),
                col("External-IP", "string", 0),
                col("Port(s)", "string", 0),
                col("Age", "string", 0),
            ],
            service_row,
        ),
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            |o| {
                vec![
                    json!(s(&o["metadata"]["name"])),
                    json!(age(&o["metadata"]["creationTimestamp"])),
                ]
            },
        ),
    };
    let include = query
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut r = json!({"cells": row(o)});
            match include {
                "None" => {}
                "Object" => r["object"] = o.clone(),
                _ => {
                    r["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            r
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns, "rows": rows})
}
