//! Unit tests of `decide`.

use super::*;
use crate::eviction::thresholds::{thresholds, Settings, Value};
use crate::pods::manifest::parse_static_pod;

fn at(base: Instant, secs: u64) -> Instant {
    base + Duration::from_secs(secs)
}

fn obs(signal: Signal, available: u64, capacity: u64) -> Observations {
    BTreeMap::from([(signal, Observation { available, capacity })])
}

fn memory_threshold(amount: u64, grace: Option<u64>) -> Threshold {
    Threshold {
        signal: Signal::MemoryAvailable,
        value: Value::Quantity { amount, text: binary_si(amount) },
        grace: grace.map(Duration::from_secs),
        min_reclaim: None,
    }
}

#[test]
fn hard_thresholds_are_due_at_once_and_soft_ones_after_their_grace() {
    let t = vec![memory_threshold(100, None), memory_threshold(1000, Some(30))];
    let mut h = History::default();
    let base = Instant::now();
    let transition = Duration::from_secs(300);
    // 500 available: only the soft threshold (1000) is crossed; its grace has not passed.
    let a = assess(&t, &obs(Signal::MemoryAvailable, 500, 10_000), &mut h, transition, base);
    assert_eq!((a.met.clone(), a.due.clone(), a.memory_pressure, a.disk_pressure), (vec![1], vec![], true, false));
    assert_eq!(assess(&t, &obs(Signal::MemoryAvailable, 500, 10_000), &mut h, transition, at(base, 29)).due, Vec::<usize>::new());
    assert_eq!(assess(&t, &obs(Signal::MemoryAvailable, 500, 10_000), &mut h, transition, at(base, 30)).due, vec![1]);
    // Recovering resets the grace: crossed again, it waits the whole grace once more.
    assess(&t, &obs(Signal::MemoryAvailable, 5000, 10_000), &mut h, transition, at(base, 31));
    assert_eq!(assess(&t, &obs(Signal::MemoryAvailable, 500, 10_000), &mut h, transition, at(base, 40)).due, Vec::<usize>::new());
    // The hard one is due as soon as it is crossed.
    assert_eq!(assess(&t, &obs(Signal::MemoryAvailable, 50, 10_000), &mut h, transition, at(base, 41)).due, vec![0]);
}

#[test]
fn pressure_stays_for_the_transition_period() {
    let t = thresholds(&Settings::default()).unwrap();
    let mut h = History::default();
    let base = Instant::now();
    let transition = Duration::from_secs(300);
    let low_disk = obs(Signal::NodefsAvailable, 5, 100);
    let fine = obs(Signal::NodefsAvailable, 50, 100);
    assert!(assess(&t, &low_disk, &mut h, transition, base).disk_pressure);
    let a = assess(&t, &fine, &mut h, transition, at(base, 299));
    assert!(a.disk_pressure && a.met.is_empty() && !a.memory_pressure);
    assert!(!assess(&t, &fine, &mut h, transition, at(base, 300)).disk_pressure);
    // Nothing observed: no pressure.
    assert_eq!(assess(&t, &Observations::new(), &mut History::default(), transition, base), Assessment::default());
}

#[test]
fn percentages_are_of_the_capacity_and_memory_is_reclaimed_first() {
    let t = thresholds(&Settings::default()).unwrap();
    let nodefs = t.iter().position(|t| t.signal == Signal::NodefsAvailable).unwrap();
    let memory = t.iter().position(|t| t.signal == Signal::MemoryAvailable).unwrap();
    assert!(is_met(&t[nodefs], false, &obs(Signal::NodefsAvailable, 99, 1000)));
    assert!(!is_met(&t[nodefs], false, &obs(Signal::NodefsAvailable, 100, 1000)));
    assert!(!is_met(&t[nodefs], false, &obs(Signal::MemoryAvailable, 0, 1000)), "another signal's figure does not count");
    assert_eq!(to_reclaim(&t, &[nodefs, memory]), Some(memory));
    assert_eq!(to_reclaim(&t, &[nodefs]), Some(nodefs));
    assert_eq!(to_reclaim(&t, &[]), None);
    assert!(reclaims_node_first(Signal::NodefsAvailable) && reclaims_node_first(Signal::ImagefsInodesFree) && !reclaims_node_first(Signal::MemoryAvailable));
}

#[test]
fn images_are_reclaimed_for_the_file_system_they_are_on() {
    for signal in [Signal::ImagefsAvailable, Signal::ImagefsInodesFree] {
        assert!(reclaims_images(signal, false) && reclaims_images(signal, true), "{signal:?}");
    }
    for signal in [Signal::NodefsAvailable, Signal::NodefsInodesFree] {
        assert!(reclaims_images(signal, true) && !reclaims_images(signal, false), "{signal:?}");
    }
    assert!(!reclaims_images(Signal::MemoryAvailable, true));
}

fn pod(name: &str, extra_spec: &str, memory_request: Option<&str>) -> Pod {
    let resources = memory_request.map(|r| format!(", resources: {{requests: {{memory: {r}, ephemeral-storage: {r}}}}}")).unwrap_or_default();
    let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  containers: [{{name: c, image: i{resources}}}]\n");
    let mut pod = parse_static_pod("f", text.as_bytes(), "n1").unwrap();
    // API pods unless a test says otherwise.
    pod.metadata.annotations = None;
    pod.metadata.name = Some(name.into());
    pod
}

fn used(memory: u64) -> Option<PodUsage> {
    Some(PodUsage {
        memory: Some(memory),
        ephemeral_storage: Some(memory),
        inodes: Some(memory),
        containers: vec![ContainerUsage { name: "c".into(), memory: Some(memory), rootfs: Some(memory / 2), logs: Some(memory / 2) }],
        ..Default::default()
    })
}

fn names(candidates: &[Candidate], order: &[usize]) -> Vec<String> {
    order.iter().map(|i| candidates[*i].pod.metadata.name.clone().unwrap()).collect()
}

#[test]
fn pods_over_their_requests_go_first_then_by_priority_then_by_use_above_requests() {
    let candidates = vec![
        Candidate { pod: pod("within-request", "", Some("100Mi")), usage: used(50 << 20) },
        Candidate { pod: pod("best-effort-small", "", None), usage: used(1 << 20) },
        Candidate { pod: pod("best-effort-big", "", None), usage: used(10 << 20) },
        Candidate { pod: pod("burstable-over", "", Some("1Mi")), usage: used(30 << 20) },
        Candidate { pod: pod("important-over", "  priority: 1000\n", None), usage: used(500 << 20) },
        Candidate { pod: pod("no-figures", "", Some("1Gi")), usage: None },
    ];
    assert_eq!(
        names(&candidates, &rank(&candidates, Resource::Memory)),
        ["no-figures", "burstable-over", "best-effort-big", "best-effort-small", "important-over", "within-request"]
    );
    // Ephemeral storage ranks the same way on its own figures and requests.
    assert_eq!(names(&candidates, &rank(&candidates, Resource::EphemeralStorage))[1..4], ["burstable-over", "best-effort-big", "best-effort-small"]);
}

#[test]
fn critical_and_mirror_pods_are_never_evicted_and_static_pods_go_last() {
    let mut mirror = pod("mirror", "", None);
    mirror.metadata.annotations = Some([(crate::pods::manifest::CONFIG_MIRROR_ANNOTATION.to_string(), "h".to_string())].into());
    let mut static_pod = pod("static", "", None);
    static_pod.metadata.annotations = Some([(crate::pods::manifest::CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string())].into());
    let candidates = vec![
        Candidate { pod: pod("critical", "  priority: 2000001000\n", None), usage: used(1 << 30) },
        Candidate { pod: mirror, usage: used(1 << 30) },
        Candidate { pod: static_pod, usage: used(1 << 30) },
        Candidate { pod: pod("guaranteed", "", Some("1Gi")), usage: used(1 << 20) },
    ];
    assert_eq!(names(&candidates, &rank(&candidates, Resource::Memory)), ["guaranteed", "static"]);
}

#[test]
fn the_message_names_the_resource_the_threshold_and_the_containers_over_their_requests() {
    let t = memory_threshold(100 << 20, None);
    let p = pod("p", "", Some("10Mi"));
    let o = Observation { available: 50 << 20, capacity: 1 << 30 };
    assert_eq!(
        message(&t, Some(&o), &p, used(30 << 20).as_ref()),
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. Container c was using 30Mi, request is 10Mi, has larger consumption of memory. "
    );
    assert_eq!(message(&t, Some(&o), &p, used(5 << 20).as_ref()), "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. ");
    let be = pod("be", "", None);
    assert!(message(&t, None, &be, used(1536).as_ref()).ends_with("Container c was using 1536, request is 0, has larger consumption of memory. "));
    // A percentage is told as the quantity it is of the capacity; inodes as counts.
    let nodefs = Threshold { signal: Signal::NodefsAvailable, value: Value::Percent(0.1), grace: None, min_reclaim: None };
    let o = Observation { available: 1 << 30, capacity: 20 << 30 };
    assert!(message(&nodefs, Some(&o), &be, None).starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: 2Gi, available: 1Gi. "));
    let inodes = Threshold { signal: Signal::NodefsInodesFree, value: Value::Percent(0.05), grace: None, min_reclaim: None };
    let o = Observation { available: 4000, capacity: 100_000 };
    assert_eq!(message(&inodes, Some(&o), &be, used(10).as_ref()), "The node was low on resource: inodes. Threshold quantity: 5k, available: 4k. ");
}

#[test]
fn quantities_print_as_the_kubelet_prints_them() {
    assert_eq!(binary_si(100 << 20), "100Mi");
    assert_eq!(binary_si(1536), "1536");
    assert_eq!(binary_si(1 << 30), "1Gi");
    assert_eq!(binary_si(3 << 40), "3Ti");
    assert_eq!(binary_si(0), "0");
    assert_eq!(binary_si(4096 * 3), "12Ki");
    assert_eq!(decimal_si(5000), "5k");
    assert_eq!(decimal_si(1234), "1234");
    assert_eq!(decimal_si(0), "0");
}

#[test]
fn hard_evictions_kill_at_once_and_soft_ones_within_the_maximum_grace() {
    let hard = memory_threshold(1, None);
    let soft = memory_threshold(1, Some(60));
    let s = Duration::from_secs;
    assert_eq!(eviction_grace(&hard, s(30), s(0)), MINIMUM_GRACE);
    assert_eq!(eviction_grace(&soft, s(30), s(10)), s(10));
    assert_eq!(eviction_grace(&soft, s(5), s(10)), s(5));
    assert_eq!(eviction_grace(&soft, s(30), s(0)), MINIMUM_GRACE);
}

#[test]
fn requests_sum_the_containers_or_take_the_largest_init_container() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: i, image: i, resources: {requests: {memory: 300Mi}}}]\n  containers: [{name: a, image: i, resources: {requests: {memory: 100Mi}}}, {name: b, image: i, resources: {requests: {memory: 100Mi}}}]\n";
    let p = parse_static_pod("f", text.as_bytes(), "n1").unwrap();
    assert_eq!(pod_request(&p, Resource::Memory), 300 << 20);
    assert_eq!(pod_request(&p, Resource::EphemeralStorage), 0);
    assert_eq!(pod_request(&p, Resource::Inodes), 0);
}

#[test]
fn a_met_threshold_stays_met_until_its_minimum_reclaim_is_available_too() {
    let settings = Settings {
        hard: Some(BTreeMap::from([("nodefs.available".to_string(), "10%".to_string())])),
        min_reclaim: BTreeMap::from([("nodefs.available".to_string(), "5%".to_string())]),
        ..Default::default()
    };
    let t = thresholds(&settings).unwrap();
    let (mut h, base, transition) = (History::default(), Instant::now(), Duration::from_secs(300));
    let met_at =
        |h: &mut History, available: u64, secs: u64| !assess(&t, &obs(Signal::NodefsAvailable, available, 100), h, transition, at(base, secs)).met.is_empty();
    assert!(!met_at(&mut h, 12, 0), "not met before: the threshold alone counts");
    assert!(met_at(&mut h, 9, 1));
    assert!(met_at(&mut h, 12, 2), "met, it stays so under 10% + 5%");
    assert!(!met_at(&mut h, 15, 3), "15% available: resolved");
    assert!(!met_at(&mut h, 12, 4), "resolved, the threshold alone counts again");
}
