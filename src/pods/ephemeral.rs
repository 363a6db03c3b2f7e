//! Ephemeral containers (`kubectl debug`): added to a running pod through the API, started once
//! in its sandbox, never restarted. They run through the same code as regular containers, as
//! the `Container` this module makes of them.

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

/// The container an ephemeral container runs as. Probes, lifecycle hooks, ports and resources
/// are refused for ephemeral containers by the apiserver; they are dropped here all the same.
pub fn as_container(e: &EphemeralContainer) -> Container {
    Container {
        name: e.name.clone(),
        image: e.image.clone(),
        image_pull_policy: e.image_pull_policy.clone(),
        command: e.command.clone(),
        args: e.args.clone(),
        working_dir: e.working_dir.clone(),
        env: e.env.clone(),
        env_from: e.env_from.clone(),
        volume_mounts: e.volume_mounts.clone(),
        volume_devices: e.volume_devices.clone(),
        security_context: e.security_context.clone(),
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        tty: e.tty,
        termination_message_path: e.termination_message_path.clone(),
        termination_message_policy: e.termination_message_policy.clone(),
        ..Default::default()
    }
}

/// The pod's ephemeral containers, as containers.
pub fn containers(pod: &Pod) -> Vec<Container> {
    pod.spec.iter().flat_map(|s| s.ephemeral_containers.iter().flatten()).map(as_container).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ephemeral_container_keeps_what_it_may_have() {
        let e = EphemeralContainer {
            name: "debugger".into(),
            image: Some("busybox".into()),
            command: Some(vec!["sh".into()]),
            stdin: Some(true),
            tty: Some(true),
            target_container_name: Some("app".into()),
            ..Default::default()
        };
        let c = as_container(&e);
        assert_eq!((c.name.as_str(), c.image.as_deref(), c.stdin, c.tty), ("debugger", Some("busybox"), Some(true), Some(true)));
        assert_eq!(c.command, Some(vec!["sh".to_string()]));
        assert!(c.liveness_probe.is_none() && c.ports.is_none());
    }
}
