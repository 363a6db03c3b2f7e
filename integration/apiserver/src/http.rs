//! Routing, query parameters, and the verbs: get, list, watch, create, update, patch, delete.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::admission;
use crate::auth::{self, Attributes, User};
use crate::discovery::{self, ResourceDef};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::node_proxy::KubeletClient;
use crate::node_target::{self, NodeSubresource};
use crate::patch::{self, PatchType};
use crate::reviews::{self, Review};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Change, Outcome, Store};
use crate::table;

/// Everything a request handler needs.
pub struct App {
    pub store: Store,
    /// Bearer tokens issued through TokenRequest, and whom they name.
    pub tokens: Mutex<HashMap<String, User>>,
    pub bookmark_interval: Duration,
    pub ca_pem: String,
    /// The client of kubelets for the pod subresources proxied to nodes.
    pub kubelet: KubeletClient,
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut resp = (code, serde_json::to_vec(v).unwrap_or_default()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    resp
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn rfc3339_in(secs: i64) -> String {
    let t = SystemTime::now() + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Where a request goes.
enum Route {
    NonResource,
    Resource {
        def: &'static ResourceDef,
        ns: String,
        name: String,
        sub: Option<String>,
    },
}

fn route(path: &str) -> ApiResult<(Route, Option<Value>)> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let not_found = || ApiError::path_not_found(path);
    let doc = |v: Option<Value>| {
        v.ok_or_else(not_found)
            .map(|v| (Route::NonResource, Some(v)))
    };
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        [] => {
            let paths = vec![
                "/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version",
            ];
            return doc(Some(json!({"paths": paths})));
        }
        ["version"] => return doc(Some(discovery::version())),
        ["healthz" | "livez" | "readyz", ..] => return Ok((Route::NonResource, None)),
        ["api"] => return doc(Some(discovery::api_versions())),
        ["api", v] => return doc(discovery::resource_list("", v)),
        ["apis"] => return doc(Some(discovery::api_group_list())),
        ["apis", g] => return doc(discovery::api_group(g)),
        ["apis", g, v] => return doc(discovery::resource_list(g, v)),
        ["openapi", "v3"] => return doc(Some(discovery::openapi_v3_root())),
        ["openapi", "v3", "api", v] => return doc(discovery::openapi_v3_gv("", v)),
        ["openapi", "v3", "apis", g, v] => return doc(discovery::openapi_v3_gv(g, v)),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let find = |p: &str| discovery::find(group, version, p);
    let (def, ns, name, sub) = match rest {
        ["namespaces", ns, res, tail @ ..] if find(res).is_some_and(|d| d.namespaced) => {
            let def = find(res).unwrap();
            match tail {
                [] => (def, *ns, "", None),
                [name] => (def, *ns, *name, None),
                [name, sub] => (def, *ns, *name, Some(*sub)),
                _ => return Err(not_found()),
            }
        }
        [res, tail @ ..] => {
            let def = find(res).ok_or_else(not_found)?;
            match tail {
                [] => (def, "", "", None),
                [name] if !def.namespaced => (def, "", *name, None),
                [name, sub] if !def.namespaced => (def, "", *name, Some(*sub)),
                _ => return Err(not_found()),
            }
        }
        _ => return Err(not_found()),
    };
    if let Some(s) = sub {
        if !def.subresources.contains(&s) {
            return Err(not_found());
        }
    }
    Ok((
        Route::Resource {
            def,
            ns: ns.to_string(),
            name: name.to_string(),
            sub: sub.map(str::to_string),
        },
        None,
    ))
}

type Query = HashMap<String, String>;

fn query_of(req: &Request<Body>) -> ApiResult<Query> {
    let q = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    Ok(pairs.into_iter().collect())
}

fn is_true(q: &Query, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1"))
}

/// Serves one request from `user` (None: no client certificate).
pub async fn handle(app: Arc<App>, cert_user: Option<User>, req: Request<Body>) -> Response {
    match serve(app, cert_user, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn authenticate(app: &App, cert_user: Option<User>, headers: &HeaderMap) -> Option<User> {
    if cert_user.is_some() {
        return cert_user;
    }
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    app.tokens.lock().unwrap().get(token).cloned()
}

async fn serve(app: Arc<App>, cert_user: Option<User>, req: Request<Body>) -> ApiResult<Response> {
    let path = req.uri().path().to_string();
    if let Some(review) = Review::route(&path) {
        let user =
            authenticate(&app, cert_user, req.headers()).ok_or_else(ApiError::unauthorized)?;
        return create_review(&app, &user, review, req).await;
    }
    let (route, doc) = route(&path)?;
    let user = authenticate(&app, cert_user, req.headers());
    let public = ["/healthz", "/livez", "/readyz", "/version"]
        .iter()
        .any(|p| path.starts_with(p));
    let Some(user) = user else {
        if public {
            return Ok(match doc {
                Some(d) => json_response(StatusCode::OK, &d),
                None => (StatusCode::OK, "ok").into_response(),
            });
        }
        return Err(ApiError::unauthorized());
    };
    let (def, ns, name, sub) = match route {
        Route::NonResource => {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return Err(ApiError::method_not_allowed());
            }
            return Ok(match doc {
                Some(d) => json_response(StatusCode::OK, &d),
                None => (StatusCode::OK, "ok").into_response(),
            });
        }
        Route::Resource { def, ns, name, sub } => (def, ns, name, sub),
    };
    let accept = header_text(&req, header::ACCEPT);
    if !accept.is_empty() && !accept.contains("json") && !accept.contains("*/*") {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        ));
    }
    if let Some(node_sub) = sub
        .as_deref()
        .filter(|_| def.key() == "pods")
        .and_then(NodeSubresource::parse)
    {
        return proxy_to_node(&app, &user, def, &ns, &name, node_sub, req).await;
    }
    let want_table = accept.contains("as=Table");
    let query = query_of(&req)?;
    let method = req.method().clone();
    let content_type = header_text(&req, header::CONTENT_TYPE);
    let body = axum::body::to_bytes(req.into_body(), 8 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let ctx = Ctx {
        app: &app,
        user: &user,
        def,
        ns: &ns,
        name: &name,
        sub: sub.as_deref(),
        query: &query,
    };
    if def.namespaced && ns.is_empty() && !name.is_empty() {
        return Err(ApiError::path_not_found(&path));
    }
    match method {
        Method::GET if !name.is_empty() => {
            if sub.as_deref().is_some_and(|s| s != "status") {
                return Err(ApiError::method_not_allowed());
            }
            ctx.authorize("get", None, None)?;
            let obj = ctx.get_existing()?;
            if want_table {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::render(def, &[obj], None, &query),
                ));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        Method::GET => {
            let labels =
                LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                def.plural,
            )?;
            if is_true(&query, "watch") {
                ctx.authorize("watch", None, fields.name())?;
                return ctx.watch(labels, fields);
            }
            ctx.authorize("list", None, fields.name())?;
            let ns_filter = (!ns.is_empty()).then_some(ns.as_str());
            let (items, rv) = app.store.list(&def.key(), ns_filter);
            let items: Vec<Value> = items
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
                .collect();
            if want_table {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::render(def, &items, Some(rv), &query),
                ));
            }
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": def.list_kind(),
                    "apiVersion": def.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                    "items": items,
                }),
            ))
        }
        Method::POST => {
            let body = decode_body(&content_type, &body, def)?;
            match sub.as_deref() {
                None if name.is_empty() => ctx.create(body),
                Some("token") => ctx.token_request(body),
                Some("binding") => ctx.bind(body),
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        Method::PUT if !name.is_empty() => {
            let body = decode_body(&content_type, &body, def)?;
            ctx.update(body)
        }
        Method::PATCH if !name.is_empty() => {
            let kind = PatchType::from_content_type(&content_type)
                .ok_or_else(|| ApiError::unsupported_media(patch::ACCEPTED))?;
            ctx.patch(kind, &body)
        }
        Method::DELETE if !name.is_empty() && sub.is_none() => {
            let opts = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
            };
            ctx.delete(opts)
        }
        Method::DELETE if name.is_empty() => ctx.delete_collection(),
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn create_review(
    app: &App,
    user: &User,
    review: Review,
    req: Request<Body>,
) -> ApiResult<Response> {
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    reviews::may_create(user, review)?;
    let content_type = header_text(&req, header::CONTENT_TYPE);
    check_json(&content_type)?;
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid review: {e}")))?;
    let tokens = app.tokens.lock().unwrap().clone();
    let answer = reviews::answer(review, &body, &tokens, &app.store)?;
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// pods/log, pods/exec, pods/attach and pods/portforward: authorized here, then sent to the
/// kubelet of the pod's node, as kube-apiserver does.
async fn proxy_to_node(
    app: &App,
    user: &User,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    sub: NodeSubresource,
    req: Request<Body>,
) -> ApiResult<Response> {
    let method_ok = match sub {
        NodeSubresource::Log => req.method() == Method::GET,
        _ => req.method() == Method::GET || req.method() == Method::POST,
    };
    if !method_ok {
        return Err(ApiError::method_not_allowed());
    }
    let sub_name = match sub {
        NodeSubresource::Log => "log",
        NodeSubresource::Exec => "exec",
        NodeSubresource::Attach => "attach",
        NodeSubresource::PortForward => "portforward",
    };
    auth::authorize(
        &app.store,
        user,
        &Attributes {
            verb: sub.verb(),
            def,
            sub: Some(sub_name),
            namespace: ns,
            name,
            selected_name: None,
            body: None,
        },
    )?;
    let pod = app
        .store
        .get("pods", ns, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = app
        .store
        .get("nodes", "", node_name)
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
    if sub.upgrades() && is_websocket(req.headers()) {
        return Err(websocket_refusal());
    }
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let target = node_target::kubelet_target(sub, &pod, &node, &query)?;
    app.kubelet.forward(&target, req, sub.upgrades()).await
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// kubectl >= 1.30 first asks for a websocket (exec/attach: v5.channel.k8s.io only;
/// port-forward: SPDY tunnelled in a websocket) and falls back to SPDY on any non-101 answer.
/// kube-apiserver >= 1.30 translates those websockets to SPDY toward the kubelet; this server
/// does not. Relayed as is (tried with kubectl 1.32), containerd 1.6's streaming server knows
/// neither protocol and answers 403, so kubectl falls back anyway, after a useless CRI
/// Exec/PortForward call; and a client offering v4.channel.k8s.io would get a stream whose
/// stdin can never be closed. So the upgrade is refused here, before the node is asked.
fn websocket_refusal() -> ApiError {
    ApiError::bad_request(
        "websocket streaming is not served by nodelet-test-apiserver; use SPDY (kubectl falls back to it)",
    )
}

/// A request header as text ("" when absent or not UTF-8).
fn header_text(req: &Request<Body>, name: header::HeaderName) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

fn check_json(content_type: &str) -> ApiResult<()> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if ct.is_empty() || ct == "application/json" || ct == "*/*" {
        Ok(())
    } else {
        Err(ApiError::unsupported_media(
            "application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ))
    }
}

fn decode_body(content_type: &str, body: &Bytes, def: &ResourceDef) -> ApiResult<Value> {
    if content_type.starts_with(crate::proto::CONTENT_TYPE) {
        return crate::proto::decode(body);
    }
    check_json(content_type)?;
    decode(body, def)
}

fn decode(body: &Bytes, def: &ResourceDef) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {e}",
            def.kind
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {})",
            def.kind
        )));
    }
    Ok(v)
}

struct Ctx<'a> {
    app: &'a App,
    user: &'a User,
    def: &'static ResourceDef,
    ns: &'a str,
    name: &'a str,
    sub: Option<&'a str>,
    query: &'a Query,
}

impl Ctx<'_> {
    fn store(&self) -> &Store {
        &self.app.store
    }

    fn authorize(
        &self,
        verb: &str,
        body: Option<&Value>,
        selected_name: Option<&str>,
    ) -> ApiResult<()> {
        let name = if verb == "create" && self.sub.is_none() {
            body.and_then(|b| b["metadata"]["name"].as_str())
                .unwrap_or("")
        } else {
            self.name
        };
        auth::authorize(
            self.store(),
            self.user,
            &Attributes {
                verb,
                def: self.def,
                sub: self.sub,
                namespace: self.ns,
                name,
                selected_name,
                body,
            },
        )
    }

    fn not_found(&self) -> ApiError {
        ApiError::not_found(self.def.group, self.def.plural, self.name)
    }

    fn get_existing(&self) -> ApiResult<Value> {
        self.store()
            .get(&self.def.key(), self.ns, self.name)
            .ok_or_else(|| self.not_found())
    }

    /// Checks kind/apiVersion and the namespace of an incoming object and fills them in.
    fn normalize(&self, obj: &mut Value) -> ApiResult<()> {
        let want_av = self.def.api_version();
        if let Some(k) = obj.get("kind").and_then(Value::as_str) {
            if k != self.def.kind {
                return Err(ApiError::bad_request(format!(
                    "the object provided is unrecognized (must be of type {}): {k} in version \"{want_av}\" cannot be handled as a {}",
                    self.def.kind, self.def.kind
                )));
            }
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            if av != want_av {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )));
            }
        }
        obj["kind"] = json!(self.def.kind);
        obj["apiVersion"] = json!(want_av);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta = obj["metadata"].as_object_mut().unwrap();
        if self.def.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != self.ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    meta.insert("namespace".into(), json!(self.ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        Ok(())
    }

    fn create(&self, mut obj: Value) -> ApiResult<Response> {
        self.normalize(&mut obj)?;
        let meta = obj["metadata"].as_object_mut().unwrap();
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            if let Some(prefix) = meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
            {
                let name = format!("{prefix}{}", admission::random_suffix(5));
                meta.insert("name".into(), json!(name));
            }
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        self.authorize("create", Some(&obj), None)?;
        let obj = self.create_object(obj)?;
        Ok(json_response(StatusCode::CREATED, &obj))
    }

    /// The create path shared with bootstrapping: admission, validation, storing.
    fn create_object(&self, obj: Value) -> ApiResult<Value> {
        create_object(self.store(), self.def, self.ns, obj, &self.app.ca_pem)
    }

    fn update(&self, mut obj: Value) -> ApiResult<Response> {
        self.normalize(&mut obj)?;
        let body_name = obj["metadata"]["name"].as_str().unwrap_or("");
        if body_name != self.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                self.name
            )));
        }
        self.authorize("update", Some(&obj), None)?;
        let key = self.def.key();
        let (stored, _) = self.store().mutate(&key, self.ns, self.name, |cur| {
            let cur = cur.ok_or_else(|| self.not_found())?;
            check_rv(self.def, self.name, cur, &obj)?;
            self.prepare_update(cur, obj.clone())
        })?;
        Ok(json_response(StatusCode::OK, &stored))
    }

    fn patch(&self, kind: PatchType, patch_body: &[u8]) -> ApiResult<Response> {
        self.authorize("patch", None, None)?;
        let key = self.def.key();
        let (stored, _) = self.store().mutate(&key, self.ns, self.name, |cur| {
            let cur = cur.ok_or_else(|| self.not_found())?;
            let mut patched = patch::apply(kind, cur, patch_body)?;
            if !patched.is_object() {
                return Err(ApiError::bad_request("the patch did not produce an object"));
            }
            check_rv(self.def, self.name, cur, &patched)?;
            // Identity fields cannot be patched.
            patched["kind"] = cur["kind"].clone();
            patched["apiVersion"] = cur["apiVersion"].clone();
            patched["metadata"]["name"] = cur["metadata"]["name"].clone();
            if self.def.namespaced {
                patched["metadata"]["namespace"] = cur["metadata"]["namespace"].clone();
            }
            self.prepare_update(cur, patched)
        })?;
        Ok(json_response(StatusCode::OK, &stored))
    }

    /// The object an update of `cur` with `incoming` stores: only the status for the status
    /// subresource, everything but the status for the main resource.
    fn prepare_update(&self, cur: &Value, incoming: Value) -> ApiResult<Outcome> {
        let mut new = if self.sub == Some("status") {
            let mut n = cur.clone();
            n["status"] = incoming.get("status").cloned().unwrap_or(json!({}));
            n
        } else {
            let mut n = incoming;
            if self.def.has_status {
                match cur.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match cur["metadata"].get(f) {
                    Some(v) => n["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = n["metadata"].as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
            admission::admit_update(self.def, &mut n);
            if self.def.key() == "pods" {
                admission::check_pod_spec_update(cur, &n)?;
            }
            if n.get("spec").is_some() && n.get("spec") != cur.get("spec") {
                let g = cur["metadata"]["generation"].as_i64().unwrap_or(0);
                n["metadata"]["generation"] = json!(g + 1);
            }
            n
        };
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        admission::validate(self.def, &new)?;
        if &new == cur {
            return Ok(Outcome::Unchanged(new));
        }
        if !new["metadata"]["deletionTimestamp"].is_null() && finalizers_empty(&new) {
            let pod_waiting = self.def.key() == "pods"
                && new["metadata"]["deletionGracePeriodSeconds"].as_i64() != Some(0);
            if !pod_waiting {
                return Ok(Outcome::Delete);
            }
        }
        Ok(Outcome::Put(new))
    }

    fn delete(&self, opts: Value) -> ApiResult<Response> {
        self.authorize("delete", None, None)?;
        let key = self.def.key();
        let grace_q = self
            .query
            .get("gracePeriodSeconds")
            .map(|g| g.parse::<i64>());
        let grace_opt = match (opts["gracePeriodSeconds"].as_i64(), grace_q) {
            (Some(g), _) => Some(g),
            (None, Some(Ok(g))) => Some(g),
            (None, Some(Err(_))) => {
                return Err(ApiError::bad_request("invalid gracePeriodSeconds"))
            }
            (None, None) => None,
        };
        if key == "namespaces" && ["default", "kube-system", "kube-public"].contains(&self.name) {
            return Err(ApiError::forbidden(
                "",
                "namespaces",
                self.name,
                "this namespace may not be deleted",
            ));
        }
        let (obj, _) = self.store().mutate(&key, self.ns, self.name, |cur| {
            let cur = cur.ok_or_else(|| self.not_found())?;
            check_preconditions(&opts["preconditions"], cur)?;
            let mut grace = 0;
            if key == "pods" {
                grace = grace_opt.unwrap_or_else(|| {
                    cur["spec"]["terminationGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(30)
                });
                let phase = cur["status"]["phase"].as_str().unwrap_or("");
                if cur["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
                    || phase == "Succeeded"
                    || phase == "Failed"
                {
                    grace = 0;
                }
                grace = grace.max(0);
            }
            let deleting = !cur["metadata"]["deletionTimestamp"].is_null();
            let current_grace = cur["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if deleting && current_grace.is_some_and(|g| g <= grace) {
                return Ok(Outcome::Unchanged(cur.clone()));
            }
            if grace > 0 || !finalizers_empty(cur) {
                let mut n = cur.clone();
                n["metadata"]["deletionTimestamp"] = json!(rfc3339_in(grace));
                n["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                return Ok(Outcome::Put(n));
            }
            Ok(Outcome::Delete)
        })?;
        if key == "namespaces" {
            self.store().delete_namespace_contents(self.name);
        }
        if ["pods", "services", "namespaces"].contains(&key.as_str())
            || self.store().get(&key, self.ns, self.name).is_some()
        {
            return Ok(json_response(StatusCode::OK, &obj));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": self.name, "group": self.def.group, "kind": self.def.plural, "uid": obj["metadata"]["uid"]},
            }),
        ))
    }

    fn delete_collection(&self) -> ApiResult<Response> {
        self.authorize("deletecollection", None, None)?;
        let labels = LabelSelector::parse(
            self.query
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or(""),
        )?;
        let fields = FieldSelector::parse(
            self.query
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or(""),
            self.def.plural,
        )?;
        let ns_filter = (!self.ns.is_empty()).then_some(self.ns);
        let (items, _) = self.store().list(&self.def.key(), ns_filter);
        for o in items
            .iter()
            .filter(|o| labels.matches(o) && fields.matches(o))
        {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            let _ = self.store().mutate(&self.def.key(), ns, name, |cur| {
                Ok(if cur.is_some() {
                    Outcome::Delete
                } else {
                    Outcome::Unchanged(Value::Null)
                })
            });
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ))
    }

    fn token_request(&self, req: Value) -> ApiResult<Response> {
        if let Some(k) = req
            .get("kind")
            .and_then(Value::as_str)
            .filter(|k| *k != "TokenRequest")
        {
            return Err(ApiError::bad_request(format!(
                "expected a TokenRequest, got {k}"
            )));
        }
        self.authorize("create", Some(&req), None)?;
        let sa = self.get_existing()?;
        let exp = req["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
        if exp < 600 {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                self.name,
                vec![FieldError::invalid(
                    "spec.expirationSeconds",
                    &exp.to_string(),
                    "may not specify a duration less than 10 minutes",
                )],
            ));
        }
        let bound = &req["spec"]["boundObjectRef"];
        let mut pod_claim = Value::Null;
        if !bound.is_null() {
            let kind = bound["kind"].as_str().unwrap_or("");
            let bname = bound["name"].as_str().unwrap_or("");
            let (res, group) = match kind {
                "Pod" => ("pods", ""),
                "Secret" => ("secrets", ""),
                "Node" => ("nodes", ""),
                _ => {
                    return Err(ApiError::invalid(
                        "authentication.k8s.io",
                        "TokenRequest",
                        self.name,
                        vec![FieldError::unsupported(
                            "spec.boundObjectRef.kind",
                            kind,
                            &["Pod", "Secret", "Node"],
                        )],
                    ))
                }
            };
            let ns = if kind == "Node" { "" } else { self.ns };
            let target = self
                .store()
                .get(res, ns, bname)
                .ok_or_else(|| ApiError::not_found(group, res, bname))?;
            if bound["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && Some(u) != target["metadata"]["uid"].as_str())
            {
                return Err(ApiError::conflict(
                    group,
                    res,
                    bname,
                    &format!(
                        "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                        bound["uid"].as_str().unwrap_or("")
                    ),
                ));
            }
            if kind == "Pod" {
                pod_claim = json!({"name": bname, "uid": target["metadata"]["uid"]});
            }
        }
        let audiences = match req["spec"]["audiences"].as_array() {
            Some(a) if !a.is_empty() => Value::Array(a.clone()),
            _ => json!(["https://kubernetes.default.svc.cluster.local"]),
        };
        let iat = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let subject = format!("system:serviceaccount:{}:{}", self.ns, self.name);
        let claims = json!({
            "aud": audiences,
            "exp": iat + exp as u64,
            "iat": iat,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": subject,
            "kubernetes.io": {
                "namespace": self.ns,
                "pod": pod_claim,
                "serviceaccount": {"name": self.name, "uid": sa["metadata"]["uid"]},
            },
        });
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let sig: [u8; 32] = rand::random();
        let token = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","kid":"nodelet-test-apiserver"}"#),
            b64(claims.to_string().as_bytes()),
            b64(&sig)
        );
        self.app.tokens.lock().unwrap().insert(
            token.clone(),
            User {
                name: subject,
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", self.ns),
                    "system:authenticated".into(),
                ],
            },
        );
        let mut spec = req["spec"].clone();
        spec["audiences"] = audiences;
        spec["expirationSeconds"] = json!(exp);
        let resp = json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": self.name, "namespace": self.ns, "creationTimestamp": null},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": rfc3339_in(exp)},
        });
        Ok(json_response(StatusCode::CREATED, &resp))
    }

    fn bind(&self, binding: Value) -> ApiResult<Response> {
        self.authorize("create", Some(&binding), None)?;
        let target = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if target.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                self.name,
                vec![FieldError::required("target.name")],
            ));
        }
        self.store().mutate("pods", self.ns, self.name, |cur| {
            let cur = cur.ok_or_else(|| self.not_found())?;
            let bound = cur["spec"]["nodeName"].as_str().unwrap_or("");
            if !bound.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    self.name,
                    &format!("pod {} is already assigned to node \"{bound}\"", self.name),
                ));
            }
            let mut n = cur.clone();
            n["spec"]["nodeName"] = json!(target);
            Ok(Outcome::Put(n))
        })?;
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    fn watch(&self, labels: LabelSelector, fields: FieldSelector) -> ApiResult<Response> {
        let key = self.def.key();
        let ns_filter = (!self.ns.is_empty()).then(|| self.ns.to_string());
        let rv_param = self
            .query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let send_initial = is_true(self.query, "sendInitialEvents");
        let from_now = rv_param.is_empty() || rv_param == "0" || send_initial;
        let (initial, sub) = if from_now {
            let (items, sub) = self
                .store()
                .snapshot_and_subscribe(&key, ns_filter.as_deref());
            (items, Ok(sub))
        } else {
            let rv: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param:?}"))
            })?;
            (Vec::new(), self.store().subscribe(Some(rv)))
        };
        let timeout = self
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let bookmarks = is_true(self.query, "allowWatchBookmarks");
        let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
        let filter = WatchFilter {
            key,
            ns: ns_filter,
            labels,
            fields,
        };
        let (kind, api_version) = (self.def.kind, self.def.api_version());
        let interval = self.app.bookmark_interval;
        tokio::spawn(async move {
            let sub = match sub {
                Ok(s) => s,
                Err(e) => {
                    // Like the watch cache: the watch starts, then reports the error as an event.
                    let _ = tx.send(Ok(line("ERROR", &e.status()))).await;
                    return;
                }
            };
            let mut seen = sub.start_rv;
            let bookmark = |rv: u64, initial_end: bool| {
                let mut meta = json!({"resourceVersion": rv.to_string()});
                if initial_end {
                    meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                }
                line(
                    "BOOKMARK",
                    &json!({"kind": kind, "apiVersion": api_version, "metadata": meta}),
                )
            };
            for o in initial.iter().filter(|o| filter.object_matches(o)) {
                if tx.send(Ok(line("ADDED", o))).await.is_err() {
                    return;
                }
            }
            if send_initial && bookmarks && tx.send(Ok(bookmark(seen, true))).await.is_err() {
                return;
            }
            for c in &sub.replay {
                if filter.matches(c) && tx.send(Ok(line(c.kind.as_str(), &c.object))).await.is_err()
                {
                    return;
                }
                seen = seen.max(c.rv);
            }
            let mut live = sub.live;
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = tx.closed() => break,
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(Ok(bookmark(seen, false))).await.is_err() {
                            break;
                        }
                    }
                    r = live.recv() => match r {
                        Ok(c) => {
                            if c.rv <= seen {
                                continue;
                            }
                            seen = c.rv;
                            if filter.matches(&c) && tx.send(Ok(line(c.kind.as_str(), &c.object))).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
        });
        let stream = tokio_stream_from(rx);
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, "no-cache, private".parse().unwrap());
        Ok(resp)
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct WatchFilter {
    key: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn object_matches(&self, o: &Value) -> bool {
        self.labels.matches(o) && self.fields.matches(o)
    }

    fn matches(&self, c: &Change) -> bool {
        c.resource == self.key
            && self.ns.as_ref().is_none_or(|n| *n == c.namespace)
            && self.object_matches(&c.object)
    }
}

fn finalizers_empty(o: &Value) -> bool {
    o["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

/// 409 when the incoming object names a resourceVersion other than the stored one.
fn check_rv(def: &ResourceDef, name: &str, cur: &Value, incoming: &Value) -> ApiResult<()> {
    match incoming["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != cur["metadata"]["resourceVersion"].as_str() => {
            Err(ApiError::stale(def.group, def.plural, name))
        }
        _ => Ok(()),
    }
}

fn check_preconditions(pre: &Value, cur: &Value) -> ApiResult<()> {
    let cur_uid = cur["metadata"]["uid"].as_str().unwrap_or("");
    let cur_rv = cur["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if let Some(uid) = pre["uid"].as_str() {
        if uid != cur_uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {cur_uid}"),
            ));
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        if rv != cur_rv {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {cur_rv}"
                ),
            ));
        }
    }
    Ok(())
}

/// Creates an object of type `def` in namespace `ns` (metadata already normalized).
pub fn create_object(
    store: &Store,
    def: &'static ResourceDef,
    ns: &str,
    mut obj: Value,
    ca_pem: &str,
) -> ApiResult<Value> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if def.namespaced && store.get("namespaces", "", ns).is_none() {
        return Err(ApiError::not_found("", "namespaces", ns));
    }
    {
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("resourceVersion");
    }
    if obj.get("spec").is_some() || def.key() == "pods" {
        obj["metadata"]["generation"] = json!(1);
    }
    match def.key().as_str() {
        "pods" => obj["status"] = json!({}),
        "services" => obj["status"] = json!({}),
        _ => {}
    }
    admission::admit_create(store, def, &mut obj)?;
    admission::validate(def, &obj)?;
    if def.key() == "services" {
        admission::allocate_cluster_ip(store, &mut obj);
    }
    let (stored, _) = store.mutate(&def.key(), ns, &name, |cur| {
        if cur.is_some() {
            return Err(ApiError::already_exists(def.group, def.plural, &name));
        }
        Ok(Outcome::Put(obj))
    })?;
    if def.key() == "namespaces" {
        populate_namespace(store, &name, ca_pem);
    }
    Ok(stored)
}

/// What every namespace holds: the `default` ServiceAccount and the kube-root-ca.crt ConfigMap.
pub fn populate_namespace(store: &Store, ns: &str, ca_pem: &str) {
    let sa_def = discovery::find("", "v1", "serviceaccounts").unwrap();
    if store.get("serviceaccounts", ns, "default").is_none() {
        let sa = json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "default", "namespace": ns}});
        let _ = create_object(store, sa_def, ns, sa, ca_pem);
    }
    let cm_def = discovery::find("", "v1", "configmaps").unwrap();
    match store.get("configmaps", ns, "kube-root-ca.crt") {
        None => {
            let cm = json!({
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                             "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": ca_pem},
            });
            let _ = create_object(store, cm_def, ns, cm, ca_pem);
        }
        Some(cm) if cm["data"]["ca.crt"].as_str() != Some(ca_pem) => {
            let _ = store.mutate("configmaps", ns, "kube-root-ca.crt", |cur| {
                let mut n = cur.cloned().unwrap_or(cm.clone());
                n["data"]["ca.crt"] = json!(ca_pem);
                Ok(Outcome::Put(n))
            });
        }
        Some(_) => {}
    }
}

/// The objects a fresh cluster has: the system namespaces and the `kubernetes` Service.
pub fn bootstrap(store: &Store, ca_pem: &str, port: u16) {
    let ns_def = discovery::find("", "v1", "namespaces").unwrap();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        if store.get("namespaces", "", ns).is_none() {
            let obj = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}});
            let _ = create_object(store, ns_def, "", obj, ca_pem);
        } else {
            populate_namespace(store, ns, ca_pem);
        }
    }
    if store.get("services", "default", "kubernetes").is_none() {
        let svc_def = discovery::find("", "v1", "services").unwrap();
        let svc = json!({
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        });
        let _ = create_object(store, svc_def, "default", svc, ca_pem);
    }
    let slice = json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    match store.get("endpointslices.discovery.k8s.io", "default", "kubernetes") {
        None => {
            let def = discovery::find("discovery.k8s.io", "v1", "endpointslices").unwrap();
            let _ = create_object(store, def, "default", slice, ca_pem);
        }
        Some(cur) if cur["ports"] != slice["ports"] => {
            let _ = store.mutate(
                "endpointslices.discovery.k8s.io",
                "default",
                "kubernetes",
                |c| {
                    let mut n = c.cloned().unwrap_or(cur.clone());
                    n["ports"] = slice["ports"].clone();
                    Ok(Outcome::Put(n))
                },
            );
        }
        Some(_) => {}
    }
}
