//! A task containerd holds for a container CRI does not see running (what a start cut short by
//! a killed nodelet leaves, `runtime::stuck_task`) no longer blocks the container's removal, nor
//! its sandbox's. The state is made on purpose: a task started behind CRI's back with `ctr`.

mod common;

use common::{on_runtime, uuid_like, BUSYBOX};
use k8s_cri::v1 as cri;
use std::process::Command;

/// Removes what the test made, whatever happened: the task, then the sandbox with its containers.
struct Made {
    sandbox: String,
    container: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        let ctr = |args: &[&str]| Command::new("ctr").args(["-n", "k8s.io", "tasks"]).args(args).output();
        let _ = ctr(&["kill", "-s", "SIGKILL", &self.container]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = ctr(&["rm", "-f", &self.container]);
        let sandbox = self.sandbox.clone();
        on_runtime(move |cri| async move {
            let _ = cri.stop_sandbox(&sandbox).await;
            let _ = cri.remove_sandbox(&sandbox).await;
        });
    }
}

fn tasks() -> String {
    String::from_utf8_lossy(&Command::new("ctr").args(["-n", "k8s.io", "tasks", "ls"]).output().unwrap().stdout).into_owned()
}

#[test]
fn a_task_containerd_kept_for_a_container_it_reports_not_running_is_cleared_to_remove_it() {
    common::require_runtime();
    let dir = tempfile::Builder::new().prefix("nodelet-stucktask-").tempdir().unwrap();
    let (name, uid, logs) = (format!("t-stucktask-{}", std::process::id()), uuid_like(), dir.path().to_str().unwrap().to_string());
    let (sandbox, container) = on_runtime(move |cri| async move {
        cri.pull_image(BUSYBOX, None, None).await.unwrap();
        let host_network = cri::NamespaceOption { network: cri::NamespaceMode::Node as i32, ..Default::default() };
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata { name, uid, namespace: "default".into(), attempt: 0 }),
            log_directory: logs,
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext { namespace_options: Some(host_network), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox = cri.run_sandbox(sandbox_config.clone(), "").await.unwrap();
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "main.log".into(),
            ..Default::default()
        };
        let container = cri.create_container(&sandbox, config, sandbox_config).await.unwrap();
        (sandbox, container)
    });
    let made = Made { sandbox, container: container.clone() };

    let out = Command::new("ctr").args(["-n", "k8s.io", "tasks", "start", "-d", &container]).output().unwrap();
    assert!(out.status.success(), "ctr tasks start: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tasks().contains(&container), "no task for {container}:\n{}", tasks());

    let id = container.clone();
    let (removed, status) = on_runtime(move |cri| async move {
        let state = cri.container_status(&id).await.map(|s| s.state).ok();
        assert_eq!(state, Some(cri::ContainerState::ContainerCreated as i32), "CRI sees the container not running");
        let removed = cri.remove_container(&id).await;
        (removed, cri.container_status(&id).await.map(|s| s.state))
    });
    assert!(removed.is_ok(), "{removed:?}");
    assert!(status.is_err_and(|e| e.is_not_found()), "the container is still there");
    assert!(!tasks().contains(&container), "its task is still there:\n{}", tasks());
    drop(made);
}
