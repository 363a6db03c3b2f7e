//! What the pod worker needs of the container runtime, as a trait: the CRI client is the real
//! implementation, `fake::FakeRuntime` the recording one its unit tests run against.

use super::relist::RuntimeCache;
use super::{Cri, CriResult};
use crate::runtime::observed::ObservedPod;
use k8s_cri::v1 as cri;
use std::time::{Duration, Instant};

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Everything the runtime holds for one pod of this node, by its UID, as seen by a look that
    /// began at or after `at_least`.
    async fn observe_pod(&self, uid: &str, at_least: Instant) -> CriResult<ObservedPod>;
    /// The oldest look a periodic resync accepts (no worker asks the runtime on its own).
    fn recent(&self) -> Instant;
    /// `handler` names the runtime handler (a RuntimeClass's); empty for the default.
    async fn run_sandbox(&self, config: cri::PodSandboxConfig, handler: &str) -> CriResult<String>;
    /// Stopping or removing what is already gone succeeds.
    async fn stop_sandbox(&self, id: &str) -> CriResult<()>;
    async fn remove_sandbox(&self, id: &str) -> CriResult<()>;
    async fn create_container(&self, sandbox_id: &str, config: cri::ContainerConfig, sandbox: cri::PodSandboxConfig) -> CriResult<String>;
    async fn start_container(&self, id: &str) -> CriResult<()>;
    /// SIGTERM, then SIGKILL once `grace` has passed.
    async fn stop_container(&self, id: &str, grace: Duration) -> CriResult<()>;
    /// With its log files.
    async fn remove_container(&self, id: &str) -> CriResult<()>;
    /// What the runtime knows of an image it has; None when it has not.
    async fn image_status(&self, image: &str) -> CriResult<Option<cri::Image>>;
    async fn pull_image(&self, image: &str, auth: Option<cri::AuthConfig>, sandbox: Option<cri::PodSandboxConfig>) -> CriResult<String>;

    /// The image's ID when the runtime already has it.
    async fn image_id(&self, image: &str) -> CriResult<Option<String>> {
        Ok(self.image_status(image).await?.map(|i| i.id))
    }
}

/// The real runtime: the pods seen through the shared relist, every action through the CRI client.
#[derive(Clone)]
pub struct CachedCri {
    pub cri: Cri,
    pub cache: RuntimeCache,
}

#[async_trait::async_trait]
impl Runtime for CachedCri {
    async fn observe_pod(&self, uid: &str, at_least: Instant) -> CriResult<ObservedPod> {
        self.cache.pod(uid, at_least).await
    }
    fn recent(&self) -> Instant {
        self.cache.recent()
    }
    async fn run_sandbox(&self, config: cri::PodSandboxConfig, handler: &str) -> CriResult<String> {
        self.cri.run_sandbox(config, handler).await
    }
    async fn stop_sandbox(&self, id: &str) -> CriResult<()> {
        self.cri.stop_sandbox(id).await
    }
    async fn remove_sandbox(&self, id: &str) -> CriResult<()> {
        self.cri.remove_sandbox(id).await
    }
    async fn create_container(&self, sandbox_id: &str, config: cri::ContainerConfig, sandbox: cri::PodSandboxConfig) -> CriResult<String> {
        self.cri.create_container(sandbox_id, config, sandbox).await
    }
    async fn start_container(&self, id: &str) -> CriResult<()> {
        self.cri.start_container(id).await
    }
    async fn stop_container(&self, id: &str, grace: Duration) -> CriResult<()> {
        self.cri.stop_container(id, grace).await
    }
    async fn remove_container(&self, id: &str) -> CriResult<()> {
        crate::logrotate::remove_container_and_logs(&self.cri, id).await
    }
    async fn image_status(&self, image: &str) -> CriResult<Option<cri::Image>> {
        self.cri.image_status(image).await
    }
    async fn pull_image(&self, image: &str, auth: Option<cri::AuthConfig>, sandbox: Option<cri::PodSandboxConfig>) -> CriResult<String> {
        self.cri.pull_image(image, auth, sandbox).await
    }
}
