//! Writes a volume's files so a container never sees a half-updated set, the way the kubelet's
//! atomic writer does: the files go into a fresh timestamped directory, a `..data` symlink is
//! swapped to it with one rename, and each visible name is a symlink through `..data`.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

const DATA_LINK: &str = "..data";
const DATA_TMP_LINK: &str = "..data_tmp";

/// One file of a volume: its content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative paths without `..` or absolute parts, as the API requires of volume item paths.
pub fn check_relative(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_))) && !path.starts_with("..");
    ok.then_some(()).ok_or_else(|| format!("path {path:?} must be relative and must not contain '..'"))
}

/// Replaces the content of `dir` with `files` atomically; a second call with the same files is a no-op.
pub fn write_atomically(dir: &Path, files: &BTreeMap<String, FileContent>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if current_matches(dir, files) {
        return Ok(());
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let new_name = format!("..{stamp}");
    let new_dir = dir.join(&new_name);
    std::fs::create_dir(&new_dir)?;
    for (path, file) in files {
        let target = new_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))?;
    }
    let old_target = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let tmp_link = dir.join(DATA_TMP_LINK);
    let _ = std::fs::remove_file(&tmp_link);
    symlink(&new_name, &tmp_link)?;
    std::fs::rename(&tmp_link, dir.join(DATA_LINK))?;
    // Visible names: the top-level entry of every file, through ..data; stale ones go.
    let tops: std::collections::BTreeSet<String> = files.keys().map(|p| p.split('/').next().unwrap_or(p).to_string()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(top), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old_target {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn current_matches(dir: &Path, files: &BTreeMap<String, FileContent>) -> bool {
    let data = dir.join(DATA_LINK);
    if std::fs::read_link(&data).is_err() {
        return false;
    }
    files.iter().all(|(path, file)| std::fs::read(data.join(path)).is_ok_and(|d| d == file.data))
        && count_files(&data) == files.len()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, FileContent> {
        pairs.iter().map(|(p, d)| (p.to_string(), FileContent { data: d.as_bytes().to_vec(), mode: 0o644 })).collect()
    }

    #[test]
    fn files_appear_through_data_and_updates_swap_them() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), &files(&[("token", "a"), ("ca.crt", "c")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("token")).unwrap(), "a");
        let first = std::fs::read_link(dir.path().join("..data")).unwrap();
        write_atomically(dir.path(), &files(&[("token", "a"), ("ca.crt", "c")])).unwrap();
        assert_eq!(std::fs::read_link(dir.path().join("..data")).unwrap(), first, "unchanged content is not rewritten");
        write_atomically(dir.path(), &files(&[("token", "b"), ("sub/ns", "n")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("token")).unwrap(), "b");
        assert_eq!(std::fs::read_to_string(dir.path().join("sub/ns")).unwrap(), "n");
        assert!(std::fs::symlink_metadata(dir.path().join("ca.crt")).is_err(), "a file that went away is removed");
        assert!(!dir.path().join(first).exists(), "the old generation is removed");
    }

    #[test]
    fn item_paths_must_stay_inside() {
        assert!(check_relative("a/b").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}
