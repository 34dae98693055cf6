//! A loaded signature database and the scan of one file against it.
//!
//! Every signature contributes its anchor (its longest run of exact bytes) to one Aho-Corasick
//! automaton; one pass over a file finds every anchor occurrence, and each is verified against the
//! whole signature: the anchor's part in place, the parts before it backwards and the parts after it
//! forwards within their gaps, the first part's start within the signature's offset window.

use crate::ac::Automaton;
use crate::pe;
use crate::signature::{Anchor, LineError, Signature, Target, parse_line};

/// A line of a database file that was not loaded.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub file: String,
    pub line: usize,
    pub reason: LineError,
}

#[derive(Debug)]
pub struct Database {
    pub signatures: Vec<Signature>,
    /// Where each signature's anchor sits: (part, byte offset in the part).
    anchors: Vec<(u32, u32)>,
    automaton: Automaton,
}

impl Database {
    /// Parses `.ndb` texts (`(file name, contents)`): well-formed lines of kinds this scanner does
    /// not handle are returned as skipped, malformed lines are an error naming file and line.
    pub fn load(files: &[(String, String)]) -> Result<(Database, Vec<Skipped>), String> {
        // One slot per line up front: a database holds hundreds of thousands of signatures.
        let mut signatures = Vec::with_capacity(files.iter().map(|(_, t)| t.lines().count()).sum());
        let mut skipped = Vec::new();
        for (file, text) in files {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                match parse_line(line) {
                    Ok(sig) => signatures.push(sig),
                    Err(reason @ LineError::Unsupported(_)) => {
                        skipped.push(Skipped { file: file.clone(), line: n + 1, reason })
                    }
                    Err(LineError::Malformed(why)) => {
                        return Err(format!("{file}:{}: malformed signature: {why}", n + 1));
                    }
                }
            }
        }
        signatures.shrink_to_fit();
        Ok((Database::new(signatures), skipped))
    }

    pub fn new(signatures: Vec<Signature>) -> Database {
        let mut bytes = Vec::with_capacity(signatures.len());
        let mut anchors = Vec::with_capacity(signatures.len());
        for s in &signatures {
            let Anchor { bytes: b, part, offset } = s.anchor();
            bytes.push(b);
            anchors.push((part as u32, offset as u32));
        }
        let automaton = Automaton::new(&bytes);
        Database { signatures, anchors, automaton }
    }

    pub fn automaton_states(&self) -> usize {
        self.automaton.states()
    }

    /// The indices of the signatures that match `data`, ascending.
    pub fn scan(&self, data: &[u8]) -> Vec<usize> {
        let entry = pe::entry_point(data);
        let is_pe = entry.is_some();
        let entry = entry.flatten();
        let mut hits: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.automaton.find_all(data, |id, at| {
            let i = id as usize;
            if seen.contains(&i) {
                return;
            }
            let sig = &self.signatures[i];
            if sig.target == Target::Pe && !is_pe {
                return;
            }
            let (part, offset) = self.anchors[i];
            if verify(sig, part as usize, offset as usize, data, at, entry) {
                seen.insert(i);
                hits.push(i);
            }
        });
        hits.sort_unstable();
        hits
    }
}

/// Whether `sig` matches `data` with its anchor, `offset` bytes into part `p`, at `at`.
fn verify(sig: &Signature, p: usize, offset: usize, data: &[u8], at: usize, entry: Option<u64>) -> bool {
    let Some((lo, hi)) = sig.offset.window(data.len() as u64, entry) else { return false };
    let Some(start) = at.checked_sub(offset) else { return false };
    if !sig.part_matches(p, data, start) {
        return false;
    }
    let window = (lo as usize, hi as usize);
    before(sig, data, p, start, window) && after(sig, data, p, start + sig.parts[p].width)
}

/// Candidate starts of a part that follows (or precedes) another at `base` across `gap`.
fn gap_range(base: usize, gap: crate::signature::Gap, limit: usize) -> (usize, usize) {
    let lo = base.saturating_add(gap.min);
    let hi = gap.max.map_or(limit, |m| base.saturating_add(m)).min(limit);
    (lo, hi)
}

/// Whether parts `p + 1 ..` can follow part `p`, which ends at `end`.
fn after(sig: &Signature, data: &[u8], p: usize, end: usize) -> bool {
    let Some(&gap) = sig.gaps.get(p) else { return true };
    let next = &sig.parts[p + 1];
    let (lo, hi) = gap_range(end, gap, data.len());
    // With an unbounded gap after the next part, its earliest match leaves the most room.
    let greedy = sig.gaps.get(p + 1).is_some_and(|g| g.max.is_none());
    for s in lo..=hi {
        if sig.part_matches(p + 1, data, s) {
            if after(sig, data, p + 1, s + next.width) {
                return true;
            }
            if greedy {
                return false;
            }
        }
    }
    false
}

/// Whether parts `.. p` can precede part `p`, which starts at `start`, with the first part's
/// start inside `window`.
fn before(sig: &Signature, data: &[u8], p: usize, start: usize, window: (usize, usize)) -> bool {
    if p == 0 {
        return (window.0..=window.1).contains(&start);
    }
    let prev = &sig.parts[p - 1];
    let gap = sig.gaps[p - 1];
    // The previous part ends `gap` bytes before `start`: its start lies in this range.
    let Some(latest_end) = start.checked_sub(gap.min) else { return false };
    let earliest_end = gap.max.map_or(0, |m| start.saturating_sub(m));
    let Some(latest) = latest_end.checked_sub(prev.width) else { return false };
    let earliest = earliest_end.saturating_sub(prev.width);
    let (mut lo, mut hi) = (earliest, latest);
    if p == 1 {
        lo = lo.max(window.0);
        hi = hi.min(window.1);
    }
    let greedy = p > 1 && sig.gaps[p - 2].max.is_none();
    for s in (lo..=hi).rev() {
        if sig.part_matches(p - 1, data, s) {
            if before(sig, data, p - 1, s, window) {
                return true;
            }
            if greedy {
                return false;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{Elem, parse_body};

    /// Backtracking over every start: the definition of a match, with no automaton or pruning.
    fn naive(sig: &Signature, data: &[u8], entry: Option<u64>) -> bool {
        fn rest(sig: &Signature, data: &[u8], p: usize, at: usize) -> bool {
            if !sig.part_matches(p, data, at) {
                return false;
            }
            let end = at + sig.parts[p].width;
            match sig.gaps.get(p) {
                None => true,
                Some(g) => {
                    let hi = g.max.map_or(data.len(), |m| end + m).min(data.len());
                    (end + g.min..=hi).any(|s| rest(sig, data, p + 1, s))
                }
            }
        }
        let Some((lo, hi)) = sig.offset.window(data.len() as u64, entry) else { return false };
        (lo as usize..=hi as usize).any(|s| rest(sig, data, 0, s))
    }

    #[test]
    fn verification_agrees_with_backtracking() {
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let hex = |b: u64| format!("{:02x}", b);
        for _ in 0..3000 {
            // Bodies over a 3-letter alphabet (0x00..0x02) so that partial and repeated matches
            // are common; every body has one exact 2-byte run for its anchor.
            let mut body = String::new();
            let parts = 1 + next(3);
            for p in 0..parts {
                if p > 0 {
                    body.push_str(match next(5) {
                        0 => "*".to_string(),
                        1 => format!("{{{}}}", next(3)),
                        2 => format!("{{-{}}}", next(4)),
                        3 => format!("{{{}-}}", next(3)),
                        _ => format!("{{{}-{}}}", next(2), 2 + next(3)),
                    }
                    .as_str());
                }
                for _ in 0..next(3) {
                    body.push_str(match next(4) {
                        0 => "??".to_string(),
                        1 => format!("?{}", next(3)),
                        2 => format!("({}|{})", hex(next(3)), hex(next(3))),
                        _ => hex(next(3)),
                    }
                    .as_str());
                }
                body.push_str(&hex(next(3)));
                body.push_str(&hex(next(3)));
            }
            let offset = match next(4) {
                0 => format!("{}", next(6)),
                1 => format!("EOF-{},{}", 2 + next(8), next(3)),
                2 => format!("{},{}", next(4), next(6)),
                _ => "*".to_string(),
            };
            let line = format!("T:0:{offset}:{body}");
            let sig = parse_line(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let db = Database::new(vec![sig.clone()]);
            for _ in 0..8 {
                let data: Vec<u8> = (0..next(40)).map(|_| next(3) as u8).collect();
                let want = naive(&sig, &data, None);
                assert_eq!(!db.scan(&data).is_empty(), want, "{line} on {data:?}");
            }
        }
    }

    #[test]
    fn alternatives_and_nibbles() {
        let (parts, _, _) = parse_body("(41|42)?c!(00|01)").unwrap();
        assert_eq!(parts[0].elems[1], Elem::Nibble { value: 0x0c, mask: 0x0f });
        let db = Database::new(vec![parse_line("T:0:*:5a5a(41|42)?c!(00|01)").unwrap()]);
        assert_eq!(db.scan(b"..ZZB\x1c\x02.."), vec![0]);
        assert!(db.scan(b"..ZZB\x1c\x01..").is_empty());
        assert!(db.scan(b"..ZZC\x1c\x02..").is_empty());
        assert!(db.scan(b"..ZZB\x1d\x02..").is_empty());
    }
}
