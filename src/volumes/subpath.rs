//! A volumeMount's subPath (or expanded subPathExpr), resolved inside its volume without ever
//! letting the kernel follow a symlink, then bind-mounted at a per-container place that CRI
//! mounts instead: a container cannot plant a link in its volume that points a later mount at
//! the host (CVE-2017-1002101). Each component is opened with O_PATH|O_NOFOLLOW from the one
//! before; a relative symlink found on the way is read and followed by nodelet itself, confined
//! to the volume (a configMap key is such a link), and one that is absolute or climbs out fails.

use crate::podinfo::expand::{self, expand, Vars};
use crate::podinfo::{SubPaths, VolumePaths};
use k8s_openapi::api::core::v1::{Container, VolumeMount};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag, AT_FDCWD};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, mkdirat, stat, FileStat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution, as the kernel's own limit.
const MAX_LINKS: usize = 40;

/// Whether any of the container's mounts has a subPath or subPathExpr (`prepare` has work).
pub fn used_by(container: &Container) -> bool {
    container.volume_mounts.iter().flatten().any(|m| [&m.sub_path, &m.sub_path_expr].into_iter().flatten().any(|p| !p.is_empty()))
}

/// The mount's subPath, or its subPathExpr expanded with the container's env; None for none.
/// Absolute paths and `..` are refused, as the kubelet refuses them.
pub fn sub_path(mount: &VolumeMount, env: &Vars) -> Result<Option<String>, String> {
    let (field, value) = match (mount.sub_path.as_deref().filter(|s| !s.is_empty()), mount.sub_path_expr.as_deref().filter(|s| !s.is_empty())) {
        (Some(_), Some(_)) => return Err("subPath and subPathExpr are mutually exclusive".into()),
        (Some(p), None) => ("subPath", p.to_string()),
        (None, Some(e)) => ("subPathExpr", expand(e, |name| env.get(name).copied())),
        (None, None) => return Ok(None),
    };
    let path = Path::new(&value);
    if path.is_absolute() {
        return Err(format!("{field} {value:?} must not be an absolute path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{field} {value:?} must not contain '..'"));
    }
    Ok(Some(value))
}

/// Where the resolved subPath of mount number `index` of `container` is bind-mounted, by the
/// kubelet's layout: `<pod dir>/volume-subpaths/<volume>/<container>/<index>`.
pub fn target(pod_dir: &Path, volume: &str, container: &str, index: usize) -> PathBuf {
    pod_dir.join("volume-subpaths").join(volume).join(container).join(index.to_string())
}

/// Resolves and bind-mounts every subPath mount of the container; returns the host path CRI
/// mounts for each, by mount index. Errors name the volumeMount and the cause.
pub fn prepare(pod_dir: &Path, container: &Container, env: &[(String, String)], volumes: &VolumePaths) -> Result<SubPaths, String> {
    let vars = expand::vars(env);
    let mut out = SubPaths::new();
    for (index, m) in container.volume_mounts.iter().flatten().enumerate() {
        let named = |e: String| format!("volumeMount {:?} (mountPath {:?}): {e}", m.name, m.mount_path);
        let Some(sub) = sub_path(m, &vars).map_err(named)? else { continue };
        let root = volumes.get(&m.name).ok_or_else(|| named("no volume of that name in the pod".into()))?;
        let fd = resolve(root, &sub).map_err(|e| named(format!("subPath {sub:?}: {e}")))?;
        let at = target(pod_dir, &m.name, &container.name, index);
        bind(&fd, &at).map_err(|e| named(format!("subPath {sub:?}: {e}")))?;
        out.insert(index, at);
    }
    Ok(out)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Opens `sub` under `root` without the kernel following any symlink; missing directories are
/// created (as the kubelet does for a missing subPath) with the volume root's mode.
pub fn resolve(root: &Path, sub: &str) -> Result<OwnedFd, String> {
    let root_fd = openat(AT_FDCWD, root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening the volume at {}: {e}", root.display()))?;
    let mode = Mode::from_bits_truncate(fstat(&root_fd).map_err(|e| e.to_string())?.st_mode & 0o7777);
    let mut stack: Vec<(OwnedFd, OsString)> = vec![(root_fd, OsString::new())];
    let mut todo: VecDeque<OsString> = Path::new(sub)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    let shown = |stack: &[(OwnedFd, OsString)], name: &OsString| {
        stack.iter().skip(1).map(|(_, n)| n.clone()).chain([name.clone()]).collect::<PathBuf>().display().to_string()
    };
    while let Some(name) = todo.pop_front() {
        if name == "." {
            continue;
        }
        if name == ".." {
            if stack.len() == 1 {
                return Err("a symlink leads outside the volume".into());
            }
            stack.pop();
            continue;
        }
        let parent = &stack.last().expect("the root stays").0;
        let open = |p: &OwnedFd| openat(p, name.as_os_str(), OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty());
        let fd = match open(parent) {
            Err(Errno::ENOENT) => {
                match mkdirat(parent, name.as_os_str(), mode) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(format!("creating {:?} in the volume: {e}", shown(&stack, &name))),
                }
                open(parent)
            }
            other => other,
        }
        .map_err(|e| format!("opening {:?} in the volume: {e}", shown(&stack, &name)))?;
        let st = fstat(&fd).map_err(|e| e.to_string())?;
        if kind(&st) == SFlag::S_IFLNK {
            let link = readlinkat(parent, name.as_os_str()).map_err(|e| format!("reading the symlink {:?}: {e}", shown(&stack, &name)))?;
            links += 1;
            if Path::new(&link).is_absolute() || links > MAX_LINKS {
                return Err(format!("{:?} is a symlink to {link:?}, outside the volume", shown(&stack, &name)));
            }
            for c in Path::new(&link).components().rev() {
                todo.push_front(c.as_os_str().to_os_string());
            }
            continue;
        }
        if kind(&st) != SFlag::S_IFDIR && !todo.is_empty() {
            return Err(format!("{:?} is not a directory", shown(&stack, &name)));
        }
        stack.push((fd, name));
    }
    Ok(stack.pop().expect("the root stays").0)
}

/// Bind-mounts what `fd` holds at `at`; a mount already there of the same object is kept (a
/// restarted nodelet, a restarted container), another one is replaced, never stacked.
fn bind(fd: &OwnedFd, at: &Path) -> Result<(), String> {
    let st = fstat(fd).map_err(|e| e.to_string())?;
    let is_dir = kind(&st) == SFlag::S_IFDIR;
    let parent = at.parent().expect("a target has a parent");
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    if super::mounts::is_mount_point(at).unwrap_or(false) {
        if stat(at).is_ok_and(|now| now.st_dev == st.st_dev && now.st_ino == st.st_ino) {
            return Ok(());
        }
        super::mounts::unmount(at).map_err(|e| e.to_string())?;
    }
    match std::fs::symlink_metadata(at) {
        Ok(meta) if meta.is_dir() == is_dir && !meta.file_type().is_symlink() => {}
        Ok(meta) => {
            let removed = if meta.is_dir() { std::fs::remove_dir(at) } else { std::fs::remove_file(at) };
            removed.map_err(|e| format!("replacing {}: {e}", at.display()))?;
            make_target(at, is_dir)?;
        }
        Err(_) => make_target(at, is_dir)?,
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(Some(source.as_str()), at, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| format!("bind-mounting it at {}: {e}", at.display()))
}

fn make_target(at: &Path, is_dir: bool) -> Result<(), String> {
    let made = if is_dir { std::fs::create_dir(at) } else { std::fs::File::create(at).map(drop) };
    made.map_err(|e| format!("creating {}: {e}", at.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn mount(sub: Option<&str>, expr: Option<&str>) -> VolumeMount {
        VolumeMount {
            name: "data".into(),
            mount_path: "/d".into(),
            sub_path: sub.map(String::from),
            sub_path_expr: expr.map(String::from),
            ..Default::default()
        }
    }

    fn env() -> Vars<'static> {
        HashMap::from([("POD", "web-1"), ("UP", "..")])
    }

    #[test]
    fn only_a_set_sub_path_or_expression_needs_preparing() {
        let with = |mounts: Vec<VolumeMount>| Container { name: "c".into(), volume_mounts: Some(mounts), ..Default::default() };
        assert!(!used_by(&Container::default()));
        assert!(!used_by(&with(vec![mount(None, None), mount(Some(""), Some(""))])));
        assert!(used_by(&with(vec![mount(None, None), mount(Some("a"), None)])));
        assert!(used_by(&with(vec![mount(None, Some("$(POD)"))])));
    }

    #[test]
    fn sub_path_and_expr_are_validated_and_expanded() {
        assert_eq!(sub_path(&mount(None, None), &env()).unwrap(), None);
        assert_eq!(sub_path(&mount(Some(""), None), &env()).unwrap(), None);
        assert_eq!(sub_path(&mount(Some("a/b"), None), &env()).unwrap().as_deref(), Some("a/b"));
        assert_eq!(sub_path(&mount(None, Some("logs/$(POD)")), &env()).unwrap().as_deref(), Some("logs/web-1"));
        for (sub, expr) in [(Some("/etc"), None), (Some("a/../../x"), None), (Some(".."), None), (None, Some("$(UP)/x")), (Some("a"), Some("b"))] {
            assert!(sub_path(&mount(sub, expr), &env()).is_err(), "{sub:?} {expr:?}");
        }
    }

    #[test]
    fn targets_are_per_volume_container_and_index() {
        assert_eq!(target(Path::new("/r/pods/u"), "data", "main", 2), PathBuf::from("/r/pods/u/volume-subpaths/data/main/2"));
    }

    #[test]
    fn resolution_refuses_links_out_and_follows_links_inside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let vol = tempfile::tempdir().unwrap();
        let v = vol.path();
        std::fs::create_dir(v.join("..2026")).unwrap();
        std::fs::write(v.join("..2026/key"), "k").unwrap();
        std::os::unix::fs::symlink("..2026", v.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/key", v.join("key")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), v.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path(), v.join("escape2")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../etc", v.join("up")).unwrap();
        std::fs::write(v.join("plain"), "p").unwrap();
        let inside = resolve(v, "key").unwrap();
        assert_eq!(std::fs::read_to_string(format!("/proc/self/fd/{}", inside.as_raw_fd())).unwrap(), "k");
        for bad in ["escape", "escape2/newdir", "up/passwd", "plain/x"] {
            let e = resolve(v, bad).unwrap_err();
            assert!(e.contains("outside the volume") || e.contains("not a directory"), "{bad}: {e}");
        }
        assert!(!outside.path().join("newdir").exists(), "nothing is created through a link");
        let made = resolve(v, "new/dir").unwrap();
        assert_eq!(kind(&fstat(&made).unwrap()), SFlag::S_IFDIR);
        assert!(std::fs::symlink_metadata(v.join("new/dir")).unwrap().is_dir());
    }
}
