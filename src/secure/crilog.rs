//! CRI container log files, read the way `kubectl logs` shows them. Each line of a file is
//! `<RFC3339Nano time> <stdout|stderr> <tags> <message>`, where the tag `P` marks a partial
//! line continued by the next entry of the same stream and `F` a full (last) one. This module is
//! pure: bytes in, rendered bytes out, with the PodLogOptions filters (since, tail, timestamps,
//! limitBytes) applied. Memory is bounded by the chunk and block sizes, never by a line: entries
//! are passed on in pieces as they are read (an entry of any size, a line of any number of
//! partials), and the tail is found by reading the file backwards.

use k8s_openapi::jiff::Timestamp;

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

/// What comes before an entry's message, and where in the file the entry starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub timestamp: Timestamp,
    pub stream: Stream,
    pub partial: bool,
    pub offset: u64,
}

/// The longest header (time, stream, tags) read before a line is taken as malformed.
const HEADER_MAX: usize = 256;

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

fn header_of(head: &[u8], offset: u64) -> Option<Header> {
    parse_line(head).ok().map(|e| Header { timestamp: e.timestamp, stream: e.stream, partial: e.partial, offset })
}

enum State {
    /// Reading a header: the bytes before the third space (or the newline) are in `head`.
    Header,
    /// Inside the message of this entry.
    Body(Header),
    /// Dropping a malformed line up to its newline.
    Skip,
}

/// Cuts a byte stream into entries and hands on their messages in pieces as they arrive, so that
/// neither a huge entry nor a long run of partials is ever held: `out(header, bytes, end)` where
/// `end` is true on the entry's last piece (its newline, or the end of the log). Malformed lines
/// are skipped (and counted).
pub struct Reader {
    /// File offset of the next byte fed.
    pos: u64,
    /// File offset of the line being read.
    line: u64,
    state: State,
    head: Vec<u8>,
    spaces: u8,
    pub malformed: u64,
}

impl Reader {
    /// A reader fed from `offset` of the file on (the start of a line).
    pub fn new(offset: u64) -> Reader {
        Reader { pos: offset, line: offset, state: State::Header, head: Vec::with_capacity(HEADER_MAX), spaces: 0, malformed: 0 }
    }

    pub fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(&Header, &[u8], bool)) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let used = match &self.state {
                State::Header => self.feed_header(chunk, out),
                State::Body(h) => {
                    let h = *h;
                    match newline {
                        Some(i) => {
                            out(&h, &chunk[..i], true);
                            self.next_line(i + 1)
                        }
                        None => {
                            out(&h, chunk, false);
                            chunk.len()
                        }
                    }
                }
                State::Skip => match newline {
                    Some(i) => self.next_line(i + 1),
                    None => chunk.len(),
                },
            };
            self.pos += used as u64;
            chunk = &chunk[used..];
        }
    }

    /// Consumes header bytes; returns how many.
    fn feed_header(&mut self, chunk: &[u8], out: &mut impl FnMut(&Header, &[u8], bool)) -> usize {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' {
                self.line_without_message(out);
                return self.next_line(i + 1);
            }
            if b == b' ' {
                self.spaces += 1;
                if self.spaces == 3 {
                    self.state = match header_of(&self.head, self.line) {
                        Some(h) => State::Body(h),
                        None => {
                            self.malformed += 1;
                            State::Skip
                        }
                    };
                    return i + 1;
                }
            }
            self.head.push(b);
            if self.head.len() >= HEADER_MAX {
                self.malformed += 1;
                self.state = State::Skip;
                return i + 1;
            }
        }
        chunk.len()
    }

    /// A line that ended (or the log that ended) before its message began.
    fn line_without_message(&mut self, out: &mut impl FnMut(&Header, &[u8], bool)) {
        if self.head.is_empty() {
            return;
        }
        match header_of(&self.head, self.line) {
            Some(h) => out(&h, b"", true),
            None => self.malformed += 1,
        }
    }

    /// The current line ends after `used` more bytes: the next one is a header.
    fn next_line(&mut self, used: usize) -> usize {
        self.line = self.pos + used as u64;
        self.state = State::Header;
        self.head.clear();
        self.spaces = 0;
        used
    }

    /// At the end of the log for good: a last line without newline ends there.
    pub fn finish(&mut self, out: &mut impl FnMut(&Header, &[u8], bool)) {
        match &self.state {
            State::Header => self.line_without_message(out),
            State::Body(h) => out(h, b"", true),
            State::Skip => {}
        }
        self.next_line(0);
    }
}

/// The time as the kubelet prints it with `timestamps=true`: RFC3339 with nine fraction digits.
pub fn format_timestamp(ts: Timestamp) -> String {
    let dt = k8s_openapi::jiff::tz::Offset::UTC.to_datetime(ts);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", dt.year(), dt.month(), dt.day(), dt.hour(), dt.minute(), dt.second(), dt.subsec_nanosecond())
}

/// Renders pieces: drops entries before `since` (as the kubelet, entry by entry) and those
/// before the tail, prefixes each line with the time of its first piece when asked, and stops
/// after `limit_bytes` bytes in all (cutting the last line, as the kubelet does).
pub struct Renderer {
    since: Option<Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
    /// Per stream: entries starting before this offset belong to lines before the tail.
    from: [u64; 2],
    /// Per stream: the next piece shown begins a line.
    at_line_start: [bool; 2],
}

impl Renderer {
    pub fn new(since: Option<Timestamp>, timestamps: bool, limit_bytes: Option<u64>) -> Renderer {
        Renderer { since, timestamps, remaining: limit_bytes, from: [0; 2], at_line_start: [true; 2] }
    }

    /// Shows only the lines from this tail on.
    pub fn start_at(&mut self, tail: &TailStart) {
        self.from = tail.from;
    }

    /// True once `limit_bytes` have been written: nothing more will be.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    pub fn render(&mut self, h: &Header, bytes: &[u8], end: bool, out: &mut Vec<u8>) {
        let s = h.stream as usize;
        let newline = end && !h.partial;
        if h.offset < self.from[s] || self.since.is_some_and(|t| h.timestamp < t) {
            self.at_line_start[s] |= newline;
            return;
        }
        if bytes.is_empty() && !newline {
            return;
        }
        if std::mem::replace(&mut self.at_line_start[s], newline) && self.timestamps {
            self.put(format_timestamp(h.timestamp).as_bytes(), out);
            self.put(b" ", out);
        }
        self.put(bytes, out);
        if newline {
            self.put(b"\n", out);
        }
    }

    fn put(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let take = match self.remaining.as_mut() {
            Some(rem) => {
                let take = bytes.len().min(usize::try_from(*rem).unwrap_or(usize::MAX));
                *rem -= take as u64;
                take
            }
            None => bytes.len(),
        };
        out.extend_from_slice(&bytes[..take]);
    }
}

/// Reads at an offset without a cursor: a log file, or bytes in the tests.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Fills `buf` from `offset` as far as the file goes; returns how much was read.
fn read_full_at(file: &(impl ReadAt + ?Sized), buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The header of the line starting at `offset`, if it is a well-formed one (as `Reader` reads it).
fn header_at(file: &(impl ReadAt + ?Sized), offset: u64) -> std::io::Result<Option<Header>> {
    let mut buf = [0u8; HEADER_MAX];
    let n = read_full_at(file, &mut buf, offset)?;
    let mut spaces = 0;
    let end = buf[..n].iter().position(|&b| {
        b == b'\n'
            || (b == b' ' && {
                spaces += 1;
                spaces == 3
            })
    });
    Ok(match end {
        Some(end) => header_of(&buf[..end], offset),
        None if n < HEADER_MAX => header_of(&buf[..n], offset),
        None => None,
    })
}

/// Calls `visit` with the offset of each line start, last line first (the one after the final
/// newline, possibly empty, included), reading backwards `block` bytes at a time, until it
/// returns false or the file's start.
fn line_starts_backward(file: &(impl ReadAt + ?Sized), len: u64, block: usize, mut visit: impl FnMut(u64) -> std::io::Result<bool>) -> std::io::Result<()> {
    let mut buf = vec![0u8; block.max(1)];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        if read_full_at(file, &mut buf[..n], start)? < n {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the log file shrank while read"));
        }
        for i in (0..n).rev() {
            if buf[i] == b'\n' && !visit(start + i as u64 + 1)? {
                return Ok(());
            }
        }
        end = start;
    }
    visit(0)?;
    Ok(())
}

/// Where the last lines of a log begin.
#[derive(Debug, PartialEq, Eq)]
pub struct TailStart {
    /// Where to start reading (a line start).
    pub offset: u64,
    /// Per stream, the first entry shown: that stream's entries before it belong to older lines.
    pub from: [u64; 2],
}

/// Finds the last `lines` lines of the first `len` bytes of a log (the kubelet's
/// FindTailLineStartIndex, over lines as the container wrote them: a line ends with an `F`
/// entry, or unfinished with the last `P` of its stream, and starts after the previous `F` of its
/// stream). Lines are ordered by where they end. Reads backwards `block` bytes at a time and stops
/// at the first entry before `since`, since a log's times only grow.
pub fn find_tail_start(file: &(impl ReadAt + ?Sized), len: u64, lines: u64, since: Option<Timestamp>, block: usize) -> std::io::Result<TailStart> {
    #[derive(Clone, Copy, PartialEq)]
    enum Seen {
        Not,
        /// Looking for where its last counted line starts.
        Open,
        /// Its lines are all counted.
        Closed,
    }
    let mut seen = [Seen::Not; 2];
    let mut from = [len; 2];
    let mut counted = 0u64;
    let mut last_line = None;
    line_starts_backward(file, len, block, |offset| {
        last_line.get_or_insert(offset);
        if counted >= lines && !seen.contains(&Seen::Open) {
            return Ok(false);
        }
        let Some(h) = header_at(file, offset)? else { return Ok(true) };
        if since.is_some_and(|t| h.timestamp < t) {
            return Ok(false);
        }
        let s = h.stream as usize;
        let ends_line = seen[s] == Seen::Not || (seen[s] == Seen::Open && !h.partial);
        if ends_line && counted < lines {
            counted += 1;
            seen[s] = Seen::Open;
        } else if ends_line {
            seen[s] = Seen::Closed;
        }
        if seen[s] == Seen::Open {
            from[s] = offset;
        }
        Ok(true)
    })?;
    // With nothing to show, start at the last line: it may still be being written.
    let offset = from.into_iter().chain(last_line).min().unwrap_or(len);
    Ok(TailStart { offset, from })
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

    /// The whole pipeline over a log in memory, fed `chunk` bytes at a time, the tail found
    /// reading back `block` bytes at a time.
    fn render_with(
        data: &[u8],
        since: Option<Timestamp>,
        tail: Option<u64>,
        timestamps: bool,
        limit_bytes: Option<u64>,
        chunk: usize,
        block: usize,
    ) -> Vec<u8> {
        let mut renderer = Renderer::new(since, timestamps, limit_bytes);
        let mut start = 0;
        if let Some(n) = tail {
            let t = find_tail_start(data, data.len() as u64, n, since, block).unwrap();
            renderer.start_at(&t);
            start = t.offset as usize;
        }
        let mut reader = Reader::new(start as u64);
        let mut out = Vec::new();
        for c in data[start..].chunks(chunk) {
            reader.feed(c, &mut |h, b, end| renderer.render(h, b, end, &mut out));
        }
        reader.finish(&mut |h, b, end| renderer.render(h, b, end, &mut out));
        out
    }

    fn render_all(data: &[u8], since: Option<Timestamp>, tail: Option<u64>, timestamps: bool, limit_bytes: Option<u64>) -> Vec<u8> {
        let whole = render_with(data, since, tail, timestamps, limit_bytes, data.len().max(1), 4096);
        for (chunk, block) in [(1, 1), (3, 2), (7, 5), (64, 16)] {
            assert_eq!(render_with(data, since, tail, timestamps, limit_bytes, chunk, block), whole, "chunks of {chunk}, blocks of {block}");
        }
        whole
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
    fn partials_go_out_as_they_are_read_in_file_order() {
        // As the kubelet: a partial is written when read, so another stream's line between
        // two pieces comes out between them.
        let out = render_all(LOG.as_bytes(), None, None, false, None);
        assert_eq!(text(out), "one\ntwo\nthrerr-between\nee\nfour\n");
    }

    #[test]
    fn timestamps_prefix_each_line_with_its_first_entry_time() {
        let out = text(render_all(LOG.as_bytes(), None, Some(2), true, None));
        assert_eq!(out, "2024-05-01T10:00:02.000000000Z three\n2024-05-01T10:00:03.000000000Z four\n");
        let out = text(render_all(LOG.as_bytes(), None, Some(3), true, None));
        assert_eq!(out, "2024-05-01T10:00:02.000000000Z thr2024-05-01T10:00:02.100000000Z err-between\nee\n2024-05-01T10:00:03.000000000Z four\n");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(text(render_all(LOG.as_bytes(), None, Some(1), false, None)), "four\n");
        assert_eq!(text(render_all(LOG.as_bytes(), None, Some(0), false, None)), "");
        assert_eq!(text(render_all(LOG.as_bytes(), None, Some(4), false, None)), "two\nthrerr-between\nee\nfour\n");
        assert_eq!(text(render_all(LOG.as_bytes(), None, Some(100), false, None)), "one\ntwo\nthrerr-between\nee\nfour\n");
    }

    #[test]
    fn since_drops_earlier_lines_before_tail() {
        let since = Some("2024-05-01T10:00:01.5Z".parse().unwrap());
        assert_eq!(text(render_all(LOG.as_bytes(), since, None, false, None)), "two\nthrerr-between\nee\nfour\n");
        assert_eq!(text(render_all(LOG.as_bytes(), since, Some(3), false, None)), "threrr-between\nee\nfour\n");
        assert_eq!(text(render_all(LOG.as_bytes(), since, Some(100), false, None)), "two\nthrerr-between\nee\nfour\n");
    }

    #[test]
    fn limit_bytes_cuts_the_output_exactly() {
        assert_eq!(text(render_all(LOG.as_bytes(), None, None, false, Some(6))), "one\ntw");
        assert_eq!(text(render_all(LOG.as_bytes(), None, None, false, Some(1000))), "one\ntwo\nthrerr-between\nee\nfour\n");
        let full = text(render_all(LOG.as_bytes(), None, None, true, None));
        for limit in 1..full.len() as u64 + 3 {
            let cut = text(render_all(LOG.as_bytes(), None, None, true, Some(limit)));
            assert_eq!(cut, full[..full.len().min(limit as usize)], "limitBytes={limit}");
        }
    }

    #[test]
    fn tail_search_is_the_same_for_any_block_size() {
        // Lines cross block boundaries wherever the blocks fall.
        for n in 0..9 {
            let want = find_tail_start(LOG.as_bytes(), LOG.len() as u64, n, None, 1 << 16).unwrap();
            for block in 1..LOG.len() + 2 {
                assert_eq!(find_tail_start(LOG.as_bytes(), LOG.len() as u64, n, None, block).unwrap(), want, "tail {n}, blocks of {block}");
            }
        }
        let t = find_tail_start(LOG.as_bytes(), LOG.len() as u64, 2, None, 10).unwrap();
        let third = LOG.match_indices('\n').nth(1).unwrap().0 as u64 + 1;
        assert_eq!(t, TailStart { offset: third, from: [third, LOG.len() as u64] });
    }

    #[test]
    fn tail_of_a_line_still_being_written() {
        // No newline at the end: that line counts (and is shown) as it is so far.
        let log = "2024-05-01T10:00:00Z stdout F a\n2024-05-01T10:00:01Z stderr F b\n2024-05-01T10:00:02Z stdout P c";
        assert_eq!(text(render_all(log.as_bytes(), None, Some(1), false, None)), "c");
        assert_eq!(text(render_all(log.as_bytes(), None, Some(2), false, None)), "b\nc");
        // Nothing shown: reading starts at that line (a follower picks up what comes after it),
        // but its entry belongs to no line shown.
        let t = find_tail_start(log.as_bytes(), log.len() as u64, 0, None, 8).unwrap();
        let last = log.rfind('\n').unwrap() as u64 + 1;
        assert_eq!(t, TailStart { offset: last, from: [log.len() as u64; 2] });
        let mut renderer = Renderer::new(None, false, None);
        renderer.start_at(&t);
        let mut reader = Reader::new(t.offset);
        let mut out = Vec::new();
        let more = format!("{}d\n2024-05-01T10:00:03Z stdout F e\n", &log[last as usize..]);
        reader.feed(more.as_bytes(), &mut |h, b, end| renderer.render(h, b, end, &mut out));
        assert_eq!(text(out), "e\n");
    }

    #[test]
    fn a_huge_entry_and_a_long_run_of_partials_go_out_in_pieces() {
        let mut log = b"2024-05-01T10:00:00Z stdout F before\n".to_vec();
        for _ in 0..100 {
            log.extend_from_slice(b"2024-05-01T10:00:01Z stdout P ");
            log.extend(std::iter::repeat_n(b'p', 1000));
            log.push(b'\n');
        }
        log.extend_from_slice(b"2024-05-01T10:00:02Z stdout F ");
        log.extend(std::iter::repeat_n(b'f', 1 << 20));
        let mut reader = Reader::new(0);
        let (mut pieces, mut biggest, mut total) = (0, 0, 0);
        let mut seen_partials_before_the_end = false;
        for c in log.chunks(4096) {
            reader.feed(c, &mut |h, b, _| {
                pieces += 1;
                biggest = biggest.max(b.len());
                total += b.len();
                seen_partials_before_the_end |= h.partial && total > 0;
            });
            assert!(reader.head.capacity() <= HEADER_MAX);
        }
        reader.finish(&mut |_, b, _| total += b.len());
        assert!(seen_partials_before_the_end);
        assert!(biggest <= 4096, "a piece of {biggest} bytes");
        assert!(pieces > 256, "{pieces} pieces");
        assert_eq!(total, "before".len() + 100 * 1000 + (1 << 20));
        // The tail of one line is that whole line, found without reading it whole.
        let out = render_with(&log, None, Some(1), false, Some(10), 4096, 4096);
        assert_eq!(text(out), "pppppppppp");
        let out = render_with(&log, None, Some(1), false, None, 4096, 4096);
        assert_eq!(out.len(), 100 * 1000 + (1 << 20) + 1);
        assert!(out.starts_with(b"ppp") && out.ends_with(b"fff\n"));
    }

    #[test]
    fn reader_handles_lines_split_across_chunks_and_bad_lines() {
        let mut reader = Reader::new(0);
        let mut got: Vec<(u64, String, bool)> = Vec::new();
        let long_header = format!("2024-05-01T10:00:00Z{} stdout F x\n", "0".repeat(HEADER_MAX));
        let data = format!("2024-05-01T10:00:00Z stdout F ab\ngarbage\n\n{long_header}2024-05-01T10:00:01Z stdout F cd\n2024-05-01T10:00:02Z stdout P ef");
        for chunk in data.as_bytes().chunks(7) {
            reader.feed(chunk, &mut |h, b, end| got.push((h.offset, text(b.to_vec()), end)));
        }
        let joined: String = got.iter().map(|(_, b, end)| format!("{b}{}", if *end { "|" } else { "" })).collect();
        assert_eq!(joined, "ab|cd|ef");
        assert_eq!(reader.malformed, 2);
        let cd = data.find("2024-05-01T10:00:01Z").unwrap() as u64;
        assert!(got.iter().any(|(o, b, _)| *o == cd && b == "cd"));
        reader.finish(&mut |h, b, end| got.push((h.offset, text(b.to_vec()), end)));
        assert!(got.last().unwrap().2);
    }
}
