//! Running the real kubectl against the suite's cluster: one-shot commands with a deadline,
//! and long-running ones (logs -f, attach, port-forward) ended by PID when dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a one-shot kubectl command may take before the test fails.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// kubectl on the PATH, or a failure that says how to get one.
pub fn kubectl_binary() -> PathBuf {
    let found =
        std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|dir| dir.join("kubectl")).find(|p| p.is_file());
    let Some(path) = found else {
        panic!("kubectl is not on the PATH: the kubectl cases need it (integration/env/install-packages.sh installs Debian's kubernetes-client)");
    };
    path
}

pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path, namespace: &str) -> Kubectl {
        Kubectl { binary: kubectl_binary(), kubeconfig: kubeconfig.to_path_buf(), namespace: namespace.to_string() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(["--namespace", &self.namespace]).args(args).env_remove("KUBECONFIG");
        cmd
    }

    /// Runs kubectl to the end with `input` on its stdin; fails the test past the deadline.
    pub fn run(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starting kubectl");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Written from a thread so a kubectl that reads nothing cannot block the test.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(COMMAND_DEADLINE) {
            Ok(output) => output.expect("waiting for kubectl"),
            Err(_) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
                panic!("kubectl {args:?} did not finish within {COMMAND_DEADLINE:?}");
            }
        }
    }

    /// Runs kubectl and expects success; answers its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, b"");
        assert!(out.status.success(), "kubectl {args:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts kubectl in the background; its stdout lines arrive on the returned process.
    pub fn spawn(&self, args: &[&str]) -> KubectlProcess {
        let mut child = self.command(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starting kubectl");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        KubectlProcess { child, lines }
    }
}

/// A kubectl running in the background, killed (by its PID) when dropped.
pub struct KubectlProcess {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl KubectlProcess {
    /// The next stdout line, or None when stdout closed or nothing came within `wait`.
    pub fn next_line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Reads stdout lines until one satisfies `found`; fails with what was read otherwise.
    pub fn wait_line(&mut self, what: &str, wait: Duration, found: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + wait;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if found(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let stderr = self.child.stderr.take().map(|mut e| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
            text
        });
        panic!("kubectl: no {what} within {wait:?}; stdout: {seen:?}; stderr: {}", stderr.unwrap_or_default());
    }

    /// Waits for kubectl to end by itself; fails the test if it is still running after `wait`.
    pub fn wait_exit(&mut self, wait: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let lines = std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(5)).ok()).collect();
                return (status, lines);
            }
            assert!(std::time::Instant::now() < deadline, "kubectl still running after {wait:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KubectlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
