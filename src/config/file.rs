//! The `--config` file: a `kubelet.config.k8s.io/v1beta1` KubeletConfiguration as kubeadm and
//! kind write it, plus nodelet's own keys. `KubeletConfiguration` below holds the fields nodelet
//! acts on; every other field of the schema is in `fields::NOT_IMPLEMENTED`, and a key in
//! neither is an unknown field (a typo), warned about as the kubelet's lenient decoding does.
//!
//! Go zero values mean "the default", as the kubelet's defaulting has it: `0s`, `0` and `""`
//! read as absent (`zero::*`), except where the kubelet gives zero a meaning: `readOnlyPort: 0`
//! and `healthzPort: 0` turn the endpoint off, `resolvConf: ""` gives pods no host resolv.conf.

use super::fields;
use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fields nodelet implements, in KubeletConfiguration's spelling, and nodelet's own keys.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "zero::text")]
    pub static_pod_path: Option<PathBuf>,
    #[serde(default, deserialize_with = "zero::text")]
    pub pod_logs_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "zero::duration")]
    pub sync_frequency: Option<Duration>,
    #[serde(default, deserialize_with = "zero::duration")]
    pub file_check_frequency: Option<Duration>,
    #[serde(default, deserialize_with = "zero::text")]
    pub address: Option<IpAddr>,
    #[serde(default, deserialize_with = "zero::number")]
    pub port: Option<u16>,
    /// 0 turns the read-only port off.
    pub read_only_port: Option<u16>,
    #[serde(default, deserialize_with = "zero::text")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "zero::text")]
    pub tls_private_key_file: Option<PathBuf>,
    pub rotate_certificates: Option<bool>,
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: Option<bool>,
    pub authentication: Option<Authentication>,
    pub authorization: Option<Authorization>,
    /// 0 turns the health endpoint off.
    pub healthz_port: Option<u16>,
    #[serde(default, deserialize_with = "zero::text")]
    pub healthz_bind_address: Option<IpAddr>,
    #[serde(default, deserialize_with = "zero::text")]
    pub cluster_domain: Option<String>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<IpAddr>>,
    #[serde(default, deserialize_with = "zero::duration")]
    pub node_status_update_frequency: Option<Duration>,
    #[serde(default, deserialize_with = "zero::duration")]
    pub node_status_report_frequency: Option<Duration>,
    #[serde(default, deserialize_with = "zero::number")]
    pub node_lease_duration_seconds: Option<u32>,
    #[serde(default, rename = "imageMinimumGCAge", deserialize_with = "zero::duration")]
    pub image_minimum_gc_age: Option<Duration>,
    /// 0s (absent): never.
    #[serde(default, rename = "imageMaximumGCAge", deserialize_with = "zero::duration")]
    pub image_maximum_gc_age: Option<Duration>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<u8>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<u8>,
    #[serde(default, deserialize_with = "checked::cgroup_root")]
    pub cgroup_root: Option<String>,
    #[serde(default, deserialize_with = "checked::cgroup_driver")]
    pub cgroup_driver: Option<super::CgroupDriver>,
    /// 0 (absent): the default, no limit.
    #[serde(default, deserialize_with = "zero::number")]
    pub pod_pids_limit: Option<i64>,
    pub enforce_node_allocatable: Option<Vec<String>>,
    #[serde(default, deserialize_with = "zero::number")]
    pub max_pods: Option<u32>,
    #[serde(default, rename = "podCIDR", deserialize_with = "checked::pod_cidr")]
    pub pod_cidr: Option<String>,
    /// `""`: pods get no host resolv.conf content.
    pub resolv_conf: Option<PathBuf>,
    pub eviction_hard: Option<BTreeMap<String, String>>,
    pub eviction_soft: Option<BTreeMap<String, String>>,
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "zero::duration")]
    pub eviction_pressure_transition_period: Option<Duration>,
    pub eviction_max_pod_grace_period: Option<u32>,
    /// The kubelet's default hard thresholds under the given ones, instead of only the given.
    pub merge_default_eviction_settings: Option<bool>,
    #[serde(default, deserialize_with = "checked::size")]
    pub container_log_max_size: Option<String>,
    pub container_log_max_files: Option<u32>,
    pub system_reserved: Option<BTreeMap<String, String>>,
    pub kube_reserved: Option<BTreeMap<String, String>>,
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    #[serde(default, rename = "providerID", deserialize_with = "zero::text")]
    pub provider_id: Option<String>,
    pub logging: Option<Logging>,
    pub crash_loop_back_off: Option<CrashLoopBackOff>,
    pub seccomp_default: Option<bool>,
    pub register_with_taints: Option<Vec<Taint>>,
    #[serde(default, deserialize_with = "checked::endpoint")]
    pub container_runtime_endpoint: Option<String>,

    // nodelet's own keys: its flags' names in camelCase.
    #[serde(default, deserialize_with = "zero::text")]
    pub hostname_override: Option<String>,
    pub pod_infra_container_image: Option<String>,
    pub root_dir: Option<PathBuf>,
    #[serde(default, rename = "nodeIP", deserialize_with = "zero::text")]
    pub node_ip: Option<IpAddr>,
    pub cni_conf_dir: Option<PathBuf>,
    pub cni_bin_dir: Option<PathBuf>,
    pub cni_plugin: Option<PathBuf>,
    pub cni_bridge: Option<String>,
    pub cni_data_dir: Option<PathBuf>,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    pub network_plugin: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: Option<PathBuf>,
    pub proxy_kubeconfig: Option<PathBuf>,
    pub node_labels: Option<BTreeMap<String, String>>,
    pub proxy_only: Option<bool>,
    pub disable_proxy: Option<bool>,
    pub proxy_table: Option<String>,
    /// Flat spellings nodelet read before it read the nested ones; the nested ones win.
    #[serde(default, rename = "clientCAFile", deserialize_with = "zero::text")]
    pub client_ca_file: Option<PathBuf>,
    pub anonymous_auth: Option<bool>,
    pub authentication_token_webhook: Option<bool>,
    #[serde(default, deserialize_with = "checked::authorization_mode")]
    pub authorization_mode: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    pub x509: Option<X509>,
    pub webhook: Option<AuthenticationWebhook>,
    pub anonymous: Option<Anonymous>,
}

#[derive(Debug, Deserialize, Default)]
pub struct X509 {
    #[serde(default, rename = "clientCAFile", deserialize_with = "zero::text")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationWebhook {
    pub enabled: Option<bool>,
    #[serde(default, rename = "cacheTTL", deserialize_with = "zero::duration")]
    pub cache_ttl: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
pub struct Anonymous {
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
pub struct Authorization {
    /// Webhook (true) or AlwaysAllow (false).
    #[serde(default, deserialize_with = "checked::authorization_mode")]
    pub mode: Option<bool>,
    pub webhook: Option<AuthorizationWebhook>,
}

#[derive(Debug, Deserialize, Default)]
pub struct AuthorizationWebhook {
    #[serde(default, rename = "cacheAuthorizedTTL", deserialize_with = "zero::duration")]
    pub cache_authorized_ttl: Option<Duration>,
    #[serde(default, rename = "cacheUnauthorizedTTL", deserialize_with = "zero::duration")]
    pub cache_unauthorized_ttl: Option<Duration>,
}

#[derive(Debug, Deserialize, Default)]
pub struct Logging {
    /// The same as -v, which wins.
    pub verbosity: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CrashLoopBackOff {
    /// nodelet's own: the first delay.
    #[serde(default, deserialize_with = "zero::duration")]
    pub initial_period: Option<Duration>,
    #[serde(default, deserialize_with = "zero::duration")]
    pub max_container_restart_period: Option<Duration>,
}

/// A read file: its settings, and the fields it sets that nodelet does not act on.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: KubeletConfiguration,
    /// Schema fields set to a value other than the kubelet's default, which nodelet ignores.
    pub ignored: Vec<String>,
    /// Keys that are not in the schema at all.
    pub unknown: Vec<String>,
}

/// Reads and checks the file; an error names the file, the field and the value.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--config: reading {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
}

/// The file's text as settings; an error names the field and the value.
pub fn parse(text: &str) -> Result<Loaded, String> {
    let (config, raw, skipped) = read(text)?;
    if let Some(kind) = config.kind.as_deref().filter(|k| *k != "KubeletConfiguration") {
        return Err(format!("kind {kind:?} should be KubeletConfiguration"));
    }
    if let Some(version) = config.api_version.as_deref().filter(|v| !v.starts_with("kubelet.config.k8s.io/")) {
        return Err(format!("apiVersion {version:?} should be kubelet.config.k8s.io/v1beta1"));
    }
    let mut loaded = Loaded { config, ..Default::default() };
    for path in skipped {
        let value = path.iter().try_fold(&raw, |v, key| v.get(key.as_str())).unwrap_or(&serde_yaml::Value::Null);
        fields::judge(&path.join("."), value, &mut loaded.ignored, &mut loaded.unknown);
    }
    Ok(loaded)
}

/// The typed fields, the file as YAML, and the paths of the keys the typed reading skipped.
fn read(text: &str) -> Result<(KubeletConfiguration, serde_yaml::Value, Vec<Vec<String>>), String> {
    let raw = match serde_yaml::from_str(text).map_err(|e| e.to_string())? {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        map @ serde_yaml::Value::Mapping(_) => map,
        _ => return Err("the file is not a mapping of KubeletConfiguration fields".into()),
    };
    let mut skipped: Vec<Vec<String>> = Vec::new();
    let mut on_skipped = |path: serde_ignored::Path| skipped.push(segments(&path));
    let config = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(raw.clone(), &mut on_skipped)).map_err(|e| e.to_string())?;
    Ok((config, raw, skipped))
}

/// A skipped key's path as its map keys and list indices (serde_ignored's `?` for an Option
/// left out).
fn segments(path: &serde_ignored::Path) -> Vec<String> {
    use serde_ignored::Path as P;
    let mut out = match path {
        P::Root => return Vec::new(),
        P::Seq { parent, .. } | P::Map { parent, .. } | P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        P::Seq { index, .. } => out.push(index.to_string()),
        P::Map { key, .. } => out.push(key.clone()),
        _ => {}
    }
    out
}

/// A duration as Go's time.ParseDuration (and metav1.Duration) reads it: `1m30s`, `250ms`,
/// `1.5h`, `0`; also humantime's forms, which nodelet's file took before (`5min`).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    go_duration(trimmed)
        .or_else(|go_error| super::parse_duration(trimmed).map_err(|_| format!("{text:?} is not a duration such as 250ms, 10s or 1m30s: {go_error}")))
}

fn go_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.starts_with('-') {
        return Err("a duration must not be negative".into());
    }
    if rest.is_empty() {
        return Err("empty".into());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit after {number:?}")),
            other => return Err(format!("unknown unit {other:?}")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(format!("no number before {unit:?}"));
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| format!("{number:?} is too large"))? };
        let digits = fraction.len().min(18) as u32;
        let fraction: u128 = if digits == 0 { 0 } else { fraction[..digits as usize].parse().map_err(|_| format!("{number:?} is not a number"))? };
        nanos = whole
            .checked_mul(per)
            .and_then(|n| n.checked_add(fraction * per / 10u128.pow(digits)))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(|| "too large".to_string())?;
        rest = after;
    }
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| "too large".into())
}

/// Go zero values read as absent, so the default applies.
mod zero {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// A duration; `0s` is absent.
    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        let parsed = text.map(|t| super::parse_go_duration(&t).map_err(serde::de::Error::custom)).transpose()?;
        Ok(parsed.filter(|d| !d.is_zero()))
    }

    /// A number; 0 is absent.
    pub fn number<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default + PartialEq>(d: D) -> Result<Option<T>, D::Error> {
        Ok(Option::<T>::deserialize(d)?.filter(|n| *n != T::default()))
    }

    /// A string read as a `T`; `""` is absent.
    pub fn text<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D) -> Result<Option<T>, D::Error>
    where
        T::Err: std::fmt::Display,
    {
        let text: Option<String> = Option::deserialize(d)?;
        match text.filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => t.parse().map(Some).map_err(|e| serde::de::Error::custom(format!("{t:?}: {e}"))),
        }
    }
}

/// Values checked as they are read, so the error names the field (flags get the same checks
/// in `Config::validate`).
mod checked {
    use super::super::{parse_cidr, parse_endpoint, CgroupDriver};
    use serde::de::Error;
    use serde::Deserializer;

    fn with<'de, D: Deserializer<'de>, T>(d: D, check: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, D::Error> {
        let text: Option<String> = super::zero::text(d)?;
        text.map(|t| check(&t).map_err(D::Error::custom)).transpose()
    }

    pub fn pod_cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, |t| parse_cidr(t).map(|_| t.to_string()))
    }

    pub fn cgroup_root<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, |t| if t.starts_with('/') { Ok(t.to_string()) } else { Err(format!("{t:?} must be an absolute cgroup path such as / or /kubelet")) })
    }

    pub fn cgroup_driver<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CgroupDriver>, D::Error> {
        with(d, CgroupDriver::parse)
    }

    pub fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, |t| parse_endpoint(t).map(|_| t.to_string()))
    }

    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, |t| super::super::parse_log_size(t).map(|_| t.to_string()))
    }

    /// AlwaysAllow (false) or Webhook (true).
    pub fn authorization_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        with(d, super::super::parse_authorization_mode)
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
