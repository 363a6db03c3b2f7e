//! nodelet: a Kubernetes node agent in one daemon. The binary (`main.rs`) wires these parts;
//! the integration tests drive them against the real runtime.

pub mod cgroups;
pub mod config;
pub mod configz;
pub mod events;
pub mod gauge;
pub mod gc;
pub mod health;
pub mod logrotate;
pub mod machine;
pub mod metrics;
pub mod network;
pub mod node;
pub mod nodeip;
pub mod objects;
pub mod pod_network;
pub mod podinfo;
pub mod pods;
pub mod probes;
pub mod proxy;
pub mod retry;
pub mod runtime;
pub mod secure;
pub mod server;
pub mod serving;
pub mod stats;
pub mod volumes;
