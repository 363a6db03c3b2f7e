//! Outbound masquerade for the pod subnet, in the plugin's own nftables table
//! (`table ip <masqTable>`). Only that table is ever touched: no flush of the
//! ruleset, no edits to anyone else's chains.
//!
//! One rule per subnet, recognised by its comment, which names what it keeps
//! unmasqueraded too (the subnet, or the cluster CIDR that contains it): a rule
//! of the subnet that keeps another range is replaced. Check-then-change is made
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

/// What the masquerade rule of a subnet keeps: traffic from the subnet to `kept` (the subnet
/// itself, or the whole cluster's pod network that contains it) keeps its source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masquerade {
    pub subnet: Subnet,
    pub kept: Option<Subnet>,
}

impl Masquerade {
    fn kept(&self) -> Subnet {
        self.kept.unwrap_or(self.subnet)
    }

    /// The rule's identity in the chain. The subnet-only form is the one earlier versions wrote.
    pub fn comment(&self) -> String {
        match self.kept {
            None => subnet_comment(self.subnet),
            Some(kept) => format!("{} except {kept}", subnet_comment(self.subnet)),
        }
    }

    /// Traffic leaving `kept` gets the node's address; pod-to-pod traffic keeps its source.
    pub fn rule_script(&self, table: &str) -> String {
        format!("add rule ip {table} {CHAIN} ip saddr {} ip daddr != {} masquerade comment \"{}\"\n", self.subnet, self.kept(), self.comment())
    }
}

fn subnet_comment(subnet: Subnet) -> String {
    format!("nodelet-cni masquerade {subnet}")
}

/// The rules of `subnet` in an `nft -a list chain` listing: (comment, handle) of each.
pub fn rules_of(listing: &str, subnet: Subnet) -> Vec<(String, Option<u64>)> {
    let own = subnet_comment(subnet);
    listing
        .lines()
        .filter_map(|line| {
            let start = line.find("comment \"")? + "comment \"".len();
            let comment = &line[start..start + line[start..].find('"')?];
            if comment != own && !comment.starts_with(&format!("{own} except ")) {
                return None;
            }
            let handle = line.rsplit_once("# handle ").and_then(|(_, h)| h.trim().parse().ok());
            Some((comment.to_string(), handle))
        })
        .collect()
}

/// Whether the listing holds exactly the wanted rule for its subnet and no other one.
pub fn in_place(listing: &str, want: &Masquerade) -> bool {
    let rules = rules_of(listing, want.subnet);
    rules.len() == 1 && rules[0].0 == want.comment()
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
    nft(&["-a", "list", "chain", "ip", table, CHAIN], None).ok()
}

/// Ensure the subnet's masquerade rule is `want`, once, in `table`: a rule of the same subnet
/// that keeps another range (the cluster CIDR was set or changed) is replaced.
pub fn ensure(table: &str, want: Masquerade, lock_dir: &Path) -> Result<()> {
    // Fast path without the lock: the rule is there already (the common case).
    if list_chain(table).is_some_and(|l| in_place(&l, &want)) {
        return Ok(());
    }
    let subnet = want.subnet;
    let fail = |e: String| setup(format!("ensuring masquerade for {subnet} in nft table ip {table}"), e);
    std::fs::create_dir_all(lock_dir).map_err(|e| fail(e.to_string()))?;
    let lock_path = lock_dir.join(format!("nft-{table}.lock"));
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| fail(format!("{}: {e}", lock_path.display())))?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| fail(format!("locking {}: {e}", lock_path.display())))?;
    nft(&["-f", "-"], Some(&base_script(table))).map_err(fail)?;
    let listing = nft(&["-a", "list", "chain", "ip", table, CHAIN], None).map_err(fail)?;
    let mut script = String::new();
    let mut present = false;
    for (comment, handle) in rules_of(&listing, subnet) {
        match handle {
            Some(handle) if comment != want.comment() || present => script.push_str(&format!("delete rule ip {table} {CHAIN} handle {handle}\n")),
            _ => present |= comment == want.comment(),
        }
    }
    if !present {
        script.push_str(&want.rule_script(table));
    }
    nft(&["-f", "-"], Some(&script)).map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    #[test]
    fn scripts_name_only_our_table() {
        let base = base_script("nodelet-cni");
        assert!(base.contains("add table ip nodelet-cni"));
        assert!(base.contains("hook postrouting priority srcnat"));
        assert!(!base.contains("flush"));
        let rule = Masquerade { subnet: subnet("10.88.0.0/16"), kept: None }.rule_script("nodelet-cni");
        assert_eq!(
            rule,
            "add rule ip nodelet-cni postrouting ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade comment \"nodelet-cni masquerade 10.88.0.0/16\"\n"
        );
    }

    #[test]
    fn traffic_to_the_cluster_cidr_keeps_its_source() {
        let m = Masquerade { subnet: subnet("10.244.3.0/24"), kept: Some(subnet("10.244.0.0/16")) };
        assert_eq!(
            m.rule_script("t"),
            "add rule ip t postrouting ip saddr 10.244.3.0/24 ip daddr != 10.244.0.0/16 masquerade comment \"nodelet-cni masquerade 10.244.3.0/24 except 10.244.0.0/16\"\n"
        );
    }

    #[test]
    fn finds_the_subnets_rules_and_their_handles_in_a_listing() {
        let listing = "table ip t {\n\tchain postrouting { # handle 1\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
            \t\tip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade comment \"nodelet-cni masquerade 10.88.0.0/16\" # handle 4\n\
            \t\tip saddr 10.8.0.0/16 ip daddr != 10.8.0.0/16 masquerade comment \"nodelet-cni masquerade 10.8.0.0/16\" # handle 5\n\
            \t\tip saddr 10.88.0.0/16 ip daddr != 10.0.0.0/8 masquerade comment \"nodelet-cni masquerade 10.88.0.0/16 except 10.0.0.0/8\" # handle 7\n\t}\n}\n";
        assert_eq!(
            rules_of(listing, subnet("10.88.0.0/16")),
            vec![("nodelet-cni masquerade 10.88.0.0/16".to_string(), Some(4)), ("nodelet-cni masquerade 10.88.0.0/16 except 10.0.0.0/8".to_string(), Some(7))]
        );
        assert_eq!(rules_of(listing, subnet("10.8.0.0/16")).len(), 1);
        assert!(rules_of(listing, subnet("10.8.0.0/24")).is_empty());
        assert!(!in_place(listing, &Masquerade { subnet: subnet("10.88.0.0/16"), kept: None }), "two rules for the subnet");
        assert!(in_place(listing, &Masquerade { subnet: subnet("10.8.0.0/16"), kept: None }));
        assert!(!in_place(listing, &Masquerade { subnet: subnet("10.8.0.0/16"), kept: Some(subnet("10.0.0.0/8")) }));
    }
}
