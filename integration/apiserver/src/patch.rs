//! The three patch formats: JSON merge patch (RFC 7386), the subset of Kubernetes strategic
//! merge patch that node agents send, and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

pub const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json";

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }
}

pub fn apply(kind: PatchType, target: &Value, patch: &[u8]) -> ApiResult<Value> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "json: cannot unmarshal patch into Go value of type map[string]interface {}",
                ));
            }
            Ok(merge_patch(target, &patch))
        }
        PatchType::Strategic => {
            let Value::Object(p) = &patch else {
                return Err(ApiError::bad_request(
                    "invalid JSON document: strategic merge patch must be an object",
                ));
            };
            let mut out = target.clone();
            strategic_map(&mut out, p, "")?;
            Ok(out)
        }
        PatchType::Json => json_patch(target, &patch),
    }
}

pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// The merge key of a list field, if the list is merged element by element.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    Some(match field {
        "conditions" | "addresses" => "type",
        "containerStatuses" | "initContainerStatuses" | "ephemeralContainerStatuses" => "name",
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "podIPs" | "hostIPs" => "ip",
        "ownerReferences" => "uid",
        "ports" if has("containerPort") => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// Lists of scalars merged as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

fn strategic_map(target: &mut Value, patch: &Map<String, Value>, path: &str) -> ApiResult<()> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            strip_directives(&mut p);
            *target = Value::Object(p);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) if other != "merge" => {
            return Err(ApiError::bad_request(format!(
                "Unknown patch type: {other} in map patch at {path}"
            )));
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, v) in patch {
        if k == "$patch" || k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let Value::Array(remove) = v else {
                return Err(ApiError::bad_request(
                    "invalid patch: $deleteFromPrimitiveList needs a list",
                ));
            };
            if let Some(Value::Array(items)) = target.get_mut(list) {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        let t = target.as_object_mut().unwrap();
        let child_path = format!("{path}/{k}");
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(pm) => {
                let mut child = t.remove(k).unwrap_or(Value::Null);
                strategic_map(&mut child, pm, &child_path)?;
                if !child.is_null() {
                    t.insert(k.clone(), child);
                }
            }
            Value::Array(pl) => {
                let current = t.remove(k);
                let merged = strategic_list(k, current, pl, &child_path)?;
                t.insert(k.clone(), merged);
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    Ok(())
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
}

fn strategic_list(
    field: &str,
    current: Option<Value>,
    patch: &[Value],
    path: &str,
) -> ApiResult<Value> {
    // A list whose first element is {"$patch": "replace"} replaces the whole list.
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let items: Vec<Value> = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(items));
    }
    let mut cur = match current {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    if is_set_list(field) {
        for item in patch {
            if !cur.contains(item) {
                cur.push(item.clone());
            }
        }
        return Ok(Value::Array(cur));
    }
    let all: Vec<Value> = cur.iter().chain(patch.iter()).cloned().collect();
    let Some(key) = merge_key(field, &all) else {
        let mut items = patch.to_vec();
        for i in items.iter_mut() {
            if let Value::Object(m) = i {
                strip_directives(m);
            }
        }
        return Ok(Value::Array(items));
    };
    for item in patch {
        let Value::Object(pm) = item else {
            return Err(ApiError::bad_request(format!(
                "invalid patch at {path}: list element is not an object"
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(ApiError::bad_request(format!(
                "map: {pm:?} does not contain declared merge key: {key}"
            )));
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(kv));
        let deleting = pm.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, deleting) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_map(&mut cur[i], pm, path)?,
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic_map(&mut fresh, pm, path)?;
                cur.push(fresh);
            }
        }
    }
    Ok(Value::Array(cur))
}

fn json_patch(target: &Value, patch: &Value) -> ApiResult<Value> {
    let Value::Array(ops) = patch else {
        return Err(ApiError::bad_request(
            "json patch must be a list of operations",
        ));
    };
    let mut doc = target.clone();
    for op in ops {
        let name = op["op"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("json patch operation without \"op\""))?;
        let path = op["path"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("json patch operation without \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("{name} operation without a value")))
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "test" => {
                let got = doc.pointer(path);
                if got != Some(&value()?) {
                    return Err(unprocessable(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or_else(|| {
                    ApiError::bad_request(format!("{name} operation without \"from\""))
                })?;
                let v = if name == "move" {
                    remove(&mut doc, from)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(|| missing(from))?
                };
                add(&mut doc, path, v)?;
            }
            other => return Err(ApiError::bad_request(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

fn unprocessable(msg: String) -> ApiError {
    ApiError::new(422, "Invalid", msg)
}

fn missing(path: &str) -> ApiError {
    unprocessable(format!("doc is missing path: \"{path}\": missing value"))
}

fn split_pointer(path: &str) -> ApiResult<(String, String)> {
    if path.is_empty() {
        return Err(ApiError::bad_request(
            "json patch: the whole document cannot be replaced",
        ));
    }
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid path {path:?}")))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(doc: &mut Value, path: &str, value: Value) -> ApiResult<()> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| missing(path))?;
            if i > a.len() {
                return Err(missing(path));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &str) -> ApiResult<Value> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| missing(path)),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| missing(path))?;
            if i >= a.len() {
                return Err(missing(path));
            }
            Ok(a.remove(i))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_conditions_merge_by_type() {
        let pod = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}],
            "containerStatuses": [{"name": "a", "ready": false}]}});
        let patch = json!({"status": {"$setElementOrder/conditions": [{"type": "Ready"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "a", "ready": true}, {"name": "b", "ready": false}],
            "phase": "Running"}});
        let out = apply(PatchType::Strategic, &pod, patch.to_string().as_bytes()).unwrap();
        assert_eq!(out["status"]["phase"], "Running");
        let conds = out["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 3);
        assert_eq!(conds[0], json!({"type": "Ready", "status": "True"}));
        assert_eq!(out["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(
            out["status"]["containerStatuses"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn strategic_directives() {
        let obj = json!({"spec": {"taints": [{"key": "a"}], "x": {"a": 1, "b": 2}}, "metadata": {"finalizers": ["f1"]}});
        let patch = json!({"spec": {"taints": [{"key": "b"}], "x": {"$patch": "replace", "c": 3}},
            "metadata": {"finalizers": ["f2"]}});
        let out = apply(PatchType::Strategic, &obj, patch.to_string().as_bytes()).unwrap();
        assert_eq!(out["spec"]["taints"], json!([{"key": "b"}]));
        assert_eq!(out["spec"]["x"], json!({"c": 3}));
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
    }

    #[test]
    fn merge_and_json_patch() {
        let obj = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = apply(
            PatchType::Merge,
            &obj,
            br#"{"a": {"b": null, "d": 4}, "l": [3]}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"c": 2, "d": 4}, "l": [3]}));
        let out = apply(
            PatchType::Json,
            &obj,
            br#"[{"op":"test","path":"/a/b","value":1},{"op":"add","path":"/l/-","value":9},{"op":"remove","path":"/a/c"},{"op":"replace","path":"/a/b","value":5}]"#,
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"b": 5}, "l": [1, 2, 9]}));
        let err = apply(
            PatchType::Json,
            &obj,
            br#"[{"op":"test","path":"/a/b","value":7}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }
}
