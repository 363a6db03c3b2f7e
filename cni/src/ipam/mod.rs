//! Host-local IPAM: `pool` picks addresses, `store` records them on disk.

pub mod pool;
pub mod store;
