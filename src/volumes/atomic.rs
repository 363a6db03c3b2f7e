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
/// With `fs_group`, files and directories get that group and group read (and directories the
/// setgid bit), as the kubelet's volume ownership does for read-only volumes.
///
/// Nothing found in `dir` is trusted: `..data` counts only as a symlink to a generation
/// directory directly inside `dir`; anything else is removed itself (never what it points to)
/// and the volume rewritten, and old generations are removed only as real directories of the
/// same file system, without following a link (CVE-2017-1002102).
pub fn write_atomically(dir: &Path, files: &BTreeMap<String, FileContent>, fs_group: Option<u32>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    match current_generation(dir) {
        Ok(Some(current)) if generation_matches(&dir.join(&current), files, fs_group) => return Ok(()),
        Ok(_) => {}
        Err(why) => {
            tracing::warn!(dir = %dir.display(), %why, "volume's ..data is not one nodelet wrote; removing the link and rewriting");
            remove_entry(dir, DATA_LINK)?;
        }
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let new_name = format!("..{stamp}");
    let new_dir = dir.join(&new_name);
    std::fs::create_dir(&new_dir)?;
    set_dir_owner(&new_dir, fs_group)?;
    for (path, file) in files {
        let target = new_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
            for made in parent.ancestors().take_while(|p| *p != new_dir) {
                set_dir_owner(made, fs_group)?;
            }
        }
        std::fs::write(&target, &file.data)?;
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&target, None, Some(gid))?;
        }
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file_mode(file.mode, fs_group)))?;
    }
    if fs_group.is_some() {
        set_dir_owner(dir, fs_group)?;
    }
    let tmp_link = dir.join(DATA_TMP_LINK);
    remove_entry(dir, DATA_TMP_LINK)?;
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
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !name.starts_with("..") && !tops.contains(&name) && !is_dir {
            let _ = std::fs::remove_file(entry.path());
        } else if name != new_name && is_generation(&name) && is_dir {
            // An older generation (or one a crash left behind): a real directory, checked above.
            if let Err(e) = super::mounts::remove_tree(&entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove an old volume generation");
            }
        }
    }
    Ok(())
}

/// Mode of a written file: as asked, plus group read under an fsGroup.
fn file_mode(mode: u32, fs_group: Option<u32>) -> u32 {
    (mode & 0o7777) | if fs_group.is_some() { 0o440 } else { 0 }
}

/// Directories are 0755 (group and other must traverse to reach files the mode allows them),
/// with an fsGroup also of that group, group-readable and setgid.
fn set_dir_owner(dir: &Path, fs_group: Option<u32>) -> std::io::Result<()> {
    let mode = match fs_group {
        Some(gid) => {
            std::os::unix::fs::chown(dir, None, Some(gid))?;
            0o2755
        }
        None => 0o755,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// A generation directory's name as nodelet makes them: `..` and a stamp (never `..data`).
fn is_generation(name: &str) -> bool {
    name.strip_prefix("..")
        .is_some_and(|stamp| !stamp.is_empty() && !stamp.starts_with('.') && stamp.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        && name != DATA_LINK
        && name != DATA_TMP_LINK
}

/// The generation `..data` names, when it is a symlink to a real generation directory directly
/// inside `dir`; Ok(None) without `..data`; Err (why) for anything else.
fn current_generation(dir: &Path) -> Result<Option<String>, String> {
    let link = dir.join(DATA_LINK);
    let meta = match std::fs::symlink_metadata(&link) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.file_type().is_symlink() {
        return Err("..data is not a symlink".into());
    }
    let target = std::fs::read_link(&link).map_err(|e| e.to_string())?;
    let name =
        target.to_str().filter(|t| is_generation(t)).ok_or_else(|| format!("..data points to {target:?}, not a generation directory inside the volume"))?;
    match std::fs::symlink_metadata(dir.join(name)) {
        Ok(meta) if meta.is_dir() => Ok(Some(name.to_string())),
        _ => Err(format!("..data points to {name:?}, which is not a directory")),
    }
}

/// Removes `dir/name` itself: a link or file is unlinked, a directory removed without
/// following links or crossing file systems. Missing is fine.
fn remove_entry(dir: &Path, name: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => super::mounts::remove_tree(&path),
        Ok(_) => std::fs::remove_file(&path),
    }
}

/// The generation directory holds exactly `files`, as regular files with their modes (and group).
fn generation_matches(generation: &Path, files: &BTreeMap<String, FileContent>, fs_group: Option<u32>) -> bool {
    use std::os::unix::fs::MetadataExt;
    files.iter().all(|(path, file)| {
        let target = generation.join(path);
        std::fs::symlink_metadata(&target)
            .is_ok_and(|m| m.file_type().is_file() && m.mode() & 0o7777 == file_mode(file.mode, fs_group) && fs_group.is_none_or(|g| m.gid() == g))
            && std::fs::read(&target).is_ok_and(|d| d == file.data)
    }) && count_files(generation) == files.len()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| if e.file_type().is_ok_and(|t| t.is_dir()) { count_files(&e.path()) } else { 1 }).sum())
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
        write_atomically(dir.path(), &files(&[("token", "a"), ("ca.crt", "c")]), None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("token")).unwrap(), "a");
        let first = std::fs::read_link(dir.path().join("..data")).unwrap();
        write_atomically(dir.path(), &files(&[("token", "a"), ("ca.crt", "c")]), None).unwrap();
        assert_eq!(std::fs::read_link(dir.path().join("..data")).unwrap(), first, "unchanged content is not rewritten");
        write_atomically(dir.path(), &files(&[("token", "b"), ("sub/ns", "n")]), None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("token")).unwrap(), "b");
        assert_eq!(std::fs::read_to_string(dir.path().join("sub/ns")).unwrap(), "n");
        assert!(std::fs::symlink_metadata(dir.path().join("ca.crt")).is_err(), "a file that went away is removed");
        assert!(!dir.path().join(first).exists(), "the old generation is removed");
    }

    /// A `..data` link a container could have planted (were the volume writable) never makes
    /// the writer touch what it points to: the link goes, the volume is rewritten.
    #[test]
    fn a_planted_data_link_is_replaced_and_its_target_survives() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "precious").unwrap();
        std::fs::create_dir(outside.join("..1")).unwrap();
        for (i, planted) in [outside.to_str().unwrap(), "../outside", "..1/../../outside", "..data"].into_iter().enumerate() {
            let dir = base.path().join(format!("vol{i}"));
            write_atomically(&dir, &files(&[("token", "a")]), None).unwrap();
            std::fs::remove_file(dir.join("..data")).unwrap();
            std::os::unix::fs::symlink(planted, dir.join("..data")).unwrap();
            write_atomically(&dir, &files(&[("token", "b")]), None).unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "b", "{planted}");
            assert!(is_generation(std::fs::read_link(dir.join("..data")).unwrap().to_str().unwrap()), "{planted}");
            assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "precious", "{planted}");
            assert!(outside.join("..1").is_dir(), "{planted}");
        }
        // A generation name that is itself a link to the outside is unlinked at most, never emptied.
        let dir = base.path().join("vol-gen-link");
        write_atomically(&dir, &files(&[("token", "a")]), None).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("..99")).unwrap();
        std::fs::remove_file(dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..99", dir.join("..data")).unwrap();
        write_atomically(&dir, &files(&[("token", "c")]), None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "c");
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "precious");
        // A real directory planted as ..data is removed itself.
        std::fs::remove_file(dir.join("..data")).unwrap();
        std::fs::create_dir(dir.join("..data")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("..data/inner")).unwrap();
        write_atomically(&dir, &files(&[("token", "d")]), None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "d");
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "precious");
    }

    #[test]
    fn modes_are_applied_exactly_and_a_mode_change_rewrites() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut f = files(&[("a", "x")]);
        f.get_mut("a").unwrap().mode = 0o400;
        f.insert("sub/b".into(), FileContent { data: b"y".to_vec(), mode: 0o600 });
        write_atomically(dir.path(), &f, None).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("a")).unwrap().mode() & 0o7777, 0o400);
        assert_eq!(std::fs::metadata(dir.path().join("sub/b")).unwrap().mode() & 0o7777, 0o600);
        f.get_mut("a").unwrap().mode = 0o440;
        write_atomically(dir.path(), &f, None).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("a")).unwrap().mode() & 0o7777, 0o440);
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        write_atomically(dir.path(), &f, Some(gid)).unwrap();
        let b = std::fs::metadata(dir.path().join("sub/b")).unwrap();
        assert_eq!((b.mode() & 0o7777, b.gid()), (0o640, gid), "fsGroup adds group read");
        assert_eq!(std::fs::metadata(dir.path().join("sub")).unwrap().mode() & 0o7777, 0o2755);
    }

    #[test]
    fn item_paths_must_stay_inside() {
        assert!(check_relative("a/b").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data"] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}
