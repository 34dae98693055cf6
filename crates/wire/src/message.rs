//! The protocol's messages: what a device and a clone say to each other.

/// The protocol version a peer speaks; a hello with another version is refused.
pub const PROTOCOL_VERSION: u16 = 7;

/// A migration's number within its session: the device numbers them from 1, one more each
/// time, and every message that belongs to a migration (its proxied calls, its answer) names
/// it, so several may be in flight on one session (one per thread), up to what the clone's
/// welcome allows.
pub type MigrationId = u64;

/// The most migrations a resume may name (and so the most a session may have in flight).
pub const MAX_IN_FLIGHT: u32 = 1024;

/// A wasm value crossing the wire. Floats travel as their bits, so NaN payloads survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

/// A content hash: SHA-256 of a module's or a file's bytes (collision-resistant: what a hash
/// names on the clone is what was sent under it).
pub type ContentHash = [u8; 32];

/// The [`ContentHash`] of `bytes`.
pub fn content_hash(bytes: &[u8]) -> ContentHash {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().try_into().expect("SHA-256 has 32 bytes")
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

/// What WASI reports of a file or directory (`filestat`, less the type), as the device's runtime
/// reports it, so the clone answers `fd_filestat_get` and `fd_readdir` with the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileStat {
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

/// What an entry of a preopened directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file, named by the SHA-256 of its content.
    File(ContentHash),
    /// A symbolic link and its target (UTF-8; the clone follows it as wasmtime-wasi would).
    Symlink(String),
    /// Anything else (a symbolic link, a socket, a device), by its WASI filetype: the clone
    /// lists it but does not open it (such a call runs on the device).
    Other(u8),
}

/// One entry of a preopened directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the preopened directory, components joined by `/`; `""` is the directory
    /// itself.
    pub path: String,
    pub kind: EntryKind,
    pub stat: FileStat,
}

/// A preopened directory as the device sees it: the guest path it is opened by and its entries,
/// each directory before its children and the children in the device's directory order (the
/// order `fd_readdir` gives).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    pub guest: String,
    pub entries: Vec<Entry>,
}

/// The device's descriptor table, so the clone answers for exactly the descriptors the device
/// has and hands out the numbers the device would: `open` lists every descriptor open on the
/// device (stdio and preopens included), `free` the numbers the device's runtime will hand out
/// again (closed ones, below the highest open one or above it), highest first. When `complete` is false the device could not list them: the clone then
/// assumes stdio and the preopens and serves no other descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Descriptors {
    pub open: Vec<u32>,
    pub free: Vec<u32>,
    pub complete: bool,
    /// Whether `free` is known to hold every number the device will hand out again. When not,
    /// numbers above the highest open one may be free on the device too: the clone then hands
    /// out a new number only while it has closed none, and the device checks, before it changes
    /// anything at the commit, that the number above the highest is the one it would hand out.
    pub free_exact: bool,
    /// The descriptors beyond stdio and the preopens that the clone may serve: each names its
    /// file or directory by inode number (the clone finds it in the replicated trees) with its
    /// offset and flags. An open descriptor not listed here stays the device's.
    pub files: Vec<OpenFile>,
}

/// A descriptor the device opened before a migration, as the clone takes it over for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OpenFile {
    pub fd: u32,
    pub dir: bool,
    /// The inode number WASI reports for it (`fd_filestat_get`), as in [`FileStat::ino`].
    pub ino: u64,
    pub offset: u64,
    /// WASI's fdflags (append, nonblock, ...).
    pub fdflags: u16,
    pub read: bool,
    pub write: bool,
}

/// A change a migrated function made to the preopened directories, applied by the device at the
/// commit, in order. `root` is the preopen's position (descriptor `3 + root`), paths are relative
/// to it as in [`Entry::path`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// Create the file if it does not exist.
    Create { root: u32, path: String },
    Write { root: u32, path: String, offset: u64, data: Vec<u8> },
    SetSize { root: u32, path: String, size: u64 },
    Mkdir { root: u32, path: String },
    Unlink { root: u32, path: String },
    Rmdir { root: u32, path: String },
    Rename { root: u32, from: String, to_root: u32, to: String },
    /// Make `path` a symbolic link to `target`, a relative path that, read from the link's
    /// directory, stays inside the preopen (the device checks it again).
    Symlink { root: u32, target: String, path: String },
    /// Make `to` another name (a hard link) of the file `from`.
    Link { root: u32, from: String, to_root: u32, to: String },
    /// Set the access and modification times (nanoseconds since the Unix epoch); `None` leaves
    /// that time as it is.
    SetTimes { root: u32, path: String, atim: Option<u64>, mtim: Option<u64> },
    /// A change to the descriptor table, carried out through the device's own WASI in order with
    /// the file changes, so the device ends with the descriptors the function left, at the same
    /// numbers, offsets and flags.
    Fd(FdOp),
}

/// A descriptor-table change a migrated function made, replayed on the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdOp {
    /// `path_open(dirfd, path)` as the function called it, with its base rights (wasmtime-wasi
    /// reads only those) and flags. Creation and truncation are in the journal already, so the
    /// device opens what exists; it must get descriptor `fd`.
    Open { dirfd: u32, path: String, directory: bool, rights: u64, fdflags: u16, fd: u32 },
    Close { fd: u32 },
    Renumber { from: u32, to: u32 },
    /// Set the descriptor's offset (its final one, after the function's reads and writes).
    Seek { fd: u32, offset: u64 },
    SetFlags { fd: u32, fdflags: u16 },
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
    Return { id: MigrationId, results: Vec<Value>, state: State, micros: u64, output: Vec<(u32, Vec<u8>)>, files: Vec<FileOp>, exit: Option<u32>, freed: u32 },
    /// Clone → device, during migration `id`: run import `import` with `args` on the device,
    /// after applying `state`.
    ImportCall { id: MigrationId, import: u32, args: Vec<Value>, state: State },
    /// Device → clone: the proxied import returned `results`; apply `state` and go on.
    ImportReturn { id: MigrationId, results: Vec<Value>, state: State },
    /// Clone → device: migration `id` failed; the device runs the function locally.
    Failed { id: MigrationId, kind: FailKind, message: String },
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
