//! The read-only HTTP port (10255 by default): /healthz, /pods, /spec, /configz, /metrics,
//! /metrics/resource and /stats/summary, so an operator (or metrics-server) can check a node.
//! Unknown paths answer 404, other methods 405.

use crate::health::Health;
use crate::pods::store::PodStore;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::Pod;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct ReadOnly {
    pub health: Arc<Health>,
    pub pods: PodStore,
    /// Root of the file system the machine facts are read from ("/").
    pub host_root: PathBuf,
    /// The body of /configz.
    pub configz: Arc<serde_json::Value>,
    /// Usage figures; None where nodelet runs no pods (--proxy-only).
    pub stats: Option<Arc<crate::stats::Collector>>,
}

impl ReadOnly {
    /// The state without usage figures nor configuration (tests of other paths).
    pub fn new(health: Arc<Health>, pods: PodStore) -> ReadOnly {
        ReadOnly { health, pods, host_root: "/".into(), configz: Arc::new(serde_json::json!({"kubeletconfig": {}})), stats: None }
    }
}

pub fn router(state: ReadOnly) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/pods", get(pods))
        .route("/pods/", get(pods))
        .route("/spec", get(spec))
        .route("/spec/", get(spec))
        .route("/configz", get(configz))
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(resource_metrics))
        .route("/stats/summary", get(summary))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .with_state(state)
}

/// Binds before serving, so a port already in use fails nodelet's start with `option` named.
pub async fn bind(addr: SocketAddr, option: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("{option}: cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "{option} listening");
    Ok(listener)
}

pub async fn serve(listener: tokio::net::TcpListener, state: ReadOnly) -> anyhow::Result<()> {
    crate::serving::serve(listener, router(state), crate::serving::Plain, crate::serving::Limits::KUBELET, "read-only").await
}

/// The health endpoint alone (healthzBindAddress:healthzPort, 127.0.0.1:10248 by default), which
/// kubeadm and service managers poll whatever the read-only port is.
pub fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|State(health): State<Arc<Health>>, RawQuery(query): RawQuery| async move { health_answer(&health, query) }))
        .route("/healthz/ping", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .with_state(health)
}

pub async fn serve_health(listener: tokio::net::TcpListener, health: Arc<Health>) -> anyhow::Result<()> {
    crate::serving::serve(listener, health_router(health), crate::serving::Plain, crate::serving::Limits::KUBELET, "healthz").await
}

async fn healthz(State(state): State<ReadOnly>, RawQuery(query): RawQuery) -> Response {
    health_answer(&state.health, query)
}

/// "ok", or with `?verbose` every check on a line (the kubelet's format).
fn health_answer(health: &Health, query: Option<String>) -> Response {
    if query.is_some_and(|q| q.split('&').any(|p| p == "verbose" || p.starts_with("verbose="))) {
        let (ok, body) = health.verbose();
        let code = if ok { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
        return (code, body).into_response();
    }
    match health.report() {
        Ok(()) => "ok".into_response(),
        Err(failures) => {
            let body: String = failures.iter().map(|f| format!("[-]{f}\n")).collect::<String>() + "healthz check failed\n";
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}

/// A v1 PodList of the pods on this node with their current status.
pub fn pod_list(pods: Vec<Pod>) -> serde_json::Value {
    serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": pods.into_iter().map(with_type_meta).collect::<Vec<_>>(),
    })
}

fn with_type_meta(pod: Pod) -> serde_json::Value {
    let mut value = serde_json::to_value(&pod).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("kind".into(), "Pod".into());
        obj.insert("apiVersion".into(), "v1".into());
    }
    value
}

async fn pods(State(state): State<ReadOnly>) -> Json<serde_json::Value> {
    Json(pod_list(state.pods.list()))
}

async fn spec(State(state): State<ReadOnly>) -> Response {
    let root = state.host_root.clone();
    match tokio::task::spawn_blocking(move || crate::machine::read_host_facts(&root)).await {
        Ok(Ok(facts)) => Json(facts.machine).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading machine facts: {e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading machine facts: {e}\n")).into_response(),
    }
}

async fn configz(State(state): State<ReadOnly>) -> Json<serde_json::Value> {
    Json(state.configz.as_ref().clone())
}

fn no_stats() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "stats: nodelet runs no pods here (--proxy-only)\n").into_response()
}

async fn metrics(State(state): State<ReadOnly>) -> Response {
    if let Some(stats) = &state.stats {
        stats.refresh_runtime_gauges().await;
    }
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::global().encode()).into_response()
}

async fn resource_metrics(State(state): State<ReadOnly>) -> Response {
    let Some(stats) = &state.stats else { return no_stats() };
    let collected = stats.collect_shared().await;
    let at_ms = collected.at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let text = crate::stats::resource::render(&collected.summary, at_ms, collected.degraded);
    ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn summary(State(state): State<ReadOnly>) -> Response {
    let Some(stats) = &state.stats else { return no_stats() };
    Json(&stats.collect_shared().await.summary).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    #[test]
    fn pod_list_has_type_meta_and_status() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-n".into());
        pod.status = Some(PodStatus { phase: Some("Running".into()), pod_ip: Some("10.88.0.2".into()), ..Default::default() });
        let list = pod_list(vec![pod]);
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["apiVersion"], "v1");
        assert_eq!(list["items"][0]["kind"], "Pod");
        assert_eq!(list["items"][0]["metadata"]["name"], "web-n");
        assert_eq!(list["items"][0]["status"]["podIP"], "10.88.0.2");
        let back: k8s_openapi::List<Pod> = serde_json::from_value(list).unwrap();
        assert_eq!(back.items.len(), 1);
    }
}
