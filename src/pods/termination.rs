//! Termination messages, as the kubelet reports them: each container instance gets an empty,
//! world-writable file bind-mounted at its `terminationMessagePath`; once the instance has exited,
//! its `terminated.message` is the file's last 4096 bytes, or with `FallbackToLogsOnError` and an
//! empty file after a failure, the last 80 lines (2048 bytes at most) of its log. The pod's
//! messages together stay within 12 KiB (an equal share per container), as the kubelet's status
//! manager cuts them. Read once per exited instance: `Messages` remembers what it read.

use super::spec::{self, NodeContext};
use crate::runtime::observed::{ObservedPod, RunState};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The most of its file a container's message keeps (its end).
pub const MAX_MESSAGE_BYTES: u64 = 4096;
/// The log fallback: this many last lines, of which the last this many bytes.
pub const MAX_LOG_LINES: usize = 80;
pub const MAX_LOG_BYTES: usize = 2048;
/// All messages of one pod together, split evenly between its containers.
pub const MAX_POD_BYTES: usize = 12 * 1024;
/// How much of the log's end is read to find its last lines.
const LOG_READ_BYTES: u64 = 64 * 1024;

/// The host file mounted at a container instance's terminationMessagePath.
pub fn host_file(ctx: &NodeContext, pod: &Pod, container: &str, attempt: u32) -> PathBuf {
    spec::pod_data_dir(ctx, pod).join("containers").join(container).join(format!("termination-log-{attempt}"))
}

/// The path inside the container, when it has one (the apiserver defaults it).
pub fn container_path(c: &Container) -> Option<&str> {
    c.termination_message_path.as_deref().filter(|p| !p.is_empty())
}

/// Creates the empty file before the container is created: 0666, so any user of the container
/// can write it, as the kubelet makes it.
pub fn prepare(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().expect("a file under the pod's directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::write(path, b"").map_err(|e| format!("creating termination message file {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(|e| format!("making {} writable: {e}", path.display()))
}

/// The last `max` bytes of a file; None when it does not exist.
fn read_tail(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut data = Vec::new();
    file.take(max).read_to_end(&mut data)?;
    Ok(Some(data))
}

/// The last lines of a CRI log file's end as the container wrote them (both streams), the last
/// `MAX_LOG_LINES` lines and of those the last `MAX_LOG_BYTES` bytes.
pub fn log_tail(log_end: &[u8], starts_at_line: bool) -> String {
    let mut lines = log_end.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    if !starts_at_line {
        // The first line was cut by where reading began.
        lines.next();
    }
    let mut text: Vec<Vec<u8>> = Vec::new();
    let mut open = false;
    for entry in lines.filter_map(|l| crate::secure::crilog::parse_line(l).ok()) {
        if !open {
            text.push(Vec::new());
        }
        let line = text.last_mut().expect("pushed above");
        line.extend_from_slice(entry.message);
        open = entry.partial;
        if !entry.partial {
            line.push(b'\n');
        }
    }
    let joined: Vec<u8> = text[text.len().saturating_sub(MAX_LOG_LINES)..].concat();
    String::from_utf8_lossy(&joined[joined.len().saturating_sub(MAX_LOG_BYTES)..]).into_owned()
}

fn read_log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let len = std::fs::metadata(path)?.len();
        let data = read_tail(path, LOG_READ_BYTES)?.unwrap_or_default();
        Ok(log_tail(&data, len <= LOG_READ_BYTES))
    };
    read().unwrap_or_else(|e| format!("Error on reading termination message from logs: {e}"))
}

/// How an instance ended, as far as the message depends on it.
pub struct Exit<'a> {
    pub exit_code: i32,
    pub reason: &'a str,
    /// terminationMessagePolicy is FallbackToLogsOnError.
    pub fallback_to_logs: bool,
}

/// The message of an exited instance: the file's content (`None`: no file), else the log's tail
/// when the policy asks for it after a failure. A runtime's own message comes first.
pub fn compose(runtime_message: &str, file: Option<std::io::Result<Vec<u8>>>, exit: &Exit, log_tail: impl FnOnce() -> String) -> String {
    // A container that could not even start has no log worth reading.
    let fallback = exit.fallback_to_logs && exit.exit_code != 0 && exit.reason != "ContainerCannotRun";
    let from_file = match file {
        Some(Ok(data)) => String::from_utf8_lossy(&data).into_owned(),
        Some(Err(e)) => return join(runtime_message, &format!("Error on reading termination log: {e}")),
        None => String::new(),
    };
    let message = if from_file.is_empty() && fallback { log_tail() } else { from_file };
    join(runtime_message, &message)
}

fn join(runtime_message: &str, message: &str) -> String {
    match (runtime_message.is_empty(), message.is_empty()) {
        (_, true) => runtime_message.to_string(),
        (true, false) => message.to_string(),
        (false, false) => format!("{runtime_message}: {message}"),
    }
}

/// Cuts a message to the first `max` bytes (on a character boundary).
pub fn truncate(message: &mut String, max: usize) {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
}

/// The termination messages read so far, by container instance ID.
#[derive(Default)]
pub struct Messages {
    read: Mutex<HashMap<String, String>>,
}

impl Messages {
    /// Sets the message of every exited instance of the pod, reading those not read before.
    pub fn fill(&self, ctx: &NodeContext, pod: &Pod, observed: &mut ObservedPod) {
        let Some(spec) = pod.spec.as_ref() else { return };
        let containers: Vec<&Container> = spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect();
        let share = MAX_POD_BYTES / containers.len().max(1);
        let mut read = self.read.lock().expect("termination messages poisoned");
        read.retain(|id, _| observed.containers.iter().any(|c| &c.id == id));
        for o in observed.containers.iter_mut().filter(|o| o.state == RunState::Exited) {
            let Some(c) = containers.iter().find(|c| c.name == o.name) else { continue };
            let message = read.entry(o.id.clone()).or_insert_with(|| {
                let exit = Exit {
                    exit_code: o.exit_code,
                    reason: &o.reason,
                    fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
                };
                let file = container_path(c).and_then(|_| read_tail(&host_file(ctx, pod, &o.name, o.attempt), MAX_MESSAGE_BYTES).transpose());
                let log = spec::log_directory(ctx, pod).join(spec::container_log_path(&o.name, o.attempt));
                let mut message = compose(&o.message, file, &exit, || read_log_tail(&log));
                truncate(&mut message, share);
                message
            });
            o.message = message.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, fallback: bool) -> Exit<'static> {
        Exit { exit_code: code, reason: "Error", fallback_to_logs: fallback }
    }

    #[test]
    fn the_file_wins_and_the_log_is_read_only_for_an_empty_file_after_a_failure() {
        let log = || "from the log\n".to_string();
        assert_eq!(compose("", Some(Ok(b"DONE".to_vec())), &exit(1, true), log), "DONE");
        assert_eq!(compose("", Some(Ok(Vec::new())), &exit(1, true), log), "from the log\n");
        assert_eq!(compose("", Some(Ok(Vec::new())), &exit(0, true), log), "", "a success never falls back");
        assert_eq!(compose("", Some(Ok(Vec::new())), &exit(1, false), log), "", "the File policy never falls back");
        assert_eq!(compose("", None, &exit(2, true), log), "from the log\n");
        let cannot_run = Exit { exit_code: 128, reason: "ContainerCannotRun", fallback_to_logs: true };
        assert_eq!(compose("", None, &cannot_run, log), "");
        assert_eq!(compose("OOMKilled", Some(Ok(b"bye".to_vec())), &exit(137, false), log), "OOMKilled: bye");
    }

    #[test]
    fn the_file_keeps_its_last_4096_bytes_and_a_missing_file_is_no_message() {
        let dir = std::env::temp_dir().join(format!("nodelet-termination-{}", std::process::id()));
        let path = dir.join("c").join("termination-log-0");
        prepare(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666);
        assert_eq!(read_tail(&path, MAX_MESSAGE_BYTES).unwrap(), Some(Vec::new()));
        let mut big = vec![b'a'; 5000];
        big.extend_from_slice(b"END");
        std::fs::write(&path, &big).unwrap();
        let tail = read_tail(&path, MAX_MESSAGE_BYTES).unwrap().unwrap();
        assert_eq!(tail.len(), 4096);
        assert!(tail.ends_with(b"aEND"));
        assert_eq!(read_tail(&dir.join("missing"), MAX_MESSAGE_BYTES).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_log_fallback_keeps_the_last_80_lines_and_2048_bytes_and_joins_partials() {
        let mut log = String::new();
        for i in 0..100 {
            log.push_str(&format!("2026-01-01T00:00:00.000000000Z stdout F line {i}\n"));
        }
        let tail = log_tail(log.as_bytes(), true);
        assert!(tail.starts_with("line 20\n") && tail.ends_with("line 99\n"), "{tail}");
        let partial = "2026-01-01T00:00:00Z stderr P hello \n2026-01-01T00:00:00Z stderr F world\n";
        assert_eq!(log_tail(partial.as_bytes(), true), "hello world\n");
        assert_eq!(log_tail(format!("cut line\n{partial}").as_bytes(), false), "hello world\n");
        let long: String = (0..80).map(|i| format!("2026-01-01T00:00:00Z stdout F {i:0>50}\n")).collect();
        let tail = log_tail(long.as_bytes(), true);
        assert_eq!(tail.len(), MAX_LOG_BYTES);
        assert!(tail.ends_with(&format!("{:0>50}\n", 79)));
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        let mut m = "ééé".to_string();
        truncate(&mut m, 3);
        assert_eq!(m, "é");
    }
}
