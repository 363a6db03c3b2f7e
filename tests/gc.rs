//! Log rotation, container garbage collection and image garbage collection on the real runtime.

mod common;

use common::image::TestImage;
use common::kubestream;
use common::{busybox_pod, eventually, on_runtime, uuid_like, Node};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The log folder of a container of a static pod of `node`.
fn container_log_dir(node: &Node, pod: &serde_json::Value, container: &str) -> PathBuf {
    let (name, uid) = (pod["metadata"]["name"].as_str().unwrap(), pod["metadata"]["uid"].as_str().unwrap());
    node.pod_logs().join(format!("default_{name}_{uid}")).join(container)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()).unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_fast_writing_container_has_its_log_rotated_and_logs_still_answer() {
    let node = Node::start("logrotate", &["--anonymous-auth=true", "--container-log-max-size", "4Ki", "--container-log-max-files", "4"]);
    node.write_manifest("chatty.yaml", &busybox_pod("chatty", "Always", 1, "i=0; while true; do echo line-$i; i=$((i+1)); usleep 2000; done"));
    let pod = node.wait_running("chatty");
    let dir = container_log_dir(&node, &pod, "main");
    let path = format!("/containerLogs/default/{}/main", node.pod_name("chatty"));
    let rt = runtime();
    // A follow opened before the rotations goes on reading across them.
    let (status, mut follow) = rt.block_on(kubestream::get_stream(&node, &format!("{path}?follow=true")));
    assert_eq!(status, 200);
    // Rotated every 10 s: two rotations seen means the excess of the first ones is gone too.
    eventually("two rotated log files", Duration::from_secs(60), || files_in(&dir).iter().filter(|n| n.starts_with("0.log.")).count() >= 2);
    std::thread::sleep(Duration::from_secs(11));
    let files = files_in(&dir);
    assert!(files.len() <= 4 && files.contains(&"0.log".to_string()), "{files:?}");
    // Before each rotation the excess goes and the two rotated files that stay are gzipped (the
    // kubelet's order): between passes all rotated files but the newest are compressed; the
    // stamps sort in time order. A pass may be under way at a listing: look again.
    let mut older = String::new();
    eventually("the rotated files compressed but the newest", Duration::from_secs(30), || {
        let files = files_in(&dir);
        let rotated: Vec<&String> = files.iter().filter(|n| n.starts_with("0.log.")).collect();
        let settled = files.len() == 4 && rotated.len() == 3 && rotated[..2].iter().all(|n| n.ends_with(".gz")) && !rotated[2].ends_with(".gz");
        older = rotated.first().map(|n| n.to_string()).unwrap_or_default();
        settled
    });
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(dir.join(&older)).unwrap()), &mut text).unwrap();
    let numbers: Vec<u64> = text.lines().filter_map(|l| l.rsplit(' ').next()?.strip_prefix("line-")?.parse().ok()).collect();
    assert!(numbers.len() > 10 && numbers.windows(2).all(|w| w[1] == w[0] + 1), "{older}: {} lines, not consecutive", numbers.len());
    rt.block_on(async {
        let (_, last) = kubestream::get(&node, &format!("{path}?tailLines=1")).await;
        let mut got = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), follow.read_until(&mut got, &last)).await;
        assert!(read.is_ok(), "the follow stopped at a rotation: last of {} bytes: {:?}", got.len(), got.lines().last());
        // Nothing lost across the rotations: the numbers follow each other.
        let numbers: Vec<u64> = got.lines().filter_map(|l| l.strip_prefix("line-")?.parse().ok()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "a gap in the followed lines");
    });
    rt.block_on(async {
        // The current file answers: it starts after the lines rotated away.
        let (status, text) = kubestream::get(&node, &format!("{path}?limitBytes=100")).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.starts_with("line-") && !text.starts_with("line-0\n"), "{text}");
        let (status, text) = kubestream::get(&node, &format!("{path}?tailLines=1")).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.starts_with("line-"), "{text}");
    });
}

#[test]
fn dead_containers_beyond_the_limit_and_log_and_pod_folders_of_gone_pods_are_removed() {
    let mut node = Node::start("deadgc", &["--anonymous-auth=true", "--crash-loop-backoff-initial", "1s", "--crash-loop-backoff-max", "1s"]);
    // A log folder of a pod that is gone, older than a minute.
    let stale = node.pod_logs().join(format!("default_gone-{}_{}", node.name, uuid_like()));
    std::fs::create_dir_all(stale.join("main")).unwrap();
    std::fs::write(stale.join("main/0.log"), "old\n").unwrap();
    // And the folder of a pod that is gone (left by a crash of nodelet between the sandbox's
    // removal and its own), with a volume in it.
    let stale_pod = node.dir.path().join("root/pods").join(uuid_like());
    std::fs::create_dir_all(stale_pod.join("volumes/kubernetes.io~empty-dir/scratch")).unwrap();
    std::fs::write(stale_pod.join("volumes/kubernetes.io~empty-dir/scratch/data"), "old\n").unwrap();
    for dir in [&stale, &stale_pod] {
        let status = Command::new("touch").args(["-d", "-2 minutes"]).arg(dir).status().unwrap();
        assert!(status.success());
    }
    node.write_manifest("crash.yaml", &busybox_pod("crash", "Always", 1, "echo run; exit 1"));
    node.wait_pod("crash", "four restarts", Duration::from_secs(90), |p| {
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(4)).then_some(())
    });
    // The newest instance and the newest dead one behind it stay; older ones go.
    eventually("at most two containers of the crash-looping pod", Duration::from_secs(15), || node.runtime_objects().1.len() <= 2);
    // Their log files go with them: not one file per restart.
    let live = container_log_dir(&node, &node.pod("crash").unwrap(), "main");
    eventually("at most two log files of the crash-looping pod", Duration::from_secs(15), || files_in(&live).len() <= 2);
    let path = format!("/containerLogs/default/{}/main?previous=true", node.pod_name("crash"));
    let (status, text) = runtime().block_on(kubestream::get(&node, &path));
    assert_eq!((status, text.as_str()), (200, "run\n"));
    // The collection's first pass comes a minute after start.
    eventually("the stale log and pod folders to go", Duration::from_secs(90), || !stale.exists() && !stale_pod.exists());
    assert!(live.exists(), "the running pod's log folder was removed");
    assert!(node.is_running());
}

/// Image GC with thresholds the disk is over (high 1%, low 0%) removes the unused image it may
/// remove and tells that it could not free enough. Every other image on the runtime is on the
/// keep list (as the sandbox image is in nodelet), since other tests and nodes share them.
/// The image GC tests one at a time: each keeps every image but its own, as listed when it starts.
static IMAGE_GC: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn image_gc_over_the_threshold_removes_an_unused_image_and_tells_it_fell_short() {
    let _alone = IMAGE_GC.lock().unwrap_or_else(|e| e.into_inner());
    common::require_runtime();
    let image = TestImage::build();
    let name = image.name.clone();
    let (outcome, id, kept, still_there, present_after) = on_runtime(move |cri| async move {
        let id = cri.pull_image(&name, None, None).await.unwrap();
        let id = cri.image_id(&id).await.unwrap().unwrap_or(id);
        let kept: Vec<String> = cri.list_images().await.unwrap().into_iter().map(|i| i.id).filter(|i| *i != id).collect();
        let policy = nodelet::gc::images::Policy { high_threshold_percent: 1, low_threshold_percent: 0, min_age: Duration::ZERO, max_age: Duration::ZERO };
        let gc = nodelet::gc::images::ImageGc::new(cri.clone(), policy, kept.clone(), nodelet::events::Recorder::log_only(), "t-imagegc".into());
        let outcome = gc.collect().await.unwrap();
        let still_there: Vec<String> = cri.list_images().await.unwrap().into_iter().map(|i| i.id).collect();
        let present_after = cri.image_status(&name).await.unwrap().is_some();
        (outcome, id, kept, still_there, present_after)
    });
    assert_eq!(outcome.removed, vec![id.clone()], "{outcome:?}");
    assert!(!present_after, "{} is still on the runtime", image.name);
    assert!(outcome.to_free > outcome.freed, "{outcome:?}");
    for k in &kept {
        assert!(still_there.contains(k), "kept image {k} was removed");
    }
}

/// Image GC with a maximum age (imageMaximumGCAge) removes an unused image once the collector
/// has run that long, however empty the disk (high threshold 100%).
#[test]
fn image_gc_removes_an_image_unused_for_longer_than_the_maximum_age() {
    let _alone = IMAGE_GC.lock().unwrap_or_else(|e| e.into_inner());
    common::require_runtime();
    let image = TestImage::build();
    let name = image.name.clone();
    let (outcome, id, present_after) = on_runtime(move |cri| async move {
        let id = cri.pull_image(&name, None, None).await.unwrap();
        let id = cri.image_id(&id).await.unwrap().unwrap_or(id);
        let kept: Vec<String> = cri.list_images().await.unwrap().into_iter().map(|i| i.id).filter(|i| *i != id).collect();
        let policy =
            nodelet::gc::images::Policy { high_threshold_percent: 100, low_threshold_percent: 99, min_age: Duration::ZERO, max_age: Duration::from_secs(1) };
        let gc = nodelet::gc::images::ImageGc::new(cri.clone(), policy, kept, nodelet::events::Recorder::log_only(), "t-imagegc-age".into());
        assert!(gc.collect().await.unwrap().removed.is_empty(), "nothing goes before the collector has run for the maximum age");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let outcome = gc.collect().await.unwrap();
        (outcome, id, cri.image_status(&name).await.unwrap().is_some())
    });
    assert_eq!(outcome.removed, vec![id], "{outcome:?}");
    assert!(!present_after, "{} is still on the runtime", image.name);
}
