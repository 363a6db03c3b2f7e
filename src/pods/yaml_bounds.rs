//! Bounds on what parsing one manifest may cost, checked before the document is built: the
//! nesting of flow collections (`[ ]`, `{ }`: all of JSON), on which libyaml's scanner is
//! quadratic, and the number of nodes once YAML aliases are expanded ("billion laughs").
//! serde_yaml's own recursion limit (128) bounds block nesting.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// Deeper than any real Pod (about 12 levels) and below the parsers' own limits (128).
pub const MAX_FLOW_NESTING: usize = 100;

/// Nodes a document may have beyond what its text holds without aliases (at most one per two
/// bytes): a document without aliases is never refused, an alias bomb is stopped early.
pub const ALIAS_EXPANSION_BUDGET: usize = 64 * 1024;

/// Parses `text` into a YAML value, refusing documents whose parsing would cost much more than
/// their size. The error names the bound.
pub fn parse(text: &str) -> Result<serde_yaml::Value, String> {
    if flow_nesting_exceeds(text, MAX_FLOW_NESTING) {
        return Err(format!("nested deeper than {MAX_FLOW_NESTING} levels of [ ] or {{ }}"));
    }
    let max_nodes = ALIAS_EXPANSION_BUDGET + text.len() / 2;
    count_nodes(text, max_nodes)?;
    serde_yaml::from_str(text).map_err(|e| format!("not valid YAML or JSON: {e}"))
}

/// Whether flow collections nest deeper than `limit`, outside quoted scalars and comments.
/// A quote opens a scalar only where a node may start (line start, after whitespace or a flow
/// indicator), so an apostrophe inside a word does not hide the brackets that follow it.
pub fn flow_nesting_exceeds(text: &str, limit: usize) -> bool {
    #[derive(PartialEq)]
    enum State {
        Plain,
        Double,
        Single,
        Comment,
    }
    let mut state = State::Plain;
    let mut depth = 0usize;
    let mut prev = b'\n';
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        match state {
            State::Plain => {
                let node_start = matches!(prev, b'\n' | b' ' | b'\t' | b'\r' | b'[' | b'{' | b',' | b':');
                match b {
                    b'#' if matches!(prev, b'\n' | b' ' | b'\t' | b'\r') => state = State::Comment,
                    b'"' if node_start => state = State::Double,
                    b'\'' if node_start => state = State::Single,
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > limit {
                            return true;
                        }
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            State::Double => match b {
                b'\\' => {
                    bytes.next();
                }
                b'"' => state = State::Plain,
                _ => {}
            },
            State::Single => {
                if b == b'\'' {
                    // '' is an escaped quote inside the scalar
                    if bytes.peek() == Some(&b'\'') {
                        bytes.next();
                    } else {
                        state = State::Plain;
                    }
                }
            }
            State::Comment => {
                if b == b'\n' {
                    state = State::Plain;
                }
            }
        }
        prev = b;
    }
    false
}

/// Walks the document as the deserializer expands it, stopping once it has more than
/// `max_nodes` nodes; nothing is kept.
fn count_nodes(text: &str, max_nodes: usize) -> Result<(), String> {
    let left = Cell::new(max_nodes);
    match (Counter { left: &left }).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Ok(()) => Ok(()),
        Err(_) if left.get() == 0 => Err(format!("more than {max_nodes} nodes once YAML aliases are expanded")),
        Err(e) => Err(format!("not valid YAML or JSON: {e}")),
    }
}

#[derive(Clone, Copy)]
struct Counter<'a> {
    left: &'a Cell<usize>,
}

impl Counter<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => Err(E::custom("node budget spent")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    /// A tagged node (`!tag value`).
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        self.take()?;
        let (IgnoredAny, variant) = data.variant()?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bomb(levels: usize) -> String {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..levels {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn deep_flow_nesting_is_refused_at_once() {
        let deep = "[".repeat(400_000);
        let start = std::time::Instant::now();
        let err = parse(&deep).unwrap_err();
        assert!(err.contains("nested deeper than 100"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let json = format!("{}1{}", "{\"a\":[".repeat(60), "]}".repeat(60));
        assert!(flow_nesting_exceeds(&json, 100));
        assert!(!flow_nesting_exceeds(&json, 120));
    }

    #[test]
    fn brackets_in_strings_and_comments_are_not_nesting() {
        let text = format!("a: \"{0}\"\nb: '{0}'\n# {0}\nc: \"\\\"{0}\"\n", "[".repeat(200));
        assert!(!flow_nesting_exceeds(&text, 10));
        // an apostrophe inside a word opens no quote: the brackets after it still count
        assert!(flow_nesting_exceeds(&format!("a: it's {}", "[".repeat(20)), 10));
        // closers inside a quoted scalar do not hide real nesting
        assert!(flow_nesting_exceeds(&format!("{}\"{}\"{}", "[".repeat(8), "]".repeat(8), "[".repeat(8)), 10));
        assert!(!flow_nesting_exceeds("{'it''s': [[1]], \"k\": {\"v\": [2]}}", 3));
    }

    #[test]
    fn alias_bombs_are_refused_and_modest_aliases_pass() {
        let err = parse(&bomb(9)).unwrap_err();
        assert!(err.contains("aliases are expanded"), "{err}");
        let small = parse(&bomb(3)).unwrap();
        assert_eq!(small["a2"].as_sequence().unwrap().len(), 10);
    }

    #[test]
    fn documents_without_aliases_are_never_refused() {
        // the densest text: a node every two bytes
        let flat = format!("[{}1]", "1,".repeat(50_000));
        assert_eq!(parse(&flat).unwrap().as_sequence().unwrap().len(), 50_001);
        assert!(parse("key: [unclosed").unwrap_err().contains("not valid YAML"));
    }
}
