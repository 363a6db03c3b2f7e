//! The settings given as maps (`key=value,...` flags, YAML maps in the file): eviction
//! thresholds and the resources reserved for the system. A flag's map replaces the file's;
//! errors start with the flag or the file key they come from.

use super::file::KubeletConfiguration;
use super::Flags;
use std::collections::BTreeMap;
use std::time::Duration;

/// The eviction thresholds and periods from the flags, else the file, else the kubelet's
/// defaults. With `mergeDefaultEvictionSettings`, the file's hard thresholds go over the
/// defaults instead of replacing them.
pub fn eviction_settings(flags: &Flags, file: &KubeletConfiguration) -> Result<crate::eviction::Settings, String> {
    use crate::eviction::thresholds::{parse_pairs, parse_reclaims, parse_statements, thresholds, Settings, DEFAULT_HARD, FILE_NAMES, FLAG_NAMES};
    let from_flag =
        [flags.eviction_hard.is_some(), flags.eviction_soft.is_some(), flags.eviction_soft_grace_period.is_some(), flags.eviction_minimum_reclaim.is_some()];
    let names = [0, 1, 2, 3].map(|i| if from_flag[i] { FLAG_NAMES[i] } else { FILE_NAMES[i] });
    let hard = match &flags.eviction_hard {
        Some(items) => Some(parse_statements("--eviction-hard", items)?),
        None if file.merge_default_eviction_settings == Some(true) => {
            let mut merged: BTreeMap<String, String> = DEFAULT_HARD.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect();
            merged.extend(file.eviction_hard.clone().unwrap_or_default());
            Some(merged)
        }
        None => file.eviction_hard.clone(),
    };
    let soft = match &flags.eviction_soft {
        Some(items) => parse_statements("--eviction-soft", items)?,
        None => file.eviction_soft.clone().unwrap_or_default(),
    };
    let soft_grace = match &flags.eviction_soft_grace_period {
        Some(items) => parse_pairs("--eviction-soft-grace-period", items)?,
        None => file.eviction_soft_grace_period.clone().unwrap_or_default(),
    };
    let min_reclaim = match &flags.eviction_minimum_reclaim {
        Some(items) => parse_reclaims("--eviction-minimum-reclaim", items)?,
        None => file.eviction_minimum_reclaim.clone().unwrap_or_default(),
    };
    Ok(crate::eviction::Settings {
        thresholds: thresholds(&Settings { hard, soft, soft_grace, min_reclaim, names })?,
        pressure_transition: flags
            .eviction_pressure_transition_period
            .or(file.eviction_pressure_transition_period)
            .unwrap_or(crate::eviction::thresholds::DEFAULT_PRESSURE_TRANSITION),
        max_pod_grace: Duration::from_secs(flags.eviction_max_pod_grace_period.or(file.eviction_max_pod_grace_period).unwrap_or(0).into()),
    })
}

/// system- plus kube-reserved, each from its flag else the file: (cpu millicores, memory bytes).
pub fn reserved(flags: &Flags, file: &KubeletConfiguration) -> Result<(i64, i64), String> {
    let pick = |flag: &Option<Vec<String>>, option: &'static str, map: &Option<BTreeMap<String, String>>, key: &'static str| match flag {
        Some(list) => parse_pairs(option, list).and_then(|m| sum_of(option, &m)),
        None => sum_of(key, &map.clone().unwrap_or_default()),
    };
    let system = pick(&flags.system_reserved, "--system-reserved", &file.system_reserved, "systemReserved")?;
    let kube = pick(&flags.kube_reserved, "--kube-reserved", &file.kube_reserved, "kubeReserved")?;
    let add = |x: i64, y: i64, what: &str| x.checked_add(y).ok_or_else(|| format!("--system-reserved plus --kube-reserved: {what} does not fit in 64 bits"));
    Ok((add(system.0, kube.0, "cpu")?, add(system.1, kube.1, "memory")?))
}

/// `key=value` items as a map; an item without `=` is an error naming the option.
pub fn parse_pairs(option: &str, items: &[String]) -> Result<BTreeMap<String, String>, String> {
    items
        .iter()
        .filter(|i| !i.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{option}: {item:?} is not key=value")),
        })
        .collect()
}

/// cpu and memory of a reservation, as (millicores, bytes).
fn sum_of(option: &str, map: &BTreeMap<String, String>) -> Result<(i64, i64), String> {
    let mut out = (0, 0);
    for (key, value) in map {
        match key.as_str() {
            "cpu" => out.0 = crate::pods::quantity::cpu_millis(value).map_err(|e| format!("{option}: cpu: {e}"))?,
            "memory" => out.1 = crate::pods::quantity::bytes(value).map_err(|e| format!("{option}: memory: {e}"))?,
            "ephemeral-storage" | "pid" => {}
            other => return Err(format!("{option}: unknown resource {other:?} (cpu, memory, ephemeral-storage, pid)")),
        }
    }
    Ok(out)
}
