//! `$(VAR)` expansion lives in `crate::podinfo::expand` (volumes' subPathExpr needs it too).

pub use crate::podinfo::expand::expand;
