//! Label selectors and field selectors, parsed and matched as kube-apiserver does.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<(String, LabelOp)>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn bad_label(s: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why}: {s:?}"))
}

fn check_key(key: &str, whole: &str) -> ApiResult<String> {
    let key = key.trim();
    if key.is_empty() || crate::admission::qualified_name_error(key).is_some() {
        return Err(bad_label(whole, "invalid label key"));
    }
    Ok(key.to_string())
}

fn check_value(v: &str, whole: &str) -> ApiResult<String> {
    let v = v.trim();
    if crate::admission::label_value_error(v).is_some() {
        return Err(bad_label(whole, "invalid label value"));
    }
    Ok(v.to_string())
}

impl LabelSelector {
    pub fn parse(s: &str) -> ApiResult<LabelSelector> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad_label(s, "empty requirement"));
            }
            if let Some(key) = p.strip_prefix('!') {
                reqs.push((check_key(key, s)?, LabelOp::NotExists));
            } else if let Some((k, v)) = p.split_once("!=") {
                reqs.push((check_key(k, s)?, LabelOp::NotEq(check_value(v, s)?)));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push((check_key(k, s)?, LabelOp::Eq(check_value(v, s)?)));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push((check_key(k, s)?, LabelOp::Eq(check_value(v, s)?)));
            } else if let Some(open) = p.find('(') {
                let head = p[..open].trim();
                let Some(body) = p[open + 1..].strip_suffix(')') else {
                    return Err(bad_label(s, "found '(', expected: ')'"));
                };
                let (key, op) = head
                    .rsplit_once(char::is_whitespace)
                    .ok_or_else(|| bad_label(s, "missing operator"))?;
                let mut values = BTreeSet::new();
                for v in body.split(',') {
                    values.insert(check_value(v, s)?);
                }
                let op = match op.trim() {
                    "in" => LabelOp::In(values),
                    "notin" => LabelOp::NotIn(values),
                    _ => return Err(bad_label(s, "unknown operator")),
                };
                reqs.push((check_key(key, s)?, op));
            } else {
                reqs.push((check_key(p, s)?, LabelOp::Exists));
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.0.iter().all(|(key, op)| {
            let v = labels.get(key).and_then(Value::as_str);
            match op {
                LabelOp::Eq(want) => v == Some(want.as_str()),
                LabelOp::NotEq(want) => v != Some(want.as_str()),
                LabelOp::In(set) => v.is_some_and(|v| set.contains(v)),
                LabelOp::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
            }
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields each resource can be selected on, besides metadata.name and metadata.namespace.
fn extra_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        "secrets" => &["type"],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, resource: &str) -> ApiResult<FieldSelector> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in s.split(',') {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !extra_fields(resource).contains(&field)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// The name asked for by `metadata.name=<name>`, if any.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let got = field_value(obj, field);
            (got == *want) == *eq
        })
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for part in field.split('.') {
        cur = &cur[part];
    }
    if field == "source" {
        // events: source is source.component
        return obj["source"]["component"]
            .as_str()
            .unwrap_or("")
            .to_string();
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => match field {
            "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
            _ => String::new(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_ops() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&obj);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("env!=prod"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web)"));
        assert!(m("env notin (x)"));
        assert!(m("!env"));
        assert!(!m("!app"));
        assert!(m(""));
        assert!(LabelSelector::parse("a=b=c").is_err());
    }

    #[test]
    fn field_selector_ops() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let m = |s: &str| FieldSelector::parse(s, "pods").unwrap().matches(&pod);
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.nodeName=n1,status.phase!=Failed"));
        assert!(!m("metadata.name=q"));
        let err = FieldSelector::parse("spec.foo=x", "pods").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(FieldSelector::parse("spec.nodeName=x", "configmaps").is_err());
    }
}
