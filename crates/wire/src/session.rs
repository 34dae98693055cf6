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
//!   migrate(id) ------------------------>   (point, args, state delta, clocks, descriptors)
//!   <---------------------- import-call(id)  (zero or more, each answered:)
//!   import-return(id) ------------------>
//!   <------------- return(id) | failed(id)   (results, state delta, output, file changes, exit;
//!                                             or why not)
//!   cancel(id) ------------------------->   (instead of awaiting the answer: the device gave
//!                                             the migration up and runs the call itself)
//!   ... more migrations ...
//!   goodbye ---------------------------->   (the run is over)
//! ```
//! Either side may send `error` at any time; the session is then closed.
//!
//! Migrations are numbered by the device from 1 (each one more than the last), and every
//! message of a migration names its number, so several may be in flight at once (one per
//! thread of the device), as many as the welcome's `concurrency` allows; each goes through
//! its own calls and answer, interleaved in any order with the others'. The directories are
//! listed, and the session ended, only when none is in flight.
//!
//! When the link breaks during a migration, the device opens a new connection and sends
//! `resume` (its run and the migrations it awaits) instead of a hello. If the clone still holds
//! that session, it answers `resumed(ok)` and then the awaited answers (the migrations went on
//! while the link was down); otherwise `resumed(not ok)`, and the device starts a new session
//! with a hello on the same connection.

use std::collections::BTreeMap;

use crate::message::{Access, Clocks, ContentHash, Descriptors, Environment, FailKind, FileOp, MAX_IN_FLIGHT, Message, MigrationId, PROTOCOL_VERSION, State, Thrown, Tree, Value};

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
    #[error("{got} for migration {id}, which is not {expected}")]
    Migration { got: &'static str, id: MigrationId, expected: &'static str },
    #[error("a migration numbered {got} where {expected} comes next")]
    Numbering { got: MigrationId, expected: MigrationId },
    #[error("a migration while {0} are in flight, as many as the clone runs at once")]
    TooMany(usize),
}

/// Where one migration in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    /// Sent (or received); its answer or a proxied call comes next.
    Running,
    /// A proxied call of it is out; its answer comes next.
    Calling,
}

/// The migrations in flight on a session, by number, and the numbering rule.
#[derive(Debug, Default)]
struct Flights {
    by_id: BTreeMap<MigrationId, Flight>,
    /// The last number given (the next is one more).
    last: MigrationId,
    /// How many may be in flight at once (the welcome's concurrency).
    limit: usize,
}

impl Flights {
    fn new() -> Flights {
        Flights { by_id: BTreeMap::new(), last: 0, limit: 1 }
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn has_room(&self) -> bool {
        self.by_id.len() < self.limit
    }

    /// A new migration numbered `id` (the next number, with room for it).
    fn start(&mut self, id: MigrationId) -> Result<(), ProtocolError> {
        if id != self.last.saturating_add(1) {
            return Err(ProtocolError::Numbering { got: id, expected: self.last.saturating_add(1) });
        }
        if !self.has_room() {
            return Err(ProtocolError::TooMany(self.by_id.len()));
        }
        self.last = id;
        self.by_id.insert(id, Flight::Running);
        Ok(())
    }

    /// Migration `id`, which must be at `from`, moves to `to` (`None`: it is over).
    fn step(&mut self, id: MigrationId, from: Flight, to: Option<Flight>, got: &'static str) -> Result<(), ProtocolError> {
        if self.by_id.get(&id) != Some(&from) {
            let expected = match from {
                Flight::Running => "running",
                Flight::Calling => "in a proxied call",
            };
            return Err(ProtocolError::Migration { got, id, expected });
        }
        match to {
            Some(to) => self.by_id.insert(id, to),
            None => self.by_id.remove(&id),
        };
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Start,
    AwaitResumed,
    AwaitWelcome,
    MustSendModule,
    Ready,
    AwaitNeedFiles,
    Closed,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Start => "not started",
            Device::AwaitResumed => "waiting for the answer to a resume",
            Device::AwaitWelcome => "waiting for welcome",
            Device::MustSendModule => "owing the module",
            Device::Ready => "open",
            Device::AwaitNeedFiles => "waiting for the files the clone needs",
            Device::Closed => "closed",
        }
    }
}

/// What the device must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// The clone accepted the hello; when `need_module`, send it with [`DeviceSession::module`].
    /// It runs up to `concurrency` migrations at once.
    Welcomed { need_module: bool, concurrency: u32 },
    /// The clone lacks these file contents: send each with [`DeviceSession::file_data`].
    NeedFiles { hashes: Vec<ContentHash> },
    /// The answer to a probe, of `size` bytes.
    ProbeReply { size: usize },
    /// The answer to a resume: when `ok`, the session goes on, awaiting the migrations' answers;
    /// otherwise say [`DeviceSession::hello`] and start over.
    Resumed { ok: bool },
    /// Migration `id` returned after `micros` on the clone: apply `state` and `files`, write
    /// `output`, then return `results` (or exit with `exit`).
    /// `access` as the message's (see [`Message::Return`]).
    Returned {
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
    /// For migration `id`, run import `import` locally after applying `state`, then answer with
    /// [`DeviceSession::import_return`].
    ImportCall { id: MigrationId, import: u32, args: Vec<Value>, state: State },
    /// Migration `id` failed on the clone: run the function locally from its entry state.
    Failed { id: MigrationId, kind: FailKind, message: String },
}

/// The device's side of a session.
#[derive(Debug)]
pub struct DeviceSession {
    state: Device,
    flights: Flights,
    /// What a resume awaits, until its answer.
    awaiting: Vec<MigrationId>,
    module: ContentHash,
    run: u64,
    thread: u32,
    environment: Environment,
}

impl DeviceSession {
    pub fn new(module: ContentHash, run: u64, thread: u32, environment: Environment) -> DeviceSession {
        DeviceSession { state: Device::Start, flights: Flights::new(), awaiting: Vec::new(), module, run, thread, environment }
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

    /// The first message on a new connection after the link broke with migrations `awaiting`
    /// of this run's session in flight (in increasing order); the session was welcomed with
    /// `concurrency`.
    pub fn resume(&mut self, awaiting: Vec<MigrationId>, concurrency: u32) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Start, "resume")?;
        let ordered = awaiting.windows(2).all(|w| w[0] < w[1]);
        let fits = !awaiting.is_empty() && awaiting.len() <= concurrency as usize && concurrency <= MAX_IN_FLIGHT;
        self.expect(ordered && fits, "resume other than one to a few migrations in increasing order")?;
        self.state = Device::AwaitResumed;
        self.flights.limit = concurrency as usize;
        self.awaiting = awaiting.clone();
        Ok(Message::Resume { version: PROTOCOL_VERSION, run: self.run, awaiting })
    }

    /// The module's bytes, after a welcome that asked for them.
    pub fn module(&mut self, bytes: Vec<u8>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::MustSendModule, "send the module")?;
        self.state = Device::Ready;
        Ok(Message::Module { bytes })
    }

    /// Whether a migration can start now.
    pub fn is_ready(&self) -> bool {
        self.state == Device::Ready && self.flights.has_room()
    }

    /// Whether the session is open (welcomed, the module given): migrations, cancels and the
    /// goodbye may be sent.
    pub fn is_open(&self) -> bool {
        self.state == Device::Ready
    }

    /// The migrations in flight, in increasing order.
    pub fn in_flight(&self) -> Vec<MigrationId> {
        self.flights.by_id.keys().copied().collect()
    }

    /// How many migrations the clone runs at once on this session (its welcome said; 1 before).
    pub fn concurrency(&self) -> u32 {
        self.flights.limit as u32
    }

    /// The preopened directories as they are now; the clone answers with what it lacks. Only
    /// with no migration in flight.
    pub fn files(&mut self, trees: Vec<Tree>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready && self.flights.is_empty(), "send the files")?;
        self.state = Device::AwaitNeedFiles;
        Ok(Message::Files { trees })
    }

    /// A file's content the clone asked for.
    pub fn file_data(&mut self, hash: ContentHash, bytes: Vec<u8>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready, "send a file")?;
        Ok(Message::FileData { hash, bytes })
    }

    /// A new migration (numbered here: the number is in the message).
    pub fn migrate(&mut self, point: u32, args: Vec<Value>, state: State, clocks: Clocks, descriptors: Descriptors) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready, "migrate")?;
        let id = self.flights.last.saturating_add(1);
        self.flights.start(id)?;
        Ok(Message::Migrate { id, point, args, state, clocks, descriptors })
    }

    /// The answer to migration `id`'s proxied call.
    pub fn import_return(&mut self, id: MigrationId, results: Vec<Value>, state: State) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready, "answer an import call")?;
        self.flights.step(id, Flight::Calling, Some(Flight::Running), "import-return")?;
        Ok(Message::ImportReturn { id, results, state })
    }

    /// Gives migration `id` up (it is running on the clone or in a proxied call): the device
    /// runs the call itself, and the clone stops it and answers nothing more for it.
    pub fn cancel(&mut self, id: MigrationId) -> Result<Message, ProtocolError> {
        self.expect(self.state == Device::Ready, "cancel a migration")?;
        if self.flights.by_id.remove(&id).is_none() {
            return Err(ProtocolError::Migration { got: "cancel", id, expected: "in flight" });
        }
        Ok(Message::Cancel { id })
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
        let got = m.kind();
        let (next, event) = match (was, m) {
            (_, Message::Error { message }) => return Err(ProtocolError::Peer(message)),
            (Device::AwaitWelcome, Message::Welcome { need_module, concurrency }) => {
                self.flights.limit = concurrency.clamp(1, MAX_IN_FLIGHT) as usize;
                let next = if need_module { Device::MustSendModule } else { Device::Ready };
                (next, DeviceEvent::Welcomed { need_module, concurrency })
            }
            (Device::AwaitNeedFiles, Message::NeedFiles { hashes }) => (Device::Ready, DeviceEvent::NeedFiles { hashes }),
            (Device::AwaitResumed, Message::Resumed { ok }) => {
                let awaiting = std::mem::take(&mut self.awaiting);
                if ok {
                    self.flights.last = awaiting.last().copied().unwrap_or(0);
                    self.flights.by_id = awaiting.into_iter().map(|id| (id, Flight::Running)).collect();
                }
                (if ok { Device::Ready } else { Device::Start }, DeviceEvent::Resumed { ok })
            }
            (Device::Start, Message::ProbeReply { bytes }) => (Device::Start, DeviceEvent::ProbeReply { size: bytes.len() }),
            (Device::Ready, Message::Return { id, results, state, micros, output, files, exit, freed, thrown, access }) => {
                self.flights.step(id, Flight::Running, None, got)?;
                (Device::Ready, DeviceEvent::Returned { id, results, state, micros, output, files, exit, freed, thrown, access })
            }
            (Device::Ready, Message::ImportCall { id, import, args, state }) => {
                self.flights.step(id, Flight::Running, Some(Flight::Calling), got)?;
                (Device::Ready, DeviceEvent::ImportCall { id, import, args, state })
            }
            (Device::Ready, Message::Failed { id, kind, message }) => {
                self.flights.step(id, Flight::Running, None, got)?;
                (Device::Ready, DeviceEvent::Failed { id, kind, message })
            }
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
    Closed,
}

impl Clone {
    fn name(self) -> &'static str {
        match self {
            Clone::AwaitHello => "waiting for hello",
            Clone::MustAnswerResume => "owing the answer to a resume",
            Clone::MustWelcome => "owing a welcome",
            Clone::AwaitModule => "waiting for the module",
            Clone::Ready => "open",
            Clone::MustAnswerFiles => "owing the list of files it needs",
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
    /// Migration `id`: apply `state`, run `point` with `args`, then [`CloneSession::returned`]
    /// or [`CloneSession::failed`].
    Migrate { id: MigrationId, point: u32, args: Vec<Value>, state: State, clocks: Clocks, descriptors: Descriptors },
    /// Migration `id`'s proxied import returned: apply `state` and go on.
    ImportReturned { id: MigrationId, results: Vec<Value>, state: State },
    /// The run is over: drop its replica.
    Goodbye,
    /// The device gave migration `id` up: when `running`, stop it (its answer is not
    /// awaited); otherwise it had been answered already, and the device ignores that answer.
    Cancel { id: MigrationId, running: bool },
    /// A device whose link broke awaits the answers to migrations `awaiting` of run `run`'s
    /// session: hand the connection to that session, or [`CloneSession::refuse_resume`].
    Resume { run: u64, awaiting: Vec<MigrationId> },
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
    /// The exception it threw instead of returning, if it did.
    pub thrown: Option<Thrown>,
    /// For a multi-threaded module, the bytes of memory 0 it read and wrote (see
    /// [`Message::Return`]: the state's pages are then exactly the written ones).
    pub access: Option<Access>,
}

/// The clone's side of a session.
#[derive(Debug)]
pub struct CloneSession {
    state: Clone,
    flights: Flights,
}

impl Default for CloneSession {
    fn default() -> Self {
        CloneSession::new()
    }
}

impl CloneSession {
    pub fn new() -> CloneSession {
        CloneSession { state: Clone::AwaitHello, flights: Flights::new() }
    }

    fn expect(&self, ok: bool, action: &'static str) -> Result<(), ProtocolError> {
        if ok { Ok(()) } else { Err(ProtocolError::NotNow { action, state: self.state.name() }) }
    }

    /// The answer to a hello: whether the module is needed, and how many migrations this clone
    /// runs at once on the session (1 to [`MAX_IN_FLIGHT`]).
    pub fn welcome(&mut self, need_module: bool, concurrency: u32) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::MustWelcome, "welcome")?;
        self.expect((1..=MAX_IN_FLIGHT).contains(&concurrency), "welcome with a concurrency out of range")?;
        self.flights.limit = concurrency as usize;
        self.state = if need_module { Clone::AwaitModule } else { Clone::Ready };
        Ok(Message::Welcome { need_module, concurrency })
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

    /// The migrations in flight, in increasing order (what a resume must await).
    pub fn in_flight(&self) -> Vec<MigrationId> {
        self.flights.by_id.keys().copied().collect()
    }

    /// Migration `id` calls an import on the device.
    pub fn import_call(&mut self, id: MigrationId, import: u32, args: Vec<Value>, state: State) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::Ready, "call an import on the device")?;
        self.flights.step(id, Flight::Running, Some(Flight::Calling), "import-call")?;
        Ok(Message::ImportCall { id, import, args, state })
    }

    /// The file contents this clone lacks, after a files message.
    pub fn need_files(&mut self, hashes: Vec<ContentHash>) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::MustAnswerFiles, "ask for files")?;
        self.state = Clone::Ready;
        Ok(Message::NeedFiles { hashes })
    }

    /// Migration `id`'s answer.
    pub fn returned(&mut self, id: MigrationId, ret: Returned) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::Ready, "return")?;
        self.flights.step(id, Flight::Running, None, "return")?;
        let Returned { results, state, micros, output, files, exit, freed, thrown, access } = ret;
        Ok(Message::Return { id, results, state, micros, output, files, exit, freed, thrown, access })
    }

    pub fn failed(&mut self, id: MigrationId, kind: FailKind, message: String) -> Result<Message, ProtocolError> {
        self.expect(self.state == Clone::Ready, "report a failure")?;
        self.flights.step(id, Flight::Running, None, "failed")?;
        Ok(Message::Failed { id, kind, message })
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
        let idle = self.flights.is_empty();
        let got = m.kind();
        let (next, event) = match (was, m) {
            (_, Message::Error { message }) => return Err(ProtocolError::Peer(message)),
            (Clone::AwaitHello, Message::Probe { bytes, reply }) => (Clone::AwaitHello, CloneEvent::Probe { size: bytes.len(), reply }),
            (Clone::AwaitHello, Message::Hello { version, module, run, thread, environment }) => {
                if version != PROTOCOL_VERSION {
                    return Err(ProtocolError::Version(version));
                }
                (Clone::MustWelcome, CloneEvent::Hello { module, run, thread, environment })
            }
            (Clone::AwaitHello, Message::Resume { version, run, awaiting }) => {
                if version != PROTOCOL_VERSION {
                    return Err(ProtocolError::Version(version));
                }
                if awaiting.is_empty() || !awaiting.windows(2).all(|w| w[0] < w[1]) {
                    return Err(ProtocolError::NotNow { action: "resume other than migrations in increasing order", state: was.name() });
                }
                (Clone::MustAnswerResume, CloneEvent::Resume { run, awaiting })
            }
            (Clone::AwaitModule, Message::Module { bytes }) => (Clone::Ready, CloneEvent::Module { bytes }),
            (Clone::Ready, Message::Files { trees }) if idle => (Clone::MustAnswerFiles, CloneEvent::Files { trees }),
            (Clone::Ready, Message::FileData { hash, bytes }) => (Clone::Ready, CloneEvent::FileData { hash, bytes }),
            (Clone::Ready, Message::Migrate { id, point, args, state, clocks, descriptors }) => {
                self.flights.start(id)?;
                (Clone::Ready, CloneEvent::Migrate { id, point, args, state, clocks, descriptors })
            }
            (Clone::Ready, Message::ImportReturn { id, results, state }) => {
                self.flights.step(id, Flight::Calling, Some(Flight::Running), got)?;
                (Clone::Ready, CloneEvent::ImportReturned { id, results, state })
            }
            (Clone::Ready, Message::Cancel { id }) => {
                if id == 0 || id > self.flights.last {
                    return Err(ProtocolError::Migration { got, id, expected: "numbered yet" });
                }
                // In flight (running or in a proxied call), or answered already (the answer
                // and the cancel crossed).
                let running = self.flights.by_id.remove(&id).is_some();
                (Clone::Ready, CloneEvent::Cancel { id, running })
            }
            (Clone::Ready, Message::Goodbye) if idle => (Clone::Closed, CloneEvent::Goodbye),
            (Clone::Ready, m @ (Message::Files { .. } | Message::Goodbye)) => {
                return Err(ProtocolError::Unexpected { got: m.kind(), state: "a migration is in flight" });
            }
            (s, m) => return Err(ProtocolError::Unexpected { got: m.kind(), state: s.name() }),
        };
        self.state = next;
        Ok(event)
    }
}
