//! File system figures: a file system's size and free space (statvfs), and what a directory
//! tree holds (bytes on disk and inodes), as the kubelet's du-based volume accounting.

use super::summary::FsStats;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Capacity and free space of the file system holding `path`, with nothing said of use.
pub fn filesystem(path: &Path, time: &str) -> Option<FsStats> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let block = st.fragment_size() as u64;
    let capacity = st.blocks() as u64 * block;
    let free = st.blocks_free() as u64 * block;
    let inodes = st.files() as u64;
    let inodes_free = st.files_free() as u64;
    Some(FsStats {
        time: time.to_string(),
        available_bytes: Some(st.blocks_available() as u64 * block),
        capacity_bytes: Some(capacity),
        used_bytes: Some(capacity.saturating_sub(free)),
        inodes_free: Some(inodes_free),
        inodes: Some(inodes),
        inodes_used: Some(inodes.saturating_sub(inodes_free)),
    })
}

/// Bytes on disk and inodes under `dir` (not following symlinks nor crossing into other file
/// systems); None when `dir` does not exist.
pub fn tree_usage(dir: &Path) -> Option<(u64, u64)> {
    let root = std::fs::symlink_metadata(dir).ok()?;
    let device = root.dev();
    let mut bytes = root.blocks() * 512;
    let mut inodes = 1;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            bytes += meta.blocks() * 512;
            inodes += 1;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Some((bytes, inodes))
}

/// A directory's use on the file system that holds it: du's figures (`tree_usage`, measured
/// earlier) with statvfs's capacity.
pub fn directory(dir: &Path, (used, inodes_used): (u64, u64), time: &str) -> FsStats {
    let fs = filesystem(dir, time).unwrap_or_else(|| FsStats { time: time.to_string(), ..Default::default() });
    FsStats { used_bytes: Some(used), inodes_used: Some(inodes_used), ..fs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_its_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![7u8; 10_000]).unwrap();
        std::fs::write(dir.path().join("b"), "x").unwrap();
        let (bytes, inodes) = tree_usage(dir.path()).unwrap();
        assert_eq!(inodes, 4);
        assert!(bytes >= 10_000, "{bytes}");
        assert_eq!(tree_usage(&dir.path().join("missing")), None);
        let stats = directory(dir.path(), (bytes, inodes), "t");
        assert_eq!(stats.used_bytes, Some(bytes));
        assert!(stats.capacity_bytes.unwrap() > 0);
    }
}
