//! The one CRI client: every call to containerd's runtime and image services goes through here,
//! with a deadline and an error that names the call and the object.

pub mod events;
#[cfg(test)]
pub mod fake;
pub mod labels;
pub mod observed;
pub mod relist;
mod seam;
mod stuck_task;

pub use seam::{CachedCri, Runtime};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

const CALL_TIMEOUT: Duration = Duration::from_secs(120);
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, thiserror::Error)]
#[error("CRI {call} {target}: {message}")]
pub struct CriError {
    pub call: &'static str,
    pub target: String,
    pub message: String,
    pub code: tonic::Code,
}

impl CriError {
    pub fn is_not_found(&self) -> bool {
        self.code == tonic::Code::NotFound
    }

    /// StartContainer refused because another start of the same container, one a nodelet
    /// killed mid-call had asked for, is still under way or has ended since it was seen
    /// Created: the next relist shows it starting, running or exited. containerd has no code
    /// of its own for either.
    pub fn is_start_taken_over(&self) -> bool {
        self.message.contains("already in starting state") || self.message.contains("container is in CONTAINER_")
    }
}

pub type CriResult<T> = Result<T, CriError>;

#[derive(Clone)]
pub struct Cri {
    channel: Channel,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl std::fmt::Debug for Cri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cri")
    }
}

/// A channel to a Unix socket that connects on first use and reconnects after the runtime
/// restarts, so nodelet starts and keeps running while containerd is down.
pub fn unix_channel(socket: &Path) -> Channel {
    let socket: PathBuf = socket.to_path_buf();
    Endpoint::from_static("http://[::]").connect_timeout(Duration::from_secs(5)).connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&socket).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }))
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(timeout);
    req
}

/// Every CRI call goes through here: a failure becomes an error naming the call and the object,
/// and the call's latency and failure are recorded for /metrics.
/// The cgroup driver in containerd's CRI config (its verbose status' `config`): that of its
/// default runtime's `SystemdCgroup` option (false when absent: cgroupfs).
pub fn driver_in_containerd_config(config: &str) -> Option<crate::cgroups::Driver> {
    let config: serde_json::Value = serde_json::from_str(config).ok()?;
    let containerd = config.get("containerd")?;
    let runtime = containerd.get("defaultRuntimeName")?.as_str()?;
    let options = containerd.get("runtimes")?.get(runtime)?.get("options");
    let systemd = options.and_then(|o| o.get("SystemdCgroup")).and_then(|v| v.as_bool()).unwrap_or(false);
    Some(if systemd { crate::cgroups::Driver::Systemd } else { crate::cgroups::Driver::Cgroupfs })
}

async fn call<T>(
    call: &'static str,
    target: impl Into<String>,
    pending: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> CriResult<T> {
    let started = std::time::Instant::now();
    let result = pending.await;
    crate::metrics::global().runtime_call(call, started.elapsed(), result.is_err());
    match result {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(CriError { call, target: target.into(), message: status.message().to_string(), code: status.code() }),
    }
}

/// The runtime's answer to Status: ready or not, with the failing condition named.
pub struct RuntimeReadiness {
    pub problems: Vec<String>,
    /// CRI's NetworkReady condition: the runtime has a pod network config loaded.
    pub network_ready: bool,
}

impl Cri {
    pub fn new(socket: &Path) -> Self {
        let channel = unix_channel(socket);
        // Image pulls and config-heavy requests can be larger than tonic's default limit.
        let runtime = RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        let images = ImageServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        Cri { channel, runtime, images }
    }

    /// The same connection, for containerd's own services (events).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub async fn version(&self) -> CriResult<cri::VersionResponse> {
        let req = request(cri::VersionRequest { version: "v1".into() }, Duration::from_secs(5));
        call("Version", "runtime", self.runtime.clone().version(req)).await
    }

    pub async fn readiness(&self) -> CriResult<RuntimeReadiness> {
        let req = request(cri::StatusRequest { verbose: false }, Duration::from_secs(5));
        let status = call("Status", "runtime", self.runtime.clone().status(req)).await?;
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        let network_ready = conditions.iter().any(|c| c.r#type == "NetworkReady" && c.status);
        let problems =
            conditions.into_iter().filter(|c| !c.status).map(|c| format!("{} is false: {} {}", c.r#type, c.reason, c.message).trim().to_string()).collect();
        Ok(RuntimeReadiness { problems, network_ready })
    }

    /// The cgroup driver the runtime creates containers' cgroups with: CRI RuntimeConfig where
    /// the runtime serves it (containerd 2), else containerd's CRI config in its verbose status
    /// (the default runtime's SystemdCgroup option); None when neither tells.
    pub async fn cgroup_driver(&self) -> CriResult<Option<crate::cgroups::Driver>> {
        let req = request(cri::RuntimeConfigRequest {}, Duration::from_secs(5));
        match call("RuntimeConfig", "runtime", self.runtime.clone().runtime_config(req)).await {
            Ok(answer) => {
                let driver = answer.linux.map(|l| l.cgroup_driver);
                return Ok(
                    driver.map(|d| if d == cri::CgroupDriver::Systemd as i32 { crate::cgroups::Driver::Systemd } else { crate::cgroups::Driver::Cgroupfs })
                );
            }
            Err(e) if e.code == tonic::Code::Unimplemented => {}
            Err(e) => return Err(e),
        }
        let req = request(cri::StatusRequest { verbose: true }, Duration::from_secs(5));
        let status = call("Status", "runtime", self.runtime.clone().status(req)).await?;
        Ok(status.info.get("config").and_then(|config| driver_in_containerd_config(config)))
    }

    /// The CNI configuration the runtime has loaded, as its verbose status shows it (containerd:
    /// the `cniconfig` entry); empty when the runtime does not tell.
    pub async fn loaded_network_config(&self) -> CriResult<String> {
        let req = request(cri::StatusRequest { verbose: true }, Duration::from_secs(5));
        let status = call("Status", "runtime", self.runtime.clone().status(req)).await?;
        Ok(status.info.get("cniconfig").cloned().unwrap_or_default())
    }

    /// Sandboxes carrying the given labels (all of them must match).
    pub async fn list_sandboxes(&self, selector: HashMap<String, String>) -> CriResult<Vec<cri::PodSandbox>> {
        let filter = cri::PodSandboxFilter { label_selector: selector, ..Default::default() };
        let req = request(cri::ListPodSandboxRequest { filter: Some(filter) }, CALL_TIMEOUT);
        Ok(call("ListPodSandbox", "sandboxes", self.runtime.clone().list_pod_sandbox(req)).await?.items)
    }

    pub async fn list_containers(&self, selector: HashMap<String, String>) -> CriResult<Vec<cri::Container>> {
        let filter = cri::ContainerFilter { label_selector: selector, ..Default::default() };
        let req = request(cri::ListContainersRequest { filter: Some(filter) }, CALL_TIMEOUT);
        Ok(call("ListContainers", "containers", self.runtime.clone().list_containers(req)).await?.containers)
    }

    pub async fn sandbox_status(&self, id: &str) -> CriResult<cri::PodSandboxStatus> {
        let req = request(cri::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false }, CALL_TIMEOUT);
        let resp = call("PodSandboxStatus", format!("sandbox {id}"), self.runtime.clone().pod_sandbox_status(req)).await?;
        resp.status.ok_or_else(|| empty_answer("PodSandboxStatus", id))
    }

    pub async fn container_status(&self, id: &str) -> CriResult<cri::ContainerStatus> {
        let req = request(cri::ContainerStatusRequest { container_id: id.into(), verbose: false }, CALL_TIMEOUT);
        let resp = call("ContainerStatus", format!("container {id}"), self.runtime.clone().container_status(req)).await?;
        resp.status.ok_or_else(|| empty_answer("ContainerStatus", id))
    }

    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig, handler: &str) -> CriResult<String> {
        let target = format!("pod {}", sandbox_ref(&config));
        let req = request(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: handler.to_string() }, CALL_TIMEOUT);
        Ok(call("RunPodSandbox", target, self.runtime.clone().run_pod_sandbox(req)).await?.pod_sandbox_id)
    }

    /// Stops a sandbox: kills what is left in it and releases its network (CNI DEL).
    pub async fn stop_sandbox(&self, id: &str) -> CriResult<()> {
        let req = request(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }, CALL_TIMEOUT);
        gone_is_done(call("StopPodSandbox", format!("sandbox {id}"), self.runtime.clone().stop_pod_sandbox(req)).await)
    }

    pub async fn remove_sandbox(&self, id: &str) -> CriResult<()> {
        self.removal(|| async {
            let req = request(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() }, CALL_TIMEOUT);
            call("RemovePodSandbox", format!("sandbox {id}"), self.runtime.clone().remove_pod_sandbox(req)).await
        })
        .await
    }

    pub async fn create_container(&self, sandbox_id: &str, config: cri::ContainerConfig, sandbox: cri::PodSandboxConfig) -> CriResult<String> {
        let target = format!("container {:?} of pod {}", config.metadata.as_ref().map_or("", |m| m.name.as_str()), sandbox_ref(&sandbox));
        let req = request(cri::CreateContainerRequest { pod_sandbox_id: sandbox_id.into(), config: Some(config), sandbox_config: Some(sandbox) }, CALL_TIMEOUT);
        Ok(call("CreateContainer", target, self.runtime.clone().create_container(req)).await?.container_id)
    }

    pub async fn start_container(&self, id: &str) -> CriResult<()> {
        let req = request(cri::StartContainerRequest { container_id: id.into() }, CALL_TIMEOUT);
        call("StartContainer", format!("container {id}"), self.runtime.clone().start_container(req)).await?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL once `grace` has passed (the runtime does both).
    pub async fn stop_container(&self, id: &str, grace: Duration) -> CriResult<()> {
        let req = request(cri::StopContainerRequest { container_id: id.into(), timeout: grace.as_secs() as i64 }, grace + CALL_TIMEOUT);
        gone_is_done(call("StopContainer", format!("container {id}"), self.runtime.clone().stop_container(req)).await)
    }

    pub async fn remove_container(&self, id: &str) -> CriResult<()> {
        self.removal(|| async {
            let req = request(cri::RemoveContainerRequest { container_id: id.into() }, CALL_TIMEOUT);
            call("RemoveContainer", format!("container {id}"), self.runtime.clone().remove_container(req)).await
        })
        .await
    }

    /// Runs a removal; one that failed on a task containerd kept (`stuck_task`) runs again once
    /// that task is cleared. Gone already counts as done.
    async fn removal<T, F: std::future::Future<Output = CriResult<T>>>(&self, remove: impl Fn() -> F) -> CriResult<()> {
        match remove().await {
            Err(e) if self.cleared_stuck_task(&e).await => gone_is_done(remove().await),
            other => gone_is_done(other),
        }
    }

    /// Whether a removal failed on a task containerd left behind (`stuck_task`) and that task
    /// is now cleared, so the removal is worth trying again.
    async fn cleared_stuck_task(&self, e: &CriError) -> bool {
        let Some(task) = stuck_task::stuck_task(&e.message) else { return false };
        tracing::warn!(task, error = %e, "containerd kept the task of a container whose start was cut short; clearing it");
        match stuck_task::clear(self.channel.clone(), task).await {
            Ok(()) => true,
            Err(status) => {
                tracing::warn!(task, error = %status.message(), "could not clear the task containerd kept");
                false
            }
        }
    }

    /// Runs a command in a running container and waits for it (probes and hooks): the runtime
    /// kills it after `timeout`, which comes back as an error.
    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: Duration) -> CriResult<cri::ExecSyncResponse> {
        let req = request(cri::ExecSyncRequest { container_id: id.into(), cmd, timeout: timeout.as_secs().max(1) as i64 }, timeout + Duration::from_secs(5));
        call("ExecSync", format!("container {id}"), self.runtime.clone().exec_sync(req)).await
    }

    /// A URL on the runtime's streaming server for a command in a running container.
    pub async fn exec(&self, exec: cri::ExecRequest) -> CriResult<String> {
        let target = format!("container {}", exec.container_id);
        let req = request(exec, CALL_TIMEOUT);
        Ok(call("Exec", target, self.runtime.clone().exec(req)).await?.url)
    }

    pub async fn attach(&self, attach: cri::AttachRequest) -> CriResult<String> {
        let target = format!("container {}", attach.container_id);
        let req = request(attach, CALL_TIMEOUT);
        Ok(call("Attach", target, self.runtime.clone().attach(req)).await?.url)
    }

    /// A port-forward URL for the ready sandbox of the pod with this UID; `ports` are those a
    /// websocket client named (a SPDY client names them per stream, and passes none here).
    pub async fn port_forward_for_pod(&self, uid: &str, ports: Vec<i32>) -> CriResult<String> {
        let selector = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
        let ready = cri::PodSandboxState::SandboxReady as i32;
        let sandbox = self.list_sandboxes(selector).await?.into_iter().find(|s| s.state == ready);
        let sandbox = sandbox.ok_or_else(|| CriError {
            call: "PortForward",
            target: format!("pod {uid}"),
            message: "the pod has no ready sandbox".into(),
            code: tonic::Code::NotFound,
        })?;
        let req = request(cri::PortForwardRequest { pod_sandbox_id: sandbox.id.clone(), port: ports }, CALL_TIMEOUT);
        Ok(call("PortForward", format!("sandbox {}", sandbox.id), self.runtime.clone().port_forward(req)).await?.url)
    }

    /// Usage figures of the containers carrying the given labels (writable layer, cpu, memory).
    pub async fn container_stats(&self, selector: HashMap<String, String>) -> CriResult<Vec<cri::ContainerStats>> {
        let filter = cri::ContainerStatsFilter { label_selector: selector, ..Default::default() };
        let req = request(cri::ListContainerStatsRequest { filter: Some(filter) }, CALL_TIMEOUT);
        Ok(call("ListContainerStats", "containers", self.runtime.clone().list_container_stats(req)).await?.stats)
    }

    /// The file systems holding the runtime's images.
    pub async fn image_fs_info(&self) -> CriResult<Vec<cri::FilesystemUsage>> {
        let req = request(cri::ImageFsInfoRequest {}, CALL_TIMEOUT);
        Ok(call("ImageFsInfo", "image file systems", self.images.clone().image_fs_info(req)).await?.image_filesystems)
    }

    /// The image's ID when the runtime already has it.
    pub async fn image_id(&self, image: &str) -> CriResult<Option<String>> {
        Ok(self.image_status(image).await?.map(|i| i.id))
    }

    /// What the runtime knows of an image it has (ID, user, size); None when it has not.
    pub async fn image_status(&self, image: &str) -> CriResult<Option<cri::Image>> {
        let spec = cri::ImageSpec { image: image.into(), ..Default::default() };
        let req = request(cri::ImageStatusRequest { image: Some(spec), verbose: false }, CALL_TIMEOUT);
        Ok(call("ImageStatus", format!("image {image:?}"), self.images.clone().image_status(req)).await?.image)
    }

    pub async fn pull_image(&self, image: &str, auth: Option<cri::AuthConfig>, sandbox: Option<cri::PodSandboxConfig>) -> CriResult<String> {
        let spec = cri::ImageSpec { image: image.into(), ..Default::default() };
        let req = request(cri::PullImageRequest { image: Some(spec), auth, sandbox_config: sandbox }, PULL_TIMEOUT);
        Ok(call("PullImage", format!("image {image:?}"), self.images.clone().pull_image(req)).await?.image_ref)
    }

    /// Asks the runtime to reopen a container's log file (after it was renamed by log rotation).
    pub async fn reopen_container_log(&self, id: &str) -> CriResult<()> {
        let req = request(cri::ReopenContainerLogRequest { container_id: id.into() }, CALL_TIMEOUT);
        call("ReopenContainerLog", format!("container {id}"), self.runtime.clone().reopen_container_log(req)).await?;
        Ok(())
    }

    /// Every image the runtime holds (ID, tags, size, pinned).
    pub async fn list_images(&self) -> CriResult<Vec<cri::Image>> {
        let req = request(cri::ListImagesRequest { filter: None }, CALL_TIMEOUT);
        Ok(call("ListImages", "images", self.images.clone().list_images(req)).await?.images)
    }

    /// Removes an image by ID (every tag of it); an image already gone is done.
    pub async fn remove_image(&self, id: &str) -> CriResult<()> {
        let spec = cri::ImageSpec { image: id.into(), ..Default::default() };
        let req = request(cri::RemoveImageRequest { image: Some(spec) }, CALL_TIMEOUT);
        gone_is_done(call("RemoveImage", format!("image {id}"), self.images.clone().remove_image(req)).await)
    }
}

/// Stopping or removing something already gone has done its job.
fn gone_is_done<T>(result: CriResult<T>) -> CriResult<()> {
    match result {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

fn empty_answer(call: &'static str, id: &str) -> CriError {
    CriError { call, target: id.into(), message: "the runtime answered without a status".into(), code: tonic::Code::Internal }
}

fn sandbox_ref(config: &cri::PodSandboxConfig) -> String {
    config.metadata.as_ref().map(|m| format!("{}/{}", m.namespace, m.name)).unwrap_or_default()
}
