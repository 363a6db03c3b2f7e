//! A containerd 1.6 defect a killed nodelet can trigger. When a StartContainer is canceled
//! (its caller died) after containerd created the container's task but before it read the
//! task's pid, containerd marks the container exited yet leaves the task, CREATED, in its shim.
//! No CRI call reaches that task: RemoveContainer, and RemovePodSandbox with it, fail with
//! "cannot delete running task <id>" until containerd restarts, so the pod's sandbox stays.
//! nodelet clears such a task through containerd's own task service on the same socket
//! (Kill, Wait, Delete in the CRI plugin's namespace), then removes again.

use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// The containerd namespace the CRI plugin keeps its containers in.
const CRI_NAMESPACE: &str = "k8s.io";
const STUCK: &str = "cannot delete running task ";
const TIMEOUT: Duration = Duration::from_secs(10);
const KILL: &str = "/containerd.services.tasks.v1.Tasks/Kill";
const WAIT: &str = "/containerd.services.tasks.v1.Tasks/Wait";
const DELETE: &str = "/containerd.services.tasks.v1.Tasks/Delete";

/// The id of the task a removal failed on, when the runtime refused it for a task it still
/// holds for a container CRI reports as not running (CRI refuses a running one before that).
pub fn stuck_task(message: &str) -> Option<&str> {
    let rest = &message[message.find(STUCK)? + STUCK.len()..];
    let id = &rest[..rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len())];
    (!id.is_empty()).then_some(id)
}

#[derive(Clone, PartialEq, prost::Message)]
struct KillRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    exec_id: String,
    #[prost(uint32, tag = "3")]
    signal: u32,
    #[prost(bool, tag = "4")]
    all: bool,
}

/// WaitRequest and DeleteTaskRequest: the container id is field 1 of both.
#[derive(Clone, PartialEq, prost::Message)]
struct TaskRequest {
    #[prost(string, tag = "1")]
    container_id: String,
}

/// The answers' fields are not needed.
#[derive(Clone, PartialEq, prost::Message)]
struct Ignored {}

/// Kills the task of container `id` and deletes it. A task that is gone already is no error.
pub async fn clear(channel: Channel, id: &str) -> Result<(), tonic::Status> {
    let task = || TaskRequest { container_id: id.to_string() };
    let kill = KillRequest { container_id: id.to_string(), exec_id: String::new(), signal: libc::SIGKILL as u32, all: true };
    let gone = |r: Result<(), tonic::Status>| match r {
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        other => other,
    };
    gone(unary(channel.clone(), KILL, kill).await)?;
    // Deleting needs the process to have exited: a killed CREATED one does at once.
    let _ = unary(channel.clone(), WAIT, task()).await;
    gone(unary(channel, DELETE, task()).await)
}

async fn unary<T: prost::Message + Send + Sync + 'static>(channel: Channel, path: &'static str, message: T) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(message);
    req.set_timeout(TIMEOUT);
    req.metadata_mut().insert("containerd-namespace", tonic::metadata::MetadataValue::from_static(CRI_NAMESPACE));
    grpc.unary::<T, Ignored, _>(req, PathAndQuery::from_static(path), tonic_prost::ProstCodec::default()).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stuck_task_is_read_from_containerds_refusal() {
        let id = "fe7efc11e744eefa846760cb771e89a23e2856086cd9f01112746fc1258573a0";
        let sandbox = format!(
            "failed to remove container \"{id}\": failed to delete containerd container \"{id}\": cannot delete running task {id}: failed precondition"
        );
        assert_eq!(stuck_task(&sandbox), Some(id));
        assert_eq!(stuck_task(&format!("cannot delete running task {id}")), Some(id));
        assert_eq!(stuck_task("container is still running, to stop first"), None);
        assert_eq!(stuck_task("cannot delete running task : x"), None);
    }
}
