//! The labels and annotations nodelet puts on sandboxes and containers: the kubelet's keys, so
//! tools like crictl show what they expect, plus one of nodelet's own naming the node that owns them.

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Scopes adoption: a nodelet only adopts or removes what carries its own node name.
pub const MANAGED_BY_NODE: &str = "nodelet.io/node";

pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const TERMINATION_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
