//! The protocol's messages: what a device and a clone say to each other.

/// The protocol version a peer speaks; a hello with another version is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// A wasm value crossing the wire. Floats travel as their bits, so NaN payloads survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

/// A 128-bit content hash (xxh3-128 of a module's bytes).
pub type Hash128 = [u8; 16];

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
}

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Device → clone, first: the protocol version, the (rewritten) module's hash, and the app
    /// run and thread this session serves. The replica is keyed by the authenticated device
    /// identity and these, never by anything else the device claims.
    Hello { version: u16, module: Hash128, run: u64, thread: u32, environment: Environment },
    /// Clone → device: the hello is accepted; whether the clone still needs the module's bytes.
    Welcome { need_module: bool },
    /// Device → clone: the module's bytes, when the clone asked for them.
    Module { bytes: Vec<u8> },
    /// Device → clone: run function `point` with `args`, after applying `state`.
    Migrate { point: u32, args: Vec<Value>, state: State },
    /// Clone → device: the function returned `results` after `micros` of execution on the
    /// clone; apply `state`, write `output` (what it wrote to stdout and stderr, as `(fd, bytes)`
    /// in order) and resume.
    Return { results: Vec<Value>, state: State, micros: u64, output: Vec<(u32, Vec<u8>)> },
    /// Clone → device, during a migration: run import `import` with `args` on the device,
    /// after applying `state`.
    ImportCall { import: u32, args: Vec<Value>, state: State },
    /// Device → clone: the proxied import returned `results`; apply `state` and go on.
    ImportReturn { results: Vec<Value>, state: State },
    /// Clone → device: the remote attempt failed; the device runs the function locally.
    Failed { kind: FailKind, message: String },
    /// Either way: a protocol error; the session is over.
    Error { message: String },
    /// Device → clone: the run is over; drop its replica.
    Goodbye,
}

impl Message {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Module { .. } => "module",
            Message::Migrate { .. } => "migrate",
            Message::Return { .. } => "return",
            Message::ImportCall { .. } => "import-call",
            Message::ImportReturn { .. } => "import-return",
            Message::Failed { .. } => "failed",
            Message::Error { .. } => "error",
            Message::Goodbye => "goodbye",
        }
    }
}
