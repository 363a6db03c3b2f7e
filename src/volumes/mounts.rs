//! Mounts under a pod's directory (tmpfs for secrets, subPath binds) and the one safe way to
//! remove a pod's directory: unmount what is mounted under it first, then delete without ever
//! following a symlink or crossing into another file system, so a leftover bind of a host
//! directory is never emptied.

use nix::dir::Dir;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The mount points listed in a /proc/self/mountinfo text (field 5, octal escapes decoded).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).map(|p| PathBuf::from(OsStr::from_bytes(&unescape(p)))).collect()
}

/// The mount points at or under `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mount_points(mountinfo).into_iter().filter(|p| p.starts_with(dir)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn mountinfo() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
}

/// The canonical form of a directory nodelet made itself, as mountinfo names it.
fn canonical(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(dir)
}

pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    let path = canonical(path)?;
    Ok(mount_points(&mountinfo()?).contains(&path))
}

/// Mounts a tmpfs at `dir` unless one is already there (a restarted nodelet adopts it).
pub fn ensure_tmpfs(dir: &Path) -> std::io::Result<()> {
    ensure_tmpfs_with(dir, "mode=0755")
}

/// Mounts a tmpfs with these options (such as `mode=0777,size=65536`) at `dir` unless one is there.
pub fn ensure_tmpfs_with(dir: &Path, options: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir)? {
        return Ok(());
    }
    mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options))
        .map_err(|e| std::io::Error::other(format!("mounting a tmpfs at {}: {e}", dir.display())))
}

/// Unmounts `path` (detaching it if busy), once per mount stacked there.
pub fn unmount(path: &Path) -> std::io::Result<()> {
    for _ in 0..16 {
        if !is_mount_point(path)? {
            return Ok(());
        }
        umount2(path, MntFlags::empty())
            .or_else(|_| umount2(path, MntFlags::MNT_DETACH))
            .map_err(|e| std::io::Error::other(format!("unmounting {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Unmounts every mount at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) -> std::io::Result<()> {
    let Ok(dir) = canonical(dir) else { return Ok(()) };
    for _ in 0..16 {
        let mounts = mounts_under(&mountinfo()?, &dir);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            umount2(&m, MntFlags::empty())
                .or_else(|_| umount2(&m, MntFlags::MNT_DETACH))
                .map_err(|e| std::io::Error::other(format!("unmounting {}: {e}", m.display())))?;
        }
    }
    Err(std::io::Error::other(format!("mounts under {} keep coming back", dir.display())))
}

/// Removes a pod's directory: unmounts everything under it, then deletes it without following
/// symlinks or crossing file systems. A missing directory is no error.
pub fn remove_pod_dir(dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    unmount_under(dir)?;
    remove_tree(dir)
}

/// Deletes `dir` and what it holds; symlinks are removed, never followed, and a directory on
/// another mount than `dir` (a mount left behind, even a bind of the same file system) is an
/// error, not emptied.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let name = dir.file_name().ok_or_else(|| std::io::Error::other(format!("refusing to remove {}", dir.display())))?;
    let parent_fd = openat(AT_FDCWD, parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let st = fstatat(&parent_fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Ok(unlinkat(&parent_fd, name, UnlinkatFlags::NoRemoveDir)?);
    }
    let top = Dir::openat(&parent_fd, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    let home = (st.st_dev, mount_id(&top)?);
    drop(top);
    remove_children(&parent_fd, name, home).map_err(|e| std::io::Error::other(format!("removing {}: {e}", dir.display())))?;
    Ok(unlinkat(&parent_fd, name, UnlinkatFlags::RemoveDir)?)
}

/// The mount a file descriptor's file is reached through (statx's STATX_MNT_ID).
fn mount_id<Fd: AsFd>(fd: Fd) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, an empty C string with AT_EMPTY_PATH, and a buffer of the right type.
    let rc = unsafe { libc::statx(fd.as_fd().as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut stx) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stx.stx_mnt_id)
}

fn remove_children<Fd: AsFd>(parent: Fd, name: &OsStr, home: (u64, u64)) -> std::io::Result<()> {
    let mut dir = Dir::openat(parent, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    if (fstat(&dir)?.st_dev, mount_id(&dir)?) != home {
        return Err(std::io::Error::other(format!("{name:?} is on another mount: left alone")));
    }
    let names: Vec<Vec<u8>> = dir.iter().flatten().map(|e| e.file_name().to_bytes().to_vec()).filter(|n| n != b"." && n != b"..").collect();
    for child in names {
        let child = OsStr::from_bytes(&child);
        let st = fstatat(&dir, child, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            remove_children(&dir, child, home)?;
            unlinkat(&dir, child, UnlinkatFlags::RemoveDir)?;
        } else {
            unlinkat(&dir, child, UnlinkatFlags::NoRemoveDir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
        90 27 0:50 / /var/lib/nodelet/pods/u1/volumes/kubernetes.io~secret/s rw - tmpfs tmpfs rw\n\
        91 27 8:1 /x /var/lib/nodelet/pods/u1/volume-subpaths/data/c/0 rw - ext4 /dev/sda1 rw\n\
        92 27 8:1 /x /var/lib/nodelet/pods/u10/a\\040b rw - ext4 /dev/sda1 rw\n";

    #[test]
    fn mounts_under_a_pod_dir_deepest_first_and_escapes_decoded() {
        let found = mounts_under(MOUNTINFO, Path::new("/var/lib/nodelet/pods/u1"));
        assert_eq!(
            found,
            vec![PathBuf::from("/var/lib/nodelet/pods/u1/volume-subpaths/data/c/0"), PathBuf::from("/var/lib/nodelet/pods/u1/volumes/kubernetes.io~secret/s")]
        );
        assert_eq!(mounts_under(MOUNTINFO, Path::new("/var/lib/nodelet/pods/u10")), vec![PathBuf::from("/var/lib/nodelet/pods/u10/a b")]);
    }

    #[test]
    fn remove_tree_deletes_links_not_their_targets() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let pod = tempfile::tempdir().unwrap();
        let dir = pod.path().join("pod");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), "y").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep"), dir.join("file-link")).unwrap();
        remove_pod_dir(&dir).unwrap();
        assert!(!dir.exists());
        assert_eq!(std::fs::read_to_string(outside.path().join("keep")).unwrap(), "x");
        remove_pod_dir(&dir).unwrap();
    }

    /// A bind mount under the tree (here of a directory of the same file system) stops the
    /// removal instead of being emptied.
    #[test]
    fn remove_tree_never_empties_a_mount_inside() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let pod = tempfile::tempdir().unwrap();
        let target = pod.path().join("pod/bound");
        std::fs::create_dir_all(&target).unwrap();
        mount(Some(outside.path()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        let refused = remove_tree(&pod.path().join("pod"));
        unmount(&target).unwrap();
        assert!(refused.is_err_and(|e| e.to_string().contains("another mount")));
        assert_eq!(std::fs::read_to_string(outside.path().join("keep")).unwrap(), "x");
        remove_pod_dir(&pod.path().join("pod")).unwrap();
        assert!(!pod.path().join("pod").exists());
    }
}
