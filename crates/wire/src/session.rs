//! The session state machines: which message may come when, for each side. Pure: they take
//! messages and the application's decisions and return messages to send and events to act on;
//! the I/O layer moves the bytes.
//!
//! ```text
//! device                              clone
//!   hello ------------------------------>   (version, module hash, run, thread)
//!   <------------------------------ welcome  (need_module)
//!   module ----------------------------->   (only when asked)
//!   files ------------------------------>   (the preopened directories, when they changed)
//!   <--------------------------- need-files  (the contents the clone lacks, by hash)
//!   file-data -------------------------->   (one per hash asked for)
//!   migrate ---------------------------->   (point, args, state delta, clocks, descriptors)
//!   <-------------------------- import-call  (zero or more, each answered:)
//!   import-return ---------------------->
//!   <--------------------- return | failed   (results, state delta, output, file changes, exit;
//!                                             or why not)
//!   ... more migrations ...
//!   goodbye ---------------------------->   (the run is over)
//! ```
//! Either side may send `error` at any time; the session is then closed.
//!
//! When the link breaks during a migration, the device opens a new connection and sends
//! `resume` (its run and the migration it awaits) instead of a hello. If the clone still holds
//! that session, it answers `resumed(ok)` and then the awaited `return` or `failed` (the
//! migration went on while the link was down); otherwise `resumed(not ok)`, and the device
//! starts a new session with a hello on the same connection.

use crate::message::{Clocks, Descriptors, Environment, FailKind, FileOp, ContentHash, Message, PROTOCOL_VERSION, State, Tree, Value};

/// A message that is not allowed where the session is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unexpected {got} message while {state}")]
    Unexpected { got: &'static str, state: &'static str },
    #[error("the peer speaks protocol version {0}, this side {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("cannot {action} while {state}")]
    NotNow { action: &'static str, state: &'static str },
    #[error("the peer reported an error: {0}")]
    Peer(String),
    #[error("a frame that is not a message this side takes: {0}")]
    Undecodable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Start,
    AwaitResumed,
    AwaitWelcome,
    MustSendModule,
    Ready,
    AwaitNeedFiles,
    Migrating,
    Proxying,
    Closed,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Start => "not started",
            Device::AwaitResumed => "waiting for the answer to a resume",
            Device::AwaitWelcome => "waiting for welcome",
            Device::MustSendModule => "owing the module",
            Device::Ready => "idle",
            Device::AwaitNeedFiles => "waiting for the files the clone needs",
            Device::Migrating => "migrating",
            Device::Proxying => "running a proxied import",
            Device::Closed => "closed",
        }
    }
}

/// What the device must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// The clone accepted the hello; when `need_module`, send it with [`DeviceSession::module`].
    Welcomed { need_module: bool },
    /// The clone lacks these file contents: send each with [`DeviceSession::file_data`].
    NeedFiles { hashes: Vec<ContentHash> },
    /// The answer to a probe, of `size` bytes.
    ProbeReply { size: usize },
    /// The answer to a resume: when `ok`, the session goes on, awaiting the migration's answer;
    /// otherwise say [`DeviceSession::hello`] and start over.
    Resumed { ok: bool },
    /// The migrated function returned after `micros` on the clone: apply `state` and `files`,
    /// write `output`, then return `results` (or exit with `exit`).
    Returned { results: Vec<Value>, state: State, micros: u64, output: Vec<(u32, Vec<u8>)>, files: Vec<FileOp>, exit: Option<u32>, freed: u32 },
    /// Run import `import` locally after applying `state`, then answer with
    /// [`DeviceSession::import_return`].
    ImportCall { import: u32, args: Vec<Value>, state: State },
    /// The remote attempt failed: run the function locally from its entry state.
    Failed { kind: FailKind, message: String },
}

/// The device's side of a session.
#[derive(Debug)]
pub struct DeviceSession {
    state: Device,
    module: ContentHash,
    run: u64,
    thread: u32,
    environment: Environment,
}

impl DeviceSession {
    pub fn new(module: ContentHash, run: u64, thread: u32, environment: Environment) -> DeviceSession {
        DeviceSession { state: Device::Start, module, run, thread, environment }
    }

    fn expect(&self, ok: bool, action: &'static str) -> Result<(), ProtocolError> {
        if ok { Ok(()) } else { Err(ProtocolError::NotNow { action, state: self.state.name() }) }
    }

    /// A link measurement, before the hello: `bytes` up, `reply` bytes back.
    pub fn probe(&mut self, bytes: Vec<u8>, reply: u32) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Start, "probe the link")?;
        Ok(Message::Probe { bytes, reply })
    }

    /// The first message.
    pub fn hello(&mut self) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Start, "say hello")?;
        self.state = Device::AwaitWelcome;
        Ok(Message::Hello {
            version: PROTOCOL_VERSION,
            module: self.module,
            run: self.run,
            thread: self.thread,
            environment: self.environment.clone(),
        })
    }

    /// The first message on a new connection after the link broke during migration number
    /// `migration` of this run's session.
    pub fn resume(&mut self, migration: u64) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Start, "resume")?;
        self.state = Device::AwaitResumed;
        Ok(Message::Resume { version: PROTOCOL_VERSION, run: self.run, migration })
    }

    /// The module's bytes, after a welcome that asked for them.
    pub fn module(&mut self, bytes: Vec<u8>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::MustSendModule, "send the module")?;
        self.state = Device::Ready;
        Ok(Message::Module { bytes })
    }

    /// Whether a migration can start now.
    pub fn is_ready(&self) -> bool {
        self.state == Device::Ready
    }

    /// The preopened directories as they are now; the clone answers with what it lacks.
    pub fn files(&mut self, trees: Vec<Tree>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready, "send the files")?;
        self.state = Device::AwaitNeedFiles;
        Ok(Message::Files { trees })
    }

    /// A file's content the clone asked for.
    pub fn file_data(&mut self, hash: ContentHash, bytes: Vec<u8>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready, "send a file")?;
        Ok(Message::FileData { hash, bytes })
    }

    pub fn migrate(&mut self, point: u32, args: Vec<Value>, state: State, clocks: Clocks, descriptors: Descriptors) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready, "migrate")?;
        self.state = Device::Migrating;
        Ok(Message::Migrate { point, args, state, clocks, descriptors })
    }

    pub fn import_return(&mut self, results: Vec<Value>, state: State) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Proxying, "answer an import call")?;
        self.state = Device::Migrating;
        Ok(Message::ImportReturn { results, state })
    }

    /// The last message of a run.
    pub fn goodbye(&mut self) -> Message {
        self.state = Device::Closed;
        Message::Goodbye
    }

    /// Marks the session unusable (after a transport error or a local decision to give up).
    pub fn close(&mut self) {
        self.state = Device::Closed;
    }

    /// A message from the clone.
    pub fn on_message(&mut self, m: Message) -> Result<DeviceEvent, ProtocolError> {
        let was = self.state;
        self.state = Device::Closed;
        let (next, event) = match (was, m) {
            (_, Message::Error { message }) => return Err(ProtocolError::Peer(message)),
            (Device::AwaitWelcome, Message::Welcome { need_module }) => {
                let next = if need_module { Device::MustSendModule } else { Device::Ready };
                (next, DeviceEvent::Welcomed { need_module })
            }
            (Device::AwaitNeedFiles, Message::NeedFiles { hashes }) => (Device::Ready, DeviceEvent::NeedFiles { hashes }),
            (Device::AwaitResumed, Message::Resumed { ok }) => {
                (if ok { Device::Migrating } else { Device::Start }, DeviceEvent::Resumed { ok })
            }
            (Device::Start, Message::ProbeReply { bytes }) => (Device::Start, DeviceEvent::ProbeReply { size: bytes.len() }),
            (Device::Migrating, Message::Return { results, state, micros, output, files, exit, freed }) => {
                (Device::Ready, DeviceEvent::Returned { results, state, micros, output, files, exit, freed })
            }
            (Device::Migrating, Message::ImportCall { import, args, state }) => {
                (Device::Proxying, DeviceEvent::ImportCall { import, args, state })
            }
            (Device::Migrating, Message::Failed { kind, message }) => (Device::Ready, DeviceEvent::Failed { kind, message }),
            (s, m) => return Err(ProtocolError::Unexpected { got: m.kind(), state: s.name() }),
        };
        self.state = next;
        Ok(event)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clone {
    AwaitHello,
    MustAnswerResume,
    MustWelcome,
    AwaitModule,
    Ready,
    MustAnswerFiles,
    Running,
    AwaitImportReturn,
    Closed,
}

impl Clone {
    fn name(self) -> &'static str {
        match self {
            Clone::AwaitHello => "waiting for hello",
            Clone::MustAnswerResume => "owing the answer to a resume",
            Clone::MustWelcome => "owing a welcome",
            Clone::AwaitModule => "waiting for the module",
            Clone::Ready => "idle",
            Clone::MustAnswerFiles => "owing the list of files it needs",
            Clone::Running => "running a migrated function",
            Clone::AwaitImportReturn => "waiting for a proxied import",
            Clone::Closed => "closed",
        }
    }
}

/// What the clone must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum CloneEvent {
    /// A device says hello: look the module up, then [`CloneSession::welcome`].
    Hello { module: ContentHash, run: u64, thread: u32, environment: Environment },
    /// The module's bytes (check their hash against the hello's).
    Module { bytes: Vec<u8> },
    /// The device's preopened directories: keep them, then [`CloneSession::need_files`].
    Files { trees: Vec<Tree> },
    /// A file's content (check it against its hash).
    FileData { hash: ContentHash, bytes: Vec<u8> },
    /// Apply `state`, run `point` with `args`, then [`CloneSession::returned`] or
    /// [`CloneSession::failed`].
    Migrate { point: u32, args: Vec<Value>, state: State, clocks: Clocks, descriptors: Descriptors },
    /// The proxied import returned: apply `state` and go on.
    ImportReturned { results: Vec<Value>, state: State },
    /// The run is over: drop its replica.
    Goodbye,
    /// A device whose link broke awaits the answer to migration `migration` of run `run`'s
    /// session: hand the connection to that session, or [`CloneSession::refuse_resume`].
    Resume { run: u64, migration: u64 },
    /// A link measurement before the hello: answer with `reply` bytes.
    Probe { size: usize, reply: u32 },
}

/// What a migrated function gave back, for [`CloneSession::returned`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Returned {
    pub results: Vec<Value>,
    pub state: State,
    /// Execution time on the clone.
    pub micros: u64,
    /// What it wrote to stdout (1) and stderr (2), in order.
    pub output: Vec<(u32, Vec<u8>)>,
    /// What it changed in the preopened directories, in order.
    pub files: Vec<FileOp>,
    /// The code it passed to `proc_exit`, if it exited.
    pub exit: Option<u32>,
    /// Changed pages left out as free heap.
    pub freed: u32,
}

/// The clone's side of a session.
#[derive(Debug)]
pub struct CloneSession {
    state: Clone,
}

impl Default for CloneSession {
    fn default() -> Self {
        CloneSession::new()
    }
}

impl CloneSession {
    pub fn new() -> CloneSession {
        CloneSession { state: Clone::AwaitHello }
    }

    fn expect(&self, ok: bool, action: &'static str) -> Result<(), ProtocolError> {
        if ok { Ok(()) } else { Err(ProtocolError::NotNow { action, state: self.state.name() }) }
    }

    pub fn welcome(&mut self, need_module: bool) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::MustWelcome, "welcome")?;
        self.state = if need_module { Clone::AwaitModule } else { Clone::Ready };
        Ok(Message::Welcome { need_module })
    }

    /// The answer to a resume whose session is gone: the device starts over with a hello.
    pub fn refuse_resume(&mut self) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::MustAnswerResume, "refuse a resume")?;
        self.state = Clone::AwaitHello;
        Ok(Message::Resumed { ok: false })
    }

    /// The answer to a resume whose session lives on: this connection now belongs to that
    /// session (which goes on in its own state), and this one is over.
    pub fn accept_resume(&mut self) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::MustAnswerResume, "accept a resume")?;
        self.state = Clone::Closed;
        Ok(Message::Resumed { ok: true })
    }

    pub fn import_call(&mut self, import: u32, args: Vec<Value>, state: State) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::Running, "call an import on the device")?;
        self.state = Clone::AwaitImportReturn;
        Ok(Message::ImportCall { import, args, state })
    }

    /// The file contents this clone lacks, after a files message.
    pub fn need_files(&mut self, hashes: Vec<ContentHash>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::MustAnswerFiles, "ask for files")?;
        self.state = Clone::Ready;
        Ok(Message::NeedFiles { hashes })
    }

    /// The migrated function's answer.
    pub fn returned(&mut self, ret: Returned) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::Running, "return")?;
        self.state = Clone::Ready;
        let Returned { results, state, micros, output, files, exit, freed } = ret;
        Ok(Message::Return { results, state, micros, output, files, exit, freed })
    }

    pub fn failed(&mut self, kind: FailKind, message: String) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::Running, "report a failure")?;
        self.state = Clone::Ready;
        Ok(Message::Failed { kind, message })
    }

    /// The answer to a probe: `reply` bytes (at most what the codec lets a probe ask for).
    pub fn probe_reply(&mut self, reply: u32) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::AwaitHello, "answer a probe")?;
        Ok(Message::ProbeReply { bytes: vec![0x5a; reply as usize] })
    }

    /// The last message of a session that ends on an error: the device is told why.
    pub fn error(&mut self, message: String) -> Message {
        self.state = Clone::Closed;
        Message::Error { message }
    }

    /// A message from the device.
    pub fn on_message(&mut self, m: Message) -> Result<CloneEvent, ProtocolError> {
        let was = self.state;
        self.state = Clone::Closed;
        let (next, event) = match (was, m) {
            (_, Message::Error { message }) => return Err(ProtocolError::Peer(message)),
            (Clone::AwaitHello, Message::Probe { bytes, reply }) => (Clone::AwaitHello, CloneEvent::Probe { size: bytes.len(), reply }),
            (Clone::AwaitHello, Message::Hello { version, module, run, thread, environment }) => {
                if version != PROTOCOL_VERSION {
                    return Err(ProtocolError::Version(version));
                }
                (Clone::MustWelcome, CloneEvent::Hello { module, run, thread, environment })
            }
            (Clone::AwaitHello, Message::Resume { version, run, migration }) => {
                if version != PROTOCOL_VERSION {
                    return Err(ProtocolError::Version(version));
                }
                (Clone::MustAnswerResume, CloneEvent::Resume { run, migration })
            }
            (Clone::AwaitModule, Message::Module { bytes }) => (Clone::Ready, CloneEvent::Module { bytes }),
            (Clone::Ready, Message::Files { trees }) => (Clone::MustAnswerFiles, CloneEvent::Files { trees }),
            (Clone::Ready, Message::FileData { hash, bytes }) => (Clone::Ready, CloneEvent::FileData { hash, bytes }),
            (Clone::Ready, Message::Migrate { point, args, state, clocks, descriptors }) => {
                (Clone::Running, CloneEvent::Migrate { point, args, state, clocks, descriptors })
            }
            (Clone::AwaitImportReturn, Message::ImportReturn { results, state }) => {
                (Clone::Running, CloneEvent::ImportReturned { results, state })
            }
            (Clone::Ready, Message::Goodbye) => (Clone::Closed, CloneEvent::Goodbye),
            (s, m) => return Err(ProtocolError::Unexpected { got: m.kind(), state: s.name() }),
        };
        self.state = next;
        Ok(event)
    }
}
