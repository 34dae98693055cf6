//! virus-scan inputs: a ClamAV-style `.ndb` database and a tree of files (text, binary data and
//! PE executables) of the paper's total sizes, some with signatures planted, some with decoys
//! (a signature's bytes with one fixed byte changed), one with the EICAR test string.
//!
//! This writer has its own model of the signature format, independent of the scanner's parser: it
//! builds a signature, prints it as hex and plants a byte string that satisfies it.

use crate::rng::Rng;
use crate::{Size, write_file};
use std::collections::BTreeMap;
use std::path::Path;

/// The EICAR anti-virus test file (eicar.org): every scanner must report it.
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
pub const EICAR_NAME: &str = "Eicar-Test-Signature";

/// Signatures in the database (the same for every size, as a scanner's database is).
const SIGNATURES: usize = 250_000;

#[derive(Clone, Debug)]
enum El {
    Byte(u8),
    Any,
    High(u8),
    Low(u8),
    Alt(Vec<u8>),
    NotAlt(Vec<u8>),
}

#[derive(Clone, Copy, Debug)]
enum Off {
    Any,
    Start(usize, usize),
    End(usize, usize),
    Ep(usize, usize),
}

#[derive(Clone, Debug)]
struct Sig {
    name: String,
    pe: bool,
    offset: Off,
    parts: Vec<Vec<El>>,
    /// Between parts: (min, max), `None` = unbounded.
    gaps: Vec<(usize, Option<usize>)>,
}

impl Sig {
    fn ndb(&self) -> String {
        let mut body = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                body.push_str(&match self.gaps[i - 1] {
                    (0, None) => "*".to_string(),
                    (n, None) => format!("{{{n}-}}"),
                    (n, Some(m)) if n == m => format!("{{{n}}}"),
                    (0, Some(m)) => format!("{{-{m}}}"),
                    (n, Some(m)) => format!("{{{n}-{m}}}"),
                });
            }
            for e in part {
                let alts = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join("|");
                body.push_str(&match e {
                    El::Byte(b) => format!("{b:02x}"),
                    El::Any => "??".to_string(),
                    El::High(h) => format!("{h:x}?"),
                    El::Low(l) => format!("?{l:x}"),
                    El::Alt(v) => format!("({})", alts(v)),
                    El::NotAlt(v) => format!("!({})", alts(v)),
                });
            }
        }
        let offset = match self.offset {
            Off::Any => "*".to_string(),
            Off::Start(at, 0) => format!("{at}"),
            Off::Start(at, s) => format!("{at},{s}"),
            Off::End(back, 0) => format!("EOF-{back}"),
            Off::End(back, s) => format!("EOF-{back},{s}"),
            Off::Ep(d, 0) => format!("EP+{d}"),
            Off::Ep(d, s) => format!("EP+{d},{s}"),
        };
        format!("{}:{}:{offset}:{body}", self.name, u8::from(self.pe))
    }

    /// A byte string that matches, and the ranges of its exact-byte runs (for decoys).
    fn instance(&self, rng: &mut Rng) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut out = Vec::new();
        let mut runs = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                let (min, max) = self.gaps[i - 1];
                let len = rng.range(min, max.unwrap_or(min + 32).min(min + 32));
                for _ in 0..len {
                    out.push(rng.byte());
                }
            }
            let mut run_start = None;
            for e in part {
                match e {
                    El::Byte(_) => {
                        run_start.get_or_insert(out.len());
                    }
                    _ => {
                        if let Some(s) = run_start.take() {
                            runs.push((s, out.len()));
                        }
                    }
                }
                out.push(match e {
                    El::Byte(b) => *b,
                    El::Any => rng.byte(),
                    El::High(h) => h << 4 | (rng.byte() & 0x0f),
                    El::Low(l) => (rng.byte() & 0xf0) | l,
                    El::Alt(v) => *rng.pick(v),
                    El::NotAlt(v) => loop {
                        let b = rng.byte();
                        if !v.contains(&b) {
                            break b;
                        }
                    },
                });
            }
            if let Some(s) = run_start.take() {
                runs.push((s, out.len()));
            }
        }
        (out, runs)
    }
}

const FAMILIES: &[&str] = &[
    "Win.Trojan.Agent",
    "Win.Worm.Allaple",
    "Win.Ransomware.Locky",
    "Win.Downloader.Zlob",
    "Doc.Dropper.Agent",
    "Unix.Malware.Mirai",
    "Js.Downloader.Nemucod",
    "Html.Phishing.Bank",
    "Pdf.Exploit.CVE_2018_4993",
    "Andr.Spyware.Joker",
];

fn run(rng: &mut Rng, len: std::ops::RangeInclusive<usize>) -> Vec<El> {
    (0..rng.range(*len.start(), *len.end())).map(|_| El::Byte(rng.byte())).collect()
}

fn signature(rng: &mut Rng, id: usize) -> Sig {
    let pe = rng.chance(15);
    let offset = if pe {
        if rng.chance(50) { Off::Ep(rng.range(0, 48), rng.range(0, 1) * rng.range(0, 16)) } else { Off::Any }
    } else {
        match rng.below(20) {
            0 => Off::Start(rng.range(0, 256), rng.range(0, 1) * rng.range(0, 64)),
            1 | 2 => Off::End(0, rng.range(0, 1) * rng.range(0, 16)), // back filled below
            _ => Off::Any,
        }
    };
    // Signatures anchored to the end of the file are one part, so their width is fixed.
    let parts_n = if matches!(offset, Off::End(..)) { 1 } else { rng.range(1, 3) };
    let mut parts = Vec::new();
    let mut gaps = Vec::new();
    for p in 0..parts_n {
        if p > 0 {
            gaps.push(match rng.below(20) {
                0..=5 => (0, None),
                6..=9 => {
                    let n = rng.range(1, 24);
                    (n, Some(n))
                }
                10..=12 => (0, Some(rng.range(1, 48))),
                13..=14 => (rng.range(1, 16), None),
                _ => {
                    let n = rng.range(0, 16);
                    (n, Some(n + rng.range(1, 48)))
                }
            });
        }
        // Each part starts and ends with exact runs of at least 4 bytes: a decoy with one of
        // them changed cannot match by chance elsewhere in a file.
        let mut part = run(rng, 4..=12);
        for _ in 0..rng.range(0, 6) {
            part.push(match rng.below(6) {
                0 => El::Byte(rng.byte()),
                1 => El::Any,
                2 => El::High(rng.byte() >> 4),
                3 => El::Low(rng.byte() & 0x0f),
                4 => El::Alt((0..rng.range(2, 4)).map(|_| rng.byte()).collect()),
                _ => El::NotAlt((0..rng.range(1, 3)).map(|_| rng.byte()).collect()),
            });
        }
        if part.len() > 12 || rng.chance(60) {
            part.extend(run(rng, 4..=8));
        }
        parts.push(part);
    }
    let mut sig = Sig {
        name: format!("{}-{}-0", rng.pick(FAMILIES), 9_000_000 + id),
        pe,
        offset,
        parts,
        gaps,
    };
    if let Off::End(_, shift) = sig.offset {
        let width = sig.parts[0].len();
        sig.offset = Off::End(width + shift + rng.range(0, 200), shift);
    }
    sig
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Binary,
    Pe,
}

const WORDS: &[&str] = &[
    "invoice", "meeting", "the", "report", "quarterly", "attached", "please", "review", "budget",
    "project", "deadline", "team", "update", "schedule", "contract", "client", "of", "and", "to",
    "for", "with", "draft", "final", "notes", "agenda", "travel", "expense", "summary", "offer",
];

fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(rng.pick(WORDS).as_bytes());
        out.push(if rng.chance(8) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

fn binary(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut i = 0;
    while i < len {
        let n = rng.range(16, 512).min(len - i);
        // Random bytes with runs of zeros between, as in real binary formats.
        if !rng.chance(30) {
            rng.fill(&mut out[i..i + n]);
        }
        i += n;
    }
    out
}

/// A minimal PE32 image: DOS header, PE headers, `.text`, `.data` and `.rsrc`; returns the bytes
/// and the file offset of the entry point.
fn pe_file(rng: &mut Rng, len: usize) -> (Vec<u8>, usize) {
    let mut d = binary(rng, len);
    let put16 = |d: &mut Vec<u8>, at: usize, v: u16| d[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |d: &mut Vec<u8>, at: usize, v: u32| d[at..at + 4].copy_from_slice(&v.to_le_bytes());
    d[..0x400].fill(0);
    d[0..2].copy_from_slice(b"MZ");
    put32(&mut d, 0x3c, 0x80);
    d[0x80..0x84].copy_from_slice(b"PE\0\0");
    let coff = 0x84;
    put16(&mut d, coff, 0x014c);
    put16(&mut d, coff + 2, 3);
    put16(&mut d, coff + 16, 224);
    let opt = coff + 20;
    put16(&mut d, opt, 0x010b);
    let body = len - 0x400;
    let text_raw = (body / 2) as u32;
    let data_raw = (body / 4) as u32;
    let rsrc_raw = body as u32 - text_raw - data_raw;
    let entry_in_text = rng.range(0, (text_raw as usize / 2).max(1)) as u32;
    put32(&mut d, opt + 16, 0x1000 + entry_in_text);
    put32(&mut d, opt + 60, 0x400);
    let table = opt + 224;
    let mut raw = 0x400u32;
    let mut va = 0x1000u32;
    for (i, (name, size)) in [(b".text\0\0\0", text_raw), (b".data\0\0\0", data_raw), (b".rsrc\0\0\0", rsrc_raw)]
        .into_iter()
        .enumerate()
    {
        let s = table + 40 * i;
        d[s..s + 8].copy_from_slice(name);
        put32(&mut d, s + 8, size);
        put32(&mut d, s + 12, va);
        put32(&mut d, s + 16, size);
        put32(&mut d, s + 20, raw);
        raw += size;
        va += size.div_ceil(0x1000) * 0x1000;
    }
    (d, 0x400 + entry_in_text as usize)
}

struct File {
    path: String,
    data: Vec<u8>,
    kind: Kind,
    entry: usize,
    taken: Vec<(usize, usize)>,
}

impl File {
    /// Writes `bytes` at a free place allowed by `offset`; false when there is none.
    fn plant(&mut self, rng: &mut Rng, bytes: &[u8], offset: Off) -> bool {
        let len = self.data.len();
        if bytes.len() > len {
            return false;
        }
        for _ in 0..32 {
            let at = match offset {
                Off::Any => rng.range(0, len - bytes.len()),
                Off::Start(a, s) => a + rng.range(0, s),
                Off::End(back, s) => match len.checked_sub(back) {
                    Some(a) => a + rng.range(0, s),
                    None => return false,
                },
                Off::Ep(d, s) => self.entry + d + rng.range(0, s),
            };
            let end = at + bytes.len();
            // Keep clear of the PE headers, whose fields the scanner reads.
            let floor = if self.kind == Kind::Pe { 0x400 } else { 0 };
            if end > len || at < floor || self.taken.iter().any(|&(s, e)| at < e && s < end) {
                if matches!(offset, Off::Any) {
                    continue;
                }
                return false;
            }
            self.data[at..end].copy_from_slice(bytes);
            self.taken.push((at, end));
            return true;
        }
        false
    }
}

pub fn generate(size: Size, seed: u64, out: &Path) -> Result<serde_json::Value, String> {
    let root = Rng::new(seed).fork("virus-scan");
    let mut rng = root.fork("signatures");
    let sigs: Vec<Sig> = (0..SIGNATURES).map(|i| signature(&mut rng, i)).collect();
    let mut db = String::from("# Generated by gen-data (clonecloud): ClamAV extended signature format.\n");
    db.push_str(&format!("{EICAR_NAME}:0:0:{}\n", EICAR.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    for s in &sigs {
        db.push_str(&s.ndb());
        db.push('\n');
    }
    write_file(&out.join("signatures/main.ndb"), db.as_bytes())?;

    let (total, average) = match size {
        Size::Small => (100_000, 5_000),
        Size::Medium => (1_000_000, 20_000),
        Size::Large => (10_000_000, 50_000),
    };
    let mut rng = root.fork(size.name());
    let mut files = Vec::new();
    let mut remaining = total - EICAR.len();
    let dirs = ["docs", "downloads", "mail/inbox", "bin", "cache"];
    while remaining > 0 {
        let mut len = rng.range(average / 4, average * 7 / 4).min(remaining);
        if remaining - len < 512 {
            len = remaining;
        }
        remaining -= len;
        let kind = match rng.below(10) {
            0..=3 => Kind::Text,
            4..=6 if len >= 4096 => Kind::Pe,
            _ => Kind::Binary,
        };
        let (data, entry, ext) = match kind {
            Kind::Text => (text(&mut rng, len), 0, "txt"),
            Kind::Binary => (binary(&mut rng, len), 0, "bin"),
            Kind::Pe => {
                let (d, e) = pe_file(&mut rng, len);
                (d, e, "exe")
            }
        };
        let path = format!("{}/file{:04}.{ext}", rng.pick(&dirs), files.len());
        files.push(File { path, data, kind, entry, taken: Vec::new() });
    }

    let mut truth: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut decoys = 0;
    for f in &mut files {
        let roll = rng.below(100);
        let (infect, decoy) = (roll < 30, (30..45).contains(&roll));
        if !infect && !decoy {
            continue;
        }
        let count = if infect { rng.range(1, 3) } else { 1 };
        let mut planted = 0;
        for _ in 0..40 {
            if planted == count {
                break;
            }
            let sig = rng.pick(&sigs);
            if sig.pe && f.kind != Kind::Pe {
                continue;
            }
            let (mut bytes, runs) = sig.instance(&mut rng);
            if decoy {
                let (s, e) = *rng.pick(&runs);
                let i = rng.range(s, e - 1);
                bytes[i] ^= 1 + rng.byte() % 255;
            }
            if f.plant(&mut rng, &bytes, sig.offset) {
                planted += 1;
                if infect {
                    truth.entry(f.path.clone()).or_default().push(sig.name.clone());
                } else {
                    decoys += 1;
                }
            }
        }
    }
    files.push(File {
        path: "downloads/eicar.com".to_string(),
        data: EICAR.to_vec(),
        kind: Kind::Text,
        entry: 0,
        taken: Vec::new(),
    });
    truth.entry("downloads/eicar.com".to_string()).or_default().push(EICAR_NAME.to_string());
    for names in truth.values_mut() {
        names.sort();
        names.dedup();
    }
    let mut bytes = 0;
    for f in &files {
        bytes += f.data.len();
        write_file(&out.join("files").join(&f.path), &f.data)?;
    }
    Ok(serde_json::json!({
        "files": files.len(),
        "bytes": bytes,
        "signatures": SIGNATURES + 1,
        "decoys": decoys,
        "infected": truth,
    }))
}
