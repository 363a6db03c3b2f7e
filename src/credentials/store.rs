//! The cert dir, laid out as the kubelet's: each issued certificate with its key in
//! `<prefix>-<stamp>.pem`, `<prefix>-current.pem` a link to the newest, and the key of a request
//! still waiting in `<prefix>.key.tmp` so a restart reuses it.

use super::certificate::Pair;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct StoreError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError { what, path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> CertDir {
        CertDir { dir: dir.into() }
    }

    pub fn current(&self, prefix: &str) -> PathBuf {
        self.dir.join(format!("{prefix}-current.pem"))
    }

    fn pending_key(&self, prefix: &str) -> PathBuf {
        self.dir.join(format!("{prefix}.key.tmp"))
    }

    /// The current pair of `prefix`, if one is there and readable; a broken one is said in the log.
    pub fn load_current(&self, prefix: &str) -> Option<Pair> {
        let path = self.current(prefix);
        let pem = std::fs::read(&path).ok()?;
        match Pair::from_pem(&pem, &pem) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable certificate in the cert dir");
                None
            }
        }
    }

    /// Writes an issued certificate with its key as `<prefix>-<stamp>.pem` (mode 0600) and points
    /// `<prefix>-current.pem` at it in one rename; returns the current file's path.
    pub fn store(&self, prefix: &str, cert_pem: &[u8], key_pem: &[u8], stamp: &str) -> Result<PathBuf, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating the cert dir", &self.dir))?;
        let file_name = format!("{prefix}-{stamp}.pem");
        let file = self.dir.join(&file_name);
        let mut body = cert_pem.to_vec();
        if !body.ends_with(b"\n") {
            body.push(b'\n');
        }
        body.extend_from_slice(key_pem);
        write_private(&file, &body)?;
        let link = self.current(prefix);
        let tmp = self.dir.join(format!(".{prefix}-current.pem.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&file_name, &tmp).map_err(io("linking", &tmp))?;
        std::fs::rename(&tmp, &link).map_err(io("replacing", &link))?;
        Ok(link)
    }

    /// The key of a request in flight: the one saved by an earlier start, else a new one saved now.
    pub fn pending_key_pair(&self, prefix: &str) -> Result<rcgen::KeyPair, StoreError> {
        let path = self.pending_key(prefix);
        if let Ok(pem) = std::fs::read_to_string(&path) {
            match rcgen::KeyPair::from_pem(&pem) {
                Ok(key) => return Ok(key),
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "replacing an unreadable pending key"),
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(io("creating the cert dir", &self.dir))?;
        let key = rcgen::KeyPair::generate().map_err(|e| StoreError { what: "generating a key for", path: path.clone(), source: std::io::Error::other(e) })?;
        write_private(&path, key.serialize_pem().as_bytes())?;
        Ok(key)
    }

    /// Forgets the pending key once its certificate is stored.
    pub fn clear_pending_key(&self, prefix: &str) {
        let _ = std::fs::remove_file(self.pending_key(prefix));
    }
}

/// Writes `data` to a file only its owner reads, through a temporary file renamed into place.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("writing");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io("writing", &tmp))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("replacing", path))
}

/// The kubelet's file stamp: 2006-01-02-15-04-05 in UTC.
pub fn stamp(now: std::time::SystemTime) -> String {
    let ts = k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%d-%H-%M-%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(cn: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn the_current_link_follows_the_newest_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertDir::new(dir.path().join("pki"));
        assert!(store.load_current("kubelet-client").is_none());
        let (c1, k1) = issued("first");
        let (c2, k2) = issued("second");
        store.store("kubelet-client", c1.as_bytes(), k1.as_bytes(), "2026-01-01-00-00-00").unwrap();
        let link = store.store("kubelet-client", c2.as_bytes(), k2.as_bytes(), "2026-01-02-00-00-00").unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from("kubelet-client-2026-01-02-00-00-00.pem"));
        assert_eq!(store.load_current("kubelet-client").unwrap().leaf.common_name, "second");
        let mode = std::fs::metadata(dir.path().join("pki/kubelet-client-2026-01-01-00-00-00.pem")).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    }

    #[test]
    fn a_pending_key_survives_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertDir::new(dir.path());
        let a = store.pending_key_pair("kubelet-client").unwrap();
        let b = store.pending_key_pair("kubelet-client").unwrap();
        assert_eq!(a.public_key_der(), b.public_key_der());
        store.clear_pending_key("kubelet-client");
        assert_ne!(store.pending_key_pair("kubelet-client").unwrap().public_key_der(), a.public_key_der());
    }

    #[test]
    fn stamps_are_the_kubelets() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_684_105);
        assert_eq!(stamp(t), "2026-12-07-22-55-05");
    }
}
