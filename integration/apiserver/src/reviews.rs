//! TokenReview and SubjectAccessReview: what a kubelet in webhook mode asks the apiserver
//! (authentication.k8s.io/v1 tokenreviews, authorization.k8s.io/v1 subjectaccessreviews).
//! Both are create-only and stored nowhere; the answer is the object with its status filled.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::auth::{self, Attributes, User};
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    Token,
    SubjectAccess,
}

impl Review {
    /// The review a path names, if any.
    pub fn route(path: &str) -> Option<Review> {
        match path.trim_end_matches('/') {
            "/apis/authentication.k8s.io/v1/tokenreviews" => Some(Review::Token),
            "/apis/authorization.k8s.io/v1/subjectaccessreviews" => Some(Review::SubjectAccess),
            _ => None,
        }
    }

    fn group_and_resource(self) -> (&'static str, &'static str) {
        match self {
            Review::Token => ("authentication.k8s.io", "tokenreviews"),
            Review::SubjectAccess => ("authorization.k8s.io", "subjectaccessreviews"),
        }
    }
}

/// Who may ask: cluster admins, and nodes (the Node authorizer grants them both reviews).
pub fn may_create(user: &User, review: Review) -> ApiResult<()> {
    if user.is_master() || user.node_name().is_some() {
        return Ok(());
    }
    let (group, resource) = review.group_and_resource();
    Err(ApiError::forbidden(
        group,
        resource,
        "",
        format!(
            "User \"{}\" cannot create resource \"{resource}\" in API group \"{group}\" at the cluster scope",
            user.name
        ),
    ))
}

/// Answers a review request `body` (already decoded).
pub fn answer(
    review: Review,
    body: &Value,
    tokens: &HashMap<String, User>,
    store: &Store,
) -> ApiResult<Value> {
    let mut out = body.clone();
    if !out.is_object() {
        return Err(ApiError::bad_request("the review must be an object"));
    }
    out["status"] = match review {
        Review::Token => token_status(&body["spec"], tokens),
        Review::SubjectAccess => access_status(&body["spec"], store)?,
    };
    Ok(out)
}

fn token_status(spec: &Value, tokens: &HashMap<String, User>) -> Value {
    let token = spec["token"].as_str().unwrap_or("");
    match tokens.get(token) {
        Some(user) => json!({
            "authenticated": true,
            "user": {"username": user.name, "groups": user.groups},
            "audiences": spec["audiences"].as_array().cloned().unwrap_or_default(),
        }),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    }
}

/// Decides the review with this server's own authorizer (system:masters, the Node rules).
fn access_status(spec: &Value, store: &Store) -> ApiResult<Value> {
    let user = User {
        name: spec["user"].as_str().unwrap_or("").to_string(),
        groups: spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
    };
    let ra = &spec["resourceAttributes"];
    if ra.is_null() && spec["nonResourceAttributes"].is_null() {
        return Err(ApiError::bad_request(
            "SubjectAccessReview: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    if !ra.is_object() {
        // Non-resource URLs: only admins.
        let allowed = user.is_master();
        return Ok(
            json!({"allowed": allowed, "reason": if allowed { "allowed as system:masters" } else { "" }}),
        );
    }
    let text = |k: &str| ra[k].as_str().unwrap_or("").to_string();
    let (group, version, resource) = (text("group"), text("version"), text("resource"));
    let version = if version.is_empty() {
        "v1".to_string()
    } else {
        version
    };
    let Some(def) = discovery::find(&group, &version, &resource) else {
        let allowed = user.is_master();
        return Ok(json!({"allowed": allowed}));
    };
    let (verb, sub, namespace, name) = (
        text("verb"),
        text("subresource"),
        text("namespace"),
        text("name"),
    );
    let attrs = Attributes {
        verb: &verb,
        def,
        sub: (!sub.is_empty()).then_some(sub.as_str()),
        namespace: &namespace,
        name: &name,
        selected_name: None,
        body: None,
    };
    Ok(match auth::authorize(store, &user, &attrs) {
        Ok(()) => json!({"allowed": true}),
        Err(e) => json!({"allowed": false, "reason": e.message}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(user: &str, groups: &[&str], sub: &str) -> Value {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": user, "groups": groups,
            "resourceAttributes": {"verb": "create", "group": "", "version": "v1", "resource": "nodes", "subresource": sub, "name": "n1"}}})
    }

    #[test]
    fn the_apiservers_kubelet_client_may_proxy_and_others_may_not() {
        let store = Store::open(None, 10).unwrap();
        let tokens = HashMap::new();
        let ok = answer(
            Review::SubjectAccess,
            &review(
                "kube-apiserver-kubelet-client",
                &["system:masters"],
                "proxy",
            ),
            &tokens,
            &store,
        )
        .unwrap();
        assert_eq!(ok["status"]["allowed"], true);
        let no = answer(
            Review::SubjectAccess,
            &review("alice", &["devs"], "proxy"),
            &tokens,
            &store,
        )
        .unwrap();
        assert_eq!(no["status"]["allowed"], false);
        assert!(
            no["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("cannot create resource \"nodes/proxy\""),
            "{no}"
        );
    }

    #[test]
    fn issued_tokens_are_authenticated() {
        let store = Store::open(None, 10).unwrap();
        let user = User {
            name: "system:serviceaccount:ns:sa".into(),
            groups: vec!["system:serviceaccounts".into()],
        };
        let tokens = HashMap::from([("t0k".to_string(), user)]);
        let body = json!({"spec": {"token": "t0k"}});
        let ok = answer(Review::Token, &body, &tokens, &store).unwrap();
        assert_eq!(ok["status"]["authenticated"], true);
        assert_eq!(
            ok["status"]["user"]["username"],
            "system:serviceaccount:ns:sa"
        );
        let bad = answer(
            Review::Token,
            &json!({"spec": {"token": "nope"}}),
            &tokens,
            &store,
        )
        .unwrap();
        assert_eq!(bad["status"]["authenticated"], false);
    }

    #[test]
    fn only_admins_and_nodes_may_ask() {
        let node = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        assert!(may_create(&node, Review::SubjectAccess).is_ok());
        let alice = User {
            name: "alice".into(),
            groups: vec![],
        };
        assert_eq!(may_create(&alice, Review::Token).unwrap_err().code, 403);
        assert_eq!(
            Review::route("/apis/authorization.k8s.io/v1/subjectaccessreviews"),
            Some(Review::SubjectAccess)
        );
    }
}
