//! What a request to the secure port asks for, in the terms of the apiserver's authorization:
//! the kubelet's mapping of an HTTP method and path to a verb on the `nodes` resource and its
//! subresources (pkg/kubelet/server/auth.go, with fine-grained kubelet authorization).

/// The attributes one SubjectAccessReview is made of, before the user is known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: String,
    /// The node's name.
    pub name: String,
    /// The subresources tried in order: the request is allowed when any of them is.
    /// Paths with a fine-grained subresource of their own that predates nothing (stats,
    /// metrics, log, spec, checkpoint) have one; /pods, /runningPods, /healthz and /configz
    /// fall back to `proxy`; everything else is `proxy` alone.
    pub subresources: Vec<&'static str>,
    pub path: String,
}

/// The API verb for an HTTP method, as the kubelet maps it: unknown methods, HEAD among them,
/// give "", which no authorizer allows.
pub fn verb(method: &str) -> &'static str {
    match method {
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// True when `path` is `prefix` itself or below it (`/stats` covers `/stats/summary`, not `/statsx`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

pub fn request_attributes(method: &str, path: &str, node_name: &str) -> Attributes {
    let subresources: Vec<&'static str> = if is_subpath(path, "/stats") {
        vec!["stats"]
    } else if is_subpath(path, "/metrics") {
        vec!["metrics"]
    } else if is_subpath(path, "/logs") {
        vec!["log"]
    } else if is_subpath(path, "/spec") {
        vec!["spec"]
    } else if is_subpath(path, "/checkpoint") {
        vec!["checkpoint"]
    } else if is_subpath(path, "/pods") || is_subpath(path, "/runningpods") || is_subpath(path, "/runningPods") {
        vec!["pods", "proxy"]
    } else if is_subpath(path, "/healthz") {
        vec!["healthz", "proxy"]
    } else if is_subpath(path, "/configz") {
        vec!["configz", "proxy"]
    } else {
        vec!["proxy"]
    };
    Attributes { verb: verb(method).to_string(), name: node_name.to_string(), subresources, path: path.to_string() }
}

/// The body of a 403, as the kubelet words it.
pub fn forbidden_message(user: &str, attrs: &Attributes) -> String {
    format!("Forbidden (user={user}, verb={}, resource=nodes, subresource(s)=[{}])\n", attrs.verb, attrs.subresources.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(method: &str, path: &str) -> (String, Vec<&'static str>) {
        let a = request_attributes(method, path, "node-a");
        assert_eq!(a.name, "node-a");
        (a.verb, a.subresources)
    }

    #[test]
    fn paths_map_to_node_subresources() {
        assert_eq!(subs("GET", "/stats/summary"), ("get".into(), vec!["stats"]));
        assert_eq!(subs("GET", "/stats"), ("get".into(), vec!["stats"]));
        assert_eq!(subs("GET", "/metrics"), ("get".into(), vec!["metrics"]));
        assert_eq!(subs("GET", "/metrics/cadvisor"), ("get".into(), vec!["metrics"]));
        assert_eq!(subs("GET", "/logs/messages"), ("get".into(), vec!["log"]));
        assert_eq!(subs("GET", "/spec/"), ("get".into(), vec!["spec"]));
        assert_eq!(subs("POST", "/checkpoint/ns/p/c"), ("create".into(), vec!["checkpoint"]));
        assert_eq!(subs("GET", "/pods"), ("get".into(), vec!["pods", "proxy"]));
        assert_eq!(subs("GET", "/runningpods/"), ("get".into(), vec!["pods", "proxy"]));
        assert_eq!(subs("GET", "/healthz"), ("get".into(), vec!["healthz", "proxy"]));
        assert_eq!(subs("GET", "/healthz/ping"), ("get".into(), vec!["healthz", "proxy"]));
        assert_eq!(subs("GET", "/configz"), ("get".into(), vec!["configz", "proxy"]));
        assert_eq!(subs("GET", "/containerLogs/ns/p/c"), ("get".into(), vec!["proxy"]));
        assert_eq!(subs("POST", "/exec/ns/p/c"), ("create".into(), vec!["proxy"]));
        assert_eq!(subs("POST", "/run/ns/p/c"), ("create".into(), vec!["proxy"]));
        assert_eq!(subs("GET", "/"), ("get".into(), vec!["proxy"]));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert_eq!(subs("GET", "/statsx").1, vec!["proxy"]);
        assert_eq!(subs("GET", "/metricsfoo").1, vec!["proxy"]);
        assert_eq!(subs("GET", "/podsx").1, vec!["proxy"]);
    }

    #[test]
    fn verbs_follow_the_method() {
        assert_eq!(verb("GET"), "get");
        assert_eq!(verb("POST"), "create");
        assert_eq!(verb("PUT"), "update");
        assert_eq!(verb("PATCH"), "patch");
        assert_eq!(verb("DELETE"), "delete");
        assert_eq!(verb("OPTIONS"), "");
        assert_eq!(verb("HEAD"), "", "the kubelet gives HEAD no verb");
    }

    #[test]
    fn forbidden_body_names_user_verb_and_subresources() {
        let a = request_attributes("GET", "/pods", "n");
        assert_eq!(forbidden_message("bob", &a), "Forbidden (user=bob, verb=get, resource=nodes, subresource(s)=[pods proxy])\n");
    }
}
