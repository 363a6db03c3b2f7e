//! The CNI error type and its wire form (CNI spec 1.0, "Error" section).

use serde::Serialize;
use std::fmt;

/// Spec-defined and plugin-specific error codes.
pub mod code {
    /// The runtime asked for a cniVersion this plugin does not speak.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// CNI_* environment variables missing or malformed.
    pub const INVALID_ENV: u32 = 4;
    /// stdin was not valid JSON (or not the shape we expect).
    pub const DECODE: u32 = 6;
    /// JSON decoded, but a value is not acceptable.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient: the runtime may retry.
    pub const TRY_AGAIN: u32 = 11;
    /// Plugin specific: every address of the subnet is allocated.
    pub const IPAM_EXHAUSTED: u32 = 100;
    /// Plugin specific: a netlink, nftables or state-file operation failed.
    pub const SETUP_FAILED: u32 = 101;
    /// Plugin specific: CHECK found the container's network not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: details.into() }
    }

    /// Prefix the message with where it happened (container, netns, interface),
    /// so the runtime's log line is enough to find the culprit.
    pub fn context(mut self, ctx: &str) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The JSON object printed on stdout when a command fails.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Wire { cni_version, code: self.code, msg: &self.msg, details: &self.details }).expect("serializing plain strings cannot fail")
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Shorthand for the most common failure: an effect on the machine failed.
pub fn setup(msg: impl Into<String>, cause: impl fmt::Display) -> CniError {
    CniError::new(code::SETUP_FAILED, msg, cause.to_string())
}

pub type Result<T> = std::result::Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_spec_fields() {
        let e = CniError::new(code::INVALID_CONFIG, "bad subnet", "x").context("container c1");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "container c1: bad subnet");
        assert_eq!(v["details"], "x");
    }

    #[test]
    fn omits_empty_details() {
        let e = CniError::new(code::TRY_AGAIN, "busy", "");
        assert!(!e.to_json("1.0.0").contains("details"));
    }
}
