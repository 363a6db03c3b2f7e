//! Allocation state on disk, under `<dataDir>/<network>/`:
//! - `lock`: flock'd exclusively around every read-modify-write;
//! - `<ip>`: one file per allocated address, content "containerid\nifname";
//! - `last_reserved`: the last address handed out, for round-robin.
//!
//! Crash safety: an address file appears atomically with its full content
//! (written to a temp file, then hard-linked into place, which like O_EXCL
//! fails if the name exists), so a killed process leaves either no claim or a
//! complete claim naming its owner, which the runtime's DEL then releases.

use super::pool;
use crate::error::{code, setup, CniError, Result};
use crate::subnet::Subnet;
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

const LOCK: &str = "lock";
const LAST: &str = "last_reserved";
const TMP_PREFIX: &str = ".tmp-";

/// The store with its lock held; dropping it releases the lock.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

fn owner_text(container_id: &str, ifname: &str) -> String {
    format!("{container_id}\n{ifname}")
}

impl Store {
    /// Open `<data_dir>/<network>` (creating it) and take its exclusive lock.
    pub fn lock(data_dir: &Path, network: &str) -> Result<Store> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| setup(format!("creating IPAM directory {}", dir.display()), e))?;
        let path = dir.join(LOCK);
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| setup(format!("opening IPAM lock {}", path.display()), e))?;
        // A failed flock (EINTR, ENOLCK) is transient: let the runtime retry.
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| CniError::new(code::TRY_AGAIN, format!("locking {}", path.display()), e.to_string()))?;
        Ok(Store { dir, _lock: lock })
    }

    /// Every recorded allocation. Files whose names are not addresses are not
    /// ours and are skipped.
    pub fn list(&self) -> Result<Vec<Allocation>> {
        let read_err = |e| setup(format!("reading IPAM directory {}", self.dir.display()), e);
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let text = match fs::read_to_string(entry.path()) {
                Ok(t) => t,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(e)),
            };
            let (container_id, ifname) = text.split_once('\n').unwrap_or((&text, ""));
            out.push(Allocation { ip, container_id: container_id.to_owned(), ifname: ifname.trim_end().to_owned() });
        }
        Ok(out)
    }

    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self.list()?.into_iter().find(|a| a.container_id == container_id && a.ifname == ifname).map(|a| a.ip))
    }

    /// The address of (container, ifname): its existing one if it has one
    /// (ADD is idempotent), otherwise the next free one, recorded.
    pub fn allocate(&self, container_id: &str, ifname: &str, subnet: Subnet, gateway: Ipv4Addr) -> Result<Ipv4Addr> {
        self.remove_stale_temps();
        let all = self.list()?;
        if let Some(a) = all.iter().find(|a| a.container_id == container_id && a.ifname == ifname && subnet.contains(a.ip)) {
            return Ok(a.ip);
        }
        let used: HashSet<Ipv4Addr> = all.iter().map(|a| a.ip).collect();
        let ip = pool::next_free(subnet, gateway, &used, self.last_reserved()).ok_or_else(|| {
            CniError::new(
                code::IPAM_EXHAUSTED,
                format!("no free address in subnet {subnet}: all {} usable addresses are allocated (state in {})", used.len(), self.dir.display()),
                "",
            )
        })?;
        self.create_exclusive(&ip.to_string(), &owner_text(container_id, ifname))?;
        // Losing this write only weakens round-robin, never correctness.
        let _ = self.write_atomic(LAST, &ip.to_string());
        Ok(ip)
    }

    /// Release every address held by (container, ifname); absent is fine.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
        let mut freed = Vec::new();
        for a in self.list()? {
            if a.container_id == container_id && a.ifname == ifname {
                let path = self.dir.join(a.ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => freed.push(a.ip),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(setup(format!("removing {}", path.display()), e)),
                }
            }
        }
        Ok(freed)
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST)).ok()?.trim().parse().ok()
    }

    fn write_temp(&self, content: &str) -> Result<PathBuf> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(|e| setup(format!("creating {}", tmp.display()), e))?;
        f.write_all(content.as_bytes()).map_err(|e| setup(format!("writing {}", tmp.display()), e))?;
        Ok(tmp)
    }

    /// Make `name` appear with `content`, failing if it already exists.
    fn create_exclusive(&self, name: &str, content: &str) -> Result<()> {
        let tmp = self.write_temp(content)?;
        let dest = self.dir.join(name);
        let linked = fs::hard_link(&tmp, &dest);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| setup(format!("recording allocation {}", dest.display()), e))
    }

    /// Replace `name` with `content` atomically (temp + rename).
    fn write_atomic(&self, name: &str, content: &str) -> Result<()> {
        let tmp = self.write_temp(content)?;
        let dest = self.dir.join(name);
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            setup(format!("writing {}", dest.display()), e)
        })
    }

    /// Temp files left by a killed process. Safe to remove: every writer holds
    /// the lock, which we hold now.
    fn remove_stale_temps(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup_store() -> (tempfile::TempDir, Subnet, Ipv4Addr) {
        (tempfile::tempdir().unwrap(), "10.5.0.0/29".parse().unwrap(), Ipv4Addr::new(10, 5, 0, 1))
    }

    #[test]
    fn allocate_is_idempotent_and_release_frees() {
        let (dir, subnet, gw) = setup_store();
        let s = Store::lock(dir.path(), "net").unwrap();
        let a = s.allocate("c1", "eth0", subnet, gw).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 5, 0, 2));
        assert_eq!(s.allocate("c1", "eth0", subnet, gw).unwrap(), a);
        let b = s.allocate("c2", "eth0", subnet, gw).unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read_to_string(dir.path().join("net").join(a.to_string())).unwrap(), "c1\neth0");
        assert_eq!(s.find("c2", "eth0").unwrap(), Some(b));
        assert_eq!(s.release("c1", "eth0").unwrap(), vec![a]);
        assert!(s.release("c1", "eth0").unwrap().is_empty());
        // Round-robin: the freed .2 is not reused next.
        assert_eq!(s.allocate("c3", "eth0", subnet, gw).unwrap(), Ipv4Addr::new(10, 5, 0, 4));
    }

    #[test]
    fn exhaustion_is_code_100() {
        let (dir, subnet, gw) = setup_store();
        let s = Store::lock(dir.path(), "net").unwrap();
        for i in 0..5 {
            s.allocate(&format!("c{i}"), "eth0", subnet, gw).unwrap();
        }
        let e = s.allocate("c9", "eth0", subnet, gw).unwrap_err();
        assert_eq!(e.code, code::IPAM_EXHAUSTED);
        assert!(e.msg.contains("10.5.0.0/29"));
    }

    #[test]
    fn stale_temp_files_are_ignored_and_cleaned() {
        let (dir, subnet, gw) = setup_store();
        let s = Store::lock(dir.path(), "net").unwrap();
        fs::write(dir.path().join("net").join(".tmp-999999"), "junk").unwrap();
        s.allocate("c1", "eth0", subnet, gw).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path().join("net")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!names.iter().any(|n| n.starts_with(TMP_PREFIX)), "{names:?}");
    }

    #[test]
    fn lock_is_exclusive_across_handles() {
        let (dir, _, _) = setup_store();
        let s = Store::lock(dir.path(), "net").unwrap();
        let path = dir.path().join("net").join(LOCK);
        let f = File::open(&path).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err());
        drop(s);
        let f = File::open(&path).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
