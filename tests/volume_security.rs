//! Volume security against the real runtime (issue 9): a symlink planted in a volume cannot
//! point a subPath mount at the host, nodelet-written volumes are read-only in the container
//! and a planted `..data` link never makes nodelet delete what it points to, and projected
//! (and secret) volumes live on tmpfs with the modes asked for.

mod common;

use common::{eventually, Node, BUSYBOX};
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Host paths a test made outside its node directory, removed even when the test fails.
struct HostPaths(Vec<PathBuf>);

impl HostPaths {
    fn unique(&mut self, what: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("nodelet-{what}-{}-{nanos}", std::process::id()));
        self.0.push(path.clone());
        path
    }
}

impl Drop for HostPaths {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir_all(path));
        }
    }
}

fn pod_dir(node: &Node, pod: &Value) -> PathBuf {
    node.dir.path().join("root/pods").join(pod["metadata"]["uid"].as_str().unwrap())
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"].as_array()?.iter().find(|c| c["name"] == name)
}

/// Every container log of the pod, CRI framing and all.
fn pod_logs(node: &Node, pod: &Value) -> String {
    let dir = node.pod_logs().join(format!("default_{}_{}", pod["metadata"]["name"].as_str().unwrap(), pod["metadata"]["uid"].as_str().unwrap()));
    let mut out = String::new();
    for container in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for log in std::fs::read_dir(container.path()).into_iter().flatten().flatten() {
            out.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
        }
    }
    out
}

/// The mount points at or under `dir`, with their file system type, from mountinfo.
fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|line| {
            let point = PathBuf::from(line.split(' ').nth(4)?);
            let fstype = line.split(" - ").nth(1)?.split(' ').next()?.to_string();
            point.starts_with(&dir).then_some((point, fstype))
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_subpath_through_a_planted_symlink_fails_and_never_reaches_the_host() {
    let mut host = HostPaths(vec![]);
    let secret = host.unique("subpath-secret");
    let content = format!("TOPSECRET-{}", secret.file_name().unwrap().to_string_lossy());
    std::fs::write(&secret, &content).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let host_dir = host.unique("subpath-dir");
    std::fs::create_dir(&host_dir).unwrap();

    let node = Node::start("subpath", &[]);
    let (s, d) = (secret.display(), host_dir.display());
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: subpath}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: data, emptyDir: {{}}}}]
  initContainers:
  - name: plant
    image: {BUSYBOX}
    command: [sh, -c, "ln -s {s} /data/escape && ln -s {d} /data/escape2 && echo legit > /data/file && mkdir /data/dir /data/by-env && echo indir > /data/dir/x && echo fromenv > /data/by-env/y && ln -s dir /data/inside"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: good
    image: {BUSYBOX}
    command: [sh, -c, "cat /f /d/x /e/y /i/x; test -d /n && echo made; exec sleep 3600"]
    env: [{{name: SUB, value: by-env}}]
    volumeMounts:
    - {{name: data, mountPath: /f, subPath: file}}
    - {{name: data, mountPath: /d, subPath: dir}}
    - {{name: data, mountPath: /e, subPathExpr: $(SUB)}}
    - {{name: data, mountPath: /i, subPath: inside}}
    - {{name: data, mountPath: /n, subPath: not/yet}}
  - name: file-escape
    image: {BUSYBOX}
    command: [sh, -c, "cat /s; exec sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /s, subPath: escape}}]
  - name: dir-escape
    image: {BUSYBOX}
    command: [sh, -c, "ls -la /s; exec sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /s, subPath: escape2/newdir}}]
"#
    );
    node.write_manifest("subpath.yaml", &manifest);
    let pod = node.wait_pod("subpath", "good running and both escapes refused", Duration::from_secs(60), |p| {
        let refused = |name: &str| container_status(p, name).is_some_and(|c| c["state"]["waiting"]["reason"] == "CreateContainerConfigError");
        let good = container_status(p, "good").is_some_and(|c| c["state"]["running"].is_object());
        (good && refused("file-escape") && refused("dir-escape")).then(|| p.clone())
    });
    for (name, sub) in [("file-escape", "escape"), ("dir-escape", "escape2/newdir")] {
        let message = container_status(&pod, name).unwrap()["state"]["waiting"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("volumeMount \"data\"") && message.contains(sub) && message.contains("outside the volume"), "{name}: {message}");
    }
    eventually("the good container's output", Duration::from_secs(10), || pod_logs(&node, &pod).contains("made"));
    let logs = pod_logs(&node, &pod);
    for line in ["legit", "indir", "fromenv", "made"] {
        assert!(logs.contains(line), "{line} missing from\n{logs}");
    }
    assert_eq!(logs.matches("indir").count(), 2, "subPath dir and the in-volume link to it:\n{logs}");
    assert!(!logs.contains(&content), "the host file was read:\n{logs}");
    assert!(!host_dir.join("newdir").exists(), "a directory was created on the host");
    let dir = pod_dir(&node, &pod);
    assert!(dir.join("volumes/kubernetes.io~empty-dir/data/not/yet").is_dir(), "a missing subPath is made inside the volume");
    assert_eq!(mounts_under(&dir.join("volume-subpaths")).len(), 5, "one bind per subPath mount of the good container: {:?}", mounts_under(&dir));

    node.remove_manifest("subpath.yaml");
    node.wait_gone("subpath", Duration::from_secs(30));
    eventually("the pod directory removed", Duration::from_secs(10), || !dir.exists());
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), content, "the host file is untouched");
    assert!(host_dir.is_dir());
}

#[test]
fn written_volumes_are_read_only_and_a_planted_data_link_is_never_followed() {
    let mut host = HostPaths(vec![]);
    let outside = host.unique("data-link-target");
    std::fs::create_dir_all(outside.join("..1")).unwrap();
    std::fs::write(outside.join("keep"), "precious").unwrap();
    let mut node = Node::start("datalink", &[]);
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: info}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: info, downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c, "cat /info/name; echo; if echo x > /info/planted; then echo WRITABLE; else echo write-refused; fi; if ln -sfn /tmp /info/..data; then echo RELINKED; else echo relink-refused; fi; exec sleep 3600"]
    volumeMounts: [{{name: info, mountPath: /info, readOnly: false}}]
"#
    );
    node.write_manifest("info.yaml", &manifest);
    let pod = node.wait_running("info");
    eventually("the container's checks", Duration::from_secs(10), || pod_logs(&node, &pod).contains("relink-refused"));
    let logs = pod_logs(&node, &pod);
    assert!(logs.contains("write-refused") && !logs.contains("WRITABLE") && !logs.contains("RELINKED"), "{logs}");

    // What a container could do to a writable volume, done from the host: ..data to the outside.
    let volume = pod_dir(&node, &pod).join("volumes/kubernetes.io~downward-api/info");
    let data = volume.join("..data");
    std::fs::remove_file(&data).unwrap();
    std::os::unix::fs::symlink(&outside, &data).unwrap();
    node.kill9();
    node.spawn();
    eventually("nodelet rewriting the volume", Duration::from_secs(30), || {
        std::fs::read_link(&data).is_ok_and(|t| t.to_str().is_some_and(|t| t.starts_with("..") && !t.contains('/')))
    });
    assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "precious");
    assert!(outside.join("..1").is_dir(), "nothing outside the volume is removed");
    assert_eq!(std::fs::read_to_string(volume.join("name")).unwrap(), node.pod_name("info"));
}

#[test]
fn projected_volumes_live_on_tmpfs_with_their_modes_and_fs_group() {
    let node = Node::start("tmpfs", &[]);
    let manifest = |name: &str, security: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {security}
  volumes:
  - name: proj
    projected:
      defaultMode: 384
      sources:
      - downwardAPI: {{items: [{{path: a, fieldRef: {{fieldPath: metadata.name}}}}, {{path: sub/b, fieldRef: {{fieldPath: metadata.namespace}}, mode: 256}}]}}
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c, "cat /p/a; exec sleep 3600"]
    volumeMounts: [{{name: proj, mountPath: /p}}]
"#
        )
    };
    node.write_manifest("plain.yaml", &manifest("plain", "{}"));
    node.write_manifest("grouped.yaml", &manifest("grouped", "{fsGroup: 2345}"));
    let plain = node.wait_running("plain");
    let grouped = node.wait_running("grouped");
    for (pod, a_mode, b_mode, gid) in [(&plain, 0o600, 0o400, None), (&grouped, 0o640, 0o440, Some(2345))] {
        let dir = pod_dir(&node, pod);
        let volume = dir.join("volumes/kubernetes.io~projected/proj");
        let mounts = mounts_under(&dir);
        assert!(mounts.iter().any(|(p, t)| p == &std::fs::canonicalize(&volume).unwrap() && t == "tmpfs"), "{volume:?} is not a tmpfs: {mounts:?}");
        assert_eq!(mode(&dir), 0o750, "the pod directory is closed to other users");
        assert_eq!(mode(&dir.join("volumes")), 0o750);
        assert_eq!(mode(&volume.join("a")), a_mode, "{}", volume.display());
        assert_eq!(mode(&volume.join("sub/b")), b_mode, "{}", volume.display());
        if let Some(gid) = gid {
            assert_eq!(std::fs::metadata(volume.join("a")).unwrap().gid(), gid);
            assert_eq!(std::fs::metadata(volume.join("sub/b")).unwrap().gid(), gid);
        }
        assert_eq!(std::fs::read_to_string(volume.join("a")).unwrap(), pod["metadata"]["name"].as_str().unwrap());
    }

    for (file, pod) in [("plain.yaml", &plain), ("grouped.yaml", &grouped)] {
        let dir = pod_dir(&node, pod);
        node.remove_manifest(file);
        node.wait_gone(pod["metadata"]["name"].as_str().unwrap().trim_end_matches(&format!("-{}", node.name)), Duration::from_secs(30));
        eventually("the pod directory removed", Duration::from_secs(10), || !dir.exists());
        assert!(mounts_under(&dir).is_empty(), "the tmpfs was left mounted: {:?}", mounts_under(&dir));
    }
}
