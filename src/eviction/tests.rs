//! Unit tests of the eviction manager's passes, against a recording fake of the node.

use super::*;
use crate::pods::manifest::parse_static_pod;
use crate::stats::summary::*;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::VecDeque;
use std::sync::Mutex;
use thresholds::Value;

#[derive(Default)]
struct Fake {
    /// The summaries `observe` answers, in turn; the last one stays.
    summaries: Mutex<VecDeque<Summary>>,
    pods: Mutex<Vec<Pod>>,
    calls: Mutex<Vec<String>>,
    /// Images on a disk of their own, not nodelet's root dir's.
    dedicated_image_fs: bool,
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl Effects for Arc<Fake> {
    async fn observe(&self) -> Summary {
        self.calls.lock().unwrap().push("observe".into());
        let mut summaries = self.summaries.lock().unwrap();
        if summaries.len() > 1 {
            summaries.pop_front().unwrap()
        } else {
            summaries.front().cloned().unwrap_or_default()
        }
    }

    async fn collect_containers(&self) -> Result<(), String> {
        self.calls.lock().unwrap().push("collect containers".into());
        Ok(())
    }

    async fn images_on_node_fs(&self) -> bool {
        !self.dedicated_image_fs
    }

    async fn collect_images(&self) -> Result<(), String> {
        self.calls.lock().unwrap().push("collect images".into());
        Ok(())
    }

    fn active_pods(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().clone()
    }

    fn evict(&self, pod: &Pod, reason: EndReason) {
        self.calls.lock().unwrap().push(format!("evict {}: {}", pod.metadata.name.as_deref().unwrap_or_default(), reason.message()));
    }
}

fn pod(name: &str, uid: &str, memory_request: Option<&str>) -> Pod {
    let resources = memory_request.map(|r| format!(", resources: {{requests: {{memory: {r}}}}}")).unwrap_or_default();
    let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  containers: [{{name: c, image: i{resources}}}]\n");
    let mut pod = parse_static_pod("f", text.as_bytes(), "n1").unwrap();
    pod.metadata.annotations = None;
    pod.metadata.name = Some(name.into());
    pod.metadata.uid = Some(uid.into());
    pod
}

/// A node with `memory` and `disk` bytes available (of 1000 MiB and 1000 GiB), and pods using
/// the given memory.
fn summary(memory: u64, disk: u64, pods: &[(&str, u64)]) -> Summary {
    let fs = FsStats { available_bytes: Some(disk), capacity_bytes: Some(1000 << 30), ..Default::default() };
    Summary {
        node: NodeStats {
            memory: Some(MemoryStats { available_bytes: Some(memory), working_set_bytes: Some((1000 << 20) - memory), ..Default::default() }),
            fs: Some(fs.clone()),
            runtime: Some(RuntimeStats { image_fs: Some(fs) }),
            ..Default::default()
        },
        pods: pods
            .iter()
            .map(|(uid, used)| PodStats {
                pod_ref: PodReference { uid: uid.to_string(), ..Default::default() },
                memory: Some(MemoryStats { working_set_bytes: Some(*used), ..Default::default() }),
                ephemeral_storage: Some(FsStats { used_bytes: Some(*used), ..Default::default() }),
                ..Default::default()
            })
            .collect(),
    }
}

fn manager(fake: &Arc<Fake>) -> Manager<Arc<Fake>> {
    Manager::new(Settings::default(), fake.clone())
}

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

#[tokio::test]
async fn disk_pressure_reclaims_node_resources_first_and_evicts_nobody_when_that_is_enough() {
    let fake = Arc::new(Fake::default());
    // nodefs and imagefs: 50 GiB of 1000 available (under 10% and 15%); after reclaim, 500 GiB.
    *fake.summaries.lock().unwrap() = VecDeque::from([summary(500 * MI, 50 * GI, &[]), summary(500 * MI, 500 * GI, &[])]);
    *fake.pods.lock().unwrap() = vec![pod("a", "u-a", None)];
    let mut m = manager(&fake);
    let pressure = m.pressure();
    // imagefs.available (15%) and nodefs.available (10%) are both met; the first in order is acted on.
    assert_eq!(m.pass(Instant::now()).await, Outcome::Reclaimed(Signal::ImagefsAvailable));
    assert_eq!(fake.calls(), ["observe", "collect containers", "collect images", "observe"]);
    assert_eq!(*pressure.borrow(), NodePressure { memory: false, disk: true });
}

#[tokio::test]
async fn nodefs_pressure_leaves_images_on_a_disk_of_their_own_alone() {
    let fake = Arc::new(Fake { dedicated_image_fs: true, ..Default::default() });
    // nodefs 50 GiB of 1000 available (under 10%); the image disk 900 GiB.
    let mut pressed = summary(500 * MI, 50 * GI, &[]);
    pressed.node.runtime =
        Some(RuntimeStats { image_fs: Some(FsStats { available_bytes: Some(900 * GI), capacity_bytes: Some(1000 << 30), ..Default::default() }) });
    let relieved = summary(500 * MI, 500 * GI, &[]);
    *fake.summaries.lock().unwrap() = VecDeque::from([pressed, relieved]);
    let mut m = manager(&fake);
    assert_eq!(m.pass(Instant::now()).await, Outcome::Reclaimed(Signal::NodefsAvailable));
    assert_eq!(fake.calls(), ["observe", "collect containers", "observe"]);
}

#[tokio::test]
async fn disk_pressure_that_reclaim_does_not_relieve_evicts_the_first_ranked_pod() {
    let fake = Arc::new(Fake::default());
    *fake.summaries.lock().unwrap() = VecDeque::from([summary(500 * MI, 50 * GI, &[("u-a", MI), ("u-b", 10 * MI)])]);
    *fake.pods.lock().unwrap() = vec![pod("a", "u-a", None), pod("b", "u-b", None)];
    let mut m = manager(&fake);
    assert_eq!(m.pass(Instant::now()).await, Outcome::Evicted { pod: "ns/b".into(), signal: Signal::ImagefsAvailable });
    let calls = fake.calls();
    assert_eq!(calls[..3], ["observe", "collect containers", "collect images"]);
    assert_eq!(calls[3], "observe");
    assert_eq!(
        calls[4], "evict b: The node was low on resource: ephemeral-storage. Threshold quantity: 150Gi, available: 50Gi. ",
        "the threshold is 15% of the image file system"
    );
}

#[tokio::test]
async fn memory_pressure_evicts_without_reclaim_one_pod_per_pass_and_never_twice() {
    let fake = Arc::new(Fake::default());
    *fake.summaries.lock().unwrap() = VecDeque::from([summary(50 * MI, 500 * GI, &[("u-a", 300 * MI), ("u-b", 20 * MI)])]);
    // a is within its request, b (BestEffort) is over it: b goes first, though a uses more.
    *fake.pods.lock().unwrap() = vec![pod("a", "u-a", Some("400Mi")), pod("b", "u-b", None)];
    let mut m = manager(&fake);
    let pressure = m.pressure();
    let now = Instant::now();
    assert_eq!(m.pass(now).await, Outcome::Evicted { pod: "ns/b".into(), signal: Signal::MemoryAvailable });
    assert_eq!(fake.calls(), ["observe", "evict b: The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "]);
    assert_eq!(*pressure.borrow(), NodePressure { memory: true, disk: false });
    // b has not finished yet (its worker is stopping it): it is not evicted again.
    assert_eq!(m.pass(now + PERIOD).await, Outcome::Evicted { pod: "ns/a".into(), signal: Signal::MemoryAvailable });
    assert_eq!(m.pass(now + PERIOD * 2).await, Outcome::NoneEvictable(Signal::MemoryAvailable));
}

#[tokio::test]
async fn soft_thresholds_wait_for_their_grace_and_nothing_happens_without_pressure() {
    let fake = Arc::new(Fake::default());
    *fake.summaries.lock().unwrap() = VecDeque::from([summary(500 * MI, 500 * GI, &[("u-a", MI)])]);
    *fake.pods.lock().unwrap() = vec![pod("a", "u-a", None)];
    let soft = Threshold {
        signal: Signal::MemoryAvailable,
        value: Value::Quantity { amount: 600 * MI, text: "600Mi".into() },
        grace: Some(Duration::from_secs(30)),
        min_reclaim: None,
    };
    let mut m =
        Manager::new(Settings { thresholds: vec![soft], pressure_transition: Duration::from_secs(60), max_pod_grace: Duration::from_secs(5) }, fake.clone());
    let now = Instant::now();
    assert_eq!(m.pass(now).await, Outcome::Nothing);
    assert_eq!(*m.pressure().borrow(), NodePressure { memory: true, disk: false }, "the condition does not wait for the grace");
    assert_eq!(m.pass(now + Duration::from_secs(29)).await, Outcome::Nothing);
    assert_eq!(m.pass(now + Duration::from_secs(30)).await, Outcome::Evicted { pod: "ns/a".into(), signal: Signal::MemoryAvailable });
    // No pressure at all: a look, nothing else.
    let calm = Arc::new(Fake::default());
    *calm.summaries.lock().unwrap() = VecDeque::from([summary(900 * MI, 900 * GI, &[])]);
    assert_eq!(manager(&calm).pass(now).await, Outcome::Nothing);
    assert_eq!(calm.calls(), ["observe"]);
}

#[tokio::test]
async fn a_pod_over_its_ephemeral_storage_limit_is_evicted_without_node_pressure_and_only_once() {
    let fake = Arc::new(Fake::default());
    // No threshold is met: plenty of memory and disk. Pod a uses 2 MiB against its 1 MiB limit.
    *fake.summaries.lock().unwrap() = VecDeque::from([summary(500 * MI, 900 * GI, &[("u-a", 2 * MI), ("u-b", 2 * MI)])]);
    let mut limited = pod("a", "u-a", None);
    let limits = std::collections::BTreeMap::from([("ephemeral-storage".to_string(), Quantity("1Mi".into()))]);
    limited.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements { limits: Some(limits), ..Default::default() });
    *fake.pods.lock().unwrap() = vec![limited, pod("b", "u-b", None)];
    let mut m = manager(&fake);
    assert_eq!(m.pass(Instant::now()).await, Outcome::OverLocalLimits(vec!["ns/a".into()]));
    assert_eq!(fake.calls(), ["observe", "evict a: Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. "]);
    assert_eq!(m.pass(Instant::now()).await, Outcome::Nothing, "evicted once; b has no limit");
}
