//! Eviction thresholds as the kubelet takes them: `--eviction-hard` / `evictionHard`
//! (`memory.available<100Mi,nodefs.available<10%`), `--eviction-soft` / `evictionSoft` with a
//! grace period each (`--eviction-soft-grace-period` / `evictionSoftGracePeriod`,
//! `memory.available=1m30s`). Pure parsing; an error names the entry and what is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What a threshold watches (the kubelet's eviction signals nodelet observes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
}

/// The node condition a signal's pressure shows in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pressure {
    Memory,
    Disk,
}

/// What an eviction for a signal reclaims: the resource named in the pod's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Inodes,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
        }
    }
}

impl Signal {
    pub const ALL: [Signal; 5] =
        [Signal::MemoryAvailable, Signal::NodefsAvailable, Signal::NodefsInodesFree, Signal::ImagefsAvailable, Signal::ImagefsInodesFree];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
        }
    }

    pub fn parse(text: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn pressure(self) -> Pressure {
        match self {
            Signal::MemoryAvailable => Pressure::Memory,
            _ => Pressure::Disk,
        }
    }

    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable => Resource::Memory,
            Signal::NodefsAvailable | Signal::ImagefsAvailable => Resource::EphemeralStorage,
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => Resource::Inodes,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A threshold's level: an absolute quantity (bytes or inodes; its text kept for messages), or
/// a fraction of the capacity.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Quantity {
        amount: u64,
        text: String,
    },
    /// Between 0 and 1 (exclusive).
    Percent(f64),
}

impl Value {
    /// The level in bytes or inodes on a resource of `capacity`.
    pub fn amount(&self, capacity: u64) -> u64 {
        match self {
            Value::Quantity { amount, .. } => *amount,
            Value::Percent(p) => (capacity as f64 * p) as u64,
        }
    }
}

impl fmt::Display for Value {
    /// As the flags write it: the quantity's text, or the percentage.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Quantity { text, .. } => f.write_str(text),
            Value::Percent(p) => write!(f, "{}%", (p * 100.0 * 1e6).round() / 1e6),
        }
    }
}

/// `signal < value`; a soft threshold has a grace period, a hard one none.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Value,
    pub grace: Option<Duration>,
    /// Once met, the threshold stays met until this much more is available than its level
    /// (--eviction-minimum-reclaim), so one eviction frees more than the last byte over it.
    pub min_reclaim: Option<Value>,
}

impl Threshold {
    pub fn is_hard(&self) -> bool {
        self.grace.is_none()
    }
}

/// The kubelet's default hard thresholds (Linux).
pub const DEFAULT_HARD: [(&str, &str); 4] =
    [("memory.available", "100Mi"), ("nodefs.available", "10%"), ("nodefs.inodesFree", "5%"), ("imagefs.available", "15%")];

/// The kubelet's evictionPressureTransitionPeriod default.
pub const DEFAULT_PRESSURE_TRANSITION: Duration = Duration::from_secs(300);

/// `signal<value,...` (a flag's list) as a map; `option` names the flag in errors.
pub fn parse_statements(option: &str, items: &[String]) -> Result<BTreeMap<String, String>, String> {
    parse_list(option, items, '<', "signal<value, such as memory.available<100Mi")
}

/// `signal=duration,...` (the grace period flag's list) as a map.
pub fn parse_pairs(option: &str, items: &[String]) -> Result<BTreeMap<String, String>, String> {
    parse_list(option, items, '=', "signal=duration, such as memory.available=1m30s")
}

/// `signal=quantity,...` (the minimum reclaim flag's list) as a map.
pub fn parse_reclaims(option: &str, items: &[String]) -> Result<BTreeMap<String, String>, String> {
    parse_list(option, items, '=', "signal=quantity, such as nodefs.available=500Mi")
}

/// Items `signal<separator>value` (trimmed, empty ones skipped) as a map; `form` shows the
/// expected shape in the error.
fn parse_list(option: &str, items: &[String], separator: char, form: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let (signal, value) = item.split_once(separator).ok_or_else(|| format!("{option}: {item:?} is not {form}"))?;
        map.insert(signal.trim().to_string(), value.trim().to_string());
    }
    Ok(map)
}

/// An entry as its source writes it, for errors: `--eviction-hard: memory.available<1Gi` for a
/// flag, `evictionHard: memory.available: "1Gi"` for a file key.
fn entry(option: &str, signal: &str, separator: char, value: &str) -> String {
    if option.starts_with("--") {
        format!("{option}: {signal}{separator}{value}")
    } else {
        format!("{option}: {signal}: {value:?}")
    }
}

/// One `signal: value` entry; None for 0% and 100%, which the kubelet takes as "no threshold"
/// (its parseThresholdStatement), also for a signal nodelet does not observe.
fn parse_one(option: &str, signal: &str, value: &str) -> Result<Option<(Signal, Value)>, String> {
    let entry = entry(option, signal, '<', value);
    if let Some(number) = value.strip_suffix('%') {
        let percent: f64 = number.trim().parse().map_err(|_| format!("{entry} is not a percentage"))?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("{entry}: the percentage must be between 0% and 100%"));
        }
        if percent == 0.0 || percent == 100.0 {
            return Ok(None);
        }
        let signal = parse_signal(&entry, signal)?;
        return Ok(Some((signal, Value::Percent(percent / 100.0))));
    }
    let signal = parse_signal(&entry, signal)?;
    let amount = crate::pods::quantity::bytes(value).map_err(|e| format!("{entry} is not a quantity or percentage ({e})"))?;
    if amount <= 0 {
        return Err(format!("{entry}: the threshold must be positive"));
    }
    Ok(Some((signal, Value::Quantity { amount: amount as u64, text: value.to_string() })))
}

fn parse_signal(entry: &str, signal: &str) -> Result<Signal, String> {
    Signal::parse(signal).ok_or_else(|| format!("{entry}: unsupported eviction signal {signal:?} (one of {})", signal_names()))
}

fn signal_names() -> String {
    Signal::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The settings as given (flags or file), before they are checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// None: the kubelet's defaults; an empty map: no hard threshold at all.
    pub hard: Option<BTreeMap<String, String>>,
    pub soft: BTreeMap<String, String>,
    pub soft_grace: BTreeMap<String, String>,
    pub min_reclaim: BTreeMap<String, String>,
    /// Where hard, soft, grace and minimum reclaim came from (a flag or a file key), for errors.
    pub names: [&'static str; 4],
}

pub const FLAG_NAMES: [&str; 4] = ["--eviction-hard", "--eviction-soft", "--eviction-soft-grace-period", "--eviction-minimum-reclaim"];
pub const FILE_NAMES: [&str; 4] = ["evictionHard", "evictionSoft", "evictionSoftGracePeriod", "evictionMinimumReclaim"];

impl Default for Settings {
    fn default() -> Self {
        Settings { hard: None, soft: BTreeMap::new(), soft_grace: BTreeMap::new(), min_reclaim: BTreeMap::new(), names: FLAG_NAMES }
    }
}

/// The thresholds: hard ones first, then soft ones, each soft one with its grace period (which
/// it must have, as the kubelet requires).
pub fn thresholds(settings: &Settings) -> Result<Vec<Threshold>, String> {
    let defaults: BTreeMap<String, String> = DEFAULT_HARD.iter().map(|(s, v)| (s.to_string(), v.to_string())).collect();
    let mut out = Vec::new();
    for (signal, value) in settings.hard.as_ref().unwrap_or(&defaults) {
        if let Some((signal, value)) = parse_one(settings.names[0], signal, value)? {
            out.push(Threshold { signal, value, grace: None, min_reclaim: None });
        }
    }
    let mut graces = BTreeMap::new();
    for (signal, text) in &settings.soft_grace {
        let entry = entry(settings.names[2], signal, '=', text);
        let parsed = parse_signal(&entry, signal)?;
        let grace = crate::config::parse_duration(text).map_err(|e| format!("{entry}: {e}"))?;
        graces.insert(parsed, grace);
    }
    for (name, text) in &settings.soft {
        if let Some((signal, value)) = parse_one(settings.names[1], name, text)? {
            let [_, soft, grace, _] = settings.names;
            let soft = entry(soft, name, '<', text);
            let grace = graces.get(&signal).copied().ok_or_else(|| format!("{soft}: no grace period given for it in {grace}"))?;
            out.push(Threshold { signal, value, grace: Some(grace), min_reclaim: None });
        }
    }
    // A signal's minimum reclaim applies to each of its thresholds, hard and soft.
    for (name, text) in &settings.min_reclaim {
        let entry = entry(settings.names[3], name, '=', text);
        let signal = parse_signal(&entry, name)?;
        let reclaim = parse_reclaim(text).map_err(|e| format!("{entry}: {e}"))?;
        for threshold in out.iter_mut().filter(|t| t.signal == signal) {
            threshold.min_reclaim = reclaim.clone();
        }
    }
    Ok(out)
}

/// A minimum reclaim: a quantity or a percentage of the capacity; None for zero.
fn parse_reclaim(text: &str) -> Result<Option<Value>, String> {
    if let Some(number) = text.strip_suffix('%') {
        let percent: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&percent) {
            return Err("the percentage must be between 0% and 100%".into());
        }
        return Ok((percent > 0.0).then_some(Value::Percent(percent / 100.0)));
    }
    let amount = crate::pods::quantity::bytes(text)?;
    if amount < 0 {
        return Err("the minimum reclaim must not be negative".into());
    }
    Ok((amount > 0).then(|| Value::Quantity { amount: amount as u64, text: text.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_defaults_are_the_kubelets() {
        let t = thresholds(&Settings::default()).unwrap();
        let by = |s: Signal| t.iter().find(|t| t.signal == s).map(|t| t.value.clone());
        assert_eq!(t.len(), 4);
        assert!(t.iter().all(Threshold::is_hard));
        assert_eq!(by(Signal::MemoryAvailable), Some(Value::Quantity { amount: 100 << 20, text: "100Mi".into() }));
        assert_eq!(by(Signal::NodefsAvailable), Some(Value::Percent(0.1)));
        assert_eq!(by(Signal::NodefsInodesFree), Some(Value::Percent(0.05)));
        assert_eq!(by(Signal::ImagefsAvailable), Some(Value::Percent(0.15)));
        assert_eq!(by(Signal::ImagefsInodesFree), None);
        // Given thresholds replace the defaults; an empty list means none.
        assert!(thresholds(&Settings { hard: Some(BTreeMap::new()), ..Default::default() }).unwrap().is_empty());
    }

    #[test]
    fn flag_lists_parse_into_maps() {
        let items = vec!["memory.available<1Gi".to_string(), " nodefs.available<5% ".to_string(), String::new()];
        assert_eq!(parse_statements("--eviction-hard", &items).unwrap(), map(&[("memory.available", "1Gi"), ("nodefs.available", "5%")]));
        assert!(parse_statements("--eviction-hard", &["memory.available=1Gi".to_string()]).unwrap_err().contains("\"memory.available=1Gi\""));
        assert_eq!(parse_pairs("--eviction-soft-grace-period", &["memory.available=1m30s".to_string()]).unwrap(), map(&[("memory.available", "1m30s")]));
    }

    #[test]
    fn soft_thresholds_carry_their_grace_period() {
        let settings = Settings {
            hard: Some(map(&[("memory.available", "100Mi")])),
            soft: map(&[("memory.available", "1Gi"), ("nodefs.inodesFree", "10%")]),
            soft_grace: map(&[("memory.available", "1m30s"), ("nodefs.inodesFree", "10s")]),
            ..Default::default()
        };
        let t = thresholds(&settings).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[1],
            Threshold {
                signal: Signal::MemoryAvailable,
                value: Value::Quantity { amount: 1 << 30, text: "1Gi".into() },
                grace: Some(Duration::from_secs(90)),
                min_reclaim: None
            }
        );
        assert_eq!(t[2].grace, Some(Duration::from_secs(10)));
        assert_eq!(Value::Percent(0.1).amount(1000), 100);
        assert_eq!((Value::Percent(0.1).to_string(), Value::Percent(0.075).to_string(), t[1].value.to_string()), ("10%".into(), "7.5%".into(), "1Gi".into()));
    }

    #[test]
    fn zero_and_hundred_percent_mean_no_threshold() {
        let t = thresholds(&Settings { hard: Some(map(&[("nodefs.available", "0%"), ("imagefs.available", "100%")])), ..Default::default() }).unwrap();
        assert!(t.is_empty());
        // As kind writes it: the signals given at 0% are off, the defaults not given are gone.
        let kind = map(&[("nodefs.available", "0%"), ("nodefs.inodesFree", "0%"), ("imagefs.available", "0%")]);
        assert!(thresholds(&Settings { hard: Some(kind), names: FILE_NAMES, ..Default::default() }).unwrap().is_empty());
        // Soft ones too, with no grace period needed, also 0.0% and 100.0%, and for a signal
        // nodelet does not observe (the kubelet's pid.available).
        let soft = Settings { hard: Some(BTreeMap::new()), soft: map(&[("memory.available", "0.0%"), ("pid.available", "100%")]), ..Default::default() };
        assert!(thresholds(&soft).unwrap().is_empty());
        assert_eq!(thresholds(&Settings { hard: Some(map(&[("memory.available", "0.5%")])), ..Default::default() }).unwrap().len(), 1);
    }

    #[test]
    fn a_file_key_entry_is_named_as_the_file_writes_it() {
        let hard = |k: &str, v: &str| thresholds(&Settings { hard: Some(map(&[(k, v)])), names: FILE_NAMES, ..Default::default() }).unwrap_err();
        let err = hard("memory.available", "lots");
        assert!(err.starts_with("evictionHard: memory.available: \"lots\" is not a quantity or percentage"), "{err}");
        assert!(hard("memory.free", "1Gi").starts_with("evictionHard: memory.free: \"1Gi\": unsupported eviction signal"));
        let soft = Settings { soft: map(&[("memory.available", "1Gi")]), names: FILE_NAMES, ..Default::default() };
        assert_eq!(thresholds(&soft).unwrap_err(), "evictionSoft: memory.available: \"1Gi\": no grace period given for it in evictionSoftGracePeriod");
    }

    #[test]
    fn errors_name_the_entry_and_the_cause() {
        let hard = |k: &str, v: &str| thresholds(&Settings { hard: Some(map(&[(k, v)])), ..Default::default() }).unwrap_err();
        let cases = [
            (hard("memory.free", "1Gi"), "unsupported eviction signal \"memory.free\""),
            (hard("memory.available", "lots"), "--eviction-hard: memory.available<lots"),
            (hard("memory.available", "0"), "must be positive"),
            (hard("nodefs.available", "150%"), "between 0% and 100%"),
            (hard("nodefs.available", "x%"), "is not a percentage"),
        ];
        for (err, want) in cases {
            assert!(err.contains(want), "{err}");
        }
        let no_grace = thresholds(&Settings { soft: map(&[("memory.available", "1Gi")]), ..Default::default() }).unwrap_err();
        assert!(no_grace.contains("--eviction-soft: memory.available<1Gi: no grace period given for it in --eviction-soft-grace-period"), "{no_grace}");
        let bad_grace = Settings { soft: map(&[("memory.available", "1Gi")]), soft_grace: map(&[("memory.available", "soon")]), ..Default::default() };
        assert!(thresholds(&bad_grace).unwrap_err().contains("--eviction-soft-grace-period: memory.available=soon"));
    }

    #[test]
    fn a_minimum_reclaim_applies_to_every_threshold_of_its_signal() {
        let settings = Settings {
            hard: Some(map(&[("memory.available", "100Mi"), ("nodefs.available", "10%")])),
            soft: map(&[("memory.available", "1Gi")]),
            soft_grace: map(&[("memory.available", "1m")]),
            min_reclaim: map(&[("memory.available", "500Mi"), ("nodefs.available", "0")]),
            ..Default::default()
        };
        let t = thresholds(&settings).unwrap();
        let reclaims: Vec<(Signal, Option<Value>)> = t.iter().map(|t| (t.signal, t.min_reclaim.clone())).collect();
        let mi500 = Some(Value::Quantity { amount: 500 << 20, text: "500Mi".into() });
        assert_eq!(reclaims, vec![(Signal::MemoryAvailable, mi500.clone()), (Signal::NodefsAvailable, None), (Signal::MemoryAvailable, mi500)]);
        let bad = |signal: &str, value: &str| thresholds(&Settings { min_reclaim: map(&[(signal, value)]), ..Default::default() }).unwrap_err();
        assert!(bad("disk.available", "1Gi").contains("--eviction-minimum-reclaim: disk.available=1Gi: unsupported eviction signal"));
        assert!(bad("nodefs.available", "-1Gi").starts_with("--eviction-minimum-reclaim: nodefs.available=-1Gi: "));
        assert!(bad("nodefs.available", "150%").contains("between 0% and 100%"));
        assert_eq!(parse_reclaims("--eviction-minimum-reclaim", &["nodefs.available=5%".to_string()]).unwrap(), map(&[("nodefs.available", "5%")]));
    }
}
