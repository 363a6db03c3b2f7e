//! Running an action once: the effects behind a small trait (the real one talks to CRI and the
//! network; unit tests script outcomes).

use super::action::Action;
use super::Outcome;
use crate::runtime::Cri;
use std::future::Future;
use std::time::Duration;

pub trait Effects: Send + Sync + 'static {
    /// Runs `action` for the container `container_id`, giving up after `timeout`.
    fn run(&self, container_id: &str, action: &Action, timeout: Duration) -> impl Future<Output = Outcome> + Send;
}

/// Exec through CRI's ExecSync, HTTP, TCP and gRPC from nodelet's own network namespace (the
/// pod's address is reachable from the node), sleep on a timer.
#[derive(Clone)]
pub struct Real {
    pub cri: Cri,
}

impl Effects for Real {
    async fn run(&self, container_id: &str, action: &Action, timeout: Duration) -> Outcome {
        match action {
            Action::Exec { command } => exec(&self.cri, container_id, command, timeout).await,
            Action::Http(target) => super::http::get(target, timeout).await,
            Action::Tcp { host, port } => tcp(host, *port, timeout).await,
            Action::Grpc { host, port, service } => super::grpc::check(host, *port, service, timeout).await,
            Action::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Outcome::Success
            }
        }
    }
}

async fn exec(cri: &Cri, id: &str, command: &[String], timeout: Duration) -> Outcome {
    match cri.exec_sync(id, command.to_vec(), timeout).await {
        Ok(r) if r.exit_code == 0 => Outcome::Success,
        Ok(r) => {
            let mut output = String::from_utf8_lossy(&r.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&r.stderr));
            Outcome::Failure(exec_failure(command, r.exit_code, &output))
        }
        Err(e) if e.code == tonic::Code::DeadlineExceeded || e.message.contains("timeout") => {
            Outcome::Failure(format!("command {:?} timed out", command.join(" ")))
        }
        Err(e) => Outcome::Failure(e.to_string()),
    }
}

/// The kubelet shows the command's output; with none, say how it ended.
pub fn exec_failure(command: &[String], exit_code: i32, output: &str) -> String {
    if output.trim().is_empty() {
        format!("command {:?} exited with {exit_code}", command.join(" "))
    } else {
        output.to_string()
    }
}

async fn tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: connect: {e}")),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_connects_or_names_the_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(tcp("127.0.0.1", port, Duration::from_secs(2)).await, Outcome::Success);
        drop(listener);
        let Outcome::Failure(message) = tcp("127.0.0.1", port, Duration::from_secs(2)).await else { panic!("closed port answered") };
        assert!(message.starts_with(&format!("dial tcp 127.0.0.1:{port}: connect:")), "{message}");
    }

    #[test]
    fn exec_failure_shows_output_or_the_exit_code() {
        let cmd = vec!["cat".to_string(), "/tmp/health".to_string()];
        assert_eq!(exec_failure(&cmd, 1, "cat: can't open '/tmp/health'\n"), "cat: can't open '/tmp/health'\n");
        assert_eq!(exec_failure(&cmd, 2, ""), "command \"cat /tmp/health\" exited with 2");
    }
}
