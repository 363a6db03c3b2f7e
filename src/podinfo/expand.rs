//! Kubernetes' `$(VAR)` expansion for env values, command, args and subPathExpr: a reference to
//! a variable defined earlier is replaced, an unknown one stays as written, and `$$` escapes a `$`.

use std::collections::HashMap;

/// A container's variables by name, borrowed from its env list (a later entry of a name wins).
/// Borrowed because a namespace with many Services gives every container thousands of them.
pub type Vars<'a> = HashMap<&'a str, &'a str>;

pub fn vars(env: &[(String, String)]) -> Vars<'_> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `input` with each `$(NAME)` that `lookup` knows replaced by its value.
pub fn expand<'v>(input: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<&'static str> {
        [("A", "1"), ("HOST", "example")].into_iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    #[test]
    fn expands_known_and_keeps_unknown() {
        assert_eq!(expand("x$(A)y", lookup), "x1y");
        assert_eq!(expand("$(HOST):$(PORT)", lookup), "example:$(PORT)");
    }

    #[test]
    fn escapes_and_odd_dollars() {
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("cost $5 $", lookup), "cost $5 $");
        assert_eq!(expand("$(A", lookup), "$(A");
        assert_eq!(expand("$$$$", lookup), "$$");
    }
}
