//! The worker against the recording fake runtime: no root, no containerd. Its pod directories
//! go to a temporary directory; the network gate is open and events only logged.

use super::*;
use crate::runtime::fake::{Call, FakeRuntime};
use k8s_openapi::api::core::v1::PodSpec;

const NODE: &str = "n1";

struct Harness {
    fake: FakeRuntime,
    deps: WorkerDeps,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = NodeContext {
        node_name: NODE.into(),
        // No such cgroup exists: removing the pod's cgroup finds nothing to do.
        cgroups: crate::cgroups::Layout::new(crate::cgroups::Driver::Cgroupfs, "/"),
        pod_pids_limit: None,
        pod_log_root: dir.path().join("logs"),
        pod_data_root: dir.path().join("pods"),
        cluster_dns: vec![],
        cluster_domain: "cluster.local".into(),
        host_resolv_conf: String::new(),
        host_ip: Some("10.0.0.1".into()),
        memory_capacity: 1 << 30,
        seccomp_root: dir.path().join("seccomp"),
        seccomp_default: false,
        allocatable: crate::podinfo::downward::Allocatable::from_capacity(2, 1 << 30, 0, 0, 0),
    };
    let fake = FakeRuntime::new();
    let deps = WorkerDeps {
        // Never used by the worker (lazy: it connects on first use only).
        cri: Cri::new(std::path::Path::new("/nonexistent/cri.sock")),
        runtime: Arc::new(fake.clone()),
        ctx: Arc::new(ctx),
        exits: broadcast::channel(16).0,
        store: PodStore::default(),
        backoff_initial: Duration::from_millis(400),
        backoff_max: Duration::from_secs(2),
        resync: Duration::from_secs(10),
        api: None,
        events: crate::events::Recorder::log_only(),
        network: crate::pod_network::NetworkGate::always_ready(),
        cgroups: std::sync::Arc::new(crate::cgroups::Recording::new()),
        objects: None,
    };
    Harness { fake, deps, _dir: dir }
}

fn pod(name: &str, containers: &[&str]) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
    pod.metadata.namespace = Some("default".into());
    pod.metadata.uid = Some(format!("uid-{name}"));
    pod.spec = Some(PodSpec {
        containers: containers.iter().map(|c| Container { name: c.to_string(), image: Some("img:1".into()), ..Default::default() }).collect(),
        ..Default::default()
    });
    pod
}

/// Waits (up to 5 s) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < give_up, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn status(deps: &WorkerDeps) -> Option<k8s_openapi::api::core::v1::PodStatus> {
    deps.store.list().into_iter().next().and_then(|p| p.status)
}

fn container_status(deps: &WorkerDeps) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    status(deps)?.container_statuses?.into_iter().next()
}

fn waiting_reason(deps: &WorkerDeps) -> Option<String> {
    container_status(deps)?.state?.waiting?.reason
}

fn terminate(tx: &mpsc::UnboundedSender<WorkerMsg>, grace: Duration) -> oneshot::Receiver<()> {
    let (done, stopped) = oneshot::channel();
    tx.send(WorkerMsg::Terminate { grace: Some(grace), done: Some(done) }).expect("worker alive");
    stopped
}

async fn stopped_within(stopped: oneshot::Receiver<()>, limit: Duration) {
    tokio::time::timeout(limit, stopped).await.expect("stopped in time").expect("worker told");
}

#[tokio::test]
async fn start_creates_the_sandbox_then_the_containers_and_publishes_the_status() {
    let h = harness();
    let (_tx, handle) = spawn(h.deps.clone(), pod("start", &["a", "b"]));
    eventually("both containers running", || h.fake.running("a") == 1 && h.fake.running("b") == 1).await;
    let changes = h.fake.changes();
    assert_eq!(changes[0], Call::RunSandbox { attempt: 0 }, "{changes:?}");
    let creates: Vec<&Call> = changes.iter().filter(|c| matches!(c, Call::CreateContainer { .. })).collect();
    assert_eq!(creates, [&Call::CreateContainer { name: "a".into(), attempt: 0 }, &Call::CreateContainer { name: "b".into(), attempt: 0 }]);
    assert!(changes.iter().any(|c| matches!(c, Call::PullImage(i) if i == "img:1")), "{changes:?}");
    eventually("status Running", || status(&h.deps).and_then(|s| s.phase).as_deref() == Some("Running")).await;
    let s = status(&h.deps).unwrap();
    assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.9"));
    assert!(s.container_statuses.unwrap().iter().all(|c| c.ready));
    assert_eq!(handle.state(), PodWorkerState::Syncing);
    assert!(handle.could_be_running());
}

#[tokio::test]
async fn a_crashing_container_restarts_at_once_then_waits_out_its_back_off() {
    let h = harness();
    h.fake.add_image("img:1");
    let (_tx, _handle) = spawn(h.deps.clone(), pod("crash", &["a"]));
    eventually("running", || h.fake.running("a") == 1).await;
    eventually("watched", || container_status(&h.deps).is_some_and(|c| c.ready)).await;
    let id = h.fake.exit("a", 1);
    h.deps.exits.send(id).unwrap();
    // The first crash is not held back.
    eventually("restarted once", || h.fake.running("a") == 1 && container_status(&h.deps).is_some_and(|c| c.restart_count == 1 && c.ready)).await;
    let id = h.fake.exit("a", 1);
    let exited = std::time::Instant::now();
    h.deps.exits.send(id).unwrap();
    eventually("CrashLoopBackOff", || waiting_reason(&h.deps).as_deref() == Some("CrashLoopBackOff")).await;
    let last = container_status(&h.deps).unwrap().last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    eventually("restarted after the back-off", || h.fake.running("a") == 1).await;
    assert!(exited.elapsed() >= Duration::from_millis(350), "restarted after {:?}, before the 400ms back-off", exited.elapsed());
    assert!(h.fake.changes().contains(&Call::CreateContainer { name: "a".into(), attempt: 2 }));
    eventually("restartCount 2", || container_status(&h.deps).is_some_and(|c| c.restart_count == 2 && c.ready)).await;
}

#[tokio::test]
async fn an_existing_sandbox_and_running_container_are_adopted_not_recreated() {
    let h = harness();
    let pod = pod("adopt", &["a"]);
    let hash = spec::container_hash(&pod.spec.as_ref().unwrap().containers[0]);
    let sandbox = h.fake.add_sandbox("uid-adopt", 3);
    h.fake.add_container(&sandbox, "a", 5, &hash, RunState::Running);
    let (_tx, _handle) = spawn(h.deps.clone(), pod);
    eventually("status published", || container_status(&h.deps).is_some_and(|c| c.ready)).await;
    assert_eq!(container_status(&h.deps).unwrap().restart_count, 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.fake.changes(), [], "nothing created, stopped or removed");
}

/// A pod of one container "a" that a stopped nodelet left Created in the runtime (its sandbox
/// ready): the pod, and the container's id.
fn left_created(h: &Harness, name: &str) -> (Pod, String) {
    let pod = pod(name, &["a"]);
    let hash = spec::container_hash(&pod.spec.as_ref().unwrap().containers[0]);
    let sandbox = h.fake.add_sandbox(&format!("uid-{name}"), 0);
    let id = h.fake.add_container(&sandbox, "a", 0, &hash, RunState::Created);
    (pod, id)
}

#[tokio::test]
async fn a_container_left_created_by_a_stopped_nodelet_is_started_not_replaced() {
    let h = harness();
    let (pod, id) = left_created(&h, "half");
    let (_tx, _handle) = spawn(h.deps.clone(), pod);
    eventually("running", || h.fake.running("a") == 1).await;
    assert_eq!(h.fake.changes(), [Call::StartContainer(id)], "started as it was, not created again");
    eventually("status published", || container_status(&h.deps).is_some_and(|c| c.ready && c.restart_count == 0)).await;
}

#[tokio::test]
async fn a_container_whose_start_a_killed_nodelet_cut_short_is_made_again_not_restarted() {
    let h = harness();
    h.fake.add_image("img:1");
    let (pod, id) = left_created(&h, "cut");
    h.fake.fail_start_of(&id, &format!("failed to start containerd task {id:?}: context canceled"));
    let (_tx, _handle) = spawn(h.deps.clone(), pod);
    eventually("running", || h.fake.running("a") == 1).await;
    let changes = h.fake.changes();
    assert!(
        matches!(&changes[..], [Call::RemoveContainer(removed), Call::CreateContainer { attempt: 0, .. }, Call::StartContainer(_)] if *removed == id),
        "removed and made again as attempt 0: {changes:?}"
    );
    eventually("status published", || container_status(&h.deps).is_some_and(|c| c.ready && c.restart_count == 0)).await;
}

#[tokio::test]
async fn termination_stops_with_the_grace_and_a_shorter_second_grace_wins() {
    let h = harness();
    h.fake.add_image("img:1");
    h.fake.ignore_sigterm("a");
    let (tx, handle) = spawn(h.deps.clone(), pod("grace", &["a"]));
    eventually("running", || h.fake.running("a") == 1).await;
    let started = std::time::Instant::now();
    let first = terminate(&tx, Duration::from_secs(30));
    let stop_with = |grace: u64| move |c: &Call| matches!(c, Call::StopContainer { grace: g, .. } if *g == Duration::from_secs(grace));
    eventually("stop with 30s", || h.fake.calls().iter().any(stop_with(30))).await;
    assert!(handle.could_be_running() && matches!(handle.state(), PodWorkerState::Terminating { .. }));
    // A longer grace does not move the deadline; a shorter one stops the container sooner.
    let longer = terminate(&tx, Duration::from_secs(60));
    let second = terminate(&tx, Duration::from_secs(1));
    stopped_within(second, Duration::from_secs(5)).await;
    stopped_within(first, Duration::from_secs(1)).await;
    stopped_within(longer, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let calls = h.fake.calls();
    assert!(calls.iter().any(stop_with(1)), "{calls:?}");
    assert!(!calls.iter().any(stop_with(60)), "{calls:?}");
    assert_eq!((h.fake.sandbox_count(), h.fake.container_count()), (0, 0));
    assert!(status(&h.deps).is_none(), "the status is dropped");
    assert_eq!(handle.state(), PodWorkerState::Terminated);
    assert!(!handle.could_be_running());
}

#[tokio::test]
async fn a_pod_deleted_while_its_sandbox_is_created_leaves_nothing_behind() {
    let h = harness();
    h.fake.add_image("img:1");
    let hold = h.fake.hold("RunPodSandbox");
    let (tx, handle) = spawn(h.deps.clone(), pod("early", &["a"]));
    hold.entered().await;
    let stopped = terminate(&tx, Duration::from_secs(1));
    hold.release();
    stopped_within(stopped, Duration::from_secs(5)).await;
    let calls = h.fake.calls();
    assert!(calls.contains(&Call::RunSandbox { attempt: 0 }));
    assert!(!calls.iter().any(|c| matches!(c, Call::CreateContainer { .. })), "no container started for a pod going away: {calls:?}");
    assert_eq!((h.fake.sandbox_count(), h.fake.container_count()), (0, 0), "{calls:?}");
    assert!(!handle.could_be_running());
}

#[tokio::test]
async fn a_failed_sync_is_retried_with_a_typed_error() {
    let h = harness();
    h.fake.add_image("img:1");
    h.fake.fail_next("RunPodSandbox", "no space");
    let (_tx, _handle) = spawn(h.deps.clone(), pod("retry", &["a"]));
    eventually("running after the retry", || h.fake.running("a") == 1).await;
    let sandboxes = h.fake.calls().into_iter().filter(|c| matches!(c, Call::RunSandbox { .. })).count();
    assert_eq!(sandboxes, 2);
}

#[tokio::test]
async fn a_pod_with_init_containers_that_cannot_start_says_pod_initializing_with_the_cause() {
    let h = harness();
    h.fake.add_image("img:1");
    for _ in 0..3 {
        h.fake.fail_next("RunPodSandbox", "no space");
    }
    let mut pod = pod("init-wait", &["a"]);
    pod.spec.as_mut().unwrap().init_containers = Some(vec![Container { name: "i".into(), image: Some("img:1".into()), ..Default::default() }]);
    let (_tx, _handle) = spawn(h.deps.clone(), pod);
    eventually("the sandbox failure published", || {
        container_status(&h.deps).is_some_and(|c| c.state.is_some_and(|s| s.waiting.is_some_and(|w| w.message.is_some_and(|m| m.contains("no space")))))
    })
    .await;
    // As the kubelet: every container of a pod with init containers waits as PodInitializing.
    let status = status(&h.deps).unwrap();
    let reasons: Vec<Option<String>> =
        status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten()).map(|c| c.state.clone()?.waiting?.reason).collect();
    assert_eq!(reasons, vec![Some("PodInitializing".to_string()); 2]);
}

#[tokio::test]
async fn an_evicted_pod_is_stopped_failed_and_never_restarted_also_after_a_restart() {
    let h = harness();
    h.fake.add_image("img:1");
    let (tx, handle) = spawn(h.deps.clone(), pod("evicted", &["a"]));
    eventually("running", || h.fake.running("a") == 1).await;
    // An emptyDir's content, which the eviction must give back.
    let volumes = crate::volumes::volumes_dir(&h.deps.ctx, &pod("evicted", &["a"]));
    std::fs::create_dir_all(volumes.join("kubernetes.io~empty-dir/scratch")).unwrap();
    std::fs::write(volumes.join("kubernetes.io~empty-dir/scratch/data"), vec![1u8; 4096]).unwrap();
    let message = "The node was low on resource: memory. ".to_string();
    let grace = Duration::from_secs(2);
    tx.send(WorkerMsg::End(crate::pods::end::EndReason::Evicted { message: message.clone(), grace: Some(grace) })).unwrap();
    let failed = || status(&h.deps).is_some_and(|s| s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted"));
    eventually("Failed, Evicted", failed).await;
    let s = status(&h.deps).unwrap();
    assert_eq!(s.message.as_deref(), Some(message.as_str()));
    let target = s.conditions.unwrap().into_iter().find(|c| c.type_ == "DisruptionTarget").expect("DisruptionTarget");
    assert_eq!((target.status.as_str(), target.reason.as_deref()), ("True", Some("TerminationByKubelet")));
    assert!(h.fake.calls().iter().any(|c| matches!(c, Call::StopContainer { grace: g, .. } if *g == grace)));
    assert!(!volumes.exists(), "the evicted pod's volumes are torn down");
    assert!(crate::pods::end::recorded(&crate::podinfo::pod_data_dir(&h.deps.ctx, &pod("evicted", &["a"]))).is_some(), "the reason it ended stays");
    // A later reason does not replace the first; nothing starts again.
    tx.send(WorkerMsg::End(crate::pods::end::EndReason::DeadlineExceeded)).unwrap();
    tx.send(WorkerMsg::Update(Arc::new(pod("evicted", &["a"])))).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.fake.running("a"), 0);
    assert_eq!(status(&h.deps).unwrap().reason.as_deref(), Some("Evicted"));
    assert_eq!(handle.state(), PodWorkerState::Syncing, "an evicted pod stays, Failed, until it is deleted");
    // A new worker for the same pod (nodelet restarted; a static pod has no status to say it) keeps it ended.
    handle.abort();
    h.deps.store.remove("uid-evicted");
    let creates = |calls: Vec<Call>| calls.iter().filter(|c| matches!(c, Call::CreateContainer { .. })).count();
    let before = creates(h.fake.calls());
    let (_tx, again) = spawn(h.deps.clone(), pod("evicted", &["a"]));
    eventually("Failed, Evicted after a restart", failed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((creates(h.fake.calls()), h.fake.running("a")), (before, 0));
    assert_eq!(status(&h.deps).unwrap().message.as_deref(), Some(message.as_str()));
    again.abort();
}

#[tokio::test]
async fn a_finished_pod_gives_its_volumes_back_and_does_not_run_again_when_its_dead_containers_are_collected() {
    let h = harness();
    h.fake.add_image("img:1");
    let mut never = pod("done", &["a"]);
    never.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let (tx, _handle) = spawn(h.deps.clone(), never.clone());
    eventually("running", || h.fake.running("a") == 1).await;
    eventually("watched", || container_status(&h.deps).is_some_and(|c| c.ready)).await;
    // An emptyDir's content, which the finished pod gives back.
    let volumes = crate::volumes::volumes_dir(&h.deps.ctx, &never);
    std::fs::create_dir_all(volumes.join("kubernetes.io~empty-dir/scratch")).unwrap();
    std::fs::write(volumes.join("kubernetes.io~empty-dir/scratch/data"), vec![1u8; 4096]).unwrap();
    let id = h.fake.exit("a", 0);
    h.deps.exits.send(id.clone()).unwrap();
    let succeeded = || status(&h.deps).is_some_and(|s| s.phase.as_deref() == Some("Succeeded"));
    eventually("Succeeded", succeeded).await;
    eventually("the finished pod's volumes torn down", || !volumes.exists()).await;
    // Disk pressure collects the finished pod's dead container (a static pod's spec carries no phase).
    h.deps.runtime.remove_container(&id).await.unwrap();
    let before = h.fake.changes().iter().filter(|c| matches!(c, Call::CreateContainer { .. } | Call::RunSandbox { .. })).count();
    tx.send(WorkerMsg::Update(Arc::new(never))).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = h.fake.changes().iter().filter(|c| matches!(c, Call::CreateContainer { .. } | Call::RunSandbox { .. })).count();
    assert_eq!((before, after, h.fake.running("a")), (before, before, 0), "{:?}", h.fake.changes());
    assert!(succeeded(), "{:?}", status(&h.deps));
    assert!(!volumes.exists(), "a finished pod's volumes are not written again");
}

#[tokio::test]
async fn a_container_the_runtime_is_still_starting_is_neither_a_failure_nor_replaced() {
    let h = harness();
    let (pod, id) = left_created(&h, "starting");
    // A nodelet killed mid-StartContainer: containerd still holds that start.
    h.fake.fail_next("StartContainer", &format!("failed to set starting state for container {id:?}: container is already in starting state"));
    let (_tx, _handle) = spawn(h.deps.clone(), pod);
    eventually("running", || h.fake.running("a") == 1).await;
    assert_eq!(h.fake.changes(), [Call::StartContainer(id.clone()), Call::StartContainer(id)], "started again, not created again");
    eventually("status published", || container_status(&h.deps).is_some_and(|c| c.ready && c.restart_count == 0)).await;
}
