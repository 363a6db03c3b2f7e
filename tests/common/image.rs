//! Images of the tests' own, built here (one uncompressed layer) and pushed to the local
//! registry with skopeo, so removing one touches no image another test uses.

use super::on_runtime;
use std::path::Path;
use std::process::Command;

pub struct TestImage {
    pub name: String,
}

impl TestImage {
    /// A tiny image with a unique file, under a unique name.
    pub fn build() -> TestImage {
        let unique = super::uuid_like();
        TestImage::push(&format!("localhost:5000/nodelet/gc-test-{unique}:1"), "unique", unique.as_bytes())
    }

    /// An image of `mib` MiB under `name`, its content the same on every run (pseudo-random,
    /// so nothing compresses it away): pushed again, it adds nothing to the registry.
    pub fn ballast(name: &str, mib: usize) -> TestImage {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..mib << 17)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        TestImage::push(name, "ballast", &bytes)
    }

    /// An image of one layer holding `file` with `content`, pushed as `name` (tag 1).
    fn push(name: &str, file: &str, content: &[u8]) -> TestImage {
        use sha2::{Digest, Sha256};
        let work = tempfile::tempdir().unwrap();
        let files = work.path().join("content");
        std::fs::create_dir(&files).unwrap();
        std::fs::write(files.join(file), content).unwrap();
        let layer_tar = work.path().join("layer.tar");
        // Fixed owner and time: the same content makes the same layer, run after run.
        let tar = Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-cf"])
            .arg(&layer_tar)
            .arg("-C")
            .arg(&files)
            .arg(".")
            .status();
        assert!(tar.unwrap().success(), "tar of the test image's layer");
        let layout = work.path().join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        let put = |bytes: &[u8]| -> (String, usize) {
            let digest = format!("{:x}", Sha256::digest(bytes));
            std::fs::write(layout.join("blobs/sha256").join(&digest), bytes).unwrap();
            (format!("sha256:{digest}"), bytes.len())
        };
        let (layer, layer_size) = put(&std::fs::read(&layer_tar).unwrap());
        let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer]}});
        let (config, config_size) = put(config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
        });
        let (manifest, manifest_size) = put(manifest.to_string().as_bytes());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "1"}}]});
        std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
        std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        push_layout(&layout, name);
        TestImage { name: name.to_string() }
    }
}

fn push_layout(layout: &Path, name: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{name}"))
        .output()
        .expect("skopeo (make setup installs it)");
    assert!(out.status.success(), "pushing {name}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let name = self.name.clone();
        on_runtime(move |cri| async move {
            if let Ok(Some(id)) = cri.image_id(&name).await {
                let _ = cri.remove_image(&id).await;
            }
        });
        // The registry may refuse deletes; a ballast's blobs are the same on every run.
        let _ = Command::new("skopeo").args(["delete", "--tls-verify=false"]).arg(format!("docker://{}", self.name)).output();
    }
}
