//! The CNI_* environment variables, validated per command.

use crate::config::check_ifname;
use crate::error::{code, CniError, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub command: Command,
    pub container_id: String,
    /// Optional for DEL: the runtime may call DEL after the netns is gone.
    pub netns: Option<PathBuf>,
    pub ifname: String,
}

impl Args {
    /// "container X netns Y interface Z": prefixed to every error message.
    pub fn describe(&self) -> String {
        let netns = self.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<none>".into());
        format!("container {} netns {} interface {}", self.container_id, netns, self.ifname)
    }
}

fn bad_env(msg: String) -> CniError {
    CniError::new(code::INVALID_ENV, msg, "")
}

/// Read the arguments through `get`, so tests need not touch the process env.
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Args> {
    let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
    let command = match non_empty("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some(other) => return Err(bad_env(format!("unknown CNI_COMMAND {other:?}"))),
        None => return Err(bad_env("CNI_COMMAND is not set".into())),
    };
    if command == Command::Version {
        return Ok(Args { command, container_id: String::new(), netns: None, ifname: String::new() });
    }
    let container_id = non_empty("CNI_CONTAINERID").ok_or_else(|| bad_env("CNI_CONTAINERID is not set".into()))?;
    let ifname = non_empty("CNI_IFNAME").ok_or_else(|| bad_env("CNI_IFNAME is not set".into()))?;
    check_ifname(&ifname).map_err(|why| bad_env(format!("CNI_IFNAME: {why}")))?;
    // Container ids end up in state files; a newline would corrupt the format.
    if container_id.contains(['\n', '\0']) {
        return Err(bad_env("CNI_CONTAINERID contains a newline or NUL".into()));
    }
    let netns = non_empty("CNI_NETNS").map(PathBuf::from);
    if netns.is_none() && command != Command::Del {
        return Err(bad_env(format!("CNI_NETNS is not set (container {container_id} interface {ifname})")));
    }
    Ok(Args { command, container_id, netns, ifname })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(pairs: &[(&str, &str)]) -> Result<Args> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_everything() {
        let a = args(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/var/run/netns/x"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(a.command, Command::Add);
        assert_eq!(a.describe(), "container c1 netns /var/run/netns/x interface eth0");
        let e = args(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn del_without_netns_is_fine() {
        let a = args(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(a.netns, None);
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(args(&[]).unwrap_err().code, code::INVALID_ENV);
        assert_eq!(args(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, code::INVALID_ENV);
        let e = args(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "this-is-far-too-long")]).unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"));
        assert_eq!(args(&[("CNI_COMMAND", "VERSION")]).unwrap().command, Command::Version);
    }
}
