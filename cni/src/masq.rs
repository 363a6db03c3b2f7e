//! Outbound masquerade for the pod subnet, in the plugin's own nftables table
//! (`table ip <masqTable>`). Only that table is ever touched: no flush of the
//! ruleset, no edits to anyone else's chains.
//!
//! One rule per subnet, recognised by its comment. Check-then-add is made
//! race-free across concurrent ADDs by an flock beside the IPAM state.

use crate::error::{setup, Result};
use crate::subnet::Subnet;
use nix::fcntl::{Flock, FlockArg};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

pub const CHAIN: &str = "postrouting";

/// Idempotent: nft's `add` of an existing table or chain is a no-op.
pub fn base_script(table: &str) -> String {
    format!(
        "add table ip {table}\n\
         add chain ip {table} {CHAIN} {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
    )
}

pub fn rule_comment(subnet: Subnet) -> String {
    format!("nodelet-cni masquerade {subnet}")
}

/// Traffic leaving the subnet gets the node's address; pod-to-pod traffic on
/// the bridge keeps its source.
pub fn rule_script(table: &str, subnet: Subnet) -> String {
    format!("add rule ip {table} {CHAIN} ip saddr {subnet} ip daddr != {subnet} masquerade comment \"{}\"\n", rule_comment(subnet))
}

/// Does `nft list chain` output already hold this subnet's rule?
pub fn has_rule(listing: &str, subnet: Subnet) -> bool {
    let needle = format!("comment \"{}\"", rule_comment(subnet));
    listing.lines().any(|l| l.trim_end().ends_with(&needle))
}

fn nft(args: &[&str], stdin: Option<&str>) -> std::result::Result<String, String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes()).map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("nft {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn list_chain(table: &str) -> Option<String> {
    nft(&["list", "chain", "ip", table, CHAIN], None).ok()
}

/// Ensure the masquerade rule for `subnet` exists exactly once in `table`.
pub fn ensure(table: &str, subnet: Subnet, lock_dir: &Path) -> Result<()> {
    // Fast path without the lock: the rule is there already (the common case).
    if list_chain(table).is_some_and(|l| has_rule(&l, subnet)) {
        return Ok(());
    }
    let fail = |e: String| setup(format!("ensuring masquerade for {subnet} in nft table ip {table}"), e);
    std::fs::create_dir_all(lock_dir).map_err(|e| fail(e.to_string()))?;
    let lock_path = lock_dir.join(format!("nft-{table}.lock"));
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| fail(format!("{}: {e}", lock_path.display())))?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| fail(format!("locking {}: {e}", lock_path.display())))?;
    nft(&["-f", "-"], Some(&base_script(table))).map_err(fail)?;
    let listing = nft(&["list", "chain", "ip", table, CHAIN], None).map_err(fail)?;
    if !has_rule(&listing, subnet) {
        nft(&["-f", "-"], Some(&rule_script(table, subnet))).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_only_our_table() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        let base = base_script("nodelet-cni");
        assert!(base.contains("add table ip nodelet-cni"));
        assert!(base.contains("hook postrouting priority srcnat"));
        assert!(!base.contains("flush"));
        let rule = rule_script("nodelet-cni", s);
        assert_eq!(
            rule,
            "add rule ip nodelet-cni postrouting ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade comment \"nodelet-cni masquerade 10.88.0.0/16\"\n"
        );
    }

    #[test]
    fn finds_rule_in_listing() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        let other: Subnet = "10.8.0.0/16".parse().unwrap();
        let listing = "table ip t {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade comment \"nodelet-cni masquerade 10.88.0.0/16\"\n\t}\n}\n";
        assert!(has_rule(listing, s));
        assert!(!has_rule(listing, other));
    }
}
