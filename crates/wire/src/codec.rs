//! The codec: each message is one frame, `"CC" | format version (u8) | kind (u8) | payload length
//! (u32 LE) | payload`, with a maximum frame size checked before a byte of the payload is
//! buffered. Payloads are little-endian fixed-width integers and length-prefixed sequences; every
//! length is checked against the bytes actually present before anything is allocated, so a
//! decoder never panics and never allocates more than the frame it was given.
//!
//! A `return` ends with its access report (protocol version 9): a flag, then for a threaded
//! migration the counts of pages read and written (`u32` each) and every `(page u32, bitmap of
//! 512 bytes)` of the reads and then of the writes, as they are or as one compressed block (the
//! message's compression, like a state's pages: full bitmaps of a call that read a large buffer
//! shrink to almost nothing). Before anything is allocated, the reads are bounded by the memory
//! the state describes, the writes must number the state's pages, and the bytes must be in the
//! frame (or, compressed, within the message's decompression budget); page indices are strictly
//! increasing, the writes name the state's pages in their order, no bitmap is empty.

use crate::message::{
    ACCESS_BITMAP, Access, PAGE_SIZE, Clocks, Descriptors, Entry, EntryKind, Environment, FailKind, FdOp, FileOp, OpenFile, FileStat, ContentHash, Kind, MAX_IN_FLIGHT, Message, PROTOCOL_VERSION, PageDelta, State, Thrown, Tree, Value,
};

/// The frame format this codec writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const MAGIC: &[u8; 2] = b"CC";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;
/// The default largest frame (a migration of a 1 GiB memory fits with room to spare); also the
/// largest a compressed page delta may expand to.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;
/// The largest probe reply a device may ask for.
pub const MAX_PROBE: u32 = 4 << 20;

/// How the pages of a state delta are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// As they are.
    #[default]
    None,
    /// One LZ4 block over all the pages (with their indices).
    Lz4,
    /// One zstd frame (level 1) over all the pages: smaller, slower to make.
    Zstd,
}

/// zstd's level: its fastest standard one.
const ZSTD_LEVEL: i32 = 1;

fn pack(c: Compression, raw: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => raw.to_vec(),
        Compression::Lz4 => lz4_flex::block::compress(raw),
        Compression::Zstd => zstd::bulk::compress(raw, ZSTD_LEVEL).expect("zstd compresses any input in memory"),
    }
}

fn encoding(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Lz4 => 1,
        Compression::Zstd => 2,
    }
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a clonecloud frame (bad magic {0:02x?}): the peer does not speak this protocol")]
    BadMagic([u8; 2]),
    #[error("frame format {0}, this side speaks {FORMAT_VERSION}: upgrade the older side")]
    Format(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("{kind} message is cut short reading {what}")]
    Truncated { kind: &'static str, what: &'static str },
    #[error("{kind} message has {extra} bytes after its end")]
    Trailing { kind: &'static str, extra: usize },
    #[error("{kind} message: {what}")]
    Invalid { kind: &'static str, what: String },
}

struct Writer<'a>(&'a mut Vec<u8>, Compression);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("sequences are shorter than 4 GiB: frames are limited"));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn value(&mut self, v: &Value) {
        match *v {
            Value::I32(x) => {
                self.u8(0);
                self.u32(x as u32)
            }
            Value::I64(x) => {
                self.u8(1);
                self.u64(x as u64)
            }
            Value::F32(x) => {
                self.u8(2);
                self.u32(x)
            }
            Value::F64(x) => {
                self.u8(3);
                self.u64(x)
            }
        }
    }
    fn values(&mut self, vs: &[Value]) {
        self.len(vs.len());
        for v in vs {
            self.value(v);
        }
    }
    fn string(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn u32s(&mut self, vs: &[u32]) {
        self.len(vs.len());
        vs.iter().for_each(|v| self.u32(*v));
    }
    /// Bytes that may be compressed (file contents): an encoding byte, then the bytes.
    fn blob(&mut self, b: &[u8]) {
        match self.1 {
            Compression::None => {
                self.u8(0);
                self.bytes(b);
            }
            c => {
                self.u8(encoding(c));
                self.len(b.len());
                self.bytes(&pack(c, b));
            }
        }
    }
    fn tree(&mut self, t: &Tree) {
        self.string(&t.guest);
        self.len(t.entries.len());
        for e in &t.entries {
            self.string(&e.path);
            match &e.kind {
                EntryKind::Dir => self.u8(0),
                EntryKind::File(h) => {
                    self.u8(1);
                    self.0.extend_from_slice(h);
                }
                EntryKind::Other(t) => {
                    self.u8(2);
                    self.u8(*t);
                }
                EntryKind::Symlink(target) => {
                    self.u8(3);
                    self.string(target);
                }
            }
            let s = &e.stat;
            for v in [s.ino, s.nlink, s.size, s.atim, s.mtim, s.ctim] {
                self.u64(v);
            }
        }
    }
    fn file_op(&mut self, op: &FileOp) {
        match op {
            FileOp::Create { root, path } => {
                self.u8(0);
                self.u32(*root);
                self.string(path);
            }
            FileOp::Write { root, path, offset, data } => {
                self.u8(1);
                self.u32(*root);
                self.string(path);
                self.u64(*offset);
                self.blob(data);
            }
            FileOp::SetSize { root, path, size } => {
                self.u8(2);
                self.u32(*root);
                self.string(path);
                self.u64(*size);
            }
            FileOp::Mkdir { root, path } => {
                self.u8(3);
                self.u32(*root);
                self.string(path);
            }
            FileOp::Unlink { root, path } => {
                self.u8(4);
                self.u32(*root);
                self.string(path);
            }
            FileOp::Rmdir { root, path } => {
                self.u8(5);
                self.u32(*root);
                self.string(path);
            }
            FileOp::Rename { root, from, to_root, to } => {
                self.u8(6);
                self.u32(*root);
                self.string(from);
                self.u32(*to_root);
                self.string(to);
            }
            FileOp::Symlink { root, target, path } => {
                self.u8(13);
                self.u32(*root);
                self.string(target);
                self.string(path);
            }
            FileOp::Link { root, from, to_root, to } => {
                self.u8(14);
                self.u32(*root);
                self.string(from);
                self.u32(*to_root);
                self.string(to);
            }
            FileOp::SetTimes { root, path, atim, mtim } => {
                self.u8(7);
                self.u32(*root);
                self.string(path);
                for t in [atim, mtim] {
                    self.u8(u8::from(t.is_some()));
                    self.u64(t.unwrap_or(0));
                }
            }
            FileOp::Fd(FdOp::Open { dirfd, path, directory, rights, fdflags, fd }) => {
                self.u8(8);
                self.u32(*dirfd);
                self.string(path);
                self.u8(u8::from(*directory));
                self.u64(*rights);
                self.u16(*fdflags);
                self.u32(*fd);
            }
            FileOp::Fd(FdOp::Close { fd }) => {
                self.u8(9);
                self.u32(*fd);
            }
            FileOp::Fd(FdOp::Renumber { from, to }) => {
                self.u8(10);
                self.u32(*from);
                self.u32(*to);
            }
            FileOp::Fd(FdOp::Seek { fd, offset }) => {
                self.u8(11);
                self.u32(*fd);
                self.u64(*offset);
            }
            FileOp::Fd(FdOp::SetFlags { fd, fdflags }) => {
                self.u8(12);
                self.u32(*fd);
                self.u16(*fdflags);
            }
        }
    }
    /// An [`Access`]: the two counts, then every `(page, bitmap)` of the reads and then of the
    /// writes (a `u32` and [`ACCESS_BITMAP`] bytes each), as they are or as one compressed
    /// block, like a state's pages.
    fn access(&mut self, a: &Access) {
        self.len(a.reads.len());
        self.len(a.writes.len());
        let all = a.reads.iter().chain(&a.writes);
        match self.1 {
            Compression::None => {
                self.u8(0);
                for (i, b) in all {
                    self.u32(*i);
                    self.0.extend_from_slice(b);
                }
            }
            c => {
                self.u8(encoding(c));
                let mut raw = Vec::with_capacity((a.reads.len() + a.writes.len()) * (4 + ACCESS_BITMAP));
                for (i, b) in all {
                    raw.extend_from_slice(&i.to_le_bytes());
                    raw.extend_from_slice(b);
                }
                self.bytes(&pack(c, &raw));
            }
        }
    }
    fn state(&mut self, s: &State) {
        self.len(s.globals.len());
        for (i, v) in &s.globals {
            self.u32(*i);
            self.value(v);
        }
        let d = &s.memory;
        self.u32(d.wasm_pages);
        self.u32(d.page_size);
        self.u8(u8::from(d.xor));
        self.len(d.pages.len());
        match self.1 {
            Compression::None => {
                self.u8(0);
                for (i, p) in &d.pages {
                    self.u32(*i);
                    self.0.extend_from_slice(p);
                }
            }
            c => {
                self.u8(encoding(c));
                let mut raw = Vec::with_capacity(d.pages.len() * (4 + d.page_size as usize));
                for (i, p) in &d.pages {
                    raw.extend_from_slice(&i.to_le_bytes());
                    raw.extend_from_slice(p);
                }
                self.bytes(&pack(c, &raw));
            }
        }
    }
}

/// Appends `m`, framed, to `out`, page deltas uncompressed.
pub fn encode(m: &Message, out: &mut Vec<u8>) {
    encode_with(m, out, Compression::None)
}

/// Appends `m`, framed, to `out`, with page deltas written as `compression` says.
pub fn encode_with(m: &Message, out: &mut Vec<u8>, compression: Compression) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(m.kind_of().code());
    out.extend_from_slice(&[0; 4]);
    let mut w = Writer(out, compression);
    match m {
        Message::Hello { version, module, run, thread, environment } => {
            w.u16(*version);
            w.0.extend_from_slice(module);
            w.u64(*run);
            w.u32(*thread);
            for list in [&environment.args, &environment.env] {
                w.len(list.len());
                for item in list {
                    w.bytes(item);
                }
            }
        }
        Message::Welcome { need_module, concurrency } => {
            w.u8(u8::from(*need_module));
            w.u32(*concurrency);
        }
        Message::Module { bytes } => w.bytes(bytes),
        Message::Migrate { id, point, args, state, clocks, descriptors } => {
            w.u64(*id);
            w.u32(*point);
            w.values(args);
            w.state(state);
            w.u64(clocks.realtime);
            w.u64(clocks.monotonic);
            w.u32s(&descriptors.open);
            w.u32s(&descriptors.free);
            w.u8(u8::from(descriptors.complete));
            w.u8(u8::from(descriptors.free_exact));
            w.len(descriptors.files.len());
            for f in &descriptors.files {
                w.u32(f.fd);
                w.u8(u8::from(f.dir));
                w.u64(f.ino);
                w.u64(f.offset);
                w.u16(f.fdflags);
                w.u8(u8::from(f.read));
                w.u8(u8::from(f.write));
            }
        }
        Message::Return { id, results, state, micros, output, files, exit, freed, thrown, access } => {
            w.u64(*id);
            w.values(results);
            w.state(state);
            w.u64(*micros);
            w.len(output.len());
            for (fd, bytes) in output {
                w.u32(*fd);
                w.bytes(bytes);
            }
            w.len(files.len());
            files.iter().for_each(|op| w.file_op(op));
            match exit {
                None => w.u8(0),
                Some(code) => {
                    w.u8(1);
                    w.u32(*code);
                }
            }
            w.u32(*freed);
            match thrown {
                None => w.u8(0),
                Some(t) => {
                    w.u8(1);
                    w.u32(t.tag);
                    w.values(&t.fields);
                }
            }
            match access {
                None => w.u8(0),
                Some(a) => {
                    w.u8(1);
                    w.access(a);
                }
            }
        }
        Message::Files { trees } => {
            w.len(trees.len());
            trees.iter().for_each(|t| w.tree(t));
        }
        Message::NeedFiles { hashes } => {
            w.len(hashes.len());
            hashes.iter().for_each(|h| w.0.extend_from_slice(h));
        }
        Message::FileData { hash, bytes } => {
            w.0.extend_from_slice(hash);
            w.blob(bytes);
        }
        Message::Probe { bytes, reply } => {
            w.bytes(bytes);
            w.u32(*reply);
        }
        Message::ProbeReply { bytes } => w.bytes(bytes),
        Message::Resume { version, run, awaiting } => {
            w.u16(*version);
            w.u64(*run);
            w.len(awaiting.len());
            awaiting.iter().for_each(|id| w.u64(*id));
        }
        Message::Resumed { ok } => w.u8(u8::from(*ok)),
        Message::ImportReturn { id, results, state } => {
            w.u64(*id);
            w.values(results);
            w.state(state);
        }
        Message::ImportCall { id, import, args, state } => {
            w.u64(*id);
            w.u32(*import);
            w.values(args);
            w.state(state);
        }
        Message::Failed { id, kind, message } => {
            w.u64(*id);
            w.u8(match kind {
                FailKind::Trap => 0,
                FailKind::ResourceLimit => 1,
                FailKind::Unavailable => 2,
                FailKind::Exception => 3,
            });
            w.bytes(message.as_bytes());
        }
        Message::Cancel { id } => w.u64(*id),
        Message::Error { message } => w.bytes(message.as_bytes()),
        Message::Goodbye => {}
    }
    let len = u32::try_from(out.len() - start - HEADER_LEN).expect("a frame is shorter than 4 GiB");
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
}

/// Encodes `m` into a new buffer.
pub fn to_bytes(m: &Message) -> Vec<u8> {
    to_bytes_with(m, Compression::None)
}

/// Encodes `m` into a new buffer, with page deltas written as `compression` says.
pub fn to_bytes_with(m: &Message, compression: Compression) -> Vec<u8> {
    let mut v = Vec::new();
    encode_with(m, &mut v, compression);
    v
}

struct Reader<'a> {
    data: &'a [u8],
    kind: &'static str,
    /// What the compressed parts of this message may still expand to, all together: one
    /// budget per message, so a message of many small compressed parts cannot make the
    /// receiver allocate many times the frame limit.
    limit: usize,
    /// What a state's pages may decompress to, when the receiver set its memory's maximum
    /// (otherwise they count against `limit`): a budget of its own, so file contents and
    /// output cannot use the memory's share.
    memory_limit: Option<usize>,
    /// The largest memory a state may describe, in wasm pages: the receiver's own maximum.
    max_wasm_pages: u32,
    /// The only page size the receiver takes (when it set its memory's maximum).
    page_size: Option<u32>,
    /// The compression of what was read (`None` when nothing compressed was).
    compression: Compression,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(DecodeError::Truncated { kind: self.kind, what });
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    /// A count of items of at least `min_size` bytes each: refused when the rest of the frame
    /// cannot hold them, so a forged count allocates nothing.
    fn count(&mut self, min_size: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_size) > self.data.len() {
            return Err(DecodeError::Truncated { kind: self.kind, what });
        }
        Ok(n)
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let n = self.count(1, what)?;
        Ok(self.take(n, what)?.to_vec())
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(what)?).map_err(|_| self.invalid(format!("{what} is not UTF-8")))
    }
    fn invalid(&self, what: String) -> DecodeError {
        DecodeError::Invalid { kind: self.kind, what }
    }
    fn value(&mut self) -> Result<Value, DecodeError> {
        Ok(match self.u8("a value's type")? {
            0 => Value::I32(self.u32("an i32")? as i32),
            1 => Value::I64(self.u64("an i64")? as i64),
            2 => Value::F32(self.u32("an f32")?),
            3 => Value::F64(self.u64("an f64")?),
            t => return Err(self.invalid(format!("value type {t} is not i32, i64, f32 or f64"))),
        })
    }
    fn values(&mut self, what: &'static str) -> Result<Vec<Value>, DecodeError> {
        let n = self.count(5, what)?;
        (0..n).map(|_| self.value()).collect()
    }
    fn hash(&mut self, what: &'static str) -> Result<ContentHash, DecodeError> {
        Ok(self.take(32, what)?.try_into().expect("32 bytes"))
    }
    /// A symbolic link's target: any UTF-8 without NUL (a link may point anywhere; whoever
    /// follows one checks where it leads).
    fn link_target(&mut self) -> Result<String, DecodeError> {
        let t = self.string("a link's target")?;
        if t.is_empty() || t.contains('\0') {
            return Err(self.invalid(format!("the link target `{t}` is empty or has a NUL")));
        }
        Ok(t)
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.invalid(format!("{what} is {b}, not 0 or 1"))),
        }
    }
    fn u32s(&mut self, what: &'static str) -> Result<Vec<u32>, DecodeError> {
        let n = self.count(4, what)?;
        (0..n).map(|_| self.u32(what)).collect()
    }
    /// A path relative to a preopened directory: no empty, `.` or `..` component, no leading
    /// or doubled `/`, no NUL (the receiver joins it to a real directory).
    fn path(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let p = self.string(what)?;
        if !p.is_empty() && p.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0')) {
            return Err(self.invalid(format!("{what} `{p}` is not a plain relative path")));
        }
        Ok(p)
    }
    /// Decompresses `packed` (encoding 1 LZ4, 2 zstd) to exactly `len` bytes. Nothing is
    /// allocated beyond what the data really expands to, so a forged length costs nothing.
    fn unpack(&mut self, encoding: u8, packed: &[u8], len: usize, what: &'static str, memory: bool) -> Result<Vec<u8>, DecodeError> {
        let pool = match self.memory_limit.as_mut() {
            Some(m) if memory => m,
            _ => &mut self.limit,
        };
        if len > *pool {
            return Err(self.invalid(format!("{what}: {len} more bytes decompressed is over the message's limit")));
        }
        *pool -= len;
        let out = match encoding {
            1 => {
                // LZ4 expands at most 255-fold: a larger claim is a forgery, refused unallocated.
                if len > packed.len().saturating_mul(255).saturating_add(16) {
                    return Err(self.invalid(format!("{what}: {len} bytes cannot come from {} compressed bytes", packed.len())));
                }
                let mut out = vec![0u8; len];
                match lz4_flex::block::decompress_into(packed, &mut out) {
                    Ok(k) if k == len => out,
                    _ => return Err(self.invalid(format!("{what} do not decompress to the length announced"))),
                }
            }
            2 => {
                use std::io::Read;
                let mut out = Vec::new();
                let ok = zstd::stream::read::Decoder::with_buffer(packed)
                    .and_then(|d| d.take(len as u64 + 1).read_to_end(&mut out))
                    .is_ok_and(|k| k == len);
                if !ok {
                    return Err(self.invalid(format!("{what} do not decompress to the length announced")));
                }
                out
            }
            e => return Err(self.invalid(format!("{what}: encoding {e} is unknown"))),
        };
        self.compression = if encoding == 2 { Compression::Zstd } else { Compression::Lz4 };
        Ok(out)
    }

    fn blob(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.u8("a content encoding")? {
            0 => self.bytes(what),
            e => {
                let len = self.u32(what)? as usize;
                let packed = self.bytes(what)?;
                self.unpack(e, &packed, len, what, false)
            }
        }
    }
    fn tree(&mut self) -> Result<Tree, DecodeError> {
        let guest = self.string("a preopen's guest path")?;
        let n = self.count(4 + 1 + 48, "the entries")?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let path = self.path("an entry's path")?;
            let kind = match self.u8("an entry's kind")? {
                0 => EntryKind::Dir,
                1 => EntryKind::File(self.hash("a file's hash")?),
                2 => EntryKind::Other(self.u8("an entry's file type")?),
                3 => EntryKind::Symlink(self.link_target()?),
                k => return Err(self.invalid(format!("entry kind {k} is unknown"))),
            };
            let mut v = [0u64; 6];
            for x in &mut v {
                *x = self.u64("an entry's stat")?;
            }
            let [ino, nlink, size, atim, mtim, ctim] = v;
            entries.push(Entry { path, kind, stat: FileStat { ino, nlink, size, atim, mtim, ctim } });
        }
        Ok(Tree { guest, entries })
    }
    fn file_op(&mut self) -> Result<FileOp, DecodeError> {
        let tag = self.u8("a file operation")?;
        let root = self.u32("a preopen")?;
        Ok(match tag {
            0 => FileOp::Create { root, path: self.path("a path")? },
            1 => FileOp::Write { root, path: self.path("a path")?, offset: self.u64("an offset")?, data: self.blob("written bytes")? },
            2 => FileOp::SetSize { root, path: self.path("a path")?, size: self.u64("a size")? },
            3 => FileOp::Mkdir { root, path: self.path("a path")? },
            4 => FileOp::Unlink { root, path: self.path("a path")? },
            5 => FileOp::Rmdir { root, path: self.path("a path")? },
            6 => FileOp::Rename { root, from: self.path("a path")?, to_root: self.u32("a preopen")?, to: self.path("a path")? },
            7 => {
                let path = self.path("a path")?;
                let mut times = [None; 2];
                for t in &mut times {
                    let set = self.flag("whether a time is set")?;
                    let v = self.u64("a time")?;
                    *t = set.then_some(v);
                }
                FileOp::SetTimes { root, path, atim: times[0], mtim: times[1] }
            }
            14 => FileOp::Link { root, from: self.path("a path")?, to_root: self.u32("a preopen")?, to: self.path("a path")? },
            13 => FileOp::Symlink { root, target: self.link_target()?, path: self.path("a path")? },
            // Descriptor changes: the first number is a descriptor, not a preopen.
            8 => FileOp::Fd(FdOp::Open {
                dirfd: root,
                path: self.path("a path")?,
                directory: self.flag("whether a directory is opened")?,
                rights: self.u64("rights")?,
                fdflags: self.u16("descriptor flags")?,
                fd: self.u32("a descriptor")?,
            }),
            9 => FileOp::Fd(FdOp::Close { fd: root }),
            10 => FileOp::Fd(FdOp::Renumber { from: root, to: self.u32("a descriptor")? }),
            11 => FileOp::Fd(FdOp::Seek { fd: root, offset: self.u64("an offset")? }),
            12 => FileOp::Fd(FdOp::SetFlags { fd: root, fdflags: self.u16("descriptor flags")? }),
            t => return Err(self.invalid(format!("file operation {t} is unknown"))),
        })
    }
    /// The [`Access`] of an answer whose state is `state`: its pages must be of [`PAGE_SIZE`]
    /// bytes, the writes name exactly the state's pages in their order, both lists are in
    /// strictly increasing page order within the memory the state describes, each bitmap marks
    /// at least one byte. The counts are bounded before anything is allocated or decompressed:
    /// the reads by the memory's pages, the writes by the state's, the bytes by the frame (or,
    /// compressed, by the message's decompression budget).
    fn access(&mut self, state: &State) -> Result<Access, DecodeError> {
        let memory = &state.memory;
        if memory.page_size as usize != PAGE_SIZE {
            return Err(self.invalid(format!("an access report with pages of {} bytes, not {PAGE_SIZE}", memory.page_size)));
        }
        let limit = u64::from(memory.wasm_pages) * 65536 / PAGE_SIZE as u64;
        let reads = self.u32("the count of pages read")? as usize;
        if reads as u64 > limit {
            return Err(self.invalid(format!("{reads} pages read in a memory of {limit}")));
        }
        let writes = self.u32("the count of pages written")? as usize;
        if writes != memory.pages.len() {
            return Err(self.invalid(format!("{writes} pages written, but the state carries {}", memory.pages.len())));
        }
        let each = 4 + ACCESS_BITMAP;
        let raw_len = (reads + writes).saturating_mul(each);
        let raw: Vec<u8>;
        let body: &[u8] = match self.u8("the access encoding")? {
            0 => self.take(raw_len, "the access bitmaps")?,
            e => {
                let packed = self.bytes("the compressed access bitmaps")?;
                raw = self.unpack(e, &packed, raw_len, "the compressed access bitmaps", false)?;
                &raw
            }
        };
        let mut access = Access { reads: Vec::with_capacity(reads), writes: Vec::with_capacity(writes) };
        let mut last: Option<u32> = None;
        for (k, chunk) in body.chunks_exact(each).enumerate() {
            let i = u32::from_le_bytes(chunk[..4].try_into().expect("4 bytes"));
            let bitmap = &chunk[4..];
            let written = k >= reads;
            if k == reads {
                last = None;
            }
            if last.is_some_and(|l| i <= l) {
                return Err(self.invalid(format!("access page {i} is out of increasing order")));
            }
            last = Some(i);
            if u64::from(i) >= limit {
                return Err(self.invalid(format!("access page {i} lies beyond the {}-page memory", memory.wasm_pages)));
            }
            if bitmap.iter().all(|b| *b == 0) {
                return Err(self.invalid(format!("the access bitmap of page {i} marks no byte")));
            }
            if written {
                let page = memory.pages[k - reads].0;
                if page != i {
                    return Err(self.invalid(format!("page {i} written, but the state's page there is {page}")));
                }
                access.writes.push((i, bitmap.to_vec()));
            } else {
                access.reads.push((i, bitmap.to_vec()));
            }
        }
        Ok(access)
    }
    fn state(&mut self) -> Result<State, DecodeError> {
        let n = self.count(9, "globals")?;
        let globals = (0..n)
            .map(|_| Ok((self.u32("a global's index")?, self.value()?)))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let wasm_pages = self.u32("the memory size")?;
        if wasm_pages > 65536 {
            return Err(self.invalid(format!("memory of {wasm_pages} wasm pages is over 4 GiB")));
        }
        if wasm_pages > self.max_wasm_pages {
            // Before its pages are decompressed: the receiver's memory could not take them.
            return Err(self.invalid(format!("memory of {wasm_pages} wasm pages is over the receiver's maximum of {}", self.max_wasm_pages)));
        }
        let page_size = self.u32("the page size")?;
        if !page_size.is_power_of_two() || !(256..=65536).contains(&page_size) {
            return Err(self.invalid(format!("page size {page_size} is not a power of two from 256 B to 64 KiB")));
        }
        if let Some(mine) = self.page_size
            && page_size != mine
        {
            // Before anything is decompressed: smaller pages would cost the receiver more per
            // byte than its own memory does.
            return Err(self.invalid(format!("pages of {page_size} bytes, the receiver's are {mine}")));
        }
        let xor = match self.u8("the XOR flag")? {
            0 => false,
            1 => true,
            b => return Err(self.invalid(format!("the XOR flag is {b}, not 0 or 1"))),
        };
        let n = self.u32("the page count")? as usize;
        let limit = u64::from(wasm_pages) * 65536 / u64::from(page_size);
        if n as u64 > limit {
            return Err(self.invalid(format!("{n} pages in a memory of {limit}")));
        }
        let each = 4 + page_size as usize;
        let raw_len = n * each;
        let raw: Vec<u8>;
        let body: &[u8] = match self.u8("the page encoding")? {
            0 => self.take(raw_len, "the pages")?,
            e => {
                let packed = self.bytes("the compressed pages")?;
                raw = self.unpack(e, &packed, raw_len, "the compressed pages", true)?;
                &raw
            }
        };
        let mut pages = Vec::new();
        for chunk in body.chunks_exact(each) {
            let i = u32::from_le_bytes(chunk[..4].try_into().expect("4 bytes"));
            if u64::from(i) >= limit {
                return Err(self.invalid(format!("page {i} lies beyond the {wasm_pages}-page memory")));
            }
            pages.push((i, chunk[4..].to_vec()));
        }
        Ok(State { globals, memory: PageDelta { wasm_pages, page_size, pages, xor } })
    }
}

/// What one message may expand to and describe (see [`Decoder::set_memory_maximum`]).
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// What its compressed parts other than a state's pages may decompress to, together.
    limit: usize,
    /// What a state's pages may decompress to, when the receiver set its memory's maximum.
    memory_limit: Option<usize>,
    max_wasm_pages: u32,
    page_size: Option<u32>,
}

/// Decodes one whole frame's payload; also says how what it held was compressed.
fn decode_payload(code: u8, payload: &[u8], budget: Budget) -> Result<(Message, Compression), DecodeError> {
    let kind_of = Kind::from_code(code).ok_or(DecodeError::UnknownKind(code))?;
    let kind = kind_of.name();
    let Budget { limit, memory_limit, max_wasm_pages, page_size } = budget;
    let mut r = Reader { data: payload, kind, limit, memory_limit, max_wasm_pages, page_size, compression: Compression::None };
    let m = match kind_of {
        Kind::Hello => {
            let version = r.u16("the version")?;
            if version != PROTOCOL_VERSION {
                // As for a resume: the version is refused, not the layout.
                r.data = &[];
                return Ok((Message::Hello { version, module: [0; 32], run: 0, thread: 0, environment: Environment::default() }, r.compression));
            }
            let module = r.hash("the module hash")?;
            let (run, thread) = (r.u64("the run")?, r.u32("the thread")?);
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                let n = r.count(4, "the arguments or environment")?;
                for _ in 0..n {
                    list.push(r.bytes("an argument or variable")?);
                }
            }
            let [args, env] = lists;
            Message::Hello { version, module, run, thread, environment: Environment { args, env } }
        }
        Kind::Welcome => {
            let need_module = r.flag("need_module")?;
            let concurrency = r.u32("the concurrency")?;
            if !(1..=MAX_IN_FLIGHT).contains(&concurrency) {
                return Err(r.invalid(format!("a concurrency of {concurrency} migrations is not within 1..={MAX_IN_FLIGHT}")));
            }
            Message::Welcome { need_module, concurrency }
        }
        Kind::Module => Message::Module { bytes: r.bytes("the module")? },
        Kind::Migrate => {
            let id = r.u64("the migration")?;
            let (point, args, state) = (r.u32("the point")?, r.values("the arguments")?, r.state()?);
            let clocks = Clocks { realtime: r.u64("the realtime clock")?, monotonic: r.u64("the monotonic clock")? };
            let (open, free) = (r.u32s("the open descriptors")?, r.u32s("the free descriptors")?);
            let complete = match r.u8("the descriptors' completeness")? {
                0 => false,
                1 => true,
                b => return Err(r.invalid(format!("the completeness flag is {b}, not 0 or 1"))),
            };
            let free_exact = r.flag("whether the free descriptors are exact")?;
            let n = r.count(25, "the open files")?;
            let files = (0..n)
                .map(|_| {
                    Ok(OpenFile {
                        fd: r.u32("a descriptor")?,
                        dir: r.flag("whether a descriptor is a directory")?,
                        ino: r.u64("an inode number")?,
                        offset: r.u64("an offset")?,
                        fdflags: r.u16("descriptor flags")?,
                        read: r.flag("whether a descriptor reads")?,
                        write: r.flag("whether a descriptor writes")?,
                    })
                })
                .collect::<Result<Vec<_>, DecodeError>>()?;
            let descriptors = Descriptors { open, free, complete, free_exact, files };
            Message::Migrate { id, point, args, state, clocks, descriptors }
        }
        Kind::Return => {
            let id = r.u64("the migration")?;
            let results = r.values("the results")?;
            let state = r.state()?;
            let micros = r.u64("the execution time")?;
            let n = r.count(8, "the output")?;
            let output = (0..n)
                .map(|_| Ok((r.u32("an output's descriptor")?, r.bytes("an output")?)))
                .collect::<Result<Vec<_>, DecodeError>>()?;
            let n = r.count(6, "the file changes")?;
            let files = (0..n).map(|_| r.file_op()).collect::<Result<Vec<_>, DecodeError>>()?;
            let exit = match r.u8("the exit flag")? {
                0 => None,
                1 => Some(r.u32("the exit code")?),
                b => return Err(r.invalid(format!("the exit flag is {b}, not 0 or 1"))),
            };
            let freed = r.u32("the freed page count")?;
            let thrown = match r.u8("the thrown flag")? {
                0 => None,
                1 => Some(Thrown { tag: r.u32("the exception's tag")?, fields: r.values("the exception's fields")? }),
                b => return Err(r.invalid(format!("the thrown flag is {b}, not 0 or 1"))),
            };
            let access = match r.u8("the access flag")? {
                0 => None,
                1 => Some(r.access(&state)?),
                b => return Err(r.invalid(format!("the access flag is {b}, not 0 or 1"))),
            };
            Message::Return { id, results, state, micros, output, files, exit, freed, thrown, access }
        }
        Kind::ImportCall => {
            let id = r.u64("the migration")?;
            Message::ImportCall { id, import: r.u32("the import")?, args: r.values("the arguments")?, state: r.state()? }
        }
        Kind::ImportReturn => Message::ImportReturn { id: r.u64("the migration")?, results: r.values("the results")?, state: r.state()? },
        Kind::Failed => {
            let id = r.u64("the migration")?;
            let kind = match r.u8("the failure kind")? {
                0 => FailKind::Trap,
                1 => FailKind::ResourceLimit,
                2 => FailKind::Unavailable,
                3 => FailKind::Exception,
                k => return Err(r.invalid(format!("failure kind {k} is unknown"))),
            };
            Message::Failed { id, kind, message: r.string("the message")? }
        }
        Kind::Cancel => Message::Cancel { id: r.u64("the migration")? },
        Kind::Error => Message::Error { message: r.string("the message")? },
        Kind::Goodbye => Message::Goodbye,
        Kind::Files => {
            let n = r.count(8, "the preopens")?;
            Message::Files { trees: (0..n).map(|_| r.tree()).collect::<Result<_, _>>()? }
        }
        Kind::NeedFiles => {
            let n = r.count(32, "the hashes")?;
            Message::NeedFiles { hashes: (0..n).map(|_| r.hash("a hash")).collect::<Result<_, _>>()? }
        }
        Kind::FileData => Message::FileData { hash: r.hash("the hash")?, bytes: r.blob("the file's content")? },
        Kind::Probe => {
            let bytes = r.bytes("the probe")?;
            let reply = r.u32("the reply size")?;
            if reply > MAX_PROBE {
                return Err(r.invalid(format!("a probe reply of {reply} bytes is over {MAX_PROBE}")));
            }
            Message::Probe { bytes, reply }
        }
        Kind::ProbeReply => Message::ProbeReply { bytes: r.bytes("the probe reply")? },
        Kind::Resume => {
            let (version, run) = (r.u16("the version")?, r.u64("the run")?);
            if version != PROTOCOL_VERSION {
                // Another version lays the rest out its own way: the session refuses the
                // version, which says more than a decoding error would.
                r.data = &[];
                return Ok((Message::Resume { version, run, awaiting: Vec::new() }, r.compression));
            }
            let n = r.count(8, "the migrations awaited")?;
            if n > MAX_IN_FLIGHT as usize {
                return Err(r.invalid(format!("a resume awaiting {n} migrations, over {MAX_IN_FLIGHT}")));
            }
            let awaiting = (0..n).map(|_| r.u64("a migration awaited")).collect::<Result<Vec<_>, _>>()?;
            Message::Resume { version, run, awaiting }
        }
        Kind::Resumed => Message::Resumed {
            ok: match r.u8("the resumed flag")? {
                0 => false,
                1 => true,
                b => return Err(r.invalid(format!("the resumed flag is {b}, not 0 or 1"))),
            },
        },
    };
    if !r.data.is_empty() {
        return Err(DecodeError::Trailing { kind, extra: r.data.len() });
    }
    Ok((m, r.compression))
}

/// Turns a byte stream into messages: feed it what the transport read, take messages out.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
    /// The receiver's memory maximum, in wasm pages, and its page size, when it set them.
    memory: Option<(u32, u32)>,
    /// How the last message decoded was compressed (a peer answers in kind).
    pub last_compression: Compression,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// Frames longer than `max_frame` are refused from now on.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The receiver's memory can grow to `wasm_pages` at most (the device's module's maximum)
    /// and is kept in pages of `page_size` bytes: a state describing a larger memory, or pages
    /// of another size, is refused before its pages are decompressed; a state's pages may
    /// decompress to that memory (with their indices), and the rest of the message (file
    /// contents, output) to the frame limit, each budget its own.
    pub fn set_memory_maximum(&mut self, wasm_pages: u32, page_size: u32) {
        self.memory = Some((wasm_pages.min(65536), page_size.clamp(256, 65536)));
    }

    pub fn new(max_frame: usize) -> Decoder {
        Decoder { buf: Vec::new(), start: 0, max_frame, memory: None, last_compression: Compression::None }
    }

    /// What one message may decompress to and describe.
    fn budget(&self) -> Budget {
        match self.memory {
            Some((wasm_pages, page_size)) => {
                let pages = wasm_pages as usize * (65536 / page_size as usize);
                Budget { limit: self.max_frame, memory_limit: Some(pages * (page_size as usize + 4)), max_wasm_pages: wasm_pages, page_size: Some(page_size) }
            }
            None => Budget { limit: self.max_frame, memory_limit: None, max_wasm_pages: 65536, page_size: None },
        }
    }

    /// Appends bytes read from the transport.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many more bytes the next frame needs (at least 1 when none is complete).
    pub fn wanted(&self) -> usize {
        let have = &self.buf[self.start..];
        if have.len() < HEADER_LEN {
            return HEADER_LEN - have.len();
        }
        let len = u32::from_le_bytes(have[4..8].try_into().expect("4 bytes")) as usize;
        (HEADER_LEN + len).saturating_sub(have.len()).max(1)
    }

    /// The next whole message, `None` when more bytes are needed. After an error the stream is
    /// unusable: the session must end.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        let have = &self.buf[self.start..];
        if have.len() < 2 {
            return Ok(None);
        }
        if &have[..2] != MAGIC {
            return Err(DecodeError::BadMagic([have[0], have[1]]));
        }
        if have.len() < HEADER_LEN {
            return Ok(None);
        }
        if have[2] != FORMAT_VERSION {
            return Err(DecodeError::Format(have[2]));
        }
        let len = u32::from_le_bytes(have[4..8].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame {
            return Err(DecodeError::TooLarge { len, max: self.max_frame });
        }
        if have.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let (m, compression) = decode_payload(have[3], &have[HEADER_LEN..HEADER_LEN + len], self.budget())?;
        self.last_compression = compression;
        self.start += HEADER_LEN + len;
        if self.start > (1 << 20) && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(m))
    }
}

/// Decodes exactly one framed message from `bytes`.
pub fn from_bytes(bytes: &[u8], max_frame: usize) -> Result<Message, DecodeError> {
    let mut d = Decoder::new(max_frame);
    d.feed(bytes);
    match d.next_message()? {
        Some(m) if d.start == bytes.len() => Ok(m),
        Some(m) => Err(DecodeError::Trailing { kind: m.kind(), extra: bytes.len() - d.start }),
        None => Err(DecodeError::Truncated { kind: "frame", what: "the header or payload" }),
    }
}
