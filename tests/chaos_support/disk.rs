//! A small file system of the disk-fill case's own: a tmpfs of a fixed size under a unique
//! temporary directory, unmounted (with whatever nodelet mounted under it) and removed when
//! dropped, also when the case fails.

use std::path::Path;

pub struct TestDisk {
    dir: tempfile::TempDir,
}

impl TestDisk {
    /// Mounts a tmpfs of `mib` MiB for `test`.
    pub fn mount(test: &str, mib: u64) -> TestDisk {
        let dir = tempfile::Builder::new().prefix(&format!("nodelet-{test}-disk-")).tempdir().expect("a temporary directory for the test disk");
        nodelet::volumes::mounts::ensure_tmpfs_with(dir.path(), &format!("size={mib}m,mode=0755"))
            .unwrap_or_else(|e| panic!("mounting a {mib} MiB tmpfs at {}: {e}", dir.path().display()));
        TestDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// (capacity, available) bytes, as statvfs says (what nodelet's nodefs signal reads).
    pub fn space(&self) -> (u64, u64) {
        let st = nix::sys::statvfs::statvfs(self.dir.path()).expect("statvfs of the test disk");
        let block = st.fragment_size() as u64;
        (st.blocks() as u64 * block, st.blocks_available() as u64 * block)
    }
}

impl Drop for TestDisk {
    fn drop(&mut self) {
        // The tmpfs itself and any mount nodelet left under it; the empty directory goes with `dir`.
        if let Err(e) = nodelet::volumes::mounts::unmount_under(self.dir.path()) {
            eprintln!("unmounting the test disk at {}: {e}", self.dir.path().display());
        }
    }
}
