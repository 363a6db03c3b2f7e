//! Container log rotation (the kubelet's container log manager): every 10 s, the log file of
//! each running container of this node that has reached `max_size` is renamed to
//! `<log>.<timestamp>` and the runtime told to reopen it (CRI ReopenContainerLog), so the
//! container writes on into a fresh file. The current file stays where `kubectl logs` reads it.
//! Before the rename the folder is tidied (`tidying`): at most `max_files` files remain per
//! container, and rotated files but the newest are gzipped (`<log>.<timestamp>.gz`) through a
//! `.gz.tmp` renamed once whole, so a crash leaves no half file that counts. The running
//! containers and their log paths come from the shared relist (`RuntimeCache`): the kubelet
//! lists and asks each container's status every pass, which was half of nodelet's CRI calls
//! at idle.

use crate::runtime::observed::RunState;
use crate::runtime::relist::RuntimeCache;
use crate::runtime::{Cri, CriResult};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often log sizes are checked, as the kubelet's ContainerLogMonitorInterval.
pub const PERIOD: Duration = Duration::from_secs(10);
/// A compressed rotated file's suffix, as the kubelet's.
const COMPRESSED: &str = ".gz";
/// A file being compressed: renamed to `.gz` once written whole.
const COMPRESSING: &str = ".gz.tmp";

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

/// Whether `name` is `<log_name>.<stamp...>` with a stamp-and-suffix part `suffix_ok` accepts.
fn stamped(log_name: &str, name: &str, suffix_ok: impl Fn(&str) -> bool) -> bool {
    name.strip_prefix(log_name)
        .and_then(|r| r.strip_prefix('.'))
        .is_some_and(|rest| rest.len() >= 15 && rest.as_bytes()[..8].iter().all(u8::is_ascii_digit) && suffix_ok(rest))
}

/// The rotated files of `log_name` among the names of its directory, compressed or not, oldest
/// first.
pub fn rotated_files(log_name: &str, dir_names: &[String]) -> Vec<String> {
    let mut found: Vec<String> = dir_names.iter().filter(|n| stamped(log_name, n, |rest| !rest.ends_with(".tmp"))).cloned().collect();
    found.sort();
    found
}

/// What an interrupted compression left: its `.gz.tmp`, or the original of a finished `.gz`.
pub fn compression_leftovers(log_name: &str, dir_names: &[String]) -> Vec<String> {
    let names: std::collections::HashSet<&str> = dir_names.iter().map(String::as_str).collect();
    dir_names
        .iter()
        .filter(|n| {
            stamped(log_name, n, |rest| rest.ends_with(COMPRESSING))
                || (stamped(log_name, n, |rest| !rest.ends_with(".tmp") && !rest.ends_with(COMPRESSED)) && names.contains(format!("{n}{COMPRESSED}").as_str()))
        })
        .cloned()
        .collect()
}

/// The log file of a container, its rotated files (`<log>.<stamp>[.gz]`, oldest first) and
/// what a compression left.
pub fn log_files(log: &Path, dir_names: &[String]) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    let mut files: Vec<PathBuf> = rotated_files(name, dir_names).into_iter().map(|n| dir.join(n)).collect();
    files.extend(dir_names.iter().filter(|n| stamped(name, n, |rest| rest.ends_with(COMPRESSING))).map(|n| dir.join(n)));
    if dir_names.iter().any(|n| n == name) {
        files.push(log.to_path_buf());
    }
    files
}

/// Gzips a rotated file into `<file>.gz` and deletes it; on failure nothing is left but the
/// original.
pub fn compress(file: &Path) -> std::io::Result<()> {
    let with = |suffix: &str| {
        let mut name = file.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    let (done, tmp) = (with(COMPRESSED), with(COMPRESSING));
    let written = (|| {
        let mut input = std::fs::File::open(file)?;
        let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(std::fs::File::create(&tmp)?), flate2::Compression::default());
        std::io::copy(&mut input, &mut gz)?;
        let mut out = gz.finish()?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &done)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::other(format!("compressing {}: {e}", file.display())));
    }
    std::fs::remove_file(file).map_err(|e| std::io::Error::other(format!("removing {} once compressed: {e}", file.display())))
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
        removed += remove_present(&file)? as usize;
    }
    Ok(removed)
}

/// Deletes a file; whether it was there. One already gone is no error.
fn remove_present(file: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(std::io::Error::other(format!("removing {}: {e}", file.display()))),
    }
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

/// What a rotation does to a log's folder before it renames the log, in the kubelet's order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tidying {
    /// What an interrupted compression left, and the oldest rotated files beyond the
    /// `max_files - 2` that stay: with the file about to be rotated and the new current one,
    /// `max_files` remain.
    pub remove: Vec<String>,
    /// The rotated files that stay and are not compressed yet. The file rotated next stays
    /// uncompressed until the rotation after: the runtime may still be writing it.
    pub compress: Vec<String>,
}

/// The tidying before a rotation of `log_name`, from the names in its folder.
pub fn tidying(log_name: &str, dir_names: &[String], policy: &Policy) -> Tidying {
    let mut remove = compression_leftovers(log_name, dir_names);
    let names: Vec<String> = dir_names.iter().filter(|n| !remove.contains(n)).cloned().collect();
    let rotated = rotated_files(log_name, &names);
    let (excess, staying) = rotated.split_at(rotated.len().saturating_sub(policy.max_files.saturating_sub(2) as usize));
    remove.extend_from_slice(excess);
    Tidying { remove, compress: staying.iter().filter(|n| !n.ends_with(COMPRESSED)).cloned().collect() }
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

    /// When the log is too big: tidies its folder (`tidying`), then rotates it (the
    /// kubelet's order). A log under the size costs one stat.
    async fn rotate(&self, id: &str, log: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let size = match std::fs::metadata(log) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading the size of {}", log.display())),
        };
        if !needs_rotation(size, &self.policy) {
            return Ok(());
        }
        let (target, policy) = (log.to_path_buf(), self.policy);
        tokio::task::spawn_blocking(move || tidy(&target, &policy)).await??;
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
        Ok(())
    }
}

/// Carries out the `tidying` of the log's folder (blocking: a compressed file is up to
/// max_size). An unreadable folder is left for the rename to report.
fn tidy(log: &Path, policy: &Policy) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) else { return Ok(()) };
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    let plan = tidying(name, &names, policy);
    for old in plan.remove {
        remove_present(&dir.join(old))?;
    }
    for file in plan.compress {
        compress(&dir.join(file))?;
    }
    Ok(())
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
    fn rotated_files_are_listed_in_time_order_and_leftovers_are_found() {
        let rotated: Vec<String> =
            ["0.log.20261130-101010.000000001.gz", "0.log.20261130-101011.000000002", "0.log.20261130-101012.000000003"].map(String::from).to_vec();
        assert_eq!(rotated_files("0.log", &rotated), rotated, "compressed and not, in time order");
        let names: Vec<String> = [
            "0.log",
            "0.log.20261130-101011.000000002",
            "0.log.20261130-101011.000000002.gz",
            "0.log.20261130-101012.000000003.gz.tmp",
            "0.log.20261130-101013.000000004",
            "1.log.20261130-101012.000000003.gz.tmp",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(compression_leftovers("0.log", &names), vec![names[1].clone(), names[3].clone()]);
    }

    #[test]
    fn a_compressed_file_holds_the_whole_log_and_replaces_it() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("0.log.20261130-101011.000000002");
        let text: String = (0..5000).map(|i| format!("2026-11-30T10:10:11.{i:09}Z stdout F line-{i}\n")).collect();
        std::fs::write(&file, &text).unwrap();
        compress(&file).unwrap();
        let mut back = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.path().join("0.log.20261130-101011.000000002.gz")).unwrap()).read_to_string(&mut back).unwrap();
        assert_eq!(back, text);
        let left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        assert_eq!(left, vec!["0.log.20261130-101011.000000002.gz"], "no original, no temporary");
        assert!(compress(&dir.path().join("missing")).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a failed compression leaves nothing");
    }

    #[test]
    fn before_a_rotation_the_excess_goes_and_what_stays_is_compressed() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let folder = names(&[
            "0.log",
            "0.log.20261130-101010.000000001.gz",
            "0.log.20261130-101011.000000002",
            "0.log.20261130-101012.000000003",
            "1.log.20261130-101012.000000003",
        ]);
        // max 3: one rotated file stays beside the one rotated next and the new current file.
        let plan = tidying("0.log", &folder, &P);
        assert_eq!(plan.remove, names(&["0.log.20261130-101010.000000001.gz", "0.log.20261130-101011.000000002"]));
        assert_eq!(plan.compress, names(&["0.log.20261130-101012.000000003"]), "compressed before the next is rotated, not deleted after");
        // max 5: everything stays; what is not compressed yet is.
        let plan = tidying("0.log", &folder, &Policy { max_size: 100, max_files: 5 });
        assert!(plan.remove.is_empty(), "{plan:?}");
        assert_eq!(plan.compress, names(&["0.log.20261130-101011.000000002", "0.log.20261130-101012.000000003"]));
        // max 2: no rotated file stays; leftovers of a compression go first.
        let with_leftover = names(&["0.log", "0.log.20261130-101011.000000002", "0.log.20261130-101011.000000002.gz"]);
        let plan = tidying("0.log", &with_leftover, &Policy { max_size: 100, max_files: 2 });
        assert_eq!(plan, Tidying { remove: names(&["0.log.20261130-101011.000000002", "0.log.20261130-101011.000000002.gz"]), compress: vec![] });
        assert_eq!(tidying("0.log", &names(&["0.log"]), &P), Tidying::default());
        assert!(needs_rotation(100, &P) && !needs_rotation(99, &P));
    }

    #[test]
    fn a_removed_containers_log_goes_with_its_rotated_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let names = [
            "0.log",
            "0.log.20261130-101010.000000001.gz",
            "0.log.20261130-101011.000000002",
            "1.log",
            "0.log.20261130-101012.000000003.tmp",
            "0.log.20261130-101011.000000002.gz.tmp",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        let listed: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let files = log_files(&log, &listed);
        assert_eq!(files, vec![dir.path().join(names[1]), dir.path().join(names[2]), dir.path().join(names[5]), log.clone()]);
        assert_eq!(remove_log_files(&log).unwrap(), 4);
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["0.log.20261130-101012.000000003.tmp", "1.log"]);
        assert_eq!(remove_log_files(&log).unwrap(), 0, "gone already: no error");
        assert_eq!(remove_log_files(&dir.path().join("missing/0.log")).unwrap(), 0);
    }
}
