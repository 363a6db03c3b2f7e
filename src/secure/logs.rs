//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's CRI log file, filtered by
//! the PodLogOptions query, optionally followed until the container stops running.

use super::crilog::{find_tail_start, Reader, Renderer};
use super::logopts::{self, LogOptions};
use super::lookup::{container_status, find_pod};
use crate::gauge::LOG_STREAMS;
use crate::pods::store::PodStore;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often a follower looks for new lines and at the container's state, besides waking on
/// every pod store change.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// What a request reads at a time, forwards and (for tailLines) backwards: with the reply's
/// channel this bounds a request's memory, whatever the size of the file or of its lines.
const CHUNK: usize = 64 * 1024;

/// Log streams being served right now (each holds a task and an open file).
pub fn active_streams() -> usize {
    LOG_STREAMS.get()
}

pub struct LogsContext {
    pub pods: PodStore,
    pub pod_logs_dir: PathBuf,
}

fn plain(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg + "\n").into_response()
}

/// Which log file to read and whether it can still grow.
#[derive(Debug, PartialEq, Eq)]
pub struct LogTarget {
    pub attempt: i32,
    /// The instance is running: following it makes sense.
    pub running: bool,
}

/// The kubelet's validateContainerLogStatus, over nodelet's status (restartCount is the
/// latest instance's attempt, lastState the one before it or, while waiting, the latest).
pub fn log_target(status: Option<&ContainerStatus>, container: &str, pod: &str, previous: bool) -> Result<LogTarget, String> {
    let Some(status) = status else {
        return Err(format!("container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"));
    };
    let state = status.state.clone().unwrap_or_default();
    let last_terminated = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let n = status.restart_count;
    if previous {
        if last_terminated.is_none() {
            return Err(format!("previous terminated container {container:?} in pod {pod:?} not found"));
        }
        // While waiting to restart, lastState is the latest instance itself.
        let attempt = if state.waiting.is_some() { n } else { n - 1 };
        return Ok(LogTarget { attempt: attempt.max(0), running: false });
    }
    if state.running.is_some() {
        return Ok(LogTarget { attempt: n, running: true });
    }
    if state.terminated.is_some() {
        return Ok(LogTarget { attempt: n, running: false });
    }
    if last_terminated.is_some() {
        // Crashed and waiting to restart: the logs of the run that ended.
        return Ok(LogTarget { attempt: n, running: false });
    }
    let reason = state.waiting.and_then(|w| w.reason).unwrap_or_else(|| crate::pods::reasons::WaitingReason::ContainerCreating.as_str().into());
    Err(format!("container {container:?} in pod {pod:?} is waiting to start: {reason}"))
}

fn has_container(pod: &Pod, container: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    spec.containers.iter().any(|c| c.name == container)
        || spec.init_containers.iter().flatten().any(|c| c.name == container)
        || spec.ephemeral_containers.iter().flatten().any(|c| c.name == container)
}

pub async fn container_logs(
    ctx: Arc<LogsContext>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let opts = match logopts::parse(&query, Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let Some(pod) = find_pod(&ctx.pods, &namespace, &name) else {
        return plain(StatusCode::NOT_FOUND, format!("pod {name:?} does not exist in namespace {namespace:?}"));
    };
    if !has_container(&pod, &container) {
        return plain(StatusCode::NOT_FOUND, format!("container {container:?} not found in pod {name:?}"));
    }
    let target = match log_target(container_status(&pod, &container), &container, &name, opts.previous) {
        Ok(t) => t,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let path = ctx.pod_logs_dir.join(format!("{namespace}_{name}_{uid}")).join(&container).join(format!("{}.log", target.attempt));
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return plain(StatusCode::NOT_FOUND, format!("log file of container {container:?} in pod {namespace}/{name} not found: {}", path.display()))
        }
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("opening {}: {e}", path.display())),
    };
    let follow = (opts.follow && target.running).then(|| Follow { pods: ctx.pods.clone(), uid, container, attempt: target.attempt, path: path.clone() });
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(8);
    let guard = LOG_STREAMS.hold();
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = stream(file, opts, follow, &tx).await {
            tracing::warn!(file = %path.display(), error = %e, "reading container log");
            let _ = tx.send(Err(e)).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

struct Follow {
    pods: PodStore,
    uid: String,
    container: String,
    attempt: i32,
    /// The log file's path: log rotation moves the file away and the runtime reopens this one.
    path: std::path::PathBuf,
}

impl Follow {
    /// Whether the followed instance still runs (same pod, same attempt, state running).
    fn still_running(&self) -> bool {
        let pods = self.pods.list();
        let Some(pod) = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(&self.uid)) else { return false };
        container_status(pod, &self.container).is_some_and(|s| s.restart_count == self.attempt && s.state.as_ref().is_some_and(|st| st.running.is_some()))
    }

    /// The file now at the log's path when log rotation has replaced the one being read.
    async fn rotated(&self, file: &tokio::fs::File) -> Option<tokio::fs::File> {
        use std::os::unix::fs::MetadataExt;
        let reading = file.metadata().await.ok()?.ino();
        let current = tokio::fs::metadata(&self.path).await.ok()?.ino();
        if reading == current {
            return None;
        }
        tokio::fs::File::open(&self.path).await.ok()
    }
}

type Sender = tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>;

/// Sends what is rendered; Ok(false) when the client has gone.
async fn flush(tx: &Sender, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    tx.send(Ok(std::mem::take(out))).await.is_ok()
}

/// Reads the file to its current end, rendering what is read and sending it chunk by chunk;
/// Ok(false) when the stream is over (the client left or limitBytes was reached).
async fn pump(file: &mut tokio::fs::File, reader: &mut Reader, renderer: &mut Renderer, buf: &mut [u8], tx: &Sender) -> std::io::Result<bool> {
    let mut out = Vec::new();
    loop {
        if renderer.exhausted() {
            return Ok(false);
        }
        let n = file.read(buf).await?;
        if n == 0 {
            return Ok(true);
        }
        reader.feed(&buf[..n], &mut |h, b, end| renderer.render(h, b, end, &mut out));
        if !flush(tx, &mut out).await {
            return Ok(false);
        }
    }
}

async fn stream(mut file: tokio::fs::File, opts: LogOptions, follow: Option<Follow>, tx: &Sender) -> std::io::Result<()> {
    let mut renderer = Renderer::new(opts.since, opts.timestamps, opts.limit_bytes);
    let mut start = 0;
    if let Some(lines) = opts.tail_lines {
        // Found reading backwards from the end, so the file is never read whole.
        let len = file.metadata().await?.len();
        let std_file = file.try_clone().await?.into_std().await;
        let since = opts.since;
        let tail = tokio::task::spawn_blocking(move || find_tail_start(&std_file, len, lines, since, CHUNK)).await.map_err(std::io::Error::other)??;
        renderer.start_at(&tail);
        start = tail.offset;
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let mut reader = Reader::new(start);
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::new();

    // What is in the file now.
    if !pump(&mut file, &mut reader, &mut renderer, &mut buf, tx).await? {
        return Ok(());
    }
    let Some(follow) = follow else {
        reader.finish(&mut |h, b, end| renderer.render(h, b, end, &mut out));
        flush(tx, &mut out).await;
        return Ok(());
    };
    let mut changes = follow.pods.subscribe();
    loop {
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = changes.changed() => {}
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        // Look at the state first, then read: lines written before the end are not lost.
        let running = follow.still_running();
        if !pump(&mut file, &mut reader, &mut renderer, &mut buf, tx).await? {
            return Ok(());
        }
        // The runtime has reopened the log after rotation: the old file gets nothing more, so
        // it is read to its end and left for the new one (each holds whole lines).
        if let Some(next) = follow.rotated(&file).await {
            if !pump(&mut file, &mut reader, &mut renderer, &mut buf, tx).await? {
                return Ok(());
            }
            file = next;
            if !pump(&mut file, &mut reader, &mut renderer, &mut buf, tx).await? {
                return Ok(());
            }
        }
        if !running {
            reader.finish(&mut |h, b, end| renderer.render(h, b, end, &mut out));
            flush(tx, &mut out).await;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting};

    fn status(state: ContainerState, last: Option<ContainerState>, restarts: i32) -> ContainerStatus {
        ContainerStatus { name: "c".into(), restart_count: restarts, state: Some(state), last_state: last, ..Default::default() }
    }
    fn running() -> ContainerState {
        ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() }
    }
    fn terminated() -> ContainerState {
        ContainerState { terminated: Some(ContainerStateTerminated::default()), ..Default::default() }
    }
    fn waiting(reason: &str) -> ContainerState {
        ContainerState { waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: None }), ..Default::default() }
    }

    #[test]
    fn picks_the_instance_like_the_kubelet() {
        assert_eq!(log_target(Some(&status(running(), None, 0)), "c", "p", false), Ok(LogTarget { attempt: 0, running: true }));
        assert_eq!(log_target(Some(&status(running(), Some(terminated()), 2)), "c", "p", true), Ok(LogTarget { attempt: 1, running: false }));
        assert_eq!(log_target(Some(&status(terminated(), None, 1)), "c", "p", false), Ok(LogTarget { attempt: 1, running: false }));
        // crash-looping: current and previous are both the run that just ended
        let crashed = status(waiting("CrashLoopBackOff"), Some(terminated()), 3);
        assert_eq!(log_target(Some(&crashed), "c", "p", false), Ok(LogTarget { attempt: 3, running: false }));
        assert_eq!(log_target(Some(&crashed), "c", "p", true), Ok(LogTarget { attempt: 3, running: false }));
        let e = log_target(Some(&status(running(), None, 0)), "c", "p", true).unwrap_err();
        assert_eq!(e, "previous terminated container \"c\" in pod \"p\" not found");
        let e = log_target(Some(&status(waiting("ContainerCreating"), None, 0)), "c", "p", false).unwrap_err();
        assert_eq!(e, "container \"c\" in pod \"p\" is waiting to start: ContainerCreating");
        assert!(log_target(None, "c", "p", false).unwrap_err().contains("waiting to start"));
    }
}
