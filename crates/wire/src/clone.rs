//! The clone's side of the protocol as one pure state machine that owns its rules: the
//! session's opening (a probe answered, a hello welcomed, the module checked against its hash
//! and size), the directories' replication (only contents it asked for, each once), migration
//! numbering, the answer kept until the device shows it arrived, what a broken link means (the
//! session waits to be resumed on a new connection for a window, and a resume is accepted only
//! for the migration whose answer it holds; otherwise the new connection starts a new session),
//! and the zero-baseline rule after a failure. It runs one migration at a time (its welcome says
//! so; the session's rules would take several, numbered). It never reads a clock (the time is passed in),
//! never sleeps and never touches a socket or a replica: the driver moves the messages and acts
//! on the events, as quinn drives quinn-proto.
//!
//! A driver's loop: send every [`CloneConn::poll_transmit`] (a send that fails is
//! [`CloneConn::handle_broken`]); act on each [`CloneConn::poll_event`] (ending at
//! [`CloneEvent::Ended`]); when there is neither, wait for the next message and feed it to
//! [`CloneConn::handle_message`] (or the failure to `handle_broken`), or, while
//! [`CloneConn::awaits_resume`], for a resuming connection until that instant
//! ([`CloneConn::handle_resume`], or [`CloneConn::handle_not_resumed`]).
//!
//! The zero-baseline rule: the two sides agree on the guest's memory only within one session,
//! and a failed migration may leave the replica half-way through. So a failure drops the replica
//! ([`CloneEvent::DropReplica`]) and ends the session for migrations: the device must start a
//! new one (it does: a failure ends its session too), and a migration sent on this one is a
//! protocol error.
//!
//! It knows nothing of wasm, files or stores: the state, the trees and the contents are opaque
//! to it, and what the clone lacks is the driver's answer to [`CloneEvent::Files`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::{Clocks, ContentHash, Descriptors, Environment, EntryKind, FailKind, Message, MigrationId, State, Tree, Value, content_hash};
use crate::session::{CloneEvent as SessionEvent, CloneSession, ProtocolError, Returned};

/// The rules' figures.
#[derive(Debug, Clone)]
pub struct CloneConfig {
    /// The largest module a device may upload.
    pub max_module: usize,
    /// How long a session whose link broke waits to be resumed.
    pub resume_window: Duration,
}

/// How many migrations this side runs at once on a session (what its welcome says).
pub const CONCURRENCY: u32 = 1;

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum CloneEvent {
    /// A session opened: make it resumable as the device's run `run`, look the module up, then
    /// [`CloneConn::welcome`].
    Opened { module: ContentHash, run: u64, thread: u32, environment: Environment },
    /// The module's bytes, of the hello's hash and within the size limit: compile them, then
    /// [`CloneConn::module_loaded`] (or [`CloneConn::refuse`]).
    Module { bytes: Vec<u8> },
    /// The device's preopened directories: keep them, then [`CloneConn::need_files`].
    Files { trees: Vec<Tree> },
    /// A file's content this clone asked for: keep it if it matches its hash (or
    /// [`CloneConn::refuse`]).
    FileData { hash: ContentHash, bytes: Vec<u8> },
    /// Migration number `migration` of this session (from 1): apply `state`, run `point` with
    /// `args`, then [`CloneConn::returned`] or [`CloneConn::failed`].
    Migrate { migration: MigrationId, point: u32, args: Vec<Value>, state: State, clocks: Clocks, descriptors: Descriptors },
    /// The proxied import call returned: apply `state` and go on.
    ImportReturned { results: Vec<Value>, state: State },
    /// A first message resumes run `run`'s session, awaiting the answers to its migrations
    /// `awaiting`: hand this connection to that session ([`CloneConn::handle_resume`] there),
    /// or [`CloneConn::refuse_resume`] here.
    ResumeWanted { run: u64, awaiting: Vec<MigrationId> },
    /// The replica's memory is not agreed with the device any more (a migration failed): drop
    /// it.
    DropReplica,
    /// The session on this connection is gone (a resume could not be accepted): forget it (its
    /// registration, module, files and replica); a new one may open on the same connection.
    Reset,
    /// The session is over; nothing more will come.
    Ended(Ending),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The device said goodbye.
    Goodbye,
    /// The link closed before a session opened, or the session was not resumed in its window
    /// (or another connection of its run took it over).
    Quietly,
    /// The link broke before a session opened.
    Broken(String),
    /// The device broke the protocol (it was told why).
    Protocol(ProtocolError),
    /// This clone refused something (and told the device why).
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No session yet: a probe, a hello or a resume.
    Start,
    /// A hello arrived: the welcome is owed.
    Welcoming,
    /// The module was asked for.
    AwaitModule,
    /// The module arrived: its loading is owed.
    Loading,
    /// A session is open.
    Ready,
    /// A listing arrived: the clone's wants are owed.
    Listing,
    /// A migration runs.
    Running,
    /// A migration failed, or the device cancelled it: only a goodbye, a cancel (crossing the
    /// failure) or an error (or the link's end) may follow.
    Failed,
    /// The link broke: a resume is awaited until then.
    AwaitResume { until: Instant },
    Ended,
}

/// The clone's side of one connection's session (and of the connections that resume it).
#[derive(Debug)]
pub struct CloneConn {
    config: CloneConfig,
    session: CloneSession,
    phase: Phase,
    /// Whether a session was opened (a hello): only then can a broken link be resumed.
    opened: bool,
    module: Option<ContentHash>,
    /// The last migration received on this session (they are numbered from 1).
    migrations: MigrationId,
    /// The file contents of the last listing, each once, in its order (what may be asked).
    listed: Vec<ContentHash>,
    /// Contents asked of the device and not yet received.
    asked: HashSet<ContentHash>,
    /// The answer to the last migration, until the device's next message shows it arrived.
    last: Option<(MigrationId, Arc<Message>)>,
    /// The migration the device gave up while it ran: its answer is not sent.
    cancelled: Option<MigrationId>,
    transmits: VecDeque<Arc<Message>>,
    events: VecDeque<CloneEvent>,
}

impl CloneConn {
    pub fn new(config: CloneConfig) -> CloneConn {
        CloneConn {
            config,
            session: CloneSession::new(),
            phase: Phase::Start,
            opened: false,
            module: None,
            migrations: 0,
            listed: Vec::new(),
            asked: HashSet::new(),
            last: None,
            cancelled: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The next message to send on the current connection.
    pub fn poll_transmit(&mut self) -> Option<Arc<Message>> {
        self.transmits.pop_front()
    }

    /// The next thing to act on.
    pub fn poll_event(&mut self) -> Option<CloneEvent> {
        self.events.pop_front()
    }

    /// While the link is broken and the session waits to be resumed: until when.
    pub fn awaits_resume(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitResume { until } => Some(until),
            _ => None,
        }
    }

    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether a migration is running and still awaited: the driver stops it when this turns
    /// false during the call (the device cancelled it, or broke the protocol and the session
    /// ended).
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The number of the last migration received on this session (0 before the first).
    pub fn migrations(&self) -> MigrationId {
        self.migrations
    }

    fn end(&mut self, ending: Ending) {
        self.phase = Phase::Ended;
        self.last = None;
        self.events.push_back(CloneEvent::Ended(ending));
    }

    /// Ends the session with an error message to the device.
    fn error(&mut self, ending: Ending, message: String) {
        let m = self.session.error(message);
        self.transmits.push_back(Arc::new(m));
        self.end(ending);
    }

    fn protocol(&mut self, e: ProtocolError) {
        self.error(Ending::Protocol(e.clone()), e.to_string());
    }

    /// This clone will not go on (a module that does not compile, a store that is full): the
    /// device is told `message`, and the session ends.
    pub fn refuse(&mut self, message: String) {
        if self.phase != Phase::Ended {
            self.error(Ending::Refused(message.clone()), message);
        }
    }

    fn send(&mut self, m: Result<Message, ProtocolError>) {
        match m {
            Ok(m) => self.transmits.push_back(Arc::new(m)),
            Err(e) => self.protocol(e),
        }
    }

    /// A message from the device.
    pub fn handle_message(&mut self, _now: Instant, m: Message) {
        if matches!(self.phase, Phase::Ended | Phase::AwaitResume { .. }) {
            return;
        }
        // The device heard the last answer.
        self.last = None;
        if self.phase == Phase::Failed && !matches!(m, Message::Goodbye | Message::Error { .. } | Message::Cancel { .. }) {
            let e = ProtocolError::Unexpected { got: m.kind(), state: "after a failed migration (its replica is gone: a new session must start)" };
            return self.protocol(e);
        }
        let event = match self.session.on_message(m) {
            Ok(e) => e,
            Err(e) => return self.protocol(e),
        };
        match event {
            SessionEvent::Probe { reply, .. } => {
                let m = self.session.probe_reply(reply);
                self.send(m);
            }
            SessionEvent::Hello { module, run, thread, environment } => {
                self.opened = true;
                self.module = Some(module);
                self.phase = Phase::Welcoming;
                self.events.push_back(CloneEvent::Opened { module, run, thread, environment });
            }
            SessionEvent::Resume { run, awaiting } => {
                self.events.push_back(CloneEvent::ResumeWanted { run, awaiting });
            }
            SessionEvent::Module { bytes } => {
                if bytes.len() > self.config.max_module {
                    let (n, max) = (bytes.len(), self.config.max_module);
                    return self.refuse(format!("the module has {n} bytes, over this clone's limit of {max}"));
                }
                if Some(content_hash(&bytes)) != self.module {
                    return self.refuse("the module's bytes do not match the hash in the hello".into());
                }
                self.phase = Phase::Loading;
                self.events.push_back(CloneEvent::Module { bytes });
            }
            SessionEvent::Files { trees } => {
                // What an earlier listing asked for and did not get is not wanted any more.
                self.asked.clear();
                let mut seen = HashSet::new();
                self.listed = trees
                    .iter()
                    .flat_map(|t| &t.entries)
                    .filter_map(|e| match e.kind {
                        EntryKind::File(h) => Some(h),
                        _ => None,
                    })
                    .filter(|h| seen.insert(*h))
                    .collect();
                self.phase = Phase::Listing;
                self.events.push_back(CloneEvent::Files { trees });
            }
            SessionEvent::FileData { hash, bytes } => {
                // Only contents this clone asked for, each once: a device cannot fill the
                // clone's store with what no run of it needs.
                if !self.asked.remove(&hash) {
                    return self.refuse("file contents this clone did not ask for".into());
                }
                self.events.push_back(CloneEvent::FileData { hash, bytes });
            }
            SessionEvent::Migrate { id, point, args, state, clocks, descriptors } => {
                self.migrations = id;
                self.phase = Phase::Running;
                self.events.push_back(CloneEvent::Migrate { migration: id, point, args, state, clocks, descriptors });
            }
            SessionEvent::ImportReturned { id: _, results, state } => {
                self.events.push_back(CloneEvent::ImportReturned { results, state });
            }
            SessionEvent::Cancel { id, running } => {
                if running && self.phase == Phase::Running && id == self.migrations {
                    // Stopped half-way: the replica is not agreed with the device any more.
                    self.cancelled = Some(id);
                    self.phase = Phase::Failed;
                    self.events.push_back(CloneEvent::DropReplica);
                }
                // Otherwise its answer (or failure) crossed the cancel: the device ignores it.
            }
            SessionEvent::Goodbye => self.end(Ending::Goodbye),
        }
    }

    /// The answer to [`CloneEvent::Opened`]: whether this clone already holds the module.
    pub fn welcome(&mut self, known: bool) {
        if self.phase != Phase::Welcoming {
            return self.protocol(ProtocolError::NotNow { action: "welcome", state: "not opening a session" });
        }
        self.phase = if known { Phase::Ready } else { Phase::AwaitModule };
        let m = self.session.welcome(!known, CONCURRENCY);
        self.send(m);
    }

    /// The module of [`CloneEvent::Module`] is loaded: migrations may come.
    pub fn module_loaded(&mut self) {
        if self.phase == Phase::Loading {
            self.phase = Phase::Ready;
        }
    }

    /// The answer to [`CloneEvent::Files`]: of the listing's contents, those for which `lacks`
    /// says this clone does not hold them are asked of the device (each once, in the listing's
    /// order).
    pub fn need_files(&mut self, mut lacks: impl FnMut(&ContentHash) -> bool) {
        if self.phase != Phase::Listing {
            return self.protocol(ProtocolError::NotNow { action: "ask for files", state: "not after a listing" });
        }
        let need: Vec<ContentHash> = std::mem::take(&mut self.listed).into_iter().filter(|h| lacks(h)).collect();
        self.asked.extend(need.iter().copied());
        self.phase = Phase::Ready;
        let m = self.session.need_files(need);
        self.send(m);
    }

    /// A proxied call, from inside the running migration: the device runs import `import`
    /// after applying `state`, and its answer is [`CloneEvent::ImportReturned`].
    pub fn import_call(&mut self, import: u32, args: Vec<Value>, state: State) -> Result<(), ProtocolError> {
        if self.phase != Phase::Running {
            return Err(ProtocolError::NotNow { action: "call an import on the device", state: "not running a migration" });
        }
        let m = self.session.import_call(self.migrations, import, args, state)?;
        self.transmits.push_back(Arc::new(m));
        Ok(())
    }

    /// The running migration's answer. It is kept until the device's next message, for a resume
    /// after a broken link.
    pub fn returned(&mut self, ret: Returned) {
        self.answer(|s, id| s.returned(id, ret), Phase::Ready);
    }

    /// The running migration failed: the device runs the call itself, and this session's
    /// replica is gone (see the zero-baseline rule).
    pub fn failed(&mut self, kind: FailKind, message: String) {
        let running = self.phase == Phase::Running;
        self.answer(|s, id| s.failed(id, kind, message), Phase::Failed);
        if running && self.phase == Phase::Failed {
            self.events.push_back(CloneEvent::DropReplica);
        }
    }

    fn answer(&mut self, make: impl FnOnce(&mut CloneSession, MigrationId) -> Result<Message, ProtocolError>, next: Phase) {
        if self.cancelled == Some(self.migrations) || self.phase == Phase::Ended {
            // The device gave it up (or the session ended during it): nobody awaits an answer.
            return;
        }
        if self.phase != Phase::Running {
            return self.protocol(ProtocolError::NotNow { action: "answer a migration", state: "not running one" });
        }
        let id = self.migrations;
        match make(&mut self.session, id) {
            Ok(m) => {
                let m = Arc::new(m);
                self.last = Some((id, m.clone()));
                self.transmits.push_back(m);
                self.phase = next;
            }
            Err(e) => self.protocol(e),
        }
    }

    /// The answer to [`CloneEvent::ResumeWanted`] when no session of that run lives here: the
    /// device starts a new one on this connection.
    pub fn refuse_resume(&mut self) {
        let m = self.session.refuse_resume();
        self.send(m);
    }

    /// A frame arrived whole (TLS vouches for its bytes) but is not a message this clone takes
    /// (too large for its limits, or not a message at all): the device is told why, and the
    /// session ends (it is not a broken link to wait out).
    pub fn handle_undecodable(&mut self, detail: String) {
        if self.phase != Phase::Ended {
            self.protocol(ProtocolError::Undecodable(detail));
        }
    }

    /// The connection broke (`detail` says how). A session waits to be resumed until
    /// [`CloneConn::awaits_resume`]; a connection with no session just ends.
    pub fn handle_broken(&mut self, now: Instant, detail: String, closed: bool) {
        if self.phase == Phase::Ended {
            return;
        }
        self.transmits.clear();
        if !self.opened {
            return self.end(if closed { Ending::Quietly } else { Ending::Broken(detail) });
        }
        // The session keeps its protocol state: a resume goes on from there.
        self.phase = Phase::AwaitResume { until: now + self.config.resume_window };
    }

    /// A new connection resumes this session (a [`CloneEvent::ResumeWanted`] handed here),
    /// awaiting the answers to migrations `awaiting`: `true` when it goes on there (the answer is
    /// sent again); `false` when this session cannot give them all, and the new connection
    /// starts a new session ([`CloneEvent::Reset`]).
    pub fn handle_resume(&mut self, _now: Instant, awaiting: &[MigrationId]) -> bool {
        match self.last.clone() {
            // Only a session whose link broke (the driver breaks the old one first) is resumed.
            Some((id, last)) if self.opened && awaiting == [id] && matches!(self.phase, Phase::AwaitResume { .. }) => {
                // The session goes on where it was; the new connection's first answer is
                // `resumed`, then the answer the device missed.
                self.phase = if matches!(*last, Message::Failed { .. }) { Phase::Failed } else { Phase::Ready };
                self.transmits.clear();
                self.transmits.push_back(Arc::new(Message::Resumed { ok: true }));
                self.transmits.push_back(last);
                true
            }
            _ => {
                // A new session on the new connection, whose first message was the resume.
                *self = CloneConn::new(self.config.clone());
                self.events.push_back(CloneEvent::Reset);
                self.transmits.push_back(Arc::new(Message::Resumed { ok: false }));
                false
            }
        }
    }

    /// No connection came to resume the session in its window (or one of the same run took
    /// its place): it is over.
    pub fn handle_not_resumed(&mut self) {
        if self.phase != Phase::Ended {
            self.end(Ending::Quietly);
        }
    }

    /// Time passed: a session whose resume window closed is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::AwaitResume { until } = self.phase
            && now >= until
        {
            self.end(Ending::Quietly);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Entry, FileStat, PROTOCOL_VERSION};

    const WINDOW: Duration = Duration::from_secs(30);

    fn conn() -> CloneConn {
        CloneConn::new(CloneConfig { max_module: 1 << 20, resume_window: WINDOW })
    }

    fn sent(c: &mut CloneConn) -> Vec<Message> {
        std::iter::from_fn(|| c.poll_transmit()).map(|m| (*m).clone()).collect()
    }

    fn events(c: &mut CloneConn) -> Vec<CloneEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    fn hello(module: ContentHash) -> Message {
        Message::Hello { version: PROTOCOL_VERSION, module, run: 7, thread: 0, environment: Environment::default() }
    }

    fn migrate(id: u64) -> Message {
        Message::Migrate { id, point: 3, args: vec![Value::I32(1)], state: State::default(), clocks: Clocks::default(), descriptors: Descriptors::default() }
    }

    fn file(h: ContentHash) -> Entry {
        Entry { path: "f".into(), kind: EntryKind::File(h), stat: FileStat::default() }
    }

    /// A session opened on a module the clone holds, with one migration answered.
    fn answered(now: Instant) -> CloneConn {
        let mut c = conn();
        c.handle_message(now, hello([1; 32]));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Opened { run: 7, .. }]));
        c.welcome(true);
        assert_eq!(sent(&mut c), [Message::Welcome { need_module: false, concurrency: 1 }]);
        c.handle_message(now, migrate(1));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Migrate { migration: 1, point: 3, .. }]));
        c.returned(Returned::default());
        assert!(matches!(sent(&mut c)[..], [Message::Return { .. }]));
        c
    }

    fn ending(c: &mut CloneConn) -> Option<Ending> {
        events(c).into_iter().find_map(|e| match e {
            CloneEvent::Ended(e) => Some(e),
            _ => None,
        })
    }

    /// A frame that does not decode (a migration past the clone's frame limit, say) is the
    /// device's error, not a broken link: the device is told at once (it runs the call itself
    /// rather than waiting out its deadline), and the session does not wait to be resumed.
    #[test]
    fn an_undecodable_frame_is_told_to_the_device_and_ends_the_session() {
        let now = Instant::now();
        let mut c = answered(now);
        c.handle_message(now, migrate(2));
        let _ = events(&mut c);
        c.handle_undecodable("a frame of 9 GiB, over the limit of 1 GiB".into());
        assert!(matches!(&sent(&mut c)[..], [Message::Error { message }] if message.contains("9 GiB")));
        assert!(matches!(ending(&mut c), Some(Ending::Protocol(ProtocolError::Undecodable(_)))));
        assert_eq!(c.awaits_resume(), None);
        assert!(c.is_ended());
    }

    #[test]
    fn a_probe_is_answered_and_a_module_must_match_its_hash_and_size() {
        let now = Instant::now();
        let mut c = conn();
        c.handle_message(now, Message::Probe { bytes: vec![0; 10], reply: 5 });
        assert_eq!(sent(&mut c), [Message::ProbeReply { bytes: vec![0x5a; 5] }]);
        let module = b"\0asm module".to_vec();
        c.handle_message(now, hello(content_hash(&module)));
        events(&mut c);
        c.welcome(false);
        assert_eq!(sent(&mut c), [Message::Welcome { need_module: true, concurrency: 1 }]);
        c.handle_message(now, Message::Module { bytes: module.clone() });
        assert_eq!(events(&mut c), [CloneEvent::Module { bytes: module.clone() }]);
        c.module_loaded();

        let mut forged = conn();
        forged.handle_message(now, hello(content_hash(&module)));
        events(&mut forged);
        forged.welcome(false);
        sent(&mut forged);
        forged.handle_message(now, Message::Module { bytes: b"other".to_vec() });
        assert!(matches!(ending(&mut forged), Some(Ending::Refused(m)) if m.contains("hash")));
        assert!(matches!(sent(&mut forged)[..], [Message::Error { .. }]));

        let mut big = CloneConn::new(CloneConfig { max_module: 4, resume_window: WINDOW });
        big.handle_message(now, hello(content_hash(&module)));
        events(&mut big);
        big.welcome(false);
        big.handle_message(now, Message::Module { bytes: module });
        assert!(matches!(ending(&mut big), Some(Ending::Refused(m)) if m.contains("limit")));
    }

    #[test]
    fn only_the_contents_asked_for_come_each_once() {
        let now = Instant::now();
        let mut c = answered(now);
        let (a, b, held) = ([0xa; 32], [0xb; 32], [0xc; 32]);
        let trees = vec![Tree { guest: "/d".into(), entries: vec![file(a), file(held), file(b), file(a)] }];
        c.handle_message(now, Message::Files { trees: trees.clone() });
        assert_eq!(events(&mut c), [CloneEvent::Files { trees }]);
        c.need_files(|h| *h != held);
        assert_eq!(sent(&mut c), [Message::NeedFiles { hashes: vec![a, b] }]);
        c.handle_message(now, Message::FileData { hash: a, bytes: vec![1] });
        assert!(matches!(events(&mut c)[..], [CloneEvent::FileData { hash, .. }] if hash == a));
        // Asked once, taken once; never asked: refused.
        c.handle_message(now, Message::FileData { hash: a, bytes: vec![1] });
        assert!(matches!(ending(&mut c), Some(Ending::Refused(m)) if m.contains("did not ask")));
        assert!(matches!(sent(&mut c)[..], [Message::Error { .. }]));
        let mut d = answered(now);
        d.handle_message(now, Message::FileData { hash: held, bytes: vec![] });
        assert!(matches!(ending(&mut d), Some(Ending::Refused(_))));
    }

    #[test]
    fn a_resume_gets_the_held_answer_again_within_the_window() {
        let now = Instant::now();
        let mut c = answered(now);
        c.handle_broken(now, "reset".into(), false);
        assert_eq!(c.awaits_resume(), Some(now + WINDOW));
        assert!(c.handle_resume(now, &[1]));
        let again = sent(&mut c);
        assert!(matches!(again[..], [Message::Resumed { ok: true }, Message::Return { .. }]), "{again:?}");
        // The session goes on: the next migration is number 2.
        c.handle_message(now, migrate(2));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Migrate { migration: 2, .. }]));

        // The window passes with no resume: the session is over.
        let mut late = answered(now);
        late.handle_broken(now, "reset".into(), false);
        late.handle_timeout(now + WINDOW / 2);
        assert!(!late.is_ended());
        late.handle_timeout(now + WINDOW);
        assert_eq!(ending(&mut late), Some(Ending::Quietly));
    }

    #[test]
    fn a_resume_for_an_answer_not_held_starts_a_new_session() {
        let now = Instant::now();
        // The wrong migration.
        let mut c = answered(now);
        c.handle_broken(now, "reset".into(), true);
        assert!(!c.handle_resume(now, &[2]));
        assert_eq!(events(&mut c), [CloneEvent::Reset]);
        assert_eq!(sent(&mut c), [Message::Resumed { ok: false }]);
        c.handle_message(now, hello([1; 32]));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Opened { .. }]));
        c.welcome(true);
        sent(&mut c);
        c.handle_message(now, migrate(1));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Migrate { migration: 1, .. }]), "numbering starts over");

        // The device heard the answer (it sent something since): nothing to give again.
        let mut heard = answered(now);
        heard.handle_message(now, Message::Files { trees: vec![] });
        events(&mut heard);
        heard.need_files(|_| true);
        sent(&mut heard);
        heard.handle_broken(now, "reset".into(), false);
        assert!(!heard.handle_resume(now, &[1]));
    }

    #[test]
    fn a_failure_drops_the_replica_and_ends_the_session_for_migrations() {
        let now = Instant::now();
        let mut c = answered(now);
        c.handle_message(now, migrate(2));
        events(&mut c);
        c.failed(FailKind::Trap, "unreachable".into());
        assert!(matches!(sent(&mut c)[..], [Message::Failed { kind: FailKind::Trap, .. }]));
        assert_eq!(events(&mut c), [CloneEvent::DropReplica]);
        // The zero-baseline rule: a migration on this session would run on a lost replica.
        c.handle_message(now, migrate(3));
        assert!(matches!(ending(&mut c), Some(Ending::Protocol(_))));
        assert!(matches!(sent(&mut c)[..], [Message::Error { .. }]));

        // The failure's answer is held for a resume too, and the session stays failed.
        let mut r = answered(now);
        r.handle_message(now, migrate(2));
        events(&mut r);
        r.failed(FailKind::ResourceLimit, "memory".into());
        sent(&mut r);
        r.handle_broken(now, "reset".into(), false);
        assert!(r.handle_resume(now, &[2]));
        assert!(matches!(sent(&mut r)[..], [Message::Resumed { ok: true }, Message::Failed { .. }]));
        r.handle_message(now, Message::Goodbye);
        assert_eq!(ending(&mut r), Some(Ending::Goodbye));
    }

    #[test]
    fn a_link_lost_before_a_session_just_ends() {
        let now = Instant::now();
        let mut c = conn();
        c.handle_broken(now, "closed".into(), true);
        assert_eq!(ending(&mut c), Some(Ending::Quietly));
        let mut d = conn();
        d.handle_broken(now, "tls alert".into(), false);
        assert_eq!(ending(&mut d), Some(Ending::Broken("tls alert".into())));
        // A first message out of order is a protocol error, told to the device.
        let mut e = conn();
        e.handle_message(now, migrate(1));
        assert!(matches!(ending(&mut e), Some(Ending::Protocol(_))));
        assert!(matches!(sent(&mut e)[..], [Message::Error { .. }]));
    }

    #[test]
    fn a_first_resume_with_no_session_here_is_refused_and_a_hello_follows() {
        let now = Instant::now();
        let mut c = conn();
        c.handle_message(now, Message::Resume { version: PROTOCOL_VERSION, run: 7, awaiting: vec![1] });
        assert_eq!(events(&mut c), [CloneEvent::ResumeWanted { run: 7, awaiting: vec![1] }]);
        c.refuse_resume();
        assert_eq!(sent(&mut c), [Message::Resumed { ok: false }]);
        c.handle_message(now, hello([1; 32]));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Opened { .. }]));
    }

    /// A cancel of the running migration stops it: the replica is dropped, the answer the
    /// driver gives afterwards is not sent, and the goodbye ends the session cleanly; a cancel
    /// that crosses the answer is ignored; a cancel of a migration never sent is a protocol
    /// error.
    #[test]
    fn a_cancelled_migration_is_stopped_and_never_answered() {
        let now = Instant::now();
        let mut c = answered(now);
        c.handle_message(now, migrate(2));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Migrate { migration: 2, .. }]));
        assert!(c.is_running());
        c.handle_message(now, Message::Cancel { id: 2 });
        assert!(!c.is_running(), "the driver stops the call");
        assert_eq!(events(&mut c), [CloneEvent::DropReplica]);
        c.returned(Returned::default());
        c.failed(FailKind::Trap, "stopped".into());
        assert!(sent(&mut c).is_empty() && events(&mut c).is_empty(), "nothing for a cancelled migration");
        c.handle_message(now, Message::Goodbye);
        assert_eq!(events(&mut c), [CloneEvent::Ended(Ending::Goodbye)]);

        // Crossing: the answer went out, then the cancel arrives; a failure crossing it too.
        let mut c = answered(now);
        c.handle_message(now, Message::Cancel { id: 1 });
        assert!(sent(&mut c).is_empty() && events(&mut c).is_empty());
        c.handle_message(now, migrate(2));
        assert!(matches!(events(&mut c)[..], [CloneEvent::Migrate { migration: 2, .. }]));
        c.failed(FailKind::Trap, "unreachable".into());
        assert!(matches!(sent(&mut c)[..], [Message::Failed { id: 2, .. }]));
        assert_eq!(events(&mut c), [CloneEvent::DropReplica]);
        c.handle_message(now, Message::Cancel { id: 2 });
        c.handle_message(now, Message::Goodbye);
        assert_eq!(events(&mut c), [CloneEvent::Ended(Ending::Goodbye)]);

        let mut c = answered(now);
        c.handle_message(now, Message::Cancel { id: 5 });
        assert!(matches!(sent(&mut c)[..], [Message::Error { .. }]), "a migration never sent");
    }
}
