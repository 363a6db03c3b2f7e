//! grpc probes: grpc.health.v1.Health/Check with the probe's service, over plain HTTP/2 as the
//! kubelet does; SERVING is success. The two messages are written out here (no build step).

use super::Outcome;
use std::time::Duration;

#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// grpc.health.v1.HealthCheckResponse.ServingStatus
pub fn status_name(status: i32) -> &'static str {
    match status {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

pub async fn check(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{host_port}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Failure(format!("bad address {host_port}: {e}")),
    };
    let call = async {
        let channel = endpoint.connect().await.map_err(|e| format!("timeout: failed to connect service {host_port:?} within {}s: {e}", timeout.as_secs()))?;
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.map_err(|e| e.to_string())?;
        let path = hyper::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let resp = client.unary(tonic::Request::new(HealthCheckRequest { service: service.to_string() }), path, codec).await;
        match resp {
            Ok(r) => Ok(r.into_inner().status),
            Err(status) => Err(format!("rpc error: code = {:?} desc = {}", status.code(), status.message())),
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(1)) => Outcome::Success,
        Ok(Ok(status)) => Outcome::Failure(format!("service unhealthy (responded with {:?})", status_name(status))),
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!("timeout: health rpc did not complete within {}s", timeout.as_secs())),
    }
}
