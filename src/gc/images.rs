//! Image garbage collection (the kubelet's image GC manager): every 5 minutes, when the image
//! file system is at least `high_threshold_percent` full, unused images are removed, the least
//! recently used first, until it is at most `low_threshold_percent` full. An image is unused
//! when no container on the runtime (running or not, of any pod) was made from it. Images
//! younger than `min_age` (since nodelet first saw them), pinned images and the sandbox image
//! stay. With a maximum age (imageMaximumGCAge), an unused image not used for longer goes
//! whatever the disk's fill. Use and first sight are tracked in memory; images present when
//! nodelet starts count as seen long ago, as in the kubelet.

use crate::events::{Kind, Recorder};
use crate::runtime::{Cri, CriError};
use k8s_cri::v1 as cri;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The kubelet's ImageGCPolicy (defaults 85 / 80 / 2m / off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub min_age: Duration,
    /// An image unused for longer goes whatever the disk's fill (imageMaximumGCAge); zero: never.
    pub max_age: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { high_threshold_percent: 85, low_threshold_percent: 80, min_age: Duration::from_secs(120), max_age: Duration::ZERO }
    }
}

/// How often the collection runs, as the kubelet's ImageGCPeriod.
pub const PERIOD: Duration = Duration::from_secs(300);

/// What nodelet remembers of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub first_detected: SystemTime,
    /// The last pass that found a container made from it; None: never seen in use.
    pub last_used: Option<SystemTime>,
    pub size: u64,
}

/// An image as the collection sees it: its ID, the names it answers to, and whether it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    /// Tags and digests.
    pub names: Vec<String>,
    pub size: u64,
    /// Pinned by the runtime, or the sandbox image: never removed.
    pub pinned: bool,
}

/// Updates the records with the images the runtime holds now: a new image is first seen now
/// (or long ago on the first pass), one in use is used now, one gone is forgotten.
pub fn detect(records: &mut HashMap<String, Record>, images: &[Image], in_use: &HashSet<String>, now: SystemTime, first_pass: bool) {
    let seen_at = if first_pass { SystemTime::UNIX_EPOCH } else { now };
    for image in images {
        let record = records.entry(image.id.clone()).or_insert(Record { first_detected: seen_at, last_used: None, size: image.size });
        record.size = image.size;
        if is_used(image, in_use) {
            record.last_used = Some(now);
        }
    }
    let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
    records.retain(|id, _| present.contains(id.as_str()));
}

/// Whether a container refers to the image by ID, tag or digest.
pub fn is_used(image: &Image, in_use: &HashSet<String>) -> bool {
    in_use.contains(&image.id) || image.names.iter().any(|n| in_use.contains(n))
}

/// Bytes to free to get from `available` of `capacity` down to the low threshold, when the
/// file system is at least at the high threshold; None when there is nothing to do.
pub fn amount_to_free(capacity: u64, available: u64, policy: &Policy) -> Option<u64> {
    if capacity == 0 {
        return None;
    }
    let available = available.min(capacity);
    let usage_percent = 100 - (available as u128 * 100 / capacity as u128) as u64;
    if usage_percent < policy.high_threshold_percent as u64 {
        return None;
    }
    let target_available = (capacity as u128 * (100 - policy.low_threshold_percent.min(100) as u128) / 100) as u64;
    Some(target_available.saturating_sub(available)).filter(|b| *b > 0)
}

/// The images to remove to free `to_free` bytes: unused in this pass, not pinned, first seen at
/// least `min_age` ago; least recently used first (never used before used), then first seen.
/// Returns them with the bytes they free (which may fall short of `to_free`).
pub fn choose(
    records: &HashMap<String, Record>,
    images: &[Image],
    in_use: &HashSet<String>,
    policy: &Policy,
    now: SystemTime,
    to_free: u64,
) -> (Vec<String>, u64) {
    let mut candidates: Vec<(&Image, &Record)> = images
        .iter()
        .filter(|i| !i.pinned && !is_used(i, in_use))
        .filter_map(|i| Some((i, records.get(&i.id)?)))
        .filter(|(_, r)| now.duration_since(r.first_detected).unwrap_or_default() >= policy.min_age)
        .collect();
    candidates.sort_by(|a, b| (a.1.last_used, a.1.first_detected, &a.0.id).cmp(&(b.1.last_used, b.1.first_detected, &b.0.id)));
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for (image, record) in candidates {
        if freed >= to_free {
            break;
        }
        chosen.push(image.id.clone());
        freed += record.size;
    }
    (chosen, freed)
}

/// The unused, unpinned images last used (never used: first seen) more than `max_age` ago: the
/// kubelet's freeOldImages (imageMaximumGCAge). Images present when nodelet started count as
/// seen long ago, so they go once nodelet has run for `max_age` (see `ImageGc::collect`).
pub fn unused_longer_than(records: &HashMap<String, Record>, images: &[Image], in_use: &HashSet<String>, max_age: Duration, now: SystemTime) -> Vec<String> {
    let old = |r: &Record| now.duration_since(r.last_used.unwrap_or(r.first_detected)).unwrap_or_default() > max_age;
    images.iter().filter(|i| !i.pinned && !is_used(i, in_use) && records.get(&i.id).is_some_and(old)).map(|i| i.id.clone()).collect()
}

/// The kubelet's FreeDiskSpaceFailed message.
pub fn not_enough_message(to_free: u64, freed: u64) -> String {
    format!("Failed to garbage collect required amount of images. Attempted to free {to_free} bytes, but only found {freed} bytes eligible to free.")
}

/// The outcome of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes that had to be freed (0: under the high threshold; u64::MAX: every unused image).
    pub to_free: u64,
    pub freed: u64,
    pub removed: Vec<String>,
}

fn fs_error(message: String) -> CriError {
    CriError { call: "ImageFsInfo", target: "image file systems".into(), message, code: tonic::Code::Unavailable }
}

/// The collector. `keep` names images never removed (the sandbox image).
pub struct ImageGc {
    pub cri: Cri,
    pub policy: Policy,
    pub keep: Vec<String>,
    pub events: Recorder,
    pub node_name: String,
    records: tokio::sync::Mutex<(HashMap<String, Record>, bool)>,
    started: std::time::Instant,
}

impl ImageGc {
    pub fn new(cri: Cri, policy: Policy, keep: Vec<String>, events: Recorder, node_name: String) -> ImageGc {
        ImageGc { cri, policy, keep, events, node_name, records: tokio::sync::Mutex::new((HashMap::new(), false)), started: std::time::Instant::now() }
    }

    /// Tracks images from the start and collects every `PERIOD`; a failure twice in a row is
    /// told as an ImageGCFailed event on the node, as the kubelet does.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut failed_before = false;
        loop {
            // The first pass only records what is there; the kubelet waits as long before collecting.
            if let Err(e) = self.detect().await {
                tracing::debug!(error = %e, "image detection failed");
            }
            tokio::time::sleep(PERIOD).await;
            match self.collect().await {
                Ok(_) => failed_before = false,
                Err(e) => {
                    tracing::warn!(error = %e, "image garbage collection failed");
                    if failed_before {
                        self.events.record_node(&self.node_name, Kind::Warning, "ImageGCFailed", e.to_string());
                    }
                    failed_before = true;
                }
            }
        }
    }

    /// The image file system's capacity and available bytes, as statvfs measures its mount point.
    pub async fn image_fs(&self) -> Result<(u64, u64), CriError> {
        let mount = self.mountpoint().await?;
        let st = nix::sys::statvfs::statvfs(mount.as_str()).map_err(|e| fs_error(format!("statvfs {mount}: {e}")))?;
        let block = st.fragment_size() as u64;
        Ok((st.blocks() as u64 * block, st.blocks_available() as u64 * block))
    }

    /// Whether the images live on the file system of `dir` (the same device): then pressure on
    /// that file system is relieved by removing images too, as the kubelet does without a
    /// dedicated image file system.
    pub async fn shares_fs_with(&self, dir: &Path) -> Result<bool, CriError> {
        let mount = self.mountpoint().await?;
        let device = |path: &Path| nix::sys::stat::stat(path).map(|st| st.st_dev).map_err(|e| fs_error(format!("stat {}: {e}", path.display())));
        Ok(device(Path::new(&mount))? == device(dir)?)
    }

    /// The image file system's mount point, as the runtime's ImageFsInfo names it.
    async fn mountpoint(&self) -> Result<String, CriError> {
        let filesystems = self.cri.image_fs_info().await?;
        let mount = filesystems.iter().find_map(|f| f.fs_id.as_ref().map(|id| id.mountpoint.clone()).filter(|m| !m.is_empty()));
        mount.ok_or_else(|| fs_error("the runtime named no image file system".into()))
    }

    /// Updates the records from the runtime; returns the images and those in use.
    async fn detect(&self) -> Result<(Vec<Image>, HashSet<String>), CriError> {
        let images: Vec<Image> = self.cri.list_images().await?.into_iter().map(|i| self.image(i)).collect();
        let in_use = self.images_in_use().await?;
        let mut guard = self.records.lock().await;
        let (records, initialized) = &mut *guard;
        detect(records, &images, &in_use, SystemTime::now(), !*initialized);
        *initialized = true;
        Ok((images, in_use))
    }

    /// One pass: images unused for longer than the maximum age go; then, with the image file
    /// system measured now, at the high threshold, frees down to the low one, and says so with a
    /// FreeDiskSpaceFailed event when it cannot.
    pub async fn collect(&self) -> Result<Outcome, CriError> {
        let (mut images, in_use) = self.detect().await?;
        let (aged, aged_error) = self.remove_aged(&images, &in_use).await;
        images.retain(|i| !aged.removed.contains(&i.id));
        let (capacity, available) = self.image_fs().await?;
        let Some(to_free) = amount_to_free(capacity, available, &self.policy) else { return aged_error.map_or(Ok(aged), Err) };
        let (mut outcome, error) = self.remove_chosen(&images, &in_use, to_free).await;
        if outcome.freed < to_free {
            self.events.record_node(&self.node_name, Kind::Warning, "FreeDiskSpaceFailed", not_enough_message(to_free, outcome.freed));
        }
        outcome.freed += aged.freed;
        outcome.removed.splice(0..0, aged.removed);
        error.or(aged_error).map_or(Ok(outcome), Err)
    }

    /// Removes the images unused for longer than the maximum age, once nodelet has run that
    /// long (as the kubelet waits, so that images it found at start are not taken at once).
    async fn remove_aged(&self, images: &[Image], in_use: &HashSet<String>) -> (Outcome, Option<CriError>) {
        let max_age = self.policy.max_age;
        if max_age.is_zero() || self.started.elapsed() <= max_age {
            return (Outcome::default(), None);
        }
        let aged = unused_longer_than(&self.records.lock().await.0, images, in_use, max_age, SystemTime::now());
        self.remove(images, aged, 0).await
    }

    /// Every unused image old enough to go, however full the file system: the eviction
    /// manager's node-level reclaim under disk pressure (the kubelet's DeleteUnusedImages). The
    /// thresholds of the periodic pass do not apply: the eviction threshold was crossed.
    pub async fn remove_unused(&self) -> Result<Outcome, CriError> {
        let (images, in_use) = self.detect().await?;
        let (outcome, error) = self.remove_chosen(&images, &in_use, u64::MAX).await;
        error.map_or(Ok(outcome), Err)
    }

    /// Removes the images `choose` picks to free `to_free` bytes; the outcome, and the first
    /// removal that failed (the others are still tried).
    async fn remove_chosen(&self, images: &[Image], in_use: &HashSet<String>, to_free: u64) -> (Outcome, Option<CriError>) {
        let (chosen, _) = {
            let guard = self.records.lock().await;
            choose(&guard.0, images, in_use, &self.policy, SystemTime::now(), to_free)
        };
        self.remove(images, chosen, to_free).await
    }

    /// Removes the images `chosen` (of `images`), as one pass that had `to_free` bytes to free.
    async fn remove(&self, images: &[Image], chosen: Vec<String>, to_free: u64) -> (Outcome, Option<CriError>) {
        let mut outcome = Outcome { to_free, ..Default::default() };
        let mut first_error = None;
        for id in chosen {
            let image = images.iter().find(|i| i.id == id);
            let names = image.map(|i| i.names.join(", ")).unwrap_or_default();
            match self.cri.remove_image(&id).await {
                Ok(()) => {
                    tracing::info!(image = %id, names = %names, "removed an unused image");
                    outcome.freed += image.map_or(0, |i| i.size);
                    outcome.removed.push(id);
                }
                Err(e) => {
                    tracing::warn!(image = %id, names = %names, error = %e, "could not remove an unused image");
                    first_error.get_or_insert(e);
                }
            }
        }
        (outcome, first_error)
    }

    async fn images_in_use(&self) -> Result<HashSet<String>, CriError> {
        let mut in_use = HashSet::new();
        for c in self.cri.list_containers(HashMap::new()).await? {
            if !c.image_ref.is_empty() {
                in_use.insert(c.image_ref);
            }
            if let Some(spec) = c.image.filter(|s| !s.image.is_empty()) {
                in_use.insert(spec.image);
            }
        }
        Ok(in_use)
    }

    fn image(&self, i: cri::Image) -> Image {
        let names: Vec<String> = i.repo_tags.into_iter().chain(i.repo_digests).collect();
        let pinned = i.pinned || self.keep.iter().any(|k| *k == i.id || names.contains(k));
        Image { id: i.id, names, size: i.size, pinned }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, size: u64) -> Image {
        Image { id: id.into(), names: vec![format!("reg/{id}:1")], size, pinned: false }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn the_thresholds_decide_how_much_to_free() {
        let p = Policy::default();
        assert_eq!(amount_to_free(1000, 200, &p), None); // 80% full: under 85
        assert_eq!(amount_to_free(1000, 150, &p), Some(50)); // 85% full: down to 80%
        assert_eq!(amount_to_free(1000, 0, &p), Some(200));
        assert_eq!(amount_to_free(0, 0, &p), None);
        let low = Policy { high_threshold_percent: 1, low_threshold_percent: 0, ..p };
        assert_eq!(amount_to_free(1000, 990, &low), Some(10));
        assert_eq!(amount_to_free(1000, 1000, &low), None);
    }

    #[test]
    fn images_present_at_start_are_old_and_new_ones_wait_out_the_minimum_age() {
        let mut records = HashMap::new();
        let p = Policy::default();
        detect(&mut records, &[img("a", 10)], &HashSet::new(), at(0), true);
        detect(&mut records, &[img("a", 10), img("b", 20)], &HashSet::new(), at(10), false);
        let images = [img("a", 10), img("b", 20)];
        assert_eq!(choose(&records, &images, &HashSet::new(), &p, at(60), 1000), (vec!["a".to_string()], 10));
        assert_eq!(choose(&records, &images, &HashSet::new(), &p, at(130), 1000), (vec!["a".to_string(), "b".to_string()], 30));
        // an image gone from the runtime is forgotten
        detect(&mut records, &[img("b", 20)], &HashSet::new(), at(140), false);
        assert!(!records.contains_key("a"));
    }

    #[test]
    fn least_recently_used_first_and_only_as_much_as_needed() {
        let mut records = HashMap::new();
        let images = [img("a", 10), img("b", 20), img("c", 30)];
        detect(&mut records, &images, &HashSet::from(["reg/a:1".to_string()]), at(0), true);
        detect(&mut records, &images, &HashSet::from(["b".to_string()]), at(100), false);
        let p = Policy { min_age: Duration::ZERO, ..Default::default() };
        // c never used, then a (used at 0), then b (used at 100)
        assert_eq!(choose(&records, &images, &HashSet::new(), &p, at(200), 35), (vec!["c".to_string(), "a".to_string()], 40));
        assert_eq!(choose(&records, &images, &HashSet::new(), &p, at(200), 30), (vec!["c".to_string()], 30));
        assert_eq!(choose(&records, &images, &HashSet::new(), &p, at(200), 1000).1, 60);
    }

    #[test]
    fn images_unused_for_longer_than_the_maximum_age_go() {
        let mut records = HashMap::new();
        let images = [img("a", 10), img("b", 20), img("c", 30), Image { pinned: true, ..img("pause", 5) }];
        // a and pause were there at start; b is used at 100; c first seen at 100, never used.
        detect(&mut records, &[img("a", 10), Image { pinned: true, ..img("pause", 5) }], &HashSet::new(), at(0), true);
        detect(&mut records, &images, &HashSet::from(["b".to_string()]), at(100), false);
        let max = Duration::from_secs(60);
        assert_eq!(unused_longer_than(&records, &images, &HashSet::new(), max, at(150)), ["a"]);
        assert_eq!(unused_longer_than(&records, &images, &HashSet::new(), max, at(161)), ["a", "b", "c"]);
        assert_eq!(unused_longer_than(&records, &images, &HashSet::from(["reg/b:1".to_string()]), max, at(161)), ["a", "c"]);
    }

    #[test]
    fn images_in_use_and_pinned_images_stay() {
        let mut records = HashMap::new();
        let pinned = Image { pinned: true, ..img("pause", 5) };
        let images = [img("a", 10), img("b", 20), pinned];
        detect(&mut records, &images, &HashSet::new(), at(0), true);
        let p = Policy { min_age: Duration::ZERO, ..Default::default() };
        let in_use = HashSet::from(["reg/b:1".to_string()]);
        let (chosen, freed) = choose(&records, &images, &in_use, &p, at(10), 1000);
        assert_eq!((chosen, freed), (vec!["a".to_string()], 10));
        assert_eq!(
            not_enough_message(1000, 10),
            "Failed to garbage collect required amount of images. Attempted to free 1000 bytes, but only found 10 bytes eligible to free."
        );
    }
}
