//! A certificate that can be replaced while it is in use: the node's client certificate (rustls
//! asks for it at each new connection to the apiserver) and the secure port's serving one (asked
//! at each handshake). Replacing the client certificate also closes the connections made with
//! the old one, as the kubelet does: the apiserver checks a client certificate's validity on
//! every request, so a kept-alive connection would fail once the old certificate expires. Watches
//! reconnect and resume.

use super::certificate::{Leaf, Pair};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("the {what} key cannot be used for TLS: {source}")]
pub struct KeyError {
    what: &'static str,
    #[source]
    source: rustls::Error,
}

pub struct Identity {
    what: &'static str,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    leaf: Leaf,
    /// Cancelled when this certificate is replaced: connections made with it close.
    replaced: CancellationToken,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("what", &self.what).field("leaf", &self.leaf()).finish()
    }
}

fn certified(pair: &Pair, what: &'static str) -> Result<Arc<CertifiedKey>, KeyError> {
    let provider = rustls::crypto::ring::default_provider();
    let key = provider.key_provider.load_private_key(pair.key.clone_key()).map_err(|source| KeyError { what, source })?;
    Ok(Arc::new(CertifiedKey::new(pair.chain.clone(), key)))
}

impl Identity {
    /// `what` names it in errors: "client certificate", "serving certificate".
    pub fn new(pair: &Pair, what: &'static str) -> Result<Arc<Identity>, KeyError> {
        let current = Current { key: certified(pair, what)?, leaf: pair.leaf.clone(), replaced: CancellationToken::new() };
        Ok(Arc::new(Identity { what, current: RwLock::new(current) }))
    }

    pub fn leaf(&self) -> Leaf {
        self.current.read().expect("identity poisoned").leaf.clone()
    }

    /// Serves `pair` from now on; connections made with the previous certificate are closed.
    pub fn replace(&self, pair: &Pair) -> Result<(), KeyError> {
        let key = certified(pair, self.what)?;
        let old = std::mem::replace(
            &mut *self.current.write().expect("identity poisoned"),
            Current { key, leaf: pair.leaf.clone(), replaced: CancellationToken::new() },
        );
        old.replaced.cancel();
        Ok(())
    }

    /// Cancelled once the certificate a new connection is about to use is replaced.
    pub fn replaced(&self) -> CancellationToken {
        self.current.read().expect("identity poisoned").replaced.clone()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("identity poisoned").key.clone()
    }
}

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for Identity {
    fn resolve(&self, _client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn pair(cn: &str) -> Pair {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pair::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    #[test]
    fn replacing_serves_the_new_certificate_and_closes_the_old_connections() {
        let identity = Identity::new(&pair("one"), "client certificate").unwrap();
        let first = identity.replaced();
        assert_eq!(identity.leaf().common_name, "one");
        identity.replace(&pair("two")).unwrap();
        assert!(first.is_cancelled());
        assert!(!identity.replaced().is_cancelled());
        assert_eq!(identity.leaf().common_name, "two");
        let served = rustls::client::ResolvesClientCert::resolve(identity.as_ref(), &[], &[]).unwrap();
        assert_eq!(Leaf::parse(served.cert[0].as_ref()).unwrap().common_name, "two");
    }
}
