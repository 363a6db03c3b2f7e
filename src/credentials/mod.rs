//! The node's credentials towards the cluster, as the kubelet keeps them: a TLS bootstrap when
//! it has none (`bootstrap`), the client certificate renewed before it expires and the serving
//! certificate from the cluster (`renewal`), and the kube client that presents the current
//! certificate (`client`, `identity`).
//!
//! Pure: `certificate` (validity, renewal time), `csr` (the requests as the cluster's approver
//! and signer expect them), `kubeconfig`'s rendering. Effectful: `store` (the cert dir),
//! `request` (filing a CSR and waiting for it), `bootstrap`, `renewal`, `client`.

pub mod bootstrap;
pub mod certificate;
pub mod client;
pub mod csr;
pub mod identity;
pub mod kubeconfig;
pub mod renewal;
pub mod request;
pub mod store;
