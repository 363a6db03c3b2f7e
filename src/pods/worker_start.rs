//! How the pod worker starts one container: the image as its pull policy asks, runAsNonRoot
//! against the image's user, env and volumes resolved, the container created and started, then
//! its postStart hook (or, for a container created but never started, only the start and the
//! hook; for one whose start a stop of nodelet cut short, its removal first). A child of
//! `worker`, so it reaches the worker's own state.

use super::*;

/// The node's hosts file, the base of a host-network pod's.
const HOST_ETC_HOSTS: &str = "/etc/hosts";

impl Worker {
    pub(super) fn container(&self, name: &str) -> Option<Container> {
        spec::find_container(&self.pod, name)
    }

    /// Pulls, creates and starts one container; a failure is remembered for status and back-off.
    pub(super) async fn start_container(&mut self, sandbox_id: &str, sandbox_attempt: u32, pod_ip: Option<&str>, start: &StartContainer) -> bool {
        let Some(container) = self.container(&start.name) else { return false };
        let now = SystemTime::now();
        match self.try_start(sandbox_id, sandbox_attempt, pod_ip, &container, start).await {
            Ok(id) => {
                tracing::debug!(pod = %self.pod_ref(), container = %start.name, id = %id, attempt = start.attempt, "container started");
                self.post_start(&container, &id, pod_ip).await;
                self.memory.start_failures.remove(&start.name);
                self.memory.backoff.forget(&plan::start_failure_key(&start.name));
                if start.is_restart {
                    self.memory.backoff.next(&plan::backoff_key(&start.name), now);
                }
                true
            }
            Err((WaitingReason::ContainerCreating, message)) => {
                // Another start of it (asked before a restart of nodelet) is under way or has
                // ended: not a failure; where it went shows in the relist, which wakes the worker.
                tracing::info!(pod = %self.pod_ref(), container = %start.name, %message, "container still starting in the runtime");
                self.start_in_progress = true;
                false
            }
            Err((reason, message)) => {
                self.event(Some(&start.name), Warning, "Failed", format!("Error: {reason}: {message}"));
                self.memory.backoff.next(&plan::start_failure_key(&start.name), now);
                self.memory.start_failures.insert(start.name.clone(), StartFailure { reason, message, at: now });
                // A created but unstartable container counts as a change: observe it again.
                reason == WaitingReason::RunContainerError
            }
        }
    }

    async fn try_start(
        &self,
        sandbox_id: &str,
        sandbox_attempt: u32,
        pod_ip: Option<&str>,
        c: &Container,
        start: &StartContainer,
    ) -> Result<String, (WaitingReason, String)> {
        match &start.from {
            StartFrom::Scratch => {}
            StartFrom::Created(id) => return self.start_created(c, id).await,
            StartFrom::CutShort(id) => {
                tracing::info!(pod = %self.pod_ref(), container = %c.name, id = %id, attempt = start.attempt, "a stop of nodelet cut this container's start short; starting it again");
                self.deps.runtime.remove_container(id).await.map_err(|e| (WaitingReason::CreateContainerError, e.to_string()))?;
            }
        }
        let ctx = &self.deps.ctx;
        self.ensure_image(c).await?;
        let config_error = |e: String| (WaitingReason::CreateContainerConfigError, e);
        self.verify_run_as_non_root(c).await.map_err(config_error)?;
        let mut sources = EnvSources::gather(self.deps.objects.as_ref(), &self.pod, c).await.map_err(config_error)?;
        let env_from = sources.env_from(c).map_err(config_error)?;
        let service_env = std::mem::take(&mut sources.service_env);
        let env = spec::container_env(c, env_from, service_env, |var| {
            let source = var.value_from.as_ref().expect("only called for valueFrom");
            if let Some(field) = &source.field_ref {
                return spec::field_value(&self.pod, pod_ip, ctx.host_ip.as_deref(), &field.field_path)
                    .map(Some)
                    .ok_or_else(|| format!("env {:?}: unsupported fieldPath {:?}", var.name, field.field_path));
            }
            if let Some(resource) = &source.resource_field_ref {
                return crate::podinfo::downward::resource_value(&self.pod, Some(&c.name), resource, &ctx.allocatable)
                    .map(Some)
                    .map_err(|e| format!("env {:?}: {e}", var.name));
            }
            match sources.key_ref(var) {
                Some(found) => found,
                None if self.deps.api.is_none() => Err(format!("env {:?}: configMap and secret references need an apiserver", var.name)),
                None => Err(format!("env {:?}: unsupported valueFrom (fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef are)", var.name)),
            }
        })
        .map_err(config_error)?;
        let volumes = spec::volume_paths(ctx, &self.pod).map_err(config_error)?;
        let sub_paths = if crate::volumes::subpath::used_by(c) {
            let (pod_dir, container, env, volumes) = (spec::pod_data_dir(ctx, &self.pod), c.clone(), env.clone(), volumes.clone());
            tokio::task::spawn_blocking(move || crate::volumes::subpath::prepare(&pod_dir, &container, &env, &volumes))
                .await
                .map_err(|e| config_error(e.to_string()))?
                .map_err(config_error)?
        } else {
            Default::default()
        };
        let etc_hosts = self.write_etc_hosts(pod_ip).await.map_err(config_error)?;
        let input = spec::ContainerInput { pod: &self.pod, container: c, attempt: start.attempt, env, volumes: &volumes, sub_paths: &sub_paths, etc_hosts };
        let config = spec::container_config(ctx, input).map_err(config_error)?;
        if crate::pods::termination::container_path(c).is_some() {
            crate::pods::termination::prepare(&crate::pods::termination::host_file(ctx, &self.pod, &c.name, start.attempt)).map_err(config_error)?;
        }
        let sandbox = spec::sandbox_config(ctx, &self.pod, sandbox_attempt);
        let id = self.deps.runtime.create_container(sandbox_id, config, sandbox).await.map_err(|e| (WaitingReason::CreateContainerError, e.to_string()))?;
        self.event(Some(&c.name), Normal, "Created", format!("Created container {}", c.name));
        self.start_created(c, &id).await
    }

    async fn start_created(&self, c: &Container, id: &str) -> Result<String, (WaitingReason, String)> {
        self.deps.runtime.start_container(id).await.map_err(|e| {
            let reason = if e.is_start_taken_over() { WaitingReason::ContainerCreating } else { WaitingReason::RunContainerError };
            (reason, e.to_string())
        })?;
        self.event(Some(&c.name), Normal, "Started", format!("Started container {}", c.name));
        Ok(id.to_string())
    }

    /// runAsNonRoot, checked against runAsUser or else the user the image runs as (from CRI).
    async fn verify_run_as_non_root(&self, c: &Container) -> Result<(), String> {
        let image_user = if security::needs_image_user(&self.pod, c) {
            let image = c.image.clone().unwrap_or_default();
            let status = self.deps.runtime.image_status(&image).await.map_err(|e| e.to_string())?;
            security::ImageUser::of(status.as_ref())
        } else {
            // Not consulted: runAsUser (or no runAsNonRoot) decides.
            security::ImageUser::Uid(0)
        };
        security::verify_run_as_non_root(&self.pod, c, &image_user)
    }

    /// The pod's /etc/hosts (its address and hostname, then hostAliases); none with the host's network.
    async fn write_etc_hosts(&self, pod_ip: Option<&str>) -> Result<Option<std::path::PathBuf>, String> {
        let path = spec::pod_data_dir(&self.deps.ctx, &self.pod).join("etc-hosts");
        let content = if self.host_network() {
            // The node's own names, and the pod's hostAliases after them, as the kubelet writes it.
            let host = tokio::fs::read_to_string(HOST_ETC_HOSTS).await.map_err(|e| format!("reading {HOST_ETC_HOSTS}: {e}"))?;
            spec::host_network_etc_hosts(&self.pod, &host)
        } else {
            spec::etc_hosts(&self.pod, pod_ip)
        };
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, content).await.map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(Some(path))
    }

    /// Makes the image present as the container's imagePullPolicy asks.
    async fn ensure_image(&self, c: &Container) -> Result<(), (WaitingReason, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        let pull_error = |e: CriError| (WaitingReason::ErrImagePull, format!("failed to pull image {image:?}: {}", e.message));
        if policy != "Always" {
            let present = self.deps.runtime.image_id(&image).await.map_err(pull_error)?;
            match (present, policy) {
                (Some(_), _) => {
                    self.event(Some(&c.name), Normal, "Pulled", format!("Container image {image:?} already present on machine"));
                    return Ok(());
                }
                (None, "Never") => {
                    return Err((WaitingReason::ErrImageNeverPull, format!("container image {image:?} is not present with pull policy of Never")));
                }
                _ => {}
            }
        }
        let started = std::time::Instant::now();
        self.event(Some(&c.name), Normal, "Pulling", format!("Pulling image {image:?}"));
        let sandbox = spec::sandbox_config(&self.deps.ctx, &self.pod, 0);
        let auth = match &self.deps.api {
            Some(client) => crate::pods::pull_secrets::auth_for(&image, &crate::pods::pull_secrets::read(client, &self.pod).await),
            None => None,
        };
        self.deps.runtime.pull_image(&image, auth, Some(sandbox)).await.map_err(pull_error)?;
        self.event(Some(&c.name), Normal, "Pulled", format!("Successfully pulled image {image:?} in {:.3}s", started.elapsed().as_secs_f64()));
        Ok(())
    }

    /// Runs the container's postStart hook; a failure kills the container (which then restarts
    /// by the restart policy).
    async fn post_start(&self, c: &Container, id: &str, pod_ip: Option<&str>) {
        let ip = pod_ip.map(String::from).or_else(|| self.deps.ctx.host_ip.clone()).unwrap_or_else(|| "127.0.0.1".into());
        let effects = crate::probes::run::Real { cri: self.deps.cri.clone() };
        let Err(message) = crate::probes::hooks::post_start(&effects, &self.pod, c, id, &ip).await else { return };
        self.event(Some(&c.name), Warning, "FailedPostStartHook", message);
        let kill = KillContainer { id: id.to_string(), name: c.name.clone(), reason: KillReason::PostStartHookFailed };
        if let Err(e) = stop_container(&self.deps, &self.pod, &kill, self.grace_period(), &ip).await {
            tracing::warn!(pod = %self.pod_ref(), container = %c.name, error = %e, "could not kill a container whose postStart hook failed");
        }
    }
}
