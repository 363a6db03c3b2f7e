//! Quantities are read in `crate::podinfo::quantity` (the downward API needs them too).

pub use crate::podinfo::quantity::*;
