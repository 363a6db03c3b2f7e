//! Kubernetes' `$(VAR)` expansion for env values, command, args and subPathExpr: a reference to
//! a variable defined earlier is replaced, an unknown one stays as written, and `$$` escapes a `$`.

use std::collections::HashMap;

pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
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
                    match vars.get(name) {
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

    fn vars() -> HashMap<String, String> {
        [("A", "1"), ("HOST", "example")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn expands_known_and_keeps_unknown() {
        assert_eq!(expand("x$(A)y", &vars()), "x1y");
        assert_eq!(expand("$(HOST):$(PORT)", &vars()), "example:$(PORT)");
    }

    #[test]
    fn escapes_and_odd_dollars() {
        assert_eq!(expand("$$(A)", &vars()), "$(A)");
        assert_eq!(expand("cost $5 $", &vars()), "cost $5 $");
        assert_eq!(expand("$(A", &vars()), "$(A");
        assert_eq!(expand("$$$$", &vars()), "$$");
    }
}
