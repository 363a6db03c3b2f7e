//! An in-memory nftables for the proxier's unit tests (as `knftables.NewFake`): it parses the
//! commands the renderer writes, keeps tables, chains, maps, sets and elements, and refuses
//! what the kernel refuses (an element added twice with another value or deleted while absent,
//! a rule or element naming a chain or set that is not there, deleting what is still
//! referenced), each transaction all or nothing. Tests read what is there now and what was run.

use super::apply::{ApplyError, Problem};
use super::model::Family;
use super::nftables::Nftables;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// "type nat hook prerouting priority dstnat; policy accept;" for a base chain.
    pub hook: Option<String>,
    pub comment: Option<String>,
    pub rules: Vec<String>,
}

/// A map or set: its declaration and elements (key -> value; None for a set's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    pub is_map: bool,
    pub decl: String,
    pub elements: BTreeMap<String, Option<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub comment: Option<String>,
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
}

impl Table {
    /// A map or set of the skeleton under whichever generation's name it has now (`service_ips`
    /// or `service_ips_b`; between syncs there is one).
    pub fn live(&self, base: &str) -> &Set {
        self.sets.get(base).or_else(|| self.sets.get(&format!("{base}_b"))).unwrap_or_else(|| panic!("no map or set {base} in {:?}", self.sets.keys()))
    }

    /// The value of `key` in the live map `base`.
    pub fn value(&self, base: &str, key: &str) -> Option<String> {
        self.live(base).elements.get(key).cloned().flatten()
    }

    /// Names of the chains, sets and maps that rules and elements refer to.
    fn references(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut chains, mut sets) = (BTreeSet::new(), BTreeSet::new());
        for c in self.chains.values() {
            for r in &c.rules {
                refs_in(r, &mut chains, &mut sets);
            }
        }
        for s in self.sets.values() {
            for v in s.elements.values().flatten() {
                refs_in(v, &mut chains, &mut sets);
            }
        }
        (chains, sets)
    }
}

/// The chains (`goto x`, `jump x`) and sets (`@x`) a rule or verdict names.
fn refs_in(text: &str, chains: &mut BTreeSet<String>, sets: &mut BTreeSet<String>) {
    let name = |w: &str| w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if (*w == "goto" || *w == "jump") && i + 1 < words.len() {
            chains.insert(name(words[i + 1]));
        } else if let Some(s) = w.strip_prefix('@') {
            sets.insert(name(s));
        }
    }
}

type Tables = BTreeMap<(String, String), Table>;

/// The fake. Every transaction, applied or refused, is recorded.
#[derive(Default)]
pub struct FakeNftables {
    tables: Mutex<Tables>,
    /// (script, applied) in order.
    log: Mutex<Vec<(String, bool)>>,
    /// Each text refuses the next transaction that contains it (once).
    fail_next: Mutex<Vec<String>>,
}

impl FakeNftables {
    pub fn new() -> Self {
        Self::default()
    }

    /// The table as it is now.
    pub fn table(&self, family: Family, name: &str) -> Option<Table> {
        self.tables.lock().unwrap().get(&(family.nft().to_string(), name.to_string())).cloned()
    }

    /// The transactions run so far, applied or not.
    pub fn log(&self) -> Vec<(String, bool)> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Refuses the next transaction that contains `text` (called twice: the next two).
    pub fn fail_next(&self, text: &str) {
        self.fail_next.lock().unwrap().push(text.to_string());
    }

    /// Runs a script as someone else would (drift the proxier does not know about).
    pub fn tamper(&self, script: &str) -> Result<(), ApplyError> {
        let mut tables = self.tables.lock().unwrap();
        let mut next = tables.clone();
        run_script(&mut next, script)?;
        *tables = next;
        Ok(())
    }

    fn transaction(&self, script: &str) -> Result<(), ApplyError> {
        let injected = {
            let mut f = self.fail_next.lock().unwrap();
            f.iter().position(|t| script.contains(t.as_str())).map(|i| f.remove(i))
        };
        let result = match injected {
            Some(t) => Err(rejected(0, format!("injected failure (script contains {t:?})"), "")),
            None => self.tamper(script),
        };
        self.log.lock().unwrap().push((script.to_string(), result.is_ok()));
        result
    }
}

impl Nftables for FakeNftables {
    fn apply<'a>(&'a self, script: &'a str) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move { self.transaction(script) })
    }

    fn apply_all<'a>(&'a self, scripts: &'a [String]) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move { scripts.iter().filter(|s| !s.is_empty()).try_for_each(|s| self.transaction(s)) })
    }

    fn list_tables(&self, family: Family) -> BoxFuture<'_, Result<Vec<String>, ApplyError>> {
        let names = self.tables.lock().unwrap().keys().filter(|(f, _)| f == family.nft()).map(|(_, n)| n.clone()).collect();
        Box::pin(async move { Ok(names) })
    }

    fn parallelism(&self) -> usize {
        2
    }
}

fn rejected(line: usize, message: String, text: &str) -> ApplyError {
    let stderr = format!("line {line}: Error: {message}");
    ApplyError::Rejected { problems: vec![Problem { line, message, text: text.to_string() }], stderr }
}

/// Splits `text` at commas outside quotes.
fn split_elements(text: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// `KEY [comment "C"] [: VALUE]` -> (key, value).
fn parse_element(e: &str) -> (String, Option<String>) {
    let (key, rest) = match e.split_once(" comment \"") {
        Some((key, rest)) => (key, rest.split_once('"').map_or("", |(_, r)| r)),
        None => match e.split_once(" : ") {
            Some((key, _)) => (key, &e[key.len()..]),
            None => (e, ""),
        },
    };
    let value = rest.trim().strip_prefix(':').map(|v| v.trim().to_string());
    (key.trim().to_string(), value)
}

/// One command of a script, with the line it starts on.
struct Command {
    line: usize,
    text: String,
    /// The lines of a `table ... {` block, without the first and last.
    block: Vec<String>,
}

/// Splits a script into commands: one line each, except multi-line element lists and table
/// blocks.
fn commands(script: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let mut lines = script.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut cmd = Command { line: i + 1, text: line.to_string(), block: Vec::new() };
        if line.starts_with("table ") && line.ends_with('{') {
            let mut depth = 1;
            for (_, l) in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth == 0 {
                    break;
                }
                cmd.block.push(l.trim().to_string());
            }
        } else {
            while cmd.text.matches('{').count() > cmd.text.matches('}').count() {
                let Some((_, l)) = lines.next() else { break };
                cmd.text.push(' ');
                cmd.text.push_str(l.trim());
            }
        }
        out.push(cmd);
    }
    out
}

fn run_script(tables: &mut Tables, script: &str) -> Result<(), ApplyError> {
    for cmd in commands(script) {
        run_command(tables, &cmd).map_err(|m| rejected(cmd.line, m, &cmd.text))?;
    }
    Ok(())
}

/// The braces' content of `text` ("{ a, b }" -> "a, b").
fn braced(text: &str) -> Result<&str, String> {
    let start = text.find('{').ok_or("expected {")?;
    let end = text.rfind('}').ok_or("expected }")?;
    Ok(text[start + 1..end].trim())
}

fn run_command(tables: &mut Tables, cmd: &Command) -> Result<(), String> {
    let words: Vec<&str> = cmd.text.split_whitespace().collect();
    let key =
        |i: usize| -> Result<(String, String), String> { Ok((words.get(i).ok_or("no family")?.to_string(), words.get(i + 1).ok_or("no table")?.to_string())) };
    let object = words.get(4).map(|s| s.to_string()).unwrap_or_default();
    let table_key = match words.first().copied() {
        Some("table") => key(1)?,
        Some(_) if words.get(1) == Some(&"table") => key(2)?,
        _ => key(2)?,
    };
    match (words.first().copied().unwrap_or(""), words.get(1).copied().unwrap_or("")) {
        ("add", "table") => {
            tables.entry(table_key).or_default();
            return Ok(());
        }
        ("delete", "table") => return tables.remove(&table_key).map(|_| ()).ok_or("No such file or directory: table".into()),
        _ => {}
    }
    if words[0] == "table" {
        let table = tables.entry(table_key).or_default();
        run_block(table, &cmd.block)?;
        return check_references(table);
    }
    let table = tables.get_mut(&table_key).ok_or("No such file or directory: table")?;
    let missing = |what: &str| format!("No such file or directory: {what} {object}");
    match (words[0], words[1]) {
        ("add", "chain") => {
            let chain = table.chains.entry(object.clone()).or_default();
            if let Ok(inner) = braced(&cmd.text) {
                chain.comment = inner.strip_prefix("comment \"").and_then(|c| c.split_once('"')).map(|(c, _)| c.to_string());
            }
        }
        ("flush", "chain") => table.chains.get_mut(&object).ok_or_else(|| missing("chain"))?.rules.clear(),
        ("delete", "chain") => {
            table.chains.get(&object).ok_or_else(|| missing("chain"))?;
            if table.references().0.contains(&object) {
                return Err(format!("Device or resource busy: chain {object} is referenced"));
            }
            table.chains.remove(&object);
        }
        ("add", "rule") => {
            let rule = words[5..].join(" ");
            table.chains.get_mut(&object).ok_or_else(|| missing("chain"))?.rules.push(rule);
        }
        ("add", "set") | ("add", "map") => {
            let decl = braced(&cmd.text)?.to_string();
            table.sets.entry(object).or_insert(Set { is_map: words[1] == "map", decl, elements: BTreeMap::new() });
        }
        ("delete", "set") | ("delete", "map") => {
            table.sets.get(&object).ok_or_else(|| missing(words[1]))?;
            if table.references().1.contains(&object) {
                return Err(format!("Device or resource busy: {} {object} is referenced", words[1]));
            }
            table.sets.remove(&object);
        }
        ("add", "element") => {
            let set = table.sets.get_mut(&object).ok_or_else(|| missing("set"))?;
            for e in split_elements(braced(&cmd.text)?) {
                let (k, v) = parse_element(&e);
                if set.is_map != v.is_some() {
                    return Err(format!("Invalid argument: element {k} of {object}"));
                }
                match set.elements.get(&k) {
                    Some(old) if *old != v => return Err(format!("File exists: element {k} of {object}")),
                    _ => set.elements.insert(k, v),
                };
            }
        }
        ("delete", "element") => {
            let set = table.sets.get_mut(&object).ok_or_else(|| missing("set"))?;
            for e in split_elements(braced(&cmd.text)?) {
                let (k, _) = parse_element(&e);
                set.elements.remove(&k).ok_or_else(|| format!("No such file or directory: element {k} of {object}"))?;
            }
        }
        _ => return Err(format!("syntax error: unknown command {:?}", cmd.text)),
    }
    check_references(table)
}

/// The lines of a `table ... { }` block: comment, maps, sets, chains.
fn run_block(table: &mut Table, block: &[String]) -> Result<(), String> {
    let mut lines = block.iter();
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("comment") => table.comment = Some(line.trim_start_matches("comment ").trim_matches('"').to_string()),
            Some(kind @ ("map" | "set")) => {
                let name = words.get(1).ok_or("no name")?.to_string();
                let decl = if line.ends_with('{') {
                    let decl: Vec<&str> = lines.by_ref().map(String::as_str).take_while(|l| *l != "}").collect();
                    decl.join("; ")
                } else {
                    braced(line)?.to_string()
                };
                table.sets.entry(name).or_insert(Set { is_map: kind == "map", decl, elements: BTreeMap::new() });
            }
            Some("chain") => {
                let chain = table.chains.entry(words.get(1).ok_or("no name")?.to_string()).or_default();
                for l in lines.by_ref().take_while(|l| *l != "}") {
                    if l.starts_with("type ") {
                        chain.hook = Some(l.clone());
                    } else if let Some(c) = l.strip_prefix("comment ") {
                        chain.comment = Some(c.trim_matches('"').to_string());
                    } else {
                        chain.rules.push(l.clone());
                    }
                }
            }
            _ => return Err(format!("syntax error in table block: {line:?}")),
        }
    }
    Ok(())
}

/// Every chain and set named by a rule or an element must exist.
fn check_references(table: &Table) -> Result<(), String> {
    let (chains, sets) = table.references();
    if let Some(c) = chains.iter().find(|c| !table.chains.contains_key(*c)) {
        return Err(format!("No such file or directory: chain {c} is referenced but missing"));
    }
    if let Some(s) = sets.iter().find(|s| !table.sets.contains_key(*s)) {
        return Err(format!("No such file or directory: set {s} is referenced but missing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_with_comments_values_and_ipv6_keys() {
        assert_eq!(
            parse_element("10.96.0.1 . tcp . 80 comment \"ns/a:http\" : goto cluster_tcp_2"),
            ("10.96.0.1 . tcp . 80".into(), Some("goto cluster_tcp_2".into()))
        );
        assert_eq!(parse_element("fd00:96::10 . 80 . 0 : fd00:88::5 . 8080"), ("fd00:96::10 . 80 . 0".into(), Some("fd00:88::5 . 8080".into())));
        assert_eq!(parse_element("10.0.0.1 . 10.0.0.1"), ("10.0.0.1 . 10.0.0.1".into(), None));
        assert_eq!(split_elements("a comment \"x, y\" : b,\nc : d"), vec!["a comment \"x, y\" : b", "c : d"]);
    }

    #[test]
    fn a_refused_transaction_changes_nothing() {
        let fake = FakeNftables::new();
        fake.tamper("add table ip t\ntable ip t {\n\tmap m {\n\t\ttype inet_service : verdict\n\t}\n\tchain c {\n\t\taccept\n\t}\n}\n").unwrap();
        fake.tamper("add element ip t m { 80 : goto c }").unwrap();
        let before = fake.table(Family::V4, "t");
        // the element's chain is missing: the whole script is refused at its line
        let err = fake.tamper("add element ip t m { 81 : goto c }\nadd element ip t m { 82 : goto nope }\n").unwrap_err();
        assert!(err.to_string().contains("line 2") && err.to_string().contains("nope"), "{err}");
        assert_eq!(fake.table(Family::V4, "t"), before);
        assert!(fake.tamper("delete chain ip t c").unwrap_err().to_string().contains("busy"));
        assert!(fake.tamper("delete element ip t m { 81 }").is_err());
        assert!(fake.tamper("add element ip t m { 80 : accept }").unwrap_err().to_string().contains("exists"));
        fake.tamper("delete element ip t m { 80 }\ndelete chain ip t c\n").unwrap();
        assert!(fake.table(Family::V4, "t").unwrap().chains.is_empty());
    }
}
