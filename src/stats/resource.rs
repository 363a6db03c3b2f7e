//! `GET /metrics/resource`: the kubelet's resource metrics, what metrics-server (>= 0.6) scrapes
//! for `kubectl top`, rendered from the same collected Summary. Pure.

use super::summary::{CpuStats, MemoryStats, Summary};
use std::fmt::Write;

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn cpu_seconds(cpu: Option<&CpuStats>) -> Option<f64> {
    cpu?.usage_core_nano_seconds.map(|n| n as f64 / 1e9)
}

fn working_set(memory: Option<&MemoryStats>) -> Option<f64> {
    memory?.working_set_bytes.map(|b| b as f64)
}

/// An RFC 3339 time as seconds since the epoch.
fn epoch_seconds(time: &str) -> Option<f64> {
    let t: k8s_openapi::jiff::Timestamp = time.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1e3)
}

/// The text, each sample stamped with `at_ms` (when the figures were read, in ms since the
/// epoch); `scrape_error` tells that some pod's figures could not be read.
pub fn render(summary: &Summary, at_ms: u64, scrape_error: bool) -> String {
    let node = &summary.node;
    let mut families = vec![
        Family {
            name: "node_cpu_usage_seconds_total",
            help: "Cumulative cpu time consumed by the node in core-seconds",
            kind: "counter",
            samples: cpu_seconds(node.cpu.as_ref()).map(|v| (String::new(), v)).into_iter().collect(),
        },
        Family {
            name: "node_memory_working_set_bytes",
            help: "Current working set of the node in bytes",
            kind: "gauge",
            samples: working_set(node.memory.as_ref()).map(|v| (String::new(), v)).into_iter().collect(),
        },
    ];
    let (mut pod_cpu, mut pod_memory, mut container_cpu, mut container_memory, mut container_start) = (vec![], vec![], vec![], vec![], vec![]);
    for pod in &summary.pods {
        let (ns, name) = (pod.pod_ref.namespace.as_str(), pod.pod_ref.name.as_str());
        let pod_labels = labels(&[("namespace", ns), ("pod", name)]);
        pod_cpu.extend(cpu_seconds(pod.cpu.as_ref()).map(|v| (pod_labels.clone(), v)));
        pod_memory.extend(working_set(pod.memory.as_ref()).map(|v| (pod_labels.clone(), v)));
        for c in &pod.containers {
            let l = labels(&[("container", &c.name), ("namespace", ns), ("pod", name)]);
            container_cpu.extend(cpu_seconds(c.cpu.as_ref()).map(|v| (l.clone(), v)));
            container_memory.extend(working_set(c.memory.as_ref()).map(|v| (l.clone(), v)));
            container_start.extend(c.start_time.as_deref().and_then(epoch_seconds).map(|v| (l.clone(), v)));
        }
    }
    families.extend([
        Family { name: "pod_cpu_usage_seconds_total", help: "Cumulative cpu time consumed by the pod in core-seconds", kind: "counter", samples: pod_cpu },
        Family { name: "pod_memory_working_set_bytes", help: "Current working set of the pod in bytes", kind: "gauge", samples: pod_memory },
        Family {
            name: "container_cpu_usage_seconds_total",
            help: "Cumulative cpu time consumed by the container in core-seconds",
            kind: "counter",
            samples: container_cpu,
        },
        Family { name: "container_memory_working_set_bytes", help: "Current working set of the container in bytes", kind: "gauge", samples: container_memory },
        Family {
            name: "container_start_time_seconds",
            help: "Start time of the container since unix epoch in seconds",
            kind: "gauge",
            samples: container_start,
        },
    ]);
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind);
        for (labels, value) in &f.samples {
            let _ = writeln!(out, "{}{labels} {value} {at_ms}", f.name);
        }
    }
    let _ = writeln!(
        out,
        "# HELP scrape_error 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error {}",
        u8::from(scrape_error)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::*;

    #[test]
    fn node_pod_and_container_figures_with_their_labels() {
        let cpu = |n| Some(CpuStats { time: "t".into(), usage_nano_cores: None, usage_core_nano_seconds: Some(n) });
        let mem = |b| Some(MemoryStats { time: "t".into(), working_set_bytes: Some(b), ..Default::default() });
        let summary = Summary {
            node: NodeStats { node_name: "n".into(), cpu: cpu(2_500_000_000), memory: mem(1024), ..Default::default() },
            pods: vec![PodStats {
                pod_ref: PodReference { name: "web".into(), namespace: "default".into(), uid: "u".into() },
                cpu: cpu(500_000_000),
                memory: mem(300),
                containers: vec![ContainerStats {
                    name: "app".into(),
                    start_time: Some("1970-01-01T00:00:10Z".into()),
                    cpu: cpu(400_000_000),
                    memory: mem(200),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let text = render(&summary, 1_000, false);
        for line in [
            "# TYPE node_cpu_usage_seconds_total counter",
            "node_cpu_usage_seconds_total 2.5 1000",
            "node_memory_working_set_bytes 1024 1000",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 0.5 1000",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 300 1000",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 0.4 1000",
            "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 200 1000",
            "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=\"web\"} 10 1000",
            "scrape_error 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(render(&Summary::default(), 0, true).ends_with("scrape_error 1\n"));
    }
}
