//! CRI container log files, read the way `kubectl logs` shows them. Each line of a file is
//! `<RFC3339Nano time> <stdout|stderr> <tags> <message>`, where the tag `P` marks a partial
//! line continued by the next entry of the same stream and `F` a full (last) one. This module is
//! pure: bytes in, rendered bytes out, with the PodLogOptions filters (since, tail, timestamps,
//! limitBytes) applied.

use k8s_openapi::jiff::Timestamp;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub timestamp: Timestamp,
    pub stream: Stream,
    pub partial: bool,
    pub message: &'a [u8],
}

/// One line as the container wrote it: partial entries joined, ending in a newline (unless the
/// container stopped in the middle of a line). Its time is that of its first entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub timestamp: Timestamp,
    pub stream: Stream,
    pub message: Vec<u8>,
}

fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    if rest.is_empty() {
        return None;
    }
    match rest.iter().position(|&b| b == b' ') {
        Some(i) => {
            let f = &rest[..i];
            *rest = &rest[i + 1..];
            Some(f)
        }
        None => {
            let f = *rest;
            *rest = &[];
            Some(f)
        }
    }
}

/// Parses one line (without its trailing newline).
pub fn parse_line(line: &[u8]) -> Result<Entry<'_>, String> {
    let mut rest = line;
    let ts = field(&mut rest).ok_or("empty log line")?;
    let ts = std::str::from_utf8(ts).map_err(|_| "timestamp is not UTF-8".to_string())?;
    let timestamp: Timestamp = ts.parse().map_err(|e| format!("bad timestamp {ts:?}: {e}"))?;
    let stream = match field(&mut rest) {
        Some(b"stdout") => Stream::Stdout,
        Some(b"stderr") => Stream::Stderr,
        Some(other) => return Err(format!("unknown stream {:?}", String::from_utf8_lossy(other))),
        None => return Err("log line has no stream".into()),
    };
    let tags = field(&mut rest).ok_or("log line has no tags")?;
    let partial = tags.split(|&b| b == b':').next() == Some(b"P");
    Ok(Entry { timestamp, stream, partial, message: rest })
}

/// Joins partial entries into records, separately for stdout and stderr.
#[derive(Default)]
pub struct Assembler {
    pending: [Option<(Timestamp, Vec<u8>)>; 2],
}

impl Assembler {
    pub fn push(&mut self, entry: Entry<'_>) -> Option<Record> {
        let slot = &mut self.pending[entry.stream as usize];
        let (timestamp, mut message) = slot.take().unwrap_or_else(|| (entry.timestamp, Vec::new()));
        message.extend_from_slice(entry.message);
        if entry.partial {
            *slot = Some((timestamp, message));
            return None;
        }
        message.push(b'\n');
        Some(Record { timestamp, stream: entry.stream, message })
    }

    /// The lines left unfinished (the container ended mid-line), in time order.
    pub fn finish(&mut self) -> Vec<Record> {
        let mut left: Vec<Record> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|s| self.pending[s as usize].take().map(|(timestamp, message)| Record { timestamp, stream: s, message }))
            .collect();
        left.sort_by_key(|r| r.timestamp);
        left
    }
}

/// Cuts a byte stream into lines, keeping an unfinished last line until its newline arrives;
/// parses and assembles them into records. Malformed lines are skipped (and counted).
#[derive(Default)]
pub struct Reader {
    unfinished: Vec<u8>,
    assembler: Assembler,
    pub malformed: u64,
}

impl Reader {
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(Record)) {
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if b != b'\n' {
                continue;
            }
            if self.unfinished.is_empty() {
                self.handle(&chunk[start..i], out);
            } else {
                self.unfinished.extend_from_slice(&chunk[start..i]);
                let line = std::mem::take(&mut self.unfinished);
                self.handle(&line, out);
            }
            start = i + 1;
        }
        self.unfinished.extend_from_slice(&chunk[start..]);
    }

    fn handle(&mut self, line: &[u8], out: &mut impl FnMut(Record)) {
        if line.is_empty() {
            return;
        }
        match parse_line(line) {
            Ok(entry) => {
                if let Some(r) = self.assembler.push(entry) {
                    out(r)
                }
            }
            Err(_) => self.malformed += 1,
        }
    }

    /// At the end of the log for good: a last line without newline, then unfinished partials.
    pub fn finish(&mut self, out: &mut impl FnMut(Record)) {
        let last = std::mem::take(&mut self.unfinished);
        self.handle(&last, out);
        for r in self.assembler.finish() {
            out(r)
        }
    }
}

/// Keeps the last `n` records.
pub struct Tail {
    n: usize,
    records: VecDeque<Record>,
}

impl Tail {
    pub fn new(n: u64) -> Tail {
        Tail { n: usize::try_from(n).unwrap_or(usize::MAX), records: VecDeque::new() }
    }

    pub fn push(&mut self, r: Record) {
        if self.n == 0 {
            return;
        }
        if self.records.len() == self.n {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    pub fn into_records(self) -> VecDeque<Record> {
        self.records
    }
}

/// The time as the kubelet prints it with `timestamps=true`: RFC3339 with nine fraction digits.
pub fn format_timestamp(ts: Timestamp) -> String {
    let dt = k8s_openapi::jiff::tz::Offset::UTC.to_datetime(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond()
    )
}

/// Renders records: drops those before `since`, prefixes the time when asked, and stops after
/// `limit_bytes` bytes in all (cutting the last line, as the kubelet does).
pub struct Renderer {
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    remaining: Option<u64>,
}

impl Renderer {
    pub fn new(since: Option<Timestamp>, timestamps: bool, limit_bytes: Option<u64>) -> Renderer {
        Renderer { since, timestamps, remaining: limit_bytes }
    }

    /// True once `limit_bytes` have been written: nothing more will be.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    pub fn render(&mut self, r: &Record, out: &mut Vec<u8>) {
        if self.exhausted() || self.since.is_some_and(|s| r.timestamp < s) {
            return;
        }
        let mut line = Vec::with_capacity(r.message.len() + 32);
        if self.timestamps {
            line.extend_from_slice(format_timestamp(r.timestamp).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(&r.message);
        if let Some(rem) = self.remaining.as_mut() {
            let take = line.len().min(usize::try_from(*rem).unwrap_or(usize::MAX));
            line.truncate(take);
            *rem -= take as u64;
        }
        out.extend_from_slice(&line);
    }
}

/// The whole pipeline over a complete log (no follow): parse, assemble, since, tail, render.
pub fn render_all(data: &[u8], since: Option<Timestamp>, tail: Option<u64>, timestamps: bool, limit_bytes: Option<u64>) -> Vec<u8> {
    let mut reader = Reader::default();
    let mut records = Vec::new();
    reader.feed(data, &mut |r| records.push(r));
    reader.finish(&mut |r| records.push(r));
    let mut renderer = Renderer::new(since, timestamps, limit_bytes);
    let records: Vec<Record> = records.into_iter().filter(|r| since.is_none_or(|s| r.timestamp >= s)).collect();
    let records: Vec<Record> = match tail {
        Some(n) => {
            let mut t = Tail::new(n);
            records.into_iter().for_each(|r| t.push(r));
            t.into_records().into()
        }
        None => records,
    };
    let mut out = Vec::new();
    for r in &records {
        renderer.render(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2024-05-01T10:00:00.000000001Z stdout F one
2024-05-01T10:00:01.5Z stderr F two
2024-05-01T10:00:02Z stdout P thr
2024-05-01T10:00:02.1Z stderr F err-between
2024-05-01T10:00:02.2Z stdout P e
2024-05-01T10:00:02.3Z stdout F e
2024-05-01T12:00:03+02:00 stdout F four
";

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn parses_cri_lines() {
        let e = parse_line(b"2024-05-01T10:00:00.123456789Z stderr F hello world").unwrap();
        assert_eq!(e.timestamp, "2024-05-01T10:00:00.123456789Z".parse().unwrap());
        assert_eq!(e.stream, Stream::Stderr);
        assert!(!e.partial);
        assert_eq!(e.message, b"hello world");
        let e = parse_line(b"2024-05-01T10:00:00Z stdout P:x part").unwrap();
        assert!(e.partial);
        assert_eq!(e.message, b"part");
        assert_eq!(parse_line(b"2024-05-01T10:00:00Z stdout F ").unwrap().message, b"");
        assert_eq!(parse_line(b"2024-05-01T10:00:00Z stdout F").unwrap().message, b"");
        assert!(parse_line(b"not-a-time stdout F x").is_err());
        assert!(parse_line(b"2024-05-01T10:00:00Z stdin F x").is_err());
        assert!(parse_line(b"2024-05-01T10:00:00Z stdout").is_err());
    }

    #[test]
    fn joins_partials_per_stream_in_file_order() {
        let out = render_all(LOG.as_bytes(), None, None, false, None);
        assert_eq!(text(out), "one\ntwo\nerr-between\nthree\nfour\n");
    }

    #[test]
    fn timestamps_prefix_each_line_with_its_first_entry_time() {
        let out = text(render_all(LOG.as_bytes(), None, Some(2), true, None));
        assert_eq!(out, "2024-05-01T10:00:02.000000000Z three\n2024-05-01T10:00:03.000000000Z four\n");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(text(render_all(LOG.as_bytes(), None, Some(1), false, None)), "four\n");
        assert_eq!(text(render_all(LOG.as_bytes(), None, Some(0), false, None)), "");
        assert_eq!(text(render_all(LOG.as_bytes(), None, Some(100), false, None)).lines().count(), 5);
    }

    #[test]
    fn since_drops_earlier_lines_before_tail() {
        let since = Some("2024-05-01T10:00:01.5Z".parse().unwrap());
        assert_eq!(text(render_all(LOG.as_bytes(), since, None, false, None)), "two\nerr-between\nthree\nfour\n");
        assert_eq!(text(render_all(LOG.as_bytes(), since, Some(3), false, None)), "err-between\nthree\nfour\n");
    }

    #[test]
    fn limit_bytes_cuts_the_output() {
        assert_eq!(text(render_all(LOG.as_bytes(), None, None, false, Some(6))), "one\ntw");
        assert_eq!(text(render_all(LOG.as_bytes(), None, None, false, Some(1000))), "one\ntwo\nerr-between\nthree\nfour\n");
    }

    #[test]
    fn reader_handles_lines_split_across_chunks_and_bad_lines() {
        let mut reader = Reader::default();
        let mut got = Vec::new();
        let data = b"2024-05-01T10:00:00Z stdout F ab\ngarbage\n2024-05-01T10:00:01Z stdout F cd\n2024-05-01T10:00:02Z stdout P ef";
        for chunk in data.chunks(7) {
            reader.feed(chunk, &mut |r| got.push(r));
        }
        assert_eq!(got.iter().map(|r| text(r.message.clone())).collect::<Vec<_>>(), ["ab\n", "cd\n"]);
        assert_eq!(reader.malformed, 1);
        reader.finish(&mut |r| got.push(r));
        assert_eq!(text(got[2].message.clone()), "ef");
    }
}
