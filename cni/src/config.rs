//! Network configuration: the typed form of the JSON containerd passes on stdin,
//! and its validation into the values the plugin acts on.

use crate::error::{code, CniError, Result};
use crate::subnet::Subnet;
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0"];
pub const DEFAULT_DATA_DIR: &str = "/var/lib/nodelet/cni";
pub const DEFAULT_BRIDGE: &str = "nodelet0";
pub const DEFAULT_MASQ_TABLE: &str = "nodelet-cni";

/// The config exactly as written; unknown keys (prevResult, runtimeConfig,
/// args...) are ignored by serde's default.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: String,
    name: String,
    #[serde(default)]
    bridge: Option<String>,
    subnet: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    ip_masq: Option<bool>,
    #[serde(default)]
    masq_table: Option<String>,
    #[serde(default, rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub data_dir: PathBuf,
    pub mtu: Option<u32>,
    pub ip_masq: bool,
    pub masq_table: String,
    /// The whole cluster's pod network: traffic to it keeps the pod's address (other nodes'
    /// pods are reached through routes); None: only the subnet itself is left unmasqueraded.
    pub cluster_cidr: Option<Subnet>,
}

/// Best-effort read of cniVersion, so even a config we reject gets its
/// error rendered in the version the runtime asked for.
pub fn sniff_version(input: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(input).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_owned)
}

fn invalid(key: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("invalid network config: key {key:?}: {why}"), "")
}

pub fn parse(input: &[u8]) -> Result<NetConf> {
    let value: serde_json::Value =
        serde_json::from_slice(input).map_err(|e| CniError::new(code::DECODE, "failed to decode network config from stdin", e.to_string()))?;
    if !value.is_object() {
        return Err(CniError::new(code::DECODE, "failed to decode network config from stdin: not a JSON object", ""));
    }
    // Decode through serde_path_to_error so a wrong type names its key.
    let raw: RawConf = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match inner.strip_prefix("missing field ") {
            Some(field) => invalid(field.trim_matches('`'), "is required"),
            None => invalid(&path, inner),
        }
    })?;
    validate(raw)
}

fn validate(raw: RawConf) -> Result<NetConf> {
    if !SUPPORTED_VERSIONS.contains(&raw.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {:?}: this plugin supports {}", raw.cni_version, SUPPORTED_VERSIONS.join(", ")),
            "",
        ));
    }
    // The name becomes a directory under dataDir, so it must be one path segment.
    if raw.name.is_empty() || raw.name == "." || raw.name == ".." || raw.name.contains('/') || raw.name.contains('\0') {
        return Err(invalid("name", "must be a non-empty single path segment"));
    }
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
    check_ifname(&bridge).map_err(|why| invalid("bridge", why))?;

    let subnet: Subnet = raw.subnet.parse().map_err(|why| invalid("subnet", why))?;
    if subnet.prefix() > 30 {
        return Err(invalid("subnet", format!("{subnet} is too small: need a gateway and at least one address")));
    }
    let gateway = match raw.gateway {
        None => subnet.first_host(),
        Some(g) => {
            let ip: Ipv4Addr = g.parse().map_err(|_| invalid("gateway", format!("{g:?} is not an IPv4 address")))?;
            if !subnet.contains(ip) || ip == subnet.network() || ip == subnet.broadcast() {
                return Err(invalid("gateway", format!("{ip} is not a host address of subnet {subnet}")));
            }
            ip
        }
    };
    if let Some(mtu) = raw.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(invalid("mtu", format!("{mtu} is outside 68..=65535")));
        }
    }
    let masq_table = raw.masq_table.unwrap_or_else(|| DEFAULT_MASQ_TABLE.to_owned());
    check_nft_identifier(&masq_table).map_err(|why| invalid("masqTable", why))?;
    let cluster_cidr = match raw.cluster_cidr {
        None => None,
        Some(text) => {
            let cluster: Subnet = text.parse().map_err(|why| invalid("clusterCIDR", why))?;
            if cluster.prefix() > subnet.prefix() || !cluster.contains(subnet.network()) {
                return Err(invalid("clusterCIDR", format!("{cluster} does not contain subnet {subnet}")));
            }
            Some(cluster)
        }
    };
    let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if !data_dir.is_absolute() {
        return Err(invalid("dataDir", "must be an absolute path"));
    }

    Ok(NetConf {
        cni_version: raw.cni_version,
        name: raw.name,
        bridge,
        subnet,
        gateway,
        data_dir,
        mtu: raw.mtu,
        ip_masq: raw.ip_masq.unwrap_or(true),
        masq_table,
        cluster_cidr,
    })
}

/// Linux interface names: 1..=15 bytes, no '/', no whitespace, not "." or "..".
pub fn check_ifname(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1 to 15 characters long"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?} contains '/', ':' or whitespace"));
    }
    Ok(())
}

/// The table name is spliced into an nft script, so only accept what nft's
/// identifier grammar accepts and nothing that could end a statement.
fn check_nft_identifier(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || name.len() > 64 || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("{name:?} must start with a letter or '_' and contain only letters, digits, '_' or '-' (max 64)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<NetConf> {
        parse(s.as_bytes())
    }

    #[test]
    fn defaults() {
        let c = parse_str(r#"{"cniVersion":"1.0.0","name":"nodelet","type":"nodelet-cni","subnet":"10.88.0.0/16","unknown":{"x":1}}"#).unwrap();
        assert_eq!(c.bridge, "nodelet0");
        assert_eq!(c.gateway, Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.ip_masq);
        assert_eq!(c.masq_table, "nodelet-cni");
        assert_eq!(c.mtu, None);
        assert_eq!(c.cluster_cidr, None);
    }

    #[test]
    fn the_cluster_cidr_must_contain_the_subnet() {
        let c = parse_str(r#"{"cniVersion":"1.0.0","name":"n","subnet":"10.244.3.0/24","clusterCIDR":"10.244.0.0/16"}"#).unwrap();
        assert_eq!(c.cluster_cidr, Some("10.244.0.0/16".parse().unwrap()));
        for cluster in ["10.245.0.0/16", "10.244.3.0/25", "10.244.0.1/16", "x"] {
            let e = err(&format!(r#"{{"cniVersion":"1.0.0","name":"n","subnet":"10.244.3.0/24","clusterCIDR":"{cluster}"}}"#));
            assert_eq!(e.code, code::INVALID_CONFIG, "{cluster}: {e}");
            assert!(e.msg.contains("clusterCIDR"), "{cluster}: {e}");
        }
    }

    #[test]
    fn explicit_values() {
        let c = parse_str(
            r#"{"cniVersion":"0.4.0","name":"n","bridge":"br9","subnet":"10.9.0.0/24","gateway":"10.9.0.254","dataDir":"/tmp/x","mtu":1400,"ipMasq":false,"masqTable":"t_1"}"#,
        )
        .unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 9, 0, 254));
        assert_eq!(c.mtu, Some(1400));
        assert!(!c.ip_masq);
        assert_eq!(c.masq_table, "t_1");
    }

    fn err(s: &str) -> CniError {
        parse_str(s).unwrap_err()
    }

    #[test]
    fn decode_errors_are_code_6() {
        assert_eq!(err("{not json").code, code::DECODE);
        assert_eq!(err("[1,2]").code, code::DECODE);
    }

    #[test]
    fn invalid_values_are_code_7_and_name_the_key() {
        let base = r#""cniVersion":"1.0.0","name":"n""#;
        for (extra, key) in [
            (r#""subnet":"10.0.0.1/8""#, "subnet"),
            (r#""subnet":"10.0.0.0/31""#, "subnet"),
            (r#""subnet":"10.0.0.0/8","gateway":"11.0.0.1""#, "gateway"),
            (r#""subnet":"10.0.0.0/8","mtu":"big""#, "mtu"),
            (r#""subnet":"10.0.0.0/8","mtu":10"#, "mtu"),
            (r#""subnet":"10.0.0.0/8","bridge":"waytoolongbridgename""#, "bridge"),
            (r#""subnet":"10.0.0.0/8","masqTable":"x; flush ruleset""#, "masqTable"),
            (r#""subnet":"10.0.0.0/8","dataDir":"rel""#, "dataDir"),
            (r#""subnet":"10.0.0.0/8","ipMasq":"yes""#, "ipMasq"),
            (r#""bridge":"b""#, "subnet"),
        ] {
            let e = err(&format!("{{{base},{extra}}}"));
            assert_eq!(e.code, code::INVALID_CONFIG, "{extra}: {e}");
            assert!(e.msg.contains(key), "{extra}: {e}");
        }
        let e = err(r#"{"cniVersion":"1.0.0","name":"a/b","subnet":"10.0.0.0/8"}"#);
        assert!(e.msg.contains("name"));
    }

    #[test]
    fn unsupported_version_is_code_1() {
        let e = err(r#"{"cniVersion":"0.1.0","name":"n","subnet":"10.0.0.0/8"}"#);
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn sniffs_version() {
        assert_eq!(sniff_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
        assert_eq!(sniff_version(b"junk"), None);
    }
}
