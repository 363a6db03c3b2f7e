//! What the real apiserver does to an object between decoding and storing it: defaulting,
//! validation, and the ServiceAccount admission plugin.

use serde_json::{json, Map, Value};

use crate::discovery::ResourceDef;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::store::Store;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QNAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

/// Why `s` is not a DNS-1123 label, if it is not.
pub fn dns_label_error(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!is_dns_label(s)).then(|| LABEL_MSG.to_string())
}

pub fn dns1035_error(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!is_dns_label(s) || !s.starts_with(|c: char| c.is_ascii_lowercase()))
        .then(|| DNS1035_MSG.to_string())
}

pub fn subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    (!s.split('.')
        .all(|part| !part.is_empty() && is_lower_alnum_label(part)))
    .then(|| SUBDOMAIN_MSG.to_string())
}

fn is_lower_alnum_label(s: &str) -> bool {
    s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

fn is_qname_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why `s` is not a qualified name (a label or annotation key), if it is not.
pub fn qualified_name_error(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(e) = subdomain_error(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    (!is_qname_part(name)).then(|| QNAME_MSG.to_string())
}

pub fn label_value_error(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!s.is_empty() && !is_qname_part(s)).then(|| LABEL_VALUE_MSG.to_string())
}

fn path_segment_error(s: &str) -> Option<String> {
    if s == "." || s == ".." {
        return Some(format!("may not be '{s}'"));
    }
    (s.contains('/') || s.contains('%')).then(|| "may not contain '/' or '%'".to_string())
}

/// Validates metadata (name, labels) of any object.
pub fn validate_meta(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name"));
    } else {
        let problem = match def.plural {
            "namespaces" => dns_label_error(name),
            "services" => dns1035_error(name),
            "events" => path_segment_error(name),
            _ => subdomain_error(name),
        };
        if let Some(p) = problem {
            errs.push(FieldError::invalid("metadata.name", name, &p));
        }
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if let Some(p) = qualified_name_error(k) {
                errs.push(FieldError::invalid("metadata.labels", k, &p));
            }
            match v.as_str() {
                Some(v) => {
                    if let Some(p) = label_value_error(v) {
                        errs.push(FieldError::invalid(format!("metadata.labels[{k}]"), v, &p));
                    }
                }
                None => errs.push(FieldError::invalid(
                    format!("metadata.labels[{k}]"),
                    &v.to_string(),
                    "must be a string",
                )),
            }
        }
    }
    if let Some(annotations) = obj["metadata"]["annotations"].as_object() {
        for k in annotations.keys() {
            if let Some(p) = qualified_name_error(k) {
                errs.push(FieldError::invalid("metadata.annotations", k, &p));
            }
        }
    }
    errs
}

/// Validates the type-specific part of an object.
pub fn validate(def: &ResourceDef, obj: &Value) -> ApiResult<()> {
    let mut errs = validate_meta(def, obj);
    match def.key().as_str() {
        "pods" => validate_pod(obj, &mut errs),
        "services" => validate_service(obj, &mut errs),
        "events" => {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
            if let Some(ins) = obj["involvedObject"]["namespace"].as_str() {
                if !ins.is_empty() && ins != ns {
                    errs.push(FieldError::invalid(
                        "involvedObject.namespace",
                        ins,
                        "does not match event.namespace",
                    ));
                }
            }
        }
        "events.events.k8s.io" => {
            for f in [
                "eventTime",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
            ] {
                if obj[f].as_str().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(f));
                }
            }
            if let Some(t) = obj["type"].as_str() {
                if t != "Normal" && t != "Warning" {
                    errs.push(FieldError::unsupported("type", t, &["Normal", "Warning"]));
                }
            }
        }
        _ => {}
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    Err(ApiError::invalid(def.group, def.kind, name, errs))
}

fn validate_pod(pod: &Value, errs: &mut Vec<FieldError>) {
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        errs.push(FieldError::required("spec.containers"));
    }
    let volume_names: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let name = v["name"].as_str().unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(format!("spec.volumes[{i}].name")));
        } else if let Some(p) = dns_label_error(name) {
            errs.push(FieldError::invalid(
                format!("spec.volumes[{i}].name"),
                name,
                &p,
            ));
        } else if volume_names.iter().filter(|n| **n == name).count() > 1
            && volume_names.iter().position(|n| *n == name) != Some(i)
        {
            errs.push(FieldError::duplicate(
                format!("spec.volumes[{i}].name"),
                name,
            ));
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.{list}[{i}]");
            let name = c["name"].as_str().unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{at}.name")));
            } else if let Some(p) = dns_label_error(name) {
                errs.push(FieldError::invalid(format!("{at}.name"), name, &p));
            } else if seen.iter().any(|s| s == name) {
                errs.push(FieldError::duplicate(format!("{at}.name"), name));
            }
            seen.push(name.to_string());
            if c["image"].as_str().unwrap_or("").trim().is_empty() {
                errs.push(FieldError::required(format!("{at}.image")));
            }
            if let Some(policy) = c["imagePullPolicy"].as_str() {
                let ok = ["Always", "IfNotPresent", "Never"];
                if !ok.contains(&policy) {
                    errs.push(FieldError::unsupported(
                        format!("{at}.imagePullPolicy"),
                        policy,
                        &ok,
                    ));
                }
            }
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let vname = m["name"].as_str().unwrap_or("");
                if !volume_names.contains(&vname) {
                    errs.push(FieldError {
                        reason: "FieldValueNotFound",
                        field: format!("{at}.volumeMounts[{j}].name"),
                        message: format!("Not found: {}", json!(vname)),
                    });
                }
                if m["mountPath"].as_str().unwrap_or("").is_empty() {
                    errs.push(FieldError::required(format!(
                        "{at}.volumeMounts[{j}].mountPath"
                    )));
                }
            }
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let port = p["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldError::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    if let Some(p) = spec["restartPolicy"].as_str() {
        let ok = ["Always", "OnFailure", "Never"];
        if !ok.contains(&p) {
            errs.push(FieldError::unsupported("spec.restartPolicy", p, &ok));
        }
    }
    if let Some(p) = spec["dnsPolicy"].as_str() {
        let ok = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
        if !ok.contains(&p) {
            errs.push(FieldError::unsupported("spec.dnsPolicy", p, &ok));
        }
    }
}

fn validate_service(svc: &Value, errs: &mut Vec<FieldError>) {
    let spec = &svc["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    for (i, p) in ports.iter().enumerate() {
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                &port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.len() > 1 && p["name"].as_str().unwrap_or("").is_empty() {
            errs.push(FieldError::required(format!("spec.ports[{i}].name")));
        }
    }
}

/// Pod defaults applied on every write, as the apiserver's defaulting functions do.
pub fn default_pod_spec(pod: &mut Value) {
    let spec = obj(&mut pod["spec"]);
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    if let Some(sa) = spec
        .get("serviceAccount")
        .cloned()
        .filter(|v| v.is_string())
    {
        set_default(spec, "serviceAccountName", sa);
    }
    set_default(spec, "serviceAccountName", json!("default"));
    let sa_name = spec["serviceAccountName"].clone();
    set_default(spec, "serviceAccount", sa_name);
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                default_container(c);
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols {
            for src in ["secret", "configMap", "projected", "downwardAPI"] {
                if let Some(s @ Value::Object(_)) = v.get_mut(src) {
                    set_default(obj(s), "defaultMode", json!(420));
                }
            }
            if let Some(e @ Value::Object(_)) = v.get_mut("emptyDir") {
                let _ = obj(e);
            }
        }
    }
}

/// Defaults that only the create path sets (the pod spec cannot change afterwards anyway).
fn default_pod_create(pod: &mut Value) {
    let spec = obj(&mut pod["spec"]);
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // The DefaultTolerationSeconds admission plugin.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(ts) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let present = ts.iter().any(|t| {
                (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                    && (t["effect"].is_null() || t["effect"] == "NoExecute")
            });
            if !present {
                ts.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    let status = obj(&mut pod["status"]);
    set_default(status, "phase", json!("Pending"));
    let qos = qos_class(&pod["spec"]);
    pod["status"]["qosClass"] = json!(qos);
}

fn default_container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    let m = obj(c);
    set_default(m, "imagePullPolicy", json!(pull_policy_for(&image)));
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    set_default(m, "resources", json!({}));
    if let Some(Value::Array(ports)) = m.get_mut("ports") {
        for p in ports {
            set_default(obj(p), "protocol", json!("TCP"));
        }
    }
    // Requests default to limits.
    if let Some(limits) = m
        .get("resources")
        .and_then(|r| r.get("limits"))
        .and_then(Value::as_object)
        .cloned()
    {
        let req = obj(m.get_mut("resources").unwrap())
            .entry("requests")
            .or_insert_with(|| json!({}));
        for (k, v) in limits {
            set_default(obj(req), &k, v);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p @ Value::Object(_)) = m.get_mut(probe) {
            let pm = obj(p);
            set_default(pm, "timeoutSeconds", json!(1));
            set_default(pm, "periodSeconds", json!(10));
            set_default(pm, "successThreshold", json!(1));
            set_default(pm, "failureThreshold", json!(3));
            if let Some(h @ Value::Object(_)) = pm.get_mut("httpGet") {
                set_default(obj(h), "scheme", json!("HTTP"));
                set_default(obj(h), "path", json!("/"));
            }
        }
    }
}

/// Always for `:latest` or untagged images, IfNotPresent otherwise.
pub fn pull_policy_for(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            if !req[r].is_null() || !lim[r].is_null() {
                any = true;
            }
            if lim[r].is_null() || (!req[r].is_null() && req[r] != lim[r]) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().unwrap()
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

pub fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Create-time defaults and admission for an object about to be stored.
pub fn admit_create(store: &Store, def: &ResourceDef, o: &mut Value) -> ApiResult<()> {
    match def.key().as_str() {
        "pods" => {
            default_pod_spec(o);
            default_pod_create(o);
            service_account_admission(store, o)?;
        }
        "namespaces" => {
            let name = o["metadata"]["name"].clone();
            obj(&mut o["metadata"]["labels"]).insert("kubernetes.io/metadata.name".into(), name);
            set_default(obj(&mut o["spec"]), "finalizers", json!(["kubernetes"]));
            o["status"] = json!({"phase": "Active"});
        }
        "secrets" => default_secret(o),
        "services" => default_service(o),
        "nodes" => {
            let status = obj(&mut o["status"]);
            set_default(
                status,
                "daemonEndpoints",
                json!({"kubeletEndpoint": {"Port": 0}}),
            );
            set_default(status, "nodeInfo", json!({}));
        }
        _ => {}
    }
    Ok(())
}

/// Defaults applied on update as well.
pub fn admit_update(def: &ResourceDef, o: &mut Value) {
    match def.key().as_str() {
        "pods" => default_pod_spec(o),
        "secrets" => default_secret(o),
        _ => {}
    }
}

fn default_secret(o: &mut Value) {
    use base64::Engine;
    let m = obj(o);
    set_default(m, "type", json!("Opaque"));
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = obj(m.entry("data").or_insert_with(|| json!({})));
        for (k, v) in sd {
            let text = v.as_str().unwrap_or("").to_string();
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn default_service(o: &mut Value) {
    let spec = obj(&mut o["spec"]);
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    if spec["type"] != "ExternalName" {
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        if let Some(ip) = spec.get("clusterIP").cloned().filter(Value::is_string) {
            set_default(spec, "clusterIPs", json!([ip]));
        }
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports {
            let port = p["port"].clone();
            let pm = obj(p);
            set_default(pm, "protocol", json!("TCP"));
            set_default(pm, "targetPort", port);
        }
    }
    set_default(obj(&mut o["status"]), "loadBalancer", json!({}));
}

/// Allocates a ClusterIP for a new service that has none (10.96.0.0/16, .1 is `kubernetes`).
pub fn allocate_cluster_ip(store: &Store, svc: &mut Value) {
    if svc["spec"]["type"] == "ExternalName" {
        return;
    }
    let wanted = svc["spec"]["clusterIP"].as_str().unwrap_or("");
    if !wanted.is_empty() {
        return;
    }
    let (all, _) = store.list("services", None);
    let used: Vec<&str> = all
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .collect();
    for n in 10u32..65000 {
        let ip = format!("10.96.{}.{}", n / 256, n % 256);
        if n % 256 != 0 && n % 256 != 255 && !used.contains(&ip.as_str()) {
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
            return;
        }
    }
}

fn is_mirror_pod(pod: &Value) -> bool {
    !pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null()
}

/// The ServiceAccount admission plugin: the service account must exist, and unless
/// automounting is off, a projected token volume is added and mounted in every container.
fn service_account_admission(store: &Store, pod: &mut Value) -> ApiResult<()> {
    if is_mirror_pod(pod) {
        return Ok(());
    }
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let sa_name = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let Some(sa) = store.get("serviceaccounts", &ns, &sa_name) else {
        return Err(ApiError::forbidden(
            "",
            "pods",
            &name,
            format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
        ));
    };
    let automount = match pod["spec"]["automountServiceAccountToken"].as_bool() {
        Some(b) => b,
        None => sa["automountServiceAccountToken"].as_bool().unwrap_or(true),
    };
    if !automount {
        return Ok(());
    }
    let spec = &mut pod["spec"];
    let already = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == SA_MOUNT_PATH)
        });
    if already {
        return Ok(());
    }
    let volume_name = format!("kube-api-access-{}", random_suffix(5));
    let volume = json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    });
    match &mut spec["volumes"] {
        Value::Array(v) => v.push(volume),
        other => *other = json!([volume]),
    }
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": SA_MOUNT_PATH});
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                match &mut c["volumeMounts"] {
                    Value::Array(m) => m.push(mount.clone()),
                    other => *other = json!([mount.clone()]),
                }
            }
        }
    }
    Ok(())
}

/// Pod spec fields that may change after creation; everything else is immutable.
pub fn check_pod_spec_update(old: &Value, new: &Value) -> ApiResult<()> {
    let strip = |spec: &Value| {
        let mut s = spec.clone();
        if let Some(m) = s.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = m.get_mut(list) {
                    for c in cs {
                        if let Some(cm) = c.as_object_mut() {
                            cm.remove("image");
                        }
                    }
                }
            }
        }
        s
    };
    if strip(&old["spec"]) == strip(&new["spec"]) {
        return Ok(());
    }
    // Binding a pod (spec.nodeName from empty) is done through pods/binding, not by update.
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    Err(ApiError::invalid(
        "",
        "Pod",
        name,
        vec![FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        )],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(subdomain_error("a.b-c").is_none());
        assert!(subdomain_error("Bad_Name").is_some());
        assert!(subdomain_error("-a").is_some());
        assert!(dns_label_error("a.b").is_some());
        assert!(dns1035_error("1abc").is_some());
        assert!(qualified_name_error("example.com/app").is_none());
        assert!(qualified_name_error("/app").is_some());
        assert!(label_value_error("").is_none());
        assert!(label_value_error("-x").is_some());
    }

    #[test]
    fn policies_and_qos() {
        assert_eq!(pull_policy_for("busybox"), "Always");
        assert_eq!(pull_policy_for("busybox:latest"), "Always");
        assert_eq!(pull_policy_for("localhost:5000/busybox"), "Always");
        assert_eq!(
            pull_policy_for("localhost:5000/busybox:1.36"),
            "IfNotPresent"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
