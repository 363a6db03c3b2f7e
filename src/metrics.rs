//! nodelet's own figures for `GET /metrics`: one registry for the process, with the kubelet's
//! and kube-proxy's metric names so existing dashboards and alerts work unchanged. The parts
//! record through the few methods here; gauges about the runtime's objects are set at scrape
//! time by whoever serves /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Prometheus text format (0.0.4), which is what the kubelet serves.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The kubelet's buckets for pod start-up, in seconds.
const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0,
    3600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerState {
    container_state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectKind {
    /// "IPv4" or "IPv6": each family has a table of its own.
    ip_family: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamKind {
    kind: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pod_start: Histogram,
    runtime_duration: Family<Operation, Histogram>,
    runtime_errors: Family<Operation, Counter>,
    running_pods: Gauge,
    running_containers: Family<ContainerState, Gauge>,
    proxy_sync_duration: Histogram,
    proxy_last_sync: FloatGauge,
    proxy_objects: Family<ObjectKind, Gauge>,
    proxy_sync_failures: Counter,
    secure_streams: Family<StreamKind, Gauge>,
}

/// How many of nodelet's containers the runtime holds in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerCounts {
    pub created: i64,
    pub running: i64,
    pub exited: i64,
    pub unknown: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        let pod_start = Histogram::new(POD_START_BUCKETS);
        let runtime_duration = Family::<Operation, Histogram>::new_with_constructor(runtime_histogram as fn() -> Histogram);
        let runtime_errors = Family::<Operation, Counter>::default();
        let running_pods = Gauge::default();
        let running_containers = Family::<ContainerState, Gauge>::default();
        let proxy_sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let proxy_last_sync = FloatGauge::default();
        let proxy_objects = Family::<ObjectKind, Gauge>::default();
        let proxy_sync_failures = Counter::default();
        let secure_streams = Family::<StreamKind, Gauge>::default();

        let mut registry = Registry::default();
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from nodelet seeing a pod for the first time to the pod starting to run",
            pod_start.clone(),
        );
        registry.register(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type",
            runtime_duration.clone(),
        );
        // The registry adds the _total suffix of counters.
        registry.register("kubelet_runtime_operations_errors", "Cumulative number of runtime operation errors by operation type", runtime_errors.clone());
        registry.register("kubelet_running_pods", "Number of pods that have a running pod sandbox", running_pods.clone());
        registry.register("kubelet_running_containers", "Number of containers currently running", running_containers.clone());
        registry.register("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds", proxy_sync_duration.clone());
        registry.register("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced", proxy_last_sync.clone());
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_objects",
            "Rules and set or map elements in the proxy's nftables table after the last successful sync",
            proxy_objects.clone(),
        );
        registry.register("kubeproxy_sync_proxy_rules_nftables_sync_failures", "Cumulative proxy nftables sync failures", proxy_sync_failures.clone());
        registry.register(
            "nodelet_secure_port_streams",
            "Log streams (kind=log) and exec/attach/port-forward connections relayed to the runtime (kind=relay) being served",
            secure_streams.clone(),
        );
        Metrics {
            registry,
            pod_start,
            runtime_duration,
            runtime_errors,
            running_pods,
            running_containers,
            proxy_sync_duration,
            proxy_last_sync,
            proxy_objects,
            proxy_sync_failures,
            secure_streams,
        }
    }
}

/// The kubelet's buckets for runtime operations: 5 ms to about 5 minutes.
fn runtime_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's one registry.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    /// One finished CRI call; `call` is CRI's method name (e.g. "ListPodSandbox").
    pub fn runtime_call(&self, call: &str, took: Duration, failed: bool) {
        let labels = Operation { operation_type: operation_type(call) };
        self.runtime_duration.get_or_create(&labels).observe(took.as_secs_f64());
        if failed {
            self.runtime_errors.get_or_create(&labels).inc();
        }
    }

    /// A pod reached all containers running, `took` after nodelet first saw it.
    pub fn pod_started(&self, took: Duration) {
        self.pod_start.observe(took.as_secs_f64());
    }

    pub fn set_running(&self, pods: i64, containers: ContainerCounts) {
        self.running_pods.set(pods);
        for (state, count) in [("created", containers.created), ("running", containers.running), ("exited", containers.exited), ("unknown", containers.unknown)]
        {
            self.running_containers.get_or_create(&ContainerState { container_state: state }).set(count);
        }
    }

    /// A successful proxy sync, with the size of that family's table after it.
    pub fn proxy_synced(&self, ip_family: &'static str, took: Duration, rules: usize, elements: usize) {
        self.proxy_sync_duration.observe(took.as_secs_f64());
        self.proxy_last_sync.set(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        self.proxy_objects.get_or_create(&ObjectKind { ip_family, kind: "rule" }).set(rules as i64);
        self.proxy_objects.get_or_create(&ObjectKind { ip_family, kind: "element" }).set(elements as i64);
    }

    pub fn proxy_sync_failed(&self) {
        self.proxy_sync_failures.inc();
    }

    /// Everything in the Prometheus text format.
    pub fn encode(&self) -> String {
        use crate::gauge::{LOG_STREAMS, RELAYED_STREAMS};
        self.secure_streams.get_or_create(&StreamKind { kind: "log" }).set(LOG_STREAMS.get() as i64);
        self.secure_streams.get_or_create(&StreamKind { kind: "relay" }).set(RELAYED_STREAMS.get() as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The kubelet's operation_type for a CRI method: "ListPodSandbox" is "list_podsandbox",
/// "CreateContainer" is "create_container".
pub fn operation_type(call: &str) -> String {
    let mut snake = String::with_capacity(call.len() + 4);
    for (i, c) in call.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake.replace("pod_sandbox", "podsandbox")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_types_are_the_kubelets() {
        assert_eq!(operation_type("ListPodSandbox"), "list_podsandbox");
        assert_eq!(operation_type("PodSandboxStatus"), "podsandbox_status");
        assert_eq!(operation_type("CreateContainer"), "create_container");
        assert_eq!(operation_type("ImageFsInfo"), "image_fs_info");
        assert_eq!(operation_type("Version"), "version");
    }

    #[test]
    fn the_text_has_the_upstream_names() {
        let m = Metrics::default();
        m.runtime_call("ListPodSandbox", Duration::from_millis(3), false);
        m.runtime_call("StartContainer", Duration::from_millis(30), true);
        m.pod_started(Duration::from_millis(700));
        m.set_running(2, ContainerCounts { running: 3, exited: 1, ..Default::default() });
        m.proxy_synced("IPv4", Duration::from_millis(12), 15, 111);
        m.proxy_sync_failed();
        let text = m.encode();
        for line in [
            "# TYPE kubelet_pod_start_duration_seconds histogram",
            "kubelet_pod_start_duration_seconds_count 1",
            "kubelet_pod_start_duration_seconds_bucket{le=\"1\"} 1",
            "kubelet_runtime_operations_duration_seconds_count{operation_type=\"list_podsandbox\"} 1",
            "kubelet_runtime_operations_errors_total{operation_type=\"start_container\"} 1",
            "kubelet_running_pods 2",
            "kubelet_running_containers{container_state=\"running\"} 3",
            "kubelet_running_containers{container_state=\"exited\"} 1",
            "kubeproxy_sync_proxy_rules_duration_seconds_count 1",
            "nodelet_secure_port_streams{kind=\"relay\"} 0",
            "kubeproxy_sync_proxy_rules_nftables_objects{ip_family=\"IPv4\",kind=\"element\"} 111",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("kubelet_runtime_operations_errors_total{operation_type=\"list_podsandbox\"}"), "{text}");
        assert!(text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds "), "{text}");
    }
}
