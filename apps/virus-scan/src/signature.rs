//! ClamAV extended signatures (`.ndb`): `Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]`.
//!
//! The hex body is split at its variable gaps into *parts*: runs of fixed-width elements. A part
//! holds exact bytes, nibble masks (`a?`, `?a`), any-byte (`??`) and alternatives of equal width
//! (`(aa|bbcc)` is refused, `(aa|bb)` and `!(aa|bb)` are not). Gaps are `*`, `{n}`, `{-n}`, `{n-}`,
//! `{n-m}` and the anchored form `[n-m]`.

use std::fmt;

/// Which files a signature applies to (ClamAV target types; the ones this scanner knows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// 0: any file.
    Any,
    /// 1: Portable Executable files.
    Pe,
}

/// Where a match must start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// `*`: anywhere.
    Any,
    /// `n` or `n,shift`: at `n ..= n + shift` from the start of the file.
    Start { at: u64, shift: u64 },
    /// `EOF-n` or `EOF-n,shift`: at `len - n ..= len - n + shift`.
    End { back: u64, shift: u64 },
    /// `EP+n`, `EP-n` (with optional `,shift`): relative to a PE file's entry point.
    EntryPoint { delta: i64, shift: u64 },
}

impl Offset {
    /// The inclusive range of allowed match starts in a file of `len` bytes, or `None` when no
    /// start is possible (the file is too short, or has no entry point).
    pub fn window(&self, len: u64, entry_point: Option<u64>) -> Option<(u64, u64)> {
        let (lo, shift) = match *self {
            Offset::Any => return Some((0, len)),
            Offset::Start { at, shift } => (at, shift),
            Offset::End { back, shift } => (len.checked_sub(back)?, shift),
            Offset::EntryPoint { delta, shift } => {
                (entry_point?.checked_add_signed(delta)?, shift)
            }
        };
        (lo <= len).then(|| (lo, lo.saturating_add(shift).min(len)))
    }
}

/// One fixed-width element of a part. Eight bytes: a database holds millions of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Byte(u8),
    /// Matches `b` when `b & mask == value`.
    Nibble { value: u8, mask: u8 },
    AnyByte,
    /// One of `count` byte strings of `width` bytes, stored one after another at `at` in the
    /// signature's [`Signature::alts`] (`negated`: none of them).
    Alt { at: u32, count: u8, width: u8, negated: bool },
}

impl Elem {
    pub fn width(&self) -> usize {
        match self {
            Elem::Alt { width, .. } => usize::from(*width),
            _ => 1,
        }
    }

    /// Whether the element matches `data` at its start (`data` holds at least `width` bytes).
    fn matches(&self, alts: &[u8], data: &[u8]) -> bool {
        match *self {
            Elem::Byte(b) => data[0] == b,
            Elem::Nibble { value, mask } => data[0] & mask == value,
            Elem::AnyByte => true,
            Elem::Alt { at, count, width, negated } => {
                let (at, width) = (at as usize, usize::from(width));
                let options = &alts[at..at + usize::from(count) * width];
                let hit = options.chunks_exact(width).any(|o| data.starts_with(o));
                hit != negated
            }
        }
    }
}

/// A run of fixed-width elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub elems: Vec<Elem>,
    pub width: usize,
}

/// The number of bytes allowed between two parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub min: usize,
    /// `None`: unbounded (`*`, `{n-}`).
    pub max: Option<usize>,
}

/// One parsed signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub target: Target,
    pub offset: Offset,
    pub parts: Vec<Part>,
    /// `gaps[i]` separates `parts[i]` and `parts[i + 1]`.
    pub gaps: Vec<Gap>,
    /// The options of every alternative, one after another.
    pub alts: Vec<u8>,
}

/// Where the anchor (the longest run of exact bytes, which the automaton looks for) sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub bytes: Vec<u8>,
    pub part: usize,
    /// Byte offset of the anchor inside its part.
    pub offset: usize,
}

/// The shortest anchor accepted: ClamAV also wants two fixed bytes in a row.
pub const MIN_ANCHOR: usize = 2;
/// Longer runs are cut: longer anchors do not make the search faster, only the automaton larger.
pub const MAX_ANCHOR: usize = 16;

impl Signature {
    /// Whether part `p` matches `data` at `at`.
    pub fn part_matches(&self, p: usize, data: &[u8], at: usize) -> bool {
        let part = &self.parts[p];
        let Some(window) = at.checked_add(part.width).and_then(|end| data.get(at..end)) else {
            return false;
        };
        let mut pos = 0;
        part.elems.iter().all(|e| {
            let ok = e.matches(&self.alts, &window[pos..]);
            pos += e.width();
            ok
        })
    }

    /// The longest run of exact bytes (the first one on ties), cut to [`MAX_ANCHOR`].
    pub fn anchor(&self) -> Anchor {
        let mut best = Anchor { bytes: Vec::new(), part: 0, offset: 0 };
        for (p, part) in self.parts.iter().enumerate() {
            let mut run: Vec<u8> = Vec::new();
            let mut run_start = 0;
            let mut pos = 0;
            for e in part.elems.iter().chain(std::iter::once(&Elem::AnyByte)) {
                if let Elem::Byte(b) = e {
                    if run.is_empty() {
                        run_start = pos;
                    }
                    run.push(*b);
                } else {
                    if run.len() > best.bytes.len() {
                        best = Anchor { bytes: std::mem::take(&mut run), part: p, offset: run_start };
                    }
                    run.clear();
                }
                pos += e.width();
            }
        }
        best.bytes.truncate(MAX_ANCHOR);
        best
    }
}

/// Why a line of a `.ndb` file was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// A well-formed signature for a target type or offset form this scanner does not handle;
    /// skipped, as a scanner skips signatures meant for a newer engine.
    Unsupported(String),
    /// A malformed line.
    Malformed(String),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Unsupported(s) => write!(f, "unsupported: {s}"),
            LineError::Malformed(s) => write!(f, "{s}"),
        }
    }
}

fn malformed(s: impl Into<String>) -> LineError {
    LineError::Malformed(s.into())
}

/// Parses one `.ndb` line (not a comment, not empty).
pub fn parse_line(line: &str) -> Result<Signature, LineError> {
    let fields: Vec<&str> = line.split(':').collect();
    if !(4..=6).contains(&fields.len()) {
        return Err(malformed(format!(
            "expected `Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]`, found {} fields",
            fields.len()
        )));
    }
    let name = fields[0].trim();
    if name.is_empty() {
        return Err(malformed("empty signature name"));
    }
    let target = match fields[1].trim() {
        "0" => Target::Any,
        "1" => Target::Pe,
        t if t.parse::<u32>().is_ok() => {
            return Err(LineError::Unsupported(format!("target type {t}")));
        }
        t => return Err(malformed(format!("target type `{t}` is not a number"))),
    };
    let offset = parse_offset(fields[2].trim())?;
    let (parts, gaps, alts) = parse_body(fields[3].trim())?;
    let sig = Signature { name: name.to_string(), target, offset, parts, gaps, alts };
    if sig.anchor().bytes.len() < MIN_ANCHOR {
        return Err(malformed(format!(
            "no run of {MIN_ANCHOR} fixed bytes to search for"
        )));
    }
    Ok(sig)
}

fn number(s: &str, what: &str) -> Result<u64, LineError> {
    s.parse().map_err(|_| malformed(format!("{what} `{s}` is not a number")))
}

fn parse_offset(s: &str) -> Result<Offset, LineError> {
    if s == "*" {
        return Ok(Offset::Any);
    }
    let (base, shift) = match s.split_once(',') {
        Some((b, sh)) => (b, number(sh, "offset shift")?),
        None => (s, 0),
    };
    if let Some(back) = base.strip_prefix("EOF-") {
        return Ok(Offset::End { back: number(back, "EOF offset")?, shift });
    }
    if let Some(rest) = base.strip_prefix("EP") {
        let delta = match (rest.strip_prefix('+'), rest.strip_prefix('-')) {
            (Some(n), _) => number(n, "EP offset")? as i64,
            (_, Some(n)) => -(number(n, "EP offset")? as i64),
            _ => return Err(malformed(format!("offset `{s}`: EP must be followed by + or -"))),
        };
        return Ok(Offset::EntryPoint { delta, shift });
    }
    if base.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(Offset::Start { at: number(base, "offset")?, shift });
    }
    if base.starts_with('S') || base.starts_with("VI") || base.starts_with('$') {
        return Err(LineError::Unsupported(format!("offset form `{s}`")));
    }
    Err(malformed(format!("offset `{s}` is not `*`, `n`, `EOF-n` or `EP±n`")))
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn parse_hex_bytes(s: &str) -> Result<Vec<u8>, LineError> {
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(2) {
        return Err(malformed(format!("`{s}` is not a whole number of hex bytes")));
    }
    b.chunks(2)
        .map(|c| match (hex_digit(c[0]), hex_digit(c[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(malformed(format!("`{s}` is not hex"))),
        })
        .collect()
}

fn parse_gap(inner: &str) -> Result<Gap, LineError> {
    let n = |s: &str| -> Result<usize, LineError> {
        s.parse().map_err(|_| malformed(format!("gap `{{{inner}}}` is not `n`, `-n`, `n-` or `n-m`")))
    };
    let gap = match inner.split_once('-') {
        None => {
            let v = n(inner)?;
            Gap { min: v, max: Some(v) }
        }
        Some(("", m)) => Gap { min: 0, max: Some(n(m)?) },
        Some((lo, "")) => Gap { min: n(lo)?, max: None },
        Some((lo, hi)) => Gap { min: n(lo)?, max: Some(n(hi)?) },
    };
    if gap.max.is_some_and(|m| m < gap.min) {
        return Err(malformed(format!("gap `{inner}` has its maximum below its minimum")));
    }
    Ok(gap)
}

/// A signature body: its parts, the gaps between them and the pool of alternatives' options.
pub type Body = (Vec<Part>, Vec<Gap>, Vec<u8>);

/// Splits a hex body into parts, gaps and the pool of alternatives' options.
pub fn parse_body(body: &str) -> Result<Body, LineError> {
    let b = body.as_bytes();
    let mut parts = Vec::new();
    let mut gaps = Vec::new();
    let mut alts = Vec::new();
    let mut elems: Vec<Elem> = Vec::new();
    let mut i = 0;
    let close_part = |elems: &mut Vec<Elem>, parts: &mut Vec<Part>| -> Result<(), LineError> {
        if elems.is_empty() {
            return Err(malformed("a gap must sit between two runs of bytes"));
        }
        let width = elems.iter().map(Elem::width).sum();
        let mut elems = std::mem::take(elems);
        elems.shrink_to_fit();
        parts.push(Part { elems, width });
        Ok(())
    };
    while i < b.len() {
        match b[i] {
            b'*' => {
                close_part(&mut elems, &mut parts)?;
                gaps.push(Gap { min: 0, max: None });
                i += 1;
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { '}' } else { ']' };
                let end = body[i..]
                    .find(close)
                    .ok_or_else(|| malformed(format!("`{}` without `{close}`", open as char)))?;
                let gap = parse_gap(&body[i + 1..i + end])?;
                close_part(&mut elems, &mut parts)?;
                gaps.push(gap);
                i += end + 1;
            }
            b'!' | b'(' => {
                let negated = b[i] == b'!';
                let start = if negated { i + 1 } else { i };
                if b.get(start) != Some(&b'(') {
                    return Err(malformed("`!` must be followed by `(`"));
                }
                let end = body[start..]
                    .find(')')
                    .ok_or_else(|| malformed("`(` without `)`"))?;
                let options = body[start + 1..start + end]
                    .split('|')
                    .map(parse_hex_bytes)
                    .collect::<Result<Vec<_>, _>>()?;
                if options.iter().any(|o| o.len() != options[0].len()) {
                    return Err(LineError::Unsupported(
                        "alternatives of different widths".to_string(),
                    ));
                }
                let (Ok(count), Ok(width), Ok(at)) =
                    (u8::try_from(options.len()), u8::try_from(options[0].len()), u32::try_from(alts.len()))
                else {
                    return Err(LineError::Unsupported("more than 255 alternatives or wider than 255 bytes".into()));
                };
                alts.extend(options.concat());
                elems.push(Elem::Alt { at, count, width, negated });
                i = start + end + 1;
            }
            _ => {
                let (h, l) = (b[i], *b.get(i + 1).ok_or_else(|| malformed("odd number of hex digits"))?);
                let elem = match (h, l, hex_digit(h), hex_digit(l)) {
                    (b'?', b'?', _, _) => Elem::AnyByte,
                    (b'?', _, _, Some(lo)) => Elem::Nibble { value: lo, mask: 0x0f },
                    (_, b'?', Some(hi), _) => Elem::Nibble { value: hi << 4, mask: 0xf0 },
                    (_, _, Some(hi), Some(lo)) => Elem::Byte(hi << 4 | lo),
                    _ => {
                        return Err(malformed(format!(
                            "`{}{}` at {i} is not a hex byte, `??`, a nibble, a gap or an alternative",
                            h as char, l as char
                        )));
                    }
                };
                elems.push(elem);
                i += 2;
            }
        }
    }
    close_part(&mut elems, &mut parts)?;
    parts.shrink_to_fit();
    gaps.shrink_to_fit();
    alts.shrink_to_fit();
    Ok((parts, gaps, alts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_element_and_gap() {
        let s = parse_line("Test.A-1:0:EOF-20,4:4d5a??a?{2-4}?b(01|02)*!(ff|fe)0102[1-2]0304").unwrap();
        assert_eq!(s.offset, Offset::End { back: 20, shift: 4 });
        assert_eq!(s.parts.len(), 4);
        assert_eq!(s.parts[0].elems[0], Elem::Byte(0x4d));
        assert_eq!(s.parts[0].elems[3], Elem::Nibble { value: 0xa0, mask: 0xf0 });
        assert_eq!(s.parts[1].elems[0], Elem::Nibble { value: 0x0b, mask: 0x0f });
        assert_eq!(s.gaps, vec![
            Gap { min: 2, max: Some(4) },
            Gap { min: 0, max: None },
            Gap { min: 1, max: Some(2) },
        ]);
        assert_eq!(s.anchor(), Anchor { bytes: vec![0x4d, 0x5a], part: 0, offset: 0 });
        assert_eq!(s.parts[2].width, 3);
    }

    #[test]
    fn refuses_malformed_and_skips_unsupported() {
        assert!(matches!(parse_line("A:0:*:4d5"), Err(LineError::Malformed(_))));
        assert!(matches!(parse_line("A:0:*:4d??5a"), Err(LineError::Malformed(_))));
        assert!(matches!(parse_line("A:0:*:*4d5a"), Err(LineError::Malformed(_))));
        assert!(matches!(parse_line("A:0:x:4d5a"), Err(LineError::Malformed(_))));
        assert!(matches!(parse_line("A:3:*:4d5a"), Err(LineError::Unsupported(_))));
        assert!(matches!(parse_line("A:0:S1+4:4d5a"), Err(LineError::Unsupported(_))));
        assert!(matches!(parse_line("A:0:*:4d5a{5-2}00"), Err(LineError::Malformed(_))));
    }
}
