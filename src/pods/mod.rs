//! Pods: where desired pods come from, how each is run through the runtime, and their status.

pub mod admission;
pub mod api_source;
pub mod backoff;
pub mod deadline;
pub mod end;
pub mod env_sources;
pub mod ephemeral;
pub mod manager;
pub mod manifest;
pub mod plan;
pub mod pull_secrets;
pub mod qos_cgroups;
pub mod quantity;
pub mod reasons;
pub mod security;
pub mod source;
pub mod spec;
pub mod status;
pub mod status_sync;
pub mod stopping;
pub mod store;
pub mod termination;
pub mod worker;
pub mod worker_state;
pub mod yaml_bounds;
