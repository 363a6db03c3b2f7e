//! Files a certificate signing request and waits for the cluster to issue it, saying where it
//! stands: a request nobody approves is named with the command that approves it.

use super::csr::{certificate_request, csr_object, outcome, Outcome, Purpose};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use std::time::Duration;

/// How long a request may wait before nodelet says who must approve it, and how often after.
pub const FIRST_REMINDER: Duration = Duration::from_secs(60);
pub const REMINDER_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("building the request: {0}")]
    Build(#[source] rcgen::Error),
    #[error("filing the request: {0}")]
    Create(#[source] kube::Error),
    #[error("{name} exists with another key")]
    Taken { name: String },
    #[error("{name} was denied ({reason}: {message})")]
    Denied { name: String, reason: String, message: String },
    #[error("{name} failed ({reason}: {message})")]
    Failed { name: String, reason: String, message: String },
    #[error("{name} was deleted before it was issued")]
    Deleted { name: String },
}

/// What a caller is told while it waits.
pub enum Waiting<'a> {
    Filed { name: &'a str },
    NotApproved { name: &'a str, waited: Duration },
}

/// The command that approves a pending request.
pub fn approve_command(name: &str) -> String {
    format!("kubectl certificate approve {name}")
}

/// Files a request for `purpose` signed by `key` (named `name`, else `csr-…`) and waits until
/// the certificate is issued: returns the request's name and the certificate (PEM).
pub async fn obtain(
    client: &kube::Client,
    node: &str,
    purpose: &Purpose,
    key: &rcgen::KeyPair,
    name: Option<String>,
    mut tell: impl FnMut(Waiting<'_>),
) -> Result<(String, Vec<u8>), RequestError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let pem = certificate_request(node, purpose, key).map_err(RequestError::Build)?;
    let name = match api.create(&PostParams::default(), &csr_object(&pem, purpose, name.clone())).await {
        Ok(created) => created.metadata.name.unwrap_or_default(),
        // A request of an earlier start, with the same key, is taken up again.
        Err(kube::Error::Api(status)) if status.code == 409 && name.is_some() => {
            let name = name.unwrap_or_default();
            let existing = api.get(&name).await.map_err(RequestError::Create)?;
            if !same_key(&existing, &key.public_key_der()) {
                return Err(RequestError::Taken { name });
            }
            name
        }
        Err(e) => return Err(RequestError::Create(e)),
    };
    tell(Waiting::Filed { name: &name });
    let started = tokio::time::Instant::now();
    let mut remind_at = started + FIRST_REMINDER;
    loop {
        let done = kube::runtime::wait::await_condition(api.clone(), &name, |csr: Option<&CertificateSigningRequest>| {
            csr.is_none_or(|csr| outcome(csr) != Outcome::Pending)
        });
        match tokio::time::timeout_at(remind_at, done).await {
            Err(_) => {
                tell(Waiting::NotApproved { name: &name, waited: started.elapsed() });
                remind_at += REMINDER_EVERY;
            }
            Ok(Err(e)) => {
                tracing::warn!(csr = %name, error = %e, "watching the certificate signing request failed; watching again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Ok(None)) => return Err(RequestError::Deleted { name }),
            Ok(Ok(Some(csr))) => {
                return match outcome(&csr) {
                    Outcome::Issued(cert) => Ok((name, cert)),
                    Outcome::Denied { reason, message } => Err(RequestError::Denied { name, reason, message }),
                    Outcome::Failed { reason, message } => Err(RequestError::Failed { name, reason, message }),
                    Outcome::Pending => continue,
                }
            }
        }
    }
}

/// Whether a filed request carries this public key (SubjectPublicKeyInfo, DER).
fn same_key(csr: &CertificateSigningRequest, public_key_der: &[u8]) -> bool {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let Ok(der) = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(&csr.spec.request.0) else { return false };
    x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
        .is_ok_and(|(_, req)| req.certification_request_info.subject_pki.raw == public_key_der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_recognised_by_its_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let pem = certificate_request("n", &Purpose::Client, &key).unwrap();
        let csr = csr_object(&pem, &Purpose::Client, Some("node-csr-x".into()));
        assert!(same_key(&csr, &key.public_key_der()));
        assert!(!same_key(&csr, &other.public_key_der()));
    }
}
