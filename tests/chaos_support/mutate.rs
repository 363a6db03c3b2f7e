//! A seeded mutational fuzzer over valid samples: each input is a sample with a few random edits
//! (bytes flipped, spans cut, copied or truncated, scalars swapped for awkward values), so most
//! inputs are almost valid and reach past the first check of a parser. Pure and deterministic
//! for a seed, so a failure is replayed with NODELET_CHAOS_SEED.

/// Values that trip parsers: numbers at and past integer limits, quantities with odd suffixes,
/// YAML's special scalars and indicators, escapes, control characters and long strings.
const AWKWARD: &[&str] = &[
    "",
    "-1",
    "0",
    "2147483648",
    "-9223372036854775809",
    "18446744073709551616",
    "1e400",
    "-0.0",
    ".nan",
    "NaN",
    "null",
    "~",
    "true",
    "[]",
    "{}",
    "[[[[",
    "}}",
    "'",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "é",
    "Ki",
    "1Ei",
    "999999999999999999999Pi",
    "0.0000000000001m",
    "-5m",
    "1.5.5",
    "9223372036854775807k",
    "&anchor",
    "*anchor",
    "!!binary",
    "!!python/object",
    "%YAML 1.1",
    "---",
    "...",
    "? ",
    "- ",
    ": ",
    "#",
    "\r\n",
    "\t",
    "\n  \n",
    "../../../../etc/passwd",
    "/",
    "%00",
    "%zz",
    "?a=b&a=c",
    "\r\n\r\n",
    "Transfer-Encoding: chunked",
    "Content-Length: -1",
    "Content-Length: 99999999999999999999",
    "Upgrade: websocket",
    "HTTP/9.9",
];

pub struct Mutator {
    rng: fastrand::Rng,
}

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator { rng: fastrand::Rng::with_seed(seed) }
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.rng.usize(..n.max(1))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A new input from one of `samples`, picked at random.
    pub fn mutate_any<S: AsRef<[u8]>>(&mut self, samples: &[S]) -> Vec<u8> {
        let sample = samples[self.below(samples.len())].as_ref();
        self.mutate(sample)
    }

    /// A new input: `sample` with one to four edits. Never the sample itself.
    pub fn mutate(&mut self, sample: &[u8]) -> Vec<u8> {
        let mut out = sample.to_vec();
        for _ in 0..1 + self.below(4) {
            self.edit(&mut out);
        }
        if out == sample {
            out.push(b'\x7f');
        }
        out
    }

    fn awkward(&mut self) -> Vec<u8> {
        match self.below(8) {
            // a long run of one character, past the sizes a field is expected to have
            0 => vec![*self.pick(b"a9-{[\"'\\/.\x00"); 1 + self.below(70_000)],
            _ => self.pick(AWKWARD).as_bytes().to_vec(),
        }
    }

    fn edit(&mut self, out: &mut Vec<u8>) {
        let len = out.len();
        let at = self.below(len + 1);
        match self.below(7) {
            0 if len > 0 => {
                let i = self.below(len);
                out[i] ^= 1 << self.below(8);
            }
            1 if len > 0 => {
                let i = self.below(len);
                out[i] = self.rng.u8(..);
            }
            2 => {
                let end = (at + 1 + self.below(16)).min(len);
                out.drain(at..end);
            }
            3 => {
                let end = (at + 1 + self.below(64)).min(len);
                let copy = out[at..end].to_vec();
                let to = self.below(out.len() + 1);
                out.splice(to..to, copy);
            }
            4 => {
                let value = self.awkward();
                out.splice(at..at, value);
            }
            5 => self.replace_scalar(out),
            _ => out.truncate(at),
        }
    }

    /// Swaps the value after a `: ` or `=` (a YAML or JSON scalar, a header, a query value) for
    /// an awkward one, so the structure around it stays valid.
    fn replace_scalar(&mut self, out: &mut Vec<u8>) {
        let starts: Vec<usize> =
            out.windows(2).enumerate().filter(|(_, w)| w == b": " || w[0] == b'=').map(|(i, w)| if w[0] == b'=' { i + 1 } else { i + 2 }).collect();
        if starts.is_empty() {
            return;
        }
        let start = *self.pick(&starts);
        let end = out[start..].iter().position(|b| matches!(b, b'\n' | b'\r' | b',' | b'}' | b'&' | b' ')).map_or(out.len(), |p| start + p);
        let value = self.awkward();
        out.splice(start..end, value);
    }
}

/// The seed of this run: NODELET_CHAOS_SEED, else one from the clock (printed, to replay it).
pub fn seed() -> u64 {
    std::env::var("NODELET_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_none_is_the_sample() {
        let sample = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n";
        let (mut a, mut b) = (Mutator::new(7), Mutator::new(7));
        for _ in 0..200 {
            let (x, y) = (a.mutate(sample), b.mutate(sample));
            assert_eq!(x, y);
            assert_ne!(x, sample.to_vec());
        }
    }
}
