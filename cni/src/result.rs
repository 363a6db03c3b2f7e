//! The ADD result (CNI spec "Success" output) as plain data, rendered for
//! the cniVersion the runtime asked for.

use serde_json::{json, Value};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// Set for the interface inside the container (its netns path).
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    /// Bridge, host veth, container interface, in that order.
    pub interfaces: Vec<Interface>,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Index into `interfaces` of the container interface.
    pub container_iface: usize,
}

impl AddResult {
    pub fn to_json(&self, cni_version: &str) -> String {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({ "name": i.name, "mac": i.mac });
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                v
            })
            .collect();
        let mut ip = json!({
            "address": format!("{}/{}", self.ip, self.prefix),
            "gateway": self.gateway.to_string(),
            "interface": self.container_iface,
        });
        // 0.3.x/0.4.0 results carry the IP family; 1.0.0 dropped the field.
        if cni_version.starts_with("0.") {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": [ip],
            "routes": [{ "dst": "0.0.0.0/0", "gw": self.gateway.to_string() }],
            "dns": {},
        })
        .to_string()
    }
}

pub fn version_json() -> String {
    json!({
        "cniVersion": "1.0.0",
        "supportedVersions": crate::config::SUPPORTED_VERSIONS,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface { name: "br".into(), mac: "aa".into(), sandbox: None },
                Interface { name: "vn1".into(), mac: "bb".into(), sandbox: None },
                Interface { name: "eth0".into(), mac: "cc".into(), sandbox: Some("/var/run/netns/x".into()) },
            ],
            ip: Ipv4Addr::new(10, 88, 0, 5),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 88, 0, 1),
            container_iface: 2,
        }
    }

    #[test]
    fn renders_1_0_0() {
        let v: Value = serde_json::from_str(&sample().to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["ips"][0]["address"], "10.88.0.5/16");
        assert_eq!(v["ips"][0]["gateway"], "10.88.0.1");
        assert_eq!(v["ips"][0]["interface"], 2);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][2]["sandbox"], "/var/run/netns/x");
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
        assert!(v["dns"].is_object());
    }

    #[test]
    fn renders_0_4_0_with_version() {
        let v: Value = serde_json::from_str(&sample().to_json("0.4.0")).unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
    }

    #[test]
    fn version_output() {
        let v: Value = serde_json::from_str(&version_json()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0"]));
    }
}
