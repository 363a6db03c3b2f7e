//! How the pod worker makes and removes a pod's sandbox: the network gate, the pod's
//! directories, the RuntimeClass's handler, and a FailedCreatePodSandBox event when it cannot.
//! A child of `worker`, so it reaches the worker's own state.

use super::*;

impl Worker {
    pub(super) async fn create_sandbox(&mut self, attempt: u32) -> Result<(), SyncError> {
        if !self.host_network() {
            // As the kubelet: no pod joins the pod network before it is ready.
            self.deps.network.check().map_err(|why| SyncError::NetworkNotReady { pod: self.pod_ref(), why })?;
        }
        let ctx = &self.deps.ctx;
        let config = spec::sandbox_config(ctx, &self.pod, attempt);
        for dir in [spec::log_directory(ctx, &self.pod), spec::pod_data_dir(ctx, &self.pod)] {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| self.files_error(format!("creating {}: {e}", dir.display())))?;
        }
        // The pod's volumes (its secrets among them) are no business of other local users.
        crate::volumes::private_dir(&spec::pod_data_dir(ctx, &self.pod)).await.map_err(|cause| self.files_error(cause))?;
        self.ensure_pod_cgroup().await?;
        let handler = self.runtime_handler().await.map_err(|cause| self.sandbox_failed(cause))?;
        let started = std::time::Instant::now();
        let id = self.deps.runtime.run_sandbox(config, &handler).await.map_err(|e| self.sandbox_failed(e.to_string()))?;
        tracing::info!(pod = %self.pod_ref(), sandbox = %id, attempt, elapsed = ?started.elapsed(), "sandbox ready");
        Ok(())
    }

    /// The pod's cgroup, made and sized from its resources before its sandbox goes in, as the
    /// kubelet's pod container manager does; a failure is a FailedCreatePodContainer event.
    async fn ensure_pod_cgroup(&self) -> Result<(), SyncError> {
        let ctx = &self.deps.ctx;
        let resources = spec::pod_resources(&self.pod, ctx.pod_pids_limit).map_err(|cause| self.pod_cgroup_failed(cause))?;
        let name = spec::pod_cgroup(ctx, &self.pod);
        self.deps.cgroups.ensure(&name, &resources).await.map_err(|e| self.pod_cgroup_failed(e.to_string()))
    }

    fn pod_cgroup_failed(&self, cause: String) -> SyncError {
        self.event(None, Warning, "FailedCreatePodContainer", format!("unable to ensure pod container exists: {cause}"));
        SyncError::Sandbox { pod: self.pod_ref(), cause: format!("pod cgroup: {cause}") }
    }

    /// The runtime handler of the pod's RuntimeClass; empty (the runtime's default) without one.
    async fn runtime_handler(&self) -> Result<String, String> {
        let Some(name) = self.pod.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref()) else { return Ok(String::new()) };
        let Some(objects) = self.deps.objects.as_ref() else {
            return Err(format!("RuntimeClass {name:?} cannot be looked up: nodelet runs without an apiserver"));
        };
        match objects.runtime_class(name).await? {
            Some(class) => Ok(class.handler),
            None => Err(format!("RuntimeClass {name:?} not found")),
        }
    }

    /// A sandbox that could not be made: said in a FailedCreatePodSandBox event, as the kubelet does.
    fn sandbox_failed(&self, cause: String) -> SyncError {
        self.event(None, Warning, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {cause}"));
        SyncError::Sandbox { pod: self.pod_ref(), cause }
    }

    pub(super) async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        tracing::info!(pod = %self.pod_ref(), sandbox = %id, "removing old sandbox");
        self.deps.runtime.stop_sandbox(id).await?;
        self.deps.runtime.remove_sandbox(id).await
    }
}
