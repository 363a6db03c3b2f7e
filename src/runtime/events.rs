//! Container exits pushed by containerd's own event stream (CRI's GetContainerEvents is not
//! served by containerd 1.6): a worker reacts to its container's exit at once instead of polling.

use containerd_client::events::TaskExit;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::SubscribeRequest;
use prost::Message;
use std::time::Duration;
use tokio::sync::broadcast;
use tonic::transport::Channel;

/// The ID of a container (or sandbox) whose task exited.
pub type ExitedId = String;

const TOPIC_FILTER: &str = r#"topic=="/tasks/exit",namespace=="k8s.io""#;
/// A subscription that lasted this long was healthy (containerd answers a Subscribe only with
/// the first event, so its duration is the sign).
const HEALTHY_SUBSCRIPTION: Duration = Duration::from_secs(10);

/// Subscribes for ever, reconnecting with a short back-off when containerd goes away.
pub fn spawn_exit_watcher(channel: Channel) -> broadcast::Sender<ExitedId> {
    let (tx, _) = broadcast::channel(1024);
    let sender = tx.clone();
    tokio::spawn(async move {
        let mut backoff = crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let subscribed = std::time::Instant::now();
            let result = watch_once(channel.clone(), &sender).await;
            // A subscription that held for a while was healthy: a new outage starts the back-off over.
            if subscribed.elapsed() >= HEALTHY_SUBSCRIPTION {
                backoff.reset();
            }
            let delay = backoff.fail();
            match result {
                Ok(()) => tracing::warn!("containerd event stream ended; resubscribing"),
                Err(e) => tracing::warn!(error = %e, "containerd event stream failed; resubscribing in {delay:?}"),
            }
            tokio::time::sleep(delay).await;
        }
    });
    tx
}

async fn watch_once(channel: Channel, sender: &broadcast::Sender<ExitedId>) -> Result<(), tonic::Status> {
    let mut client = EventsClient::new(channel);
    let request = SubscribeRequest { filters: vec![TOPIC_FILTER.into()] };
    let mut stream = client.subscribe(request).await?.into_inner();
    tracing::debug!("subscribed to containerd task exits");
    while let Some(envelope) = stream.message().await? {
        let Some(any) = envelope.event else { continue };
        match TaskExit::decode(any.value.as_slice()) {
            // Nobody listening is fine: workers resync on their own.
            Ok(exit) => {
                tracing::debug!(container = %exit.container_id, status = exit.exit_status, "task exited");
                drop(sender.send(exit.container_id));
            }
            Err(e) => tracing::debug!(error = %e, "undecodable task exit event"),
        }
    }
    Ok(())
}
