//! The KubeletConfiguration (v1beta1) fields nodelet reads but does not act on, in one list.
//! The fields it acts on are those of `file::KubeletConfiguration`; a key in neither is unknown.
//! A field here that the file sets to anything but the kubelet's default (or a Go zero value,
//! which the kubelet's defaulting turns into the default) is named in the start warning and
//! in /configz. Pure.

use serde_yaml::Value;
use std::time::Duration;

/// Which values of a field nodelet does not act on count as "left at the default".
#[derive(Debug, Clone, Copy)]
pub enum Accepts {
    /// Go zero values ("", 0, false, 0s, {}, [], or a map of those) and these.
    ZeroOr(&'static [&'static str]),
    /// Only these (and null): a Go pointer field, where 0 or false is a choice of its own.
    Only(&'static [&'static str]),
    /// Any value: the field changes nothing in the kubelet either (deprecated), or nodelet
    /// already behaves as any of its values asks.
    Any,
}

use Accepts::{Any, Only, ZeroOr};

const ZERO: Accepts = ZeroOr(&[]);

/// Every field of the schema nodelet does not implement (dotted paths for nested ones), with
/// the kubelet's default. nodelet's own behaviour where it matters: QoS cgroup levels always
/// (cgroupsPerQOS), parallel image pulls (serializeImagePulls), no swap check (failSwapOn),
/// cgroup v1 and v2 alike (failCgroupV1), no images in the Node status (nodeStatusMaxImages).
pub const NOT_IMPLEMENTED: &[(&str, Accepts)] = &[
    ("metadata", Any),
    ("enableServer", Only(&["true"])),
    ("httpCheckFrequency", ZeroOr(&["20s"])),
    ("staticPodURL", ZERO),
    ("staticPodURLHeader", ZERO),
    ("tlsCipherSuites", ZERO),
    ("tlsCurvePreferences", ZERO),
    ("tlsMinVersion", ZERO),
    ("registryPullQPS", Only(&["5"])),
    ("registryBurst", ZeroOr(&["10"])),
    ("imagePullCredentialsVerificationPolicy", ZeroOr(&["NeverVerifyPreloadedImages"])),
    ("preloadedImagesVerificationAllowlist", ZERO),
    ("eventRecordQPS", Only(&["50"])),
    ("eventBurst", ZeroOr(&["100"])),
    ("enableDebuggingHandlers", Only(&["true"])),
    ("enableContentionProfiling", ZERO),
    ("oomScoreAdj", Only(&["-999"])),
    ("streamingConnectionIdleTimeout", Any),
    ("volumeStatsAggPeriod", ZeroOr(&["1m"])),
    ("kubeletCgroups", ZERO),
    ("systemCgroups", ZERO),
    ("cgroupsPerQOS", Any),
    ("cpuManagerPolicy", ZeroOr(&["none", "None"])),
    ("singleProcessOOMKill", ZERO),
    ("cpuManagerPolicyOptions", ZERO),
    ("cpuManagerReconcilePeriod", ZeroOr(&["10s"])),
    ("draManagerReconcilePeriod", ZeroOr(&["60s"])),
    ("memoryManagerPolicy", ZeroOr(&["None", "none"])),
    ("topologyManagerPolicy", ZeroOr(&["none"])),
    ("topologyManagerScope", ZeroOr(&["container"])),
    ("topologyManagerPolicyOptions", ZERO),
    ("qosReserved", ZERO),
    ("runtimeRequestTimeout", ZeroOr(&["2m"])),
    ("hairpinMode", ZeroOr(&["promiscuous-bridge"])),
    ("runOnce", ZERO),
    ("cpuCFSQuota", Only(&["true"])),
    ("cpuCFSQuotaPeriod", ZeroOr(&["100ms"])),
    ("nodeStatusMaxImages", ZeroOr(&["50"])),
    ("maxOpenFiles", ZeroOr(&["1000000"])),
    ("contentType", ZeroOr(&["application/vnd.kubernetes.protobuf"])),
    ("kubeAPIQPS", Only(&["50"])),
    ("kubeAPIBurst", ZeroOr(&["100"])),
    ("serializeImagePulls", Any),
    ("maxParallelImagePulls", ZERO),
    ("podsPerCore", ZERO),
    ("enableControllerAttachDetach", Only(&["true"])),
    ("protectKernelDefaults", ZERO),
    ("makeIPTablesUtilChains", Only(&["true"])),
    ("iptablesMasqueradeBit", Any),
    ("iptablesDropBit", Any),
    ("featureGates", ZERO),
    ("failSwapOn", Any),
    ("memorySwap.swapBehavior", ZeroOr(&["NoSwap"])),
    ("containerLogMaxWorkers", Only(&["1"])),
    ("containerLogMonitorInterval", ZeroOr(&["10s"])),
    ("configMapAndSecretChangeDetectionStrategy", ZeroOr(&["Watch"])),
    ("reservedSystemCPUs", ZERO),
    ("showHiddenMetricsForVersion", ZERO),
    ("systemReservedCgroup", ZERO),
    ("kubeReservedCgroup", ZERO),
    ("volumePluginDir", ZeroOr(&["/usr/libexec/kubernetes/kubelet-plugins/volume/exec/"])),
    ("kernelMemcgNotification", ZERO),
    ("logging.format", ZeroOr(&["text"])),
    ("logging.flushFrequency", ZeroOr(&["5s"])),
    ("logging.vmodule", ZERO),
    ("logging.options.json.infoBufferSize", ZERO),
    ("logging.options.json.splitStream", ZERO),
    ("logging.options.text.infoBufferSize", ZERO),
    ("logging.options.text.splitStream", ZERO),
    ("enableSystemLogHandler", Only(&["true"])),
    ("enableSystemLogQuery", ZERO),
    ("shutdownGracePeriod", ZERO),
    ("shutdownGracePeriodCriticalPods", ZERO),
    ("shutdownGracePeriodByPodPriority", ZERO),
    ("reservedMemory", ZERO),
    ("enableProfilingHandler", Only(&["true"])),
    ("enableDebugFlagsHandler", Only(&["true"])),
    ("memoryThrottlingFactor", Only(&["0.9"])),
    ("memoryReservationPolicy", ZeroOr(&["None"])),
    ("registerNode", Only(&["true"])),
    ("tracing", ZERO),
    ("localStorageCapacityIsolation", Only(&["true"])),
    ("imageServiceEndpoint", ZERO),
    ("failCgroupV1", Any),
    ("userNamespaces.idsPerPod", Only(&["65536"])),
];

/// Sorts a key nodelet's typed reading skipped: a field of `NOT_IMPLEMENTED` set to something
/// else than its default goes to `ignored`, a key of no field to `unknown`; a map holding
/// fields of the list (`logging.options`) is judged key by key.
pub fn judge(path: &str, value: &Value, ignored: &mut Vec<String>, unknown: &mut Vec<String>) {
    if let Some((_, accepts)) = NOT_IMPLEMENTED.iter().find(|(name, _)| *name == path) {
        if !left_at_default(value, *accepts) {
            ignored.push(path.to_string());
        }
        return;
    }
    let prefix = format!("{path}.");
    let holds_fields = NOT_IMPLEMENTED.iter().any(|(name, _)| name.starts_with(&prefix));
    match value {
        Value::Mapping(map) if holds_fields => {
            for (key, inner) in map {
                judge(&format!("{prefix}{}", scalar_text(key).unwrap_or_default()), inner, ignored, unknown);
            }
        }
        Value::Null if holds_fields => {}
        _ => unknown.push(path.to_string()),
    }
}

/// Whether a value of a field nodelet ignores asks for nothing but the kubelet's default.
pub fn left_at_default(value: &Value, accepts: Accepts) -> bool {
    let listed = |values: &[&str]| values.iter().any(|v| same(value, v));
    match accepts {
        Any => true,
        Only(values) => value.is_null() || listed(values),
        ZeroOr(values) => is_zero(value) || listed(values),
    }
}

/// Go's zero values as YAML writes them; a map whose values are all zero (kubeadm writes
/// `logging.options.text.infoBufferSize: "0"`) counts as zero too.
pub fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s.parse::<f64>() == Ok(0.0) || duration(s) == Some(Duration::ZERO),
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(map) => map.values().all(is_zero),
        Value::Tagged(tagged) => is_zero(&tagged.value),
    }
}

/// Whether the value is `text`: the same scalar, the same duration (`60s` is `1m`), or the
/// same one-line list (`[pods]`).
fn same(value: &Value, text: &str) -> bool {
    let Some(written) = scalar_text(value).or_else(|| list_text(value)) else { return false };
    written == text || (duration(&written).is_some() && duration(&written) == duration(text))
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn list_text(value: &Value) -> Option<String> {
    let items = value.as_sequence()?.iter().map(scalar_text).collect::<Option<Vec<_>>>()?;
    Some(format!("[{}]", items.join(", ")))
}

/// A Go duration with a unit (a bare number is not one here).
fn duration(text: &str) -> Option<Duration> {
    text.ends_with(|c: char| c.is_ascii_alphabetic()).then(|| super::file::parse_go_duration(text).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn zero_values_and_defaults_are_left_at_default() {
        for zero in ["0s", "0", "\"0\"", "''", "false", "{}", "[]", "{json: {infoBufferSize: \"0\"}}", "~"] {
            assert!(is_zero(&yaml(zero)), "{zero}");
        }
        for set in ["1s", "1", "true", "[a]", "{a: 1}", "x"] {
            assert!(!is_zero(&yaml(set)), "{set}");
        }
        assert!(left_at_default(&yaml("10s"), ZeroOr(&["10s"])));
        assert!(left_at_default(&yaml("10000ms"), ZeroOr(&["10s"])));
        assert!(left_at_default(&yaml("1m0s"), ZeroOr(&["60s"])));
        assert!(!left_at_default(&yaml("5s"), ZeroOr(&["10s"])));
        assert!(left_at_default(&yaml("[pods]"), ZeroOr(&["[pods]"])));
        assert!(!left_at_default(&yaml("[pods, kube-reserved]"), ZeroOr(&["[pods]"])));
        // A pointer field: false and 0 are choices.
        assert!(!left_at_default(&yaml("false"), Only(&["true"])));
        assert!(!left_at_default(&yaml("0"), Only(&["5"])));
        assert!(left_at_default(&yaml("5"), Only(&["5"])));
        assert!(left_at_default(&yaml("~"), Only(&["5"])));
        assert!(left_at_default(&yaml("whatever"), Any));
    }

    #[test]
    fn skipped_keys_are_judged_ignored_unknown_or_default() {
        let (mut ignored, mut unknown) = (Vec::new(), Vec::new());
        judge("cpuManagerPolicy", &yaml("static"), &mut ignored, &mut unknown);
        judge("cpuManagerReconcilePeriod", &yaml("0s"), &mut ignored, &mut unknown);
        judge("memorySwap", &yaml("{}"), &mut ignored, &mut unknown);
        judge("logging.options", &yaml("{json: {infoBufferSize: '0'}, text: {infoBufferSize: '0'}}"), &mut ignored, &mut unknown);
        judge("logging.format", &yaml("json"), &mut ignored, &mut unknown);
        judge("memorySwap", &yaml("{swapBehavior: LimitedSwap, swapBehaviour: x}"), &mut ignored, &mut unknown);
        judge("readOnlyPrt", &yaml("1"), &mut ignored, &mut unknown);
        assert_eq!(ignored, ["cpuManagerPolicy", "logging.format", "memorySwap.swapBehavior"]);
        assert_eq!(unknown, ["memorySwap.swapBehaviour", "readOnlyPrt"]);
    }

    #[test]
    fn every_entry_is_a_distinct_camel_case_path() {
        let mut names: Vec<&str> = NOT_IMPLEMENTED.iter().map(|(n, _)| *n).collect();
        assert!(names.iter().all(|n| n.split('.').all(|part| part.starts_with(|c: char| c.is_ascii_lowercase()))), "{names:?}");
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NOT_IMPLEMENTED.len());
    }
}
