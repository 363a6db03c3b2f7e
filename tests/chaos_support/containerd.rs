//! A containerd of a case's own, its root (content store, snapshots: the image file system) on a
//! directory the case chooses, such as its small test disk. Its config is the env scripts' own
//! (integration/env/containerd-config.toml) with the root, state and sockets moved; the CNI
//! configuration and plugins stay the machine's. Dropped, it removes the sandboxes left in it,
//! stops, and unmounts what it mounted.

use crate::common::on_runtime_at;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SANDBOX_IMAGE: &str = "localhost:5000/nodelet/pause:1";

pub struct PrivateContainerd {
    child: Child,
    /// State, sockets, config and log, under /run (not on the test disk: they are not images).
    state: tempfile::TempDir,
}

impl PrivateContainerd {
    /// Starts containerd with its root under `root_parent`; returns once its CRI answers.
    pub fn start(test: &str, root_parent: &Path) -> PrivateContainerd {
        PrivateContainerd::start_with(test, root_parent, &[])
    }

    /// As `start`, with lines of the config replaced (`from`, `to`), such as its runc options.
    pub fn start_with(test: &str, root_parent: &Path, changes: &[(&str, &str)]) -> PrivateContainerd {
        let state = tempfile::Builder::new().prefix(&format!("nodelet-{test}-containerd-")).tempdir_in("/run").expect("a state directory under /run");
        let root = root_parent.join("containerd");
        let socket = state.path().join("containerd.sock");
        let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/env/containerd-config.toml")).unwrap();
        let mut config = moved(&template, &root, state.path(), &socket);
        for (from, to) in changes {
            assert!(config.contains(from), "integration/env/containerd-config.toml has no {from:?} to change");
            config = config.replace(from, to);
        }
        let config_file = state.path().join("config.toml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(state.path().join("containerd.log")).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting /usr/bin/containerd");
        let mut containerd = PrivateContainerd { child, state };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.answers() {
            assert!(containerd.child.try_wait().unwrap().is_none(), "the private containerd exited at start:\n{}", containerd.log());
            assert!(Instant::now() < deadline, "the private containerd did not answer in 30 s:\n{}", containerd.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.state.path().join("containerd.sock")
    }

    /// nodelet's --container-runtime-endpoint for it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("containerd.log")).unwrap_or_default()
    }

    fn answers(&self) -> bool {
        let socket = self.socket();
        socket.exists() && on_runtime_at(&socket, |cri| async move { cri.version().await.is_ok() })
    }
}

/// The env scripts' config with containerd's root, state and sockets moved; every line it moves
/// must be there (a changed template fails here, not in a confusing way later).
fn moved(template: &str, root: &Path, state: &Path, socket: &Path) -> String {
    let replacements = [
        ("root = \"/var/lib/containerd\"", format!("root = \"{}\"", root.display())),
        ("state = \"/run/containerd\"", format!("state = \"{}\"", state.join("state").display())),
        (
            "  address = \"/run/containerd/containerd.sock\"",
            format!("  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"", socket.display(), socket.display()),
        ),
        ("@SANDBOX_IMAGE@", SANDBOX_IMAGE.to_string()),
    ];
    let mut config = template.to_string();
    for (from, to) in replacements {
        assert!(config.contains(from), "integration/env/containerd-config.toml has no {from:?} to move");
        config = config.replace(from, &to);
    }
    config
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        // Sandboxes left (the node removes its own when dropped first): their shims and mounts go.
        on_runtime_at(&self.socket(), |cri| async move {
            for sandbox in cri.list_sandboxes(HashMap::new()).await.unwrap_or_default() {
                let _ = cri.stop_sandbox(&sandbox.id).await;
                let _ = cri.remove_sandbox(&sandbox.id).await;
            }
        });
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(e) = nodelet::volumes::mounts::unmount_under(self.state.path()) {
            eprintln!("unmounting under {}: {e}", self.state.path().display());
        }
    }
}
