//! Container log rotation (the kubelet's container log manager): every 10 s, the log file of
//! each running container of this node that has reached `max_size` is renamed to
//! `<log>.<timestamp>` and the runtime told to reopen it (CRI ReopenContainerLog), so the
//! container writes on into a fresh file; at most `max_files` files are kept per container
//! (the current one and the newest rotated ones). The current file stays where `kubectl logs`
//! reads it. Rotated files are not compressed. The running containers and their log paths come
//! from the shared relist (`RuntimeCache`): the kubelet lists and asks each container's status
//! every pass, which was half of nodelet's CRI calls at idle.

use crate::runtime::observed::RunState;
use crate::runtime::relist::RuntimeCache;
use crate::runtime::{Cri, CriResult};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often log sizes are checked, as the kubelet's ContainerLogMonitorInterval.
pub const PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_size: u64,
    /// Files kept per container, the current one included (at least 2).
    pub max_files: u32,
}

/// Whether a log file of `size` bytes is rotated now.
pub fn needs_rotation(size: u64, policy: &Policy) -> bool {
    size >= policy.max_size
}

/// `<log>.<YYYYmmdd-HHMMSS.nnnnnnnnn>` (UTC): the kubelet's suffix, with nanoseconds so two
/// rotations in one second do not collide, and names that sort in time order.
pub fn rotated_name(log: &Path, now: SystemTime) -> PathBuf {
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let stamp = k8s_openapi::jiff::Timestamp::from_second(since.as_secs() as i64).map(|t| t.strftime("%Y%m%d-%H%M%S").to_string()).unwrap_or_default();
    let mut name = log.as_os_str().to_os_string();
    name.push(format!(".{stamp}.{:09}", since.subsec_nanos()));
    PathBuf::from(name)
}

/// The rotated files of `log_name` among the names of its directory, oldest first.
pub fn rotated_files(log_name: &str, dir_names: &[String]) -> Vec<String> {
    let prefix = format!("{log_name}.");
    let mut found: Vec<String> = dir_names
        .iter()
        .filter(|n| {
            n.strip_prefix(&prefix).is_some_and(|rest| rest.len() >= 15 && rest.as_bytes()[..8].iter().all(u8::is_ascii_digit) && !rest.ends_with(".tmp"))
        })
        .cloned()
        .collect();
    found.sort();
    found
}

/// The log file of a container and its rotated files (`<log>.<stamp>`), oldest first.
pub fn log_files(log: &Path, dir_names: &[String]) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let mut files: Vec<PathBuf> = crate::logrotate::rotated_files(name, dir_names).into_iter().map(|n| dir.join(n)).collect();
    if dir_names.iter().any(|n| n == name) {
        files.push(log.to_path_buf());
    }
    files
}

/// Deletes a removed container's log file and rotated files; missing ones are no error.
pub fn remove_log_files(log: &Path) -> std::io::Result<usize> {
    let Some(dir) = log.parent() else { return Ok(0) };
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(std::io::Error::other(format!("listing {}: {e}", dir.display()))),
    };
    let mut removed = 0;
    for file in log_files(log, &names) {
        match std::fs::remove_file(&file) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::other(format!("removing {}: {e}", file.display()))),
        }
    }
    Ok(removed)
}

/// Removes a container and then its log files, as the kubelet does: the runtime leaves them,
/// and their path is known only while it still has the container. For every removal (the
/// worker's old dead instances, the garbage collector's), so a crash-looping container does
/// not leave a file per restart. A log file that cannot be deleted is logged: the container is
/// gone either way.
pub async fn remove_container_and_logs(cri: &Cri, id: &str) -> CriResult<()> {
    let log = match cri.container_status(id).await {
        Ok(status) => Some(status.log_path).filter(|p| !p.is_empty()).map(PathBuf::from),
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    cri.remove_container(id).await?;
    if let Some(log) = log {
        let target = log.clone();
        let removed = tokio::task::spawn_blocking(move || remove_log_files(&target)).await.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = removed {
            tracing::warn!(container = %id, log = %log.display(), error = %e, "container removed, its log files not");
        }
    }
    Ok(())
}

/// The rotated files to delete so that, with the current file, at most `max_files` remain.
pub fn excess_rotated(rotated: &[String], policy: &Policy) -> Vec<String> {
    let keep = policy.max_files.saturating_sub(1) as usize;
    rotated[..rotated.len().saturating_sub(keep)].to_vec()
}

pub struct LogRotator {
    /// For ReopenContainerLog.
    pub cri: Cri,
    pub runtime: RuntimeCache,
    pub policy: Policy,
}

impl LogRotator {
    pub async fn run(self) {
        loop {
            tokio::time::sleep(PERIOD).await;
            self.rotate_all().await;
        }
    }

    /// One pass over the running containers of the latest relist (none before the first).
    pub async fn rotate_all(&self) {
        let Some(pods) = self.runtime.latest() else { return };
        let running = pods.values().flat_map(|p| &p.containers).filter(|c| c.state == RunState::Running && !c.log_path.is_empty());
        for c in running {
            if let Err(e) = self.rotate(&c.id, Path::new(&c.log_path)).await {
                tracing::warn!(container = %c.id, log = %c.log_path, error = %e, "could not rotate the container's log");
            }
        }
    }

    /// Deletes the excess rotated files, and rotates the log when it is too big.
    async fn rotate(&self, id: &str, log: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        self.remove_excess(log)?;
        let size = match std::fs::metadata(log) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading the size of {}", log.display())),
        };
        if !needs_rotation(size, &self.policy) {
            return Ok(());
        }
        let rotated = rotated_name(log, SystemTime::now());
        std::fs::rename(log, &rotated).with_context(|| format!("renaming {} to {}", log.display(), rotated.display()))?;
        if let Err(e) = self.cri.reopen_container_log(id).await {
            // Undone, as the kubelet does: the container keeps writing to the file it has.
            if let Err(back) = std::fs::rename(&rotated, log) {
                tracing::warn!(log = %log.display(), error = %back, "could not move the rotated log back");
            }
            return Err(e.into());
        }
        tracing::debug!(container = %id, log = %log.display(), size, "rotated the container's log");
        self.remove_excess(log)
    }

    fn remove_excess(&self, log: &Path) -> anyhow::Result<()> {
        let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else { return Ok(()) };
        let names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect(),
            Err(_) => return Ok(()),
        };
        for old in excess_rotated(&rotated_files(name, &names), &self.policy) {
            let path = dir.join(&old);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("removing the rotated log {}: {e}", path.display()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy { max_size: 100, max_files: 3 };

    #[test]
    fn rotated_names_sort_in_time_order_and_are_recognised() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_764_476_162, 5);
        let a = rotated_name(Path::new("/logs/c/0.log"), t);
        assert_eq!(a, PathBuf::from("/logs/c/0.log.20251130-041602.000000005"));
        let b = rotated_name(Path::new("/logs/c/0.log"), t + Duration::from_millis(1));
        assert!(a < b);
        let names: Vec<String> = [
            "0.log",
            "0.log.20251130-041602.000000005",
            "1.log.20251130-041602.000000001",
            "0.log.20251130-041601.000000000",
            "0.log.tmp",
            "0.log.20251130-041603.000000000.tmp",
            "0.logx",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(rotated_files("0.log", &names), vec!["0.log.20251130-041601.000000000", "0.log.20251130-041602.000000005"]);
    }

    #[test]
    fn at_most_max_files_remain_with_the_current_one() {
        let rotated: Vec<String> = (1..=4).map(|i| format!("0.log.2025113{i}-000000.000000000")).collect();
        assert_eq!(excess_rotated(&rotated, &P), vec![rotated[0].clone(), rotated[1].clone()]);
        assert!(excess_rotated(&rotated[..2], &P).is_empty());
        assert!(needs_rotation(100, &P) && !needs_rotation(99, &P));
    }

    #[test]
    fn a_removed_containers_log_goes_with_its_rotated_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let names = ["0.log", "0.log.20261130-101010.000000001", "0.log.20261130-101011.000000002", "1.log", "0.log.20261130-101012.000000003.tmp"];
        for n in names {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        let listed: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let files = log_files(&log, &listed);
        assert_eq!(files, vec![dir.path().join(names[1]), dir.path().join(names[2]), log.clone()]);
        assert_eq!(remove_log_files(&log).unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["0.log.20261130-101012.000000003.tmp", "1.log"]);
        assert_eq!(remove_log_files(&log).unwrap(), 0, "gone already: no error");
        assert_eq!(remove_log_files(&dir.path().join("missing/0.log")).unwrap(), 0);
    }
}
