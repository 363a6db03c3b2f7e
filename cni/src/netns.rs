//! Netlink sockets bound to another network namespace.
//!
//! A netlink socket talks to the namespace it was created in, whatever thread
//! later uses it. So a short-lived std thread enters the target namespace,
//! opens the socket and returns it; the thread (the only one whose namespace
//! changed) then exits, and no other work ever runs inside the container's
//! namespace by accident.

use rtnetlink::Handle;
use std::fs::File;
use std::io;
use std::path::Path;

pub fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Open an rtnetlink connection inside `netns` and spawn its driver on the
/// current (current-thread) runtime. Must be called within that runtime.
pub fn connect_in(netns: &File) -> io::Result<Handle> {
    let ns = netns.try_clone()?;
    let rt = tokio::runtime::Handle::current();
    let (conn, handle) = std::thread::spawn(move || -> io::Result<_> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        // The socket registers with the runtime's reactor at creation.
        let _guard = rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection()?;
        Ok((conn, handle))
    })
    .join()
    .map_err(|_| io::Error::other("netns helper thread panicked"))??;
    tokio::spawn(conn);
    Ok(handle)
}

/// A connection in the plugin's own (host) namespace.
pub fn connect_host() -> io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}
