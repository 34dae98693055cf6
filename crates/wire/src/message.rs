//! The protocol's messages: what a device and a clone say to each other. The file replicator's
//! model (trees, the journal, the descriptor table, content hashes) is `clonecloud-files`'s own;
//! the messages carry it and the codec encodes it.

pub use clonecloud_files::model::{ContentHash, Descriptors, Entry, EntryKind, FdOp, FileOp, FileStat, OpenFile, Tree, content_hash};

/// The protocol version a peer speaks; a hello with another version is refused.
pub const PROTOCOL_VERSION: u16 = 9;

/// A migration's number within its session: the device numbers them from 1, one more each
/// time, and every message that belongs to a migration (its proxied calls, its answer) names
/// it, so several may be in flight on one session (one per thread), up to what the clone's
/// welcome allows.
pub type MigrationId = u64;

/// The most migrations a resume may name (and so the most a session may have in flight).
pub const MAX_IN_FLIGHT: u32 = 1024;

/// A wasm exception that escaped a migrated function: its tag (an index in the module's tag
/// index space) and its fields, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thrown {
    pub tag: u32,
    pub fields: Vec<Value>,
}

/// A wasm value crossing the wire. Floats travel as their bits, so NaN payloads survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

/// The run's command line and environment, as WASI gives them to the program (the clone serves
/// `args_get` and `environ_get` from them).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Environment {
    pub args: Vec<Vec<u8>>,
    /// `NAME=value` entries.
    pub env: Vec<Vec<u8>>,
}

/// The pages of linear memory that changed since the last agreed state.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PageDelta {
    /// The memory's size after applying the delta, in 64 KiB wasm pages (memory only grows).
    pub wasm_pages: u32,
    /// The size of a delta page in bytes (a power of two, at most 64 KiB).
    pub page_size: u32,
    /// Changed pages, by index, each exactly `page_size` bytes.
    pub pages: Vec<(u32, Vec<u8>)>,
    /// Whether each page is the XOR of its new content with the last agreed content (which the
    /// receiver holds): a page that changed in a few places is then mostly zeros, and compresses.
    pub xor: bool,
}

/// The page size an [`Access`] describes memory in (and the page size of a threaded answer's
/// state): 4 KiB, the delta pages both sides keep.
pub const PAGE_SIZE: usize = 4096;

/// Bytes of one [`Access`] bitmap: a bit per byte of a [`PAGE_SIZE`] page.
pub const ACCESS_BITMAP: usize = PAGE_SIZE / 8;

/// Which bytes of memory 0 a migrated call of a multi-threaded module read and wrote, so that the
/// device can check the call against what its other threads changed meanwhile and merge its
/// writes byte by byte.
///
/// Each list is of `(page, bitmap)`: `page` the index of a [`PAGE_SIZE`] page of memory 0, in
/// strictly increasing order, and `bitmap` exactly [`ACCESS_BITMAP`] bytes, bit `i` (LSB first
/// within each byte: byte `i / 8`, bit `i % 8`) set when the call accessed byte `i` of the page.
/// A page is listed only when at least one of its bits is set. In a [`Message::Return`],
/// `writes` names exactly the pages of the state's delta, in the same order (each sent whole),
/// and `reads` the pages it read (whether or not it wrote them too). Accesses the clone's host
/// made for the call (a WASI call reading a buffer, a wait reading its word) are included.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Access {
    pub reads: Vec<(u32, Vec<u8>)>,
    pub writes: Vec<(u32, Vec<u8>)>,
}

impl Access {
    /// Whether the call read byte `addr` of memory 0.
    pub fn read(&self, addr: u64) -> bool {
        Access::marked(&self.reads, addr)
    }

    /// Whether the call wrote byte `addr` of memory 0.
    pub fn wrote(&self, addr: u64) -> bool {
        Access::marked(&self.writes, addr)
    }

    fn marked(list: &[(u32, Vec<u8>)], addr: u64) -> bool {
        let page = addr / PAGE_SIZE as u64;
        let at = (addr % PAGE_SIZE as u64) as usize;
        let Ok(page) = u32::try_from(page) else { return false };
        match list.binary_search_by_key(&page, |(p, _)| *p) {
            Ok(k) => list[k].1.get(at / 8).is_some_and(|b| b & (1 << (at % 8)) != 0),
            Err(_) => false,
        }
    }
}

/// The state that travels with a migration or an answer: the mutable globals (by global index)
/// and the memory delta.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct State {
    pub globals: Vec<(u32, Value)>,
    pub memory: PageDelta,
}

/// Why a remote attempt failed; the device then runs the function locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// The function trapped on the clone.
    Trap,
    /// The clone hit a resource limit (memory, fuel, time).
    ResourceLimit,
    /// The clone could not run it (no replica, unknown point, internal error).
    Unavailable,
    /// The function ended by throwing a wasm exception it did not catch: the device runs it,
    /// where the exception reaches its callers.
    Exception,
}

/// The device's clocks when it sent a migration, in nanoseconds (realtime since the Unix epoch,
/// monotonic since the run's clock origin): the clone serves `clock_time_get` from them plus the
/// time it has spent since, so clocks never jump back across a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Clocks {
    pub realtime: u64,
    pub monotonic: u64,
}


/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Device → clone, first: the protocol version, the (rewritten) module's hash, and the app
    /// run and thread this session serves. The replica is keyed by the authenticated device
    /// identity and these, never by anything else the device claims.
    Hello { version: u16, module: ContentHash, run: u64, thread: u32, environment: Environment },
    /// Clone → device: the hello is accepted; whether the clone still needs the module's bytes,
    /// and how many migrations it runs at once on this session (at least 1, at most
    /// [`MAX_IN_FLIGHT`]).
    Welcome { need_module: bool, concurrency: u32 },
    /// Device → clone: the module's bytes, when the clone asked for them.
    Module { bytes: Vec<u8> },
    /// Device → clone: the preopened directories as they are now (sent before the first
    /// migration and again whenever they changed).
    Files { trees: Vec<Tree> },
    /// Clone → device: the file contents (by hash) the clone lacks; the device sends each.
    NeedFiles { hashes: Vec<ContentHash> },
    /// Device → clone: one file's content.
    FileData { hash: ContentHash, bytes: Vec<u8> },
    /// Device → clone: migration `id`: run function `point` with `args`, after applying
    /// `state`; `clocks` and `descriptors` as they are on the device now.
    Migrate { id: MigrationId, point: u32, args: Vec<Value>, state: State, clocks: Clocks, descriptors: Descriptors },
    /// Clone → device: the function returned `results` after `micros` of execution on the
    /// clone (or, with `exit`, called `proc_exit`); apply `state`, apply `files`, write `output`
    /// (what it wrote to stdout and stderr, as `(fd, bytes)` in order) and resume (or exit).
    /// `freed` counts the changed pages left out because they hold only memory the allocator
    /// has freed (the device keeps its own bytes there).
    /// With `thrown`, the function threw that exception instead of returning (no results): the
    /// device applies the rest, then throws it from the point, where its caller may catch it.
    /// `access` is `Some` exactly for a migration of a multi-threaded module (one whose memory 0
    /// is shared): then the state's pages (of [`PAGE_SIZE`] bytes) are exactly the pages the
    /// call wrote, each whole (XORed with the agreed content when `xor`), `access.writes` has one
    /// bitmap per page of the state, in the same order, and `access.reads` the pages it read;
    /// no page is left out as free heap (`freed` is 0).
    Return {
        id: MigrationId,
        results: Vec<Value>,
        state: State,
        micros: u64,
        output: Vec<(u32, Vec<u8>)>,
        files: Vec<FileOp>,
        exit: Option<u32>,
        freed: u32,
        thrown: Option<Thrown>,
        access: Option<Access>,
    },
    /// Clone → device, during migration `id`: run import `import` with `args` on the device,
    /// after applying `state`.
    ImportCall { id: MigrationId, import: u32, args: Vec<Value>, state: State },
    /// Device → clone: the proxied import returned `results`; apply `state` and go on.
    ImportReturn { id: MigrationId, results: Vec<Value>, state: State },
    /// Clone → device: migration `id` failed; the device runs the function locally.
    Failed { id: MigrationId, kind: FailKind, message: String },
    /// Device → clone: the device gave migration `id` up (its deadline passed, say) and runs
    /// the call itself: the clone stops it, drops the replica it was changing, and sends nothing
    /// more for it (an answer already on its way is ignored).
    Cancel { id: MigrationId },
    /// Either way: a protocol error; the session is over.
    Error { message: String },
    /// Device → clone: the run is over; drop its replica.
    Goodbye,
    /// Device → clone, before the hello: a link measurement carrying `bytes`; the clone answers
    /// with a probe reply of `reply` bytes.
    Probe { bytes: Vec<u8>, reply: u32 },
    /// Clone → device: the answer to a probe.
    ProbeReply { bytes: Vec<u8> },
    /// Device → clone, instead of a hello, on a new connection after the link broke during a
    /// migration: run `run` awaits the answers to its session's migrations `awaiting` (those
    /// in flight when it broke, in increasing order).
    Resume { version: u16, run: u64, awaiting: Vec<MigrationId> },
    /// Clone → device: the answer to a resume. When `ok`, the session goes on where it was (the
    /// awaited answer follows); otherwise it is gone, and the device starts a new one with a
    /// hello on the same connection.
    Resumed { ok: bool },
}

/// The one table of message kinds: each kind's code on the wire and its name in logs and
/// errors. [`Message::kind_of`] (an exhaustive match) gives every message its kind, the decoder
/// matches on [`Kind`] (exhaustively), and the codec's tests take [`Kind::ALL`] as the list of
/// what they must cover, so none of them can drift from the others.
macro_rules! kinds {
    ($($variant:ident = $code:literal, $name:literal;)*) => {
        /// A kind of [`Message`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Kind {
            $($variant = $code,)*
        }

        impl Kind {
            /// Every kind, in code order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            /// The kind with this code on the wire.
            pub fn from_code(code: u8) -> Option<Kind> {
                match code {
                    $($code => Some(Kind::$variant),)*
                    _ => None,
                }
            }

            /// Its name in logs and errors.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }
        }
    };
}

kinds! {
    Hello = 1, "hello";
    Welcome = 2, "welcome";
    Module = 3, "module";
    Migrate = 4, "migrate";
    Return = 5, "return";
    ImportCall = 6, "import-call";
    ImportReturn = 7, "import-return";
    Failed = 8, "failed";
    Error = 9, "error";
    Goodbye = 10, "goodbye";
    Files = 11, "files";
    NeedFiles = 12, "need-files";
    FileData = 13, "file-data";
    Probe = 14, "probe";
    ProbeReply = 15, "probe-reply";
    Resume = 16, "resume";
    Resumed = 17, "resumed";
    Cancel = 18, "cancel";
}

impl Kind {
    /// Its code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl Message {
    /// Its kind.
    pub fn kind_of(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Welcome { .. } => Kind::Welcome,
            Message::Module { .. } => Kind::Module,
            Message::Files { .. } => Kind::Files,
            Message::NeedFiles { .. } => Kind::NeedFiles,
            Message::FileData { .. } => Kind::FileData,
            Message::Migrate { .. } => Kind::Migrate,
            Message::Return { .. } => Kind::Return,
            Message::ImportCall { .. } => Kind::ImportCall,
            Message::ImportReturn { .. } => Kind::ImportReturn,
            Message::Failed { .. } => Kind::Failed,
            Message::Cancel { .. } => Kind::Cancel,
            Message::Error { .. } => Kind::Error,
            Message::Goodbye => Kind::Goodbye,
            Message::Probe { .. } => Kind::Probe,
            Message::ProbeReply { .. } => Kind::ProbeReply,
            Message::Resume { .. } => Kind::Resume,
            Message::Resumed { .. } => Kind::Resumed,
        }
    }

    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        self.kind_of().name()
    }
}
