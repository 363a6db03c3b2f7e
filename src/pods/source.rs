//! The static pod source: a directory of manifests, re-read when a file's stamp changes.
//! A broken file is reported once, with its name and the reason, and does not disturb the others.

use super::manifest::parse_static_pod;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest manifest read. The kubelet caps its own at 10 MB (maxConfigLength); nodelet
/// takes etcd's request limit, 1.5 MiB, since no larger Pod could exist in a cluster either.
pub const MAX_MANIFEST_BYTES: u64 = 3 << 19;

/// A manifest parses in milliseconds; a file that takes longer is given up on, so the pod loop
/// (and with it SIGTERM and /healthz) never waits on one.
const PARSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What identifies a version of a file without reading it.
type Stamp = (i64, i64, u64, u64);

struct FileState {
    stamp: Stamp,
    /// The last version that parsed: kept while the file is broken, so a half-written edit does
    /// not stop a running pod.
    pod: Option<Pod>,
}

pub struct ManifestDir {
    dir: PathBuf,
    node_name: String,
    files: BTreeMap<PathBuf, FileState>,
    dir_error_logged: bool,
    scanned: bool,
}

impl ManifestDir {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn new(dir: PathBuf, node_name: String) -> Self {
        ManifestDir { dir, node_name, files: BTreeMap::new(), dir_error_logged: false, scanned: false }
    }

    /// Rescans the directory; returns the desired pods when anything changed. Files are read
    /// and parsed off the async threads, each within `PARSE_TIMEOUT`.
    pub async fn scan(&mut self) -> Option<Vec<Pod>> {
        let entries = match list_manifests(&self.dir) {
            Ok(entries) => {
                self.dir_error_logged = false;
                entries
            }
            Err(e) => {
                if !self.dir_error_logged {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the static pod directory");
                    self.dir_error_logged = true;
                }
                return None;
            }
        };
        let mut changed = !std::mem::replace(&mut self.scanned, true);
        let present: HashMap<&PathBuf, Stamp> = entries.iter().map(|(p, s)| (p, *s)).collect();
        let before = self.files.len();
        self.files.retain(|path, _| present.contains_key(path));
        changed |= self.files.len() != before;
        for (path, stamp) in &entries {
            if self.files.get(path).is_some_and(|f| f.stamp == *stamp) {
                continue;
            }
            changed = true;
            let previous = self.files.remove(path).and_then(|f| f.pod);
            let pod = match load(path.clone(), self.node_name.clone()).await {
                Ok(pod) => Some(pod),
                Err(reason) => {
                    let kept = if previous.is_some() { "; keeping the previous version running" } else { "" };
                    tracing::error!(file = %path.display(), "invalid static pod manifest, ignored: {reason}{kept}");
                    previous
                }
            };
            self.files.insert(path.clone(), FileState { stamp: *stamp, pod });
        }
        changed.then(|| self.desired())
    }

    /// The pods of all good files; a second file naming a pod already defined is refused.
    fn desired(&self) -> Vec<Pod> {
        let mut by_name: BTreeMap<(String, String), (&Path, &Pod)> = BTreeMap::new();
        for (path, state) in &self.files {
            let Some(pod) = &state.pod else { continue };
            let key = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
            match by_name.get(&key) {
                Some((first, _)) => tracing::error!(
                    file = %path.display(),
                    "static pod {}/{} is already defined by {}; this file is ignored", key.0, key.1, first.display()
                ),
                None => {
                    by_name.insert(key, (path, pod));
                }
            }
        }
        by_name.into_values().map(|(_, pod)| pod.clone()).collect()
    }
}

/// Reads and parses one manifest on a blocking thread, within `PARSE_TIMEOUT`.
async fn load(path: PathBuf, node_name: String) -> Result<Pod, String> {
    let task = tokio::task::spawn_blocking(move || {
        let bytes = read_bounded(&path, MAX_MANIFEST_BYTES)?;
        parse_static_pod(&path.to_string_lossy(), &bytes, &node_name)
    });
    match tokio::time::timeout(PARSE_TIMEOUT, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("parsing failed: {e}")),
        Err(_) => Err(format!("not parsed within {}s; given up", PARSE_TIMEOUT.as_secs())),
    }
}

/// The file's bytes, refused past `max` without reading further.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// Wakes the caller as soon as something in the directory changes, so a new manifest starts
/// its pod without waiting for the next poll (the poll stays as the safety net).
pub fn watch_dir(dir: &Path) -> std::io::Result<tokio::sync::mpsc::Receiver<()>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?;
    let mask = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB;
    inotify.add_watch(dir, mask).map_err(std::io::Error::from)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // A blocking read on a thread of its own: events are rare and the thread sleeps in the kernel.
    std::thread::Builder::new().name("manifest-watch".into()).spawn(move || loop {
        match inotify.read_events() {
            Ok(_) => {
                if tx.blocking_send(()).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return tracing::warn!(error = %e, "watching the static pod directory stopped; polling only"),
        }
    })?;
    Ok(rx)
}

/// Regular files of the directory, skipping hidden ones (editors' swap files), as the kubelet does.
fn list_manifests(dir: &Path) -> std::io::Result<Vec<(PathBuf, Stamp)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else { continue };
        if meta.is_file() {
            found.push((entry.path(), (meta.mtime(), meta.mtime_nsec(), meta.ino(), meta.size())));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec: {containers: [{name: c, image: i}]}\n";

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[tokio::test]
    async fn add_change_remove_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = ManifestDir::new(dir.path().to_path_buf(), "n".into());
        assert_eq!(source.scan().await.map(|p| p.len()), Some(0), "the first scan always answers");
        write(dir.path(), "a.yaml", &POD.replace("NAME", "a"));
        write(dir.path(), ".a.yaml.swp", "junk");
        assert_eq!(names(&source.scan().await.unwrap()), vec!["a-n"]);
        assert!(source.scan().await.is_none(), "nothing changed");

        write(dir.path(), "b.json", "{not json");
        let pods = source.scan().await.unwrap();
        assert_eq!(names(&pods), vec!["a-n"], "a broken new file is ignored");

        let uid_before = pods[0].metadata.uid.clone();
        write(dir.path(), "a.yaml", "apiVersion: v1\nkind: Pod\nbroken: [");
        let pods = source.scan().await.unwrap();
        assert_eq!(pods[0].metadata.uid, uid_before, "a broken edit keeps the running version");

        write(dir.path(), "a.yaml", &POD.replace("NAME", "a").replace("image: i", "image: j"));
        let pods = source.scan().await.unwrap();
        assert_ne!(pods[0].metadata.uid, uid_before, "a good edit replaces the pod");

        write(dir.path(), "dup.yaml", &POD.replace("NAME", "a"));
        assert_eq!(source.scan().await.unwrap().len(), 1, "a duplicate name is refused");

        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("dup.yaml")).unwrap();
        assert!(source.scan().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn oversized_nested_and_alias_bomb_files_are_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = ManifestDir::new(dir.path().to_path_buf(), "n".into());
        write(dir.path(), "good.yaml", &POD.replace("NAME", "good"));
        write(dir.path(), "nested.json", &"[".repeat(400_000));
        let mut bomb = String::from("apiVersion: v1\nkind: Pod\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
        }
        write(dir.path(), "bomb.yaml", &bomb);
        std::fs::write(dir.path().join("huge.yaml"), vec![b' '; MAX_MANIFEST_BYTES as usize + 1]).unwrap();
        let start = std::time::Instant::now();
        assert_eq!(names(&source.scan().await.unwrap()), vec!["good-n"]);
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        assert!(read_bounded(&dir.path().join("huge.yaml"), MAX_MANIFEST_BYTES).unwrap_err().contains("larger than"));
    }
}
