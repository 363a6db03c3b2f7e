//! What the pod worker needs of the container runtime, as a trait: the CRI client is the real
//! implementation, `fake::FakeRuntime` the recording one its unit tests run against.

use super::{Cri, CriResult};
use crate::pods::observed::ObservedPod;
use k8s_cri::v1 as cri;
use std::time::Duration;

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Everything the runtime holds for one pod of this node, by its UID.
    async fn observe_pod(&self, node: &str, uid: &str) -> CriResult<ObservedPod>;
    async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> CriResult<String>;
    /// Stopping or removing what is already gone succeeds.
    async fn stop_sandbox(&self, id: &str) -> CriResult<()>;
    async fn remove_sandbox(&self, id: &str) -> CriResult<()>;
    async fn create_container(&self, sandbox_id: &str, config: cri::ContainerConfig, sandbox: cri::PodSandboxConfig) -> CriResult<String>;
    async fn start_container(&self, id: &str) -> CriResult<()>;
    /// SIGTERM, then SIGKILL once `grace` has passed.
    async fn stop_container(&self, id: &str, grace: Duration) -> CriResult<()>;
    async fn remove_container(&self, id: &str) -> CriResult<()>;
    /// What the runtime knows of an image it has; None when it has not.
    async fn image_status(&self, image: &str) -> CriResult<Option<cri::Image>>;
    async fn pull_image(&self, image: &str, auth: Option<cri::AuthConfig>, sandbox: Option<cri::PodSandboxConfig>) -> CriResult<String>;

    /// The image's ID when the runtime already has it.
    async fn image_id(&self, image: &str) -> CriResult<Option<String>> {
        Ok(self.image_status(image).await?.map(|i| i.id))
    }
}

#[async_trait::async_trait]
impl Runtime for Cri {
    async fn observe_pod(&self, node: &str, uid: &str) -> CriResult<ObservedPod> {
        Cri::observe_pod(self, node, uid).await
    }
    async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> CriResult<String> {
        Cri::run_sandbox(self, config).await
    }
    async fn stop_sandbox(&self, id: &str) -> CriResult<()> {
        Cri::stop_sandbox(self, id).await
    }
    async fn remove_sandbox(&self, id: &str) -> CriResult<()> {
        Cri::remove_sandbox(self, id).await
    }
    async fn create_container(&self, sandbox_id: &str, config: cri::ContainerConfig, sandbox: cri::PodSandboxConfig) -> CriResult<String> {
        Cri::create_container(self, sandbox_id, config, sandbox).await
    }
    async fn start_container(&self, id: &str) -> CriResult<()> {
        Cri::start_container(self, id).await
    }
    async fn stop_container(&self, id: &str, grace: Duration) -> CriResult<()> {
        Cri::stop_container(self, id, grace).await
    }
    async fn remove_container(&self, id: &str) -> CriResult<()> {
        Cri::remove_container(self, id).await
    }
    async fn image_status(&self, image: &str) -> CriResult<Option<cri::Image>> {
        Cri::image_status(self, image).await
    }
    async fn pull_image(&self, image: &str, auth: Option<cri::AuthConfig>, sandbox: Option<cri::PodSandboxConfig>) -> CriResult<String> {
        Cri::pull_image(self, image, auth, sandbox).await
    }
}
