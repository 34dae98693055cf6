//! The device's side of the protocol as one pure state machine that owns its rules: when to
//! dial, the session's opening (hello, welcome, the module), the directories' replication, the
//! migration and the proxied calls it makes, and what a broken link means: a resume on a new
//! connection (the clone still holds the session, the answer comes there), or the migration sent
//! again on a new session (the state captured again from a zero baseline), within a budget of
//! breaks and a window of reconnect tries with back-off; a clone that cannot be reached is not
//! dialled again for a while. It never reads a clock (the time is passed in), never sleeps and
//! never touches a socket: the driver moves the messages and acts on the events, as quinn
//! drives quinn-proto.
//!
//! A driver's loop: send every [`DeviceConn::poll_transmit`] on the current connection (a send
//! that fails is [`DeviceConn::handle_broken`]); act on each [`DeviceConn::poll_event`]; when
//! there is neither, wait for the next message if [`DeviceConn::awaits_message`] (and feed it to
//! [`DeviceConn::handle_message`], or the failure to `handle_broken`), else until
//! [`DeviceConn::poll_timeout`] and call [`DeviceConn::handle_timeout`].
//!
//! The zero-baseline rule: both sides agree on the guest's memory only within one session, so
//! every new session starts with [`ConnEvent::NewSession`] (the driver forgets what it sent)
//! and a migration sent again on one is captured again ([`ConnEvent::Capture`]). The clone
//! zeroes its replica when a migration fails, so a failure ends the session here too.
//!
//! It knows nothing of wasm, files or stats: the state it sends is opaque to it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::message::{Access, Clocks, ContentHash, Descriptors, Environment, FailKind, FileOp, Message, MigrationId, State, Thrown, Tree, Value};
use crate::session::{DeviceEvent as SessionEvent, DeviceSession};
use crate::Cause;

/// The rules' figures.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The (rewritten) module's hash, the app run and the thread the sessions serve.
    pub module: ContentHash,
    pub run: u64,
    pub thread: u32,
    pub environment: Environment,
    /// Times the link may break during one migration before the device runs the call itself.
    pub max_breaks: u32,
    /// How long reconnecting after a break keeps trying.
    pub reconnect_window: Duration,
    /// The first pause between reconnect tries; it doubles up to [`MAX_PAUSE`].
    pub first_pause: Duration,
    /// After a failed connection, migrations are not dialled again for this long.
    pub retry_after: Duration,
    /// One migration, from its start to the clone's answer (the session's opening, the
    /// directories' replication, the run, its proxied calls and every reconnect), takes at
    /// most this long; then the device runs the call itself. A clone that trickles its bytes
    /// or keeps making calls cannot hold the device past it.
    pub answer_within: Duration,
    /// The most calls a clone may proxy to the device during one migration.
    pub max_proxied: u32,
}

/// The longest pause between reconnect tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnEvent {
    /// Open a new connection to the clone (dropping any other), then say
    /// [`DeviceConn::handle_connected`] or [`DeviceConn::handle_dial_failed`].
    Dial,
    /// A new session is open on the clone: nothing of the guest's state is agreed yet (forget
    /// which pages and files were sent).
    NewSession,
    /// The clone lacks the module: give its bytes with [`DeviceConn::module`].
    ModuleWanted,
    /// List the preopened directories if they changed since they were last sent:
    /// [`DeviceConn::files`], or [`DeviceConn::files_unchanged`].
    ListFiles,
    /// The clone lacks these contents: give each with [`DeviceConn::file_data`], then
    /// [`DeviceConn::files_sent`].
    NeedFiles { hashes: Vec<ContentHash> },
    /// Capture the guest's state now (against the agreed baseline) and give the migration with
    /// [`DeviceConn::migrate`].
    Capture,
    /// Run import `import` here after applying `state`, then [`DeviceConn::import_return`].
    ImportCall { import: u32, args: Vec<Value>, state: State },
    /// The link broke and the clone still held the session: its answer comes on the new
    /// connection.
    Resumed,
    /// The migration (or the session it needed) is being sent again on a new session: what the
    /// proxied calls consumed is to be given back.
    Retried,
    /// The session [`DeviceConn::open`] asked for is open and the directories replicated; take
    /// it with [`DeviceConn::take_session`].
    Ready,
    /// The migrated function returned (or exited): apply, then the migration is over.
    /// With `thrown`, the function threw that exception instead (no results): apply the rest,
    /// then throw it from the point.
    /// With `access` (a multi-threaded module), the bytes of memory 0 the call read and wrote:
    /// the state's pages are exactly the written ones (see [`crate::Message::Return`]).
    Returned {
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
    /// The migration is abandoned: run the call here, from its entry state.
    Abandoned { cause: Cause, detail: String },
}

/// Why a connection is being dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A new session for the migration about to start (`retried`: the second try).
    Open { retried: bool },
    /// A resume after the link broke under the migration.
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No migration under way.
    Idle,
    /// A `Dial` is out.
    Dialing(Purpose),
    /// Waiting to dial again.
    Backoff { until: Instant, purpose: Purpose },
    /// Hello sent (`retry`: the migration is being sent again, on this new session).
    Opening { retry: Retry },
    OwingModule { retry: Retry },
    /// `ListFiles` is out.
    Listing,
    /// Files sent, the clone's wants awaited.
    AwaitNeedFiles,
    /// `NeedFiles` is out.
    SendingFiles,
    /// `Capture` is out.
    Capturing,
    /// Migrate sent; the answer (or an import call) awaited.
    Migrating,
    /// `ImportCall` is out.
    Proxying,
    /// Resume sent.
    Resuming,
}

/// When a retry is counted: as soon as the new session is open (the link broke under the
/// migration and the clone had lost it), or once the directories are replicated to it too (the
/// session had broken before the migration was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    WhenOpen,
    WhenReplicated,
}

/// The device's side of one thread's sessions with a clone.
#[derive(Debug)]
pub struct DeviceConn {
    config: DeviceConfig,
    /// The session on the current connection, once hello is sent (or one adopted).
    session: Option<DeviceSession>,
    phase: Phase,
    /// The migration under way on the current session, once sent (a resume names it).
    in_flight: Option<MigrationId>,
    /// How many migrations the session's clone runs at once (its welcome said).
    concurrency: u32,
    /// Breaks of the link during the migration under way.
    breaks: u32,
    /// The break that started the reconnecting, and until when tries go on.
    broke: Option<(Cause, String, Instant)>,
    pause: Duration,
    retry_pending: Retry,
    /// No dialling before this (a connection failed); the first abandon says why.
    unreachable_until: Option<Instant>,
    unreachable_why: Option<(Cause, String)>,
    /// When the migration under way must have been answered, and the calls it proxied.
    deadline: Option<Instant>,
    proxied: u32,
    /// While [`DeviceConn::open`] opens a session with no migration: the time it has.
    open_only: Option<Duration>,
    transmits: VecDeque<Message>,
    events: VecDeque<ConnEvent>,
}

impl DeviceConn {
    pub fn new(config: DeviceConfig) -> DeviceConn {
        let pause = config.first_pause;
        DeviceConn {
            config,
            session: None,
            phase: Phase::Idle,
            in_flight: None,
            concurrency: 1,
            breaks: 0,
            broke: None,
            pause,
            retry_pending: Retry::No,
            unreachable_until: None,
            unreachable_why: None,
            deadline: None,
            proxied: 0,
            open_only: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The rules' figures this core was made with.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Opens a session ahead of any migration (at launch, in the background): dial, hello, the
    /// module if the clone lacks it, the directories (the driver lists them even when empty:
    /// the clone's answer comes once it has compiled the module), all within `within`; then
    /// [`ConnEvent::Ready`], or [`ConnEvent::Abandoned`] with why not. A failure to connect
    /// gets one more try after a pause, as at a migration.
    pub fn open(&mut self, now: Instant, within: Duration) {
        debug_assert!(self.is_idle(), "nothing under way");
        self.breaks = 0;
        self.deadline = Some(now + within);
        self.proxied = 0;
        self.retry_pending = Retry::No;
        self.open_only = Some(within);
        self.session = None;
        self.dial(Purpose::Open { retried: false });
    }

    /// The session opened by [`DeviceConn::open`], once [`ConnEvent::Ready`] said so (for
    /// another core to [`DeviceConn::adopt`]).
    pub fn take_session(&mut self) -> Option<DeviceSession> {
        if self.is_idle() && self.has_session() { self.session.take() } else { None }
    }

    fn new_session(&self) -> DeviceSession {
        DeviceSession::new(self.config.module, self.config.run, self.config.thread, self.config.environment.clone())
    }

    /// Whether a session is open (a migration starts without dialling).
    pub fn has_session(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.is_ready())
    }

    /// Whether no migration is under way.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Takes over a session opened elsewhere (in the background, on a connection that is now
    /// the current one): it counts as new (the driver resets its baseline itself).
    pub fn adopt(&mut self, session: DeviceSession) {
        debug_assert!(self.is_idle());
        self.concurrency = session.concurrency();
        self.session = Some(session);
        self.in_flight = None;
    }

    /// The clone could not be reached (found elsewhere, by a background session): no dialling
    /// until `retry_after` from `now`, and the next migration is abandoned with this cause.
    pub fn handle_unreachable(&mut self, now: Instant, cause: Cause, detail: String) {
        self.unreachable_until = Some(now + self.config.retry_after);
        self.unreachable_why = Some((cause, detail));
    }

    /// Starts a migration: a session is opened if there is none, the directories replicated,
    /// and [`ConnEvent::Capture`] asks for the state.
    pub fn start_migration(&mut self, now: Instant) {
        debug_assert!(self.is_idle(), "one migration at a time");
        self.breaks = 0;
        self.deadline = Some(now + self.config.answer_within);
        self.proxied = 0;
        self.retry_pending = Retry::No;
        if self.has_session() {
            self.list_files();
        } else if self.unreachable_until.is_some_and(|t| now < t) {
            match self.unreachable_why.take() {
                // The background session found the link down: like a first dial that failed,
                // one more try after a pause.
                Some((cause, _)) if retries_open(cause) => {
                    self.unreachable_until = None;
                    self.phase = Phase::Backoff { until: now + self.config.first_pause, purpose: Purpose::Open { retried: true } };
                }
                Some((cause, detail)) => self.abandon(cause, detail),
                None => self.abandon(Cause::Unreachable, "the clone could not be reached moments ago; not retrying yet".into()),
            }
        } else {
            self.session = None;
            self.dial(Purpose::Open { retried: false });
        }
    }

    fn dial(&mut self, purpose: Purpose) {
        self.transmits.clear();
        self.phase = Phase::Dialing(purpose);
        self.events.push_back(ConnEvent::Dial);
    }

    fn list_files(&mut self) {
        self.phase = Phase::Listing;
        self.events.push_back(ConnEvent::ListFiles);
    }

    /// Ends the migration under way here: the session is dropped (the clone zeroes what it
    /// holds of a failed migration, and a session that broke is of no more use).
    fn abandon(&mut self, cause: Cause, detail: String) {
        // While reconnecting after a break, the break is the cause.
        let (cause, detail) = match self.broke.take() {
            Some((cause0, detail0, _)) => (cause0, format!("{detail0}; reconnecting: {detail}")),
            None => (cause, detail),
        };
        self.transmits.clear();
        if !cause.never_connected() {
            self.farewell();
        }
        self.phase = Phase::Idle;
        self.broke = None;
        self.open_only = None;
        self.events.push_back(ConnEvent::Abandoned { cause, detail });
    }

    /// Drops the session, telling the clone when it still can: the migration in flight, if
    /// any, is cancelled (the clone stops computing an answer nobody awaits, instead of
    /// keeping a replica busy up to its run-time limit), then goodbye (the clone frees the
    /// session's slots at once instead of waiting for a resume). Nothing is said on a session
    /// that is not open (the hello is unanswered, or the clone's message broke the session's
    /// rules, which closes it).
    fn farewell(&mut self) {
        let Some(mut session) = self.session.take() else { return };
        if !session.is_open() {
            return;
        }
        if matches!(self.phase, Phase::Migrating | Phase::Proxying)
            && let Some(id) = self.in_flight
            && let Ok(m) = session.cancel(id)
        {
            self.transmits.push_back(m);
        }
        if session.in_flight().is_empty() {
            self.transmits.push_back(session.goodbye());
        }
    }

    /// The driver gives up the migration under way for a reason of its own (its answer could
    /// not be merged, a file changed while it was sent): the session is dropped as for any
    /// failure, and no event follows. What the clone is told of it (a cancel, a goodbye) is
    /// queued: the driver sends [`DeviceConn::poll_transmit`]'s messages, then may drop the
    /// connection. Giving up again changes nothing.
    pub fn give_up(&mut self, cause: Cause) {
        self.events.clear();
        if self.phase == Phase::Idle && self.session.is_none() {
            return;
        }
        self.transmits.clear();
        if !cause.never_connected() {
            self.farewell();
        }
        self.phase = Phase::Idle;
        self.broke = None;
        self.open_only = None;
    }

    /// The connection asked for by [`ConnEvent::Dial`] is open.
    pub fn handle_connected(&mut self, _now: Instant) {
        let Phase::Dialing(purpose) = self.phase else { return };
        self.unreachable_until = None;
        let mut session = self.new_session();
        match purpose {
            Purpose::Open { retried } => {
                let hello = session.hello().expect("a new session says hello");
                self.transmits.push_back(hello);
                self.phase = Phase::Opening { retry: if retried { Retry::WhenReplicated } else { Retry::No } };
            }
            Purpose::Resume => {
                let id = self.in_flight.expect("a resume follows a migration sent");
                let resume = session.resume(vec![id], self.concurrency).expect("a new session may resume");
                self.transmits.push_back(resume);
                self.phase = Phase::Resuming;
            }
        }
        self.session = Some(session);
    }

    /// The connection asked for by [`ConnEvent::Dial`] could not be made.
    pub fn handle_dial_failed(&mut self, now: Instant, cause: Cause, detail: String) {
        let Phase::Dialing(purpose) = self.phase else { return };
        self.unreachable_until = Some(now + self.config.retry_after);
        match purpose {
            Purpose::Open { retried: false } if retries_open(cause) => {
                self.unreachable_until = None;
                self.phase = Phase::Backoff { until: now + self.config.first_pause, purpose: Purpose::Open { retried: true } };
            }
            Purpose::Open { .. } => self.abandon(cause, detail),
            Purpose::Resume => match self.broke {
                Some((_, _, deadline)) if now + self.pause < deadline => {
                    self.phase = Phase::Backoff { until: now + self.pause, purpose };
                    self.pause = (self.pause * 2).min(MAX_PAUSE);
                }
                _ => self.abandon(cause, detail),
            },
        }
    }

    /// A message from the clone on the current connection.
    pub fn handle_message(&mut self, _now: Instant, m: Message) {
        let Some(session) = self.session.as_mut() else {
            return self.abandon(Cause::Protocol, format!("a {} message with no session", m.kind()));
        };
        let event = match session.on_message(m) {
            Ok(e) => e,
            Err(e) => return self.abandon(Cause::Protocol, e.to_string()),
        };
        match (self.phase, event) {
            (Phase::Opening { retry }, SessionEvent::Welcomed { need_module, concurrency }) => {
                self.concurrency = concurrency;
                if need_module {
                    self.phase = Phase::OwingModule { retry };
                    self.events.push_back(ConnEvent::ModuleWanted);
                } else {
                    self.opened(retry);
                }
            }
            (Phase::Resuming, SessionEvent::Resumed { ok: true }) => {
                self.broke = None;
                self.phase = Phase::Migrating;
                self.events.push_back(ConnEvent::Resumed);
            }
            (Phase::Resuming, SessionEvent::Resumed { ok: false }) => {
                // The clone no longer holds the session: a new one on this connection, and the
                // migration sent again there.
                let hello = self.session.as_mut().expect("resuming").hello().expect("after a refused resume, hello");
                self.transmits.push_back(hello);
                self.phase = Phase::Opening { retry: Retry::WhenOpen };
            }
            (Phase::AwaitNeedFiles, SessionEvent::NeedFiles { hashes }) => {
                self.phase = Phase::SendingFiles;
                self.events.push_back(ConnEvent::NeedFiles { hashes });
            }
            (Phase::Migrating, SessionEvent::ImportCall { id: _, import, args, state }) => {
                self.proxied += 1;
                if self.proxied > self.config.max_proxied {
                    let max = self.config.max_proxied;
                    return self.abandon(Cause::Protocol, format!("the clone made more than {max} calls to the device in one migration"));
                }
                self.phase = Phase::Proxying;
                self.events.push_back(ConnEvent::ImportCall { import, args, state });
            }
            (Phase::Migrating, SessionEvent::Returned { id: _, results, state, micros, output, files, exit, freed, thrown, access }) => {
                self.phase = Phase::Idle;
                self.events.push_back(ConnEvent::Returned { results, state, micros, output, files, exit, freed, thrown, access });
            }
            (Phase::Migrating, SessionEvent::Failed { id: _, kind, message }) => {
                let cause = match kind {
                    FailKind::Trap => Cause::Trap,
                    FailKind::ResourceLimit => Cause::ResourceLimit,
                    FailKind::Unavailable => Cause::Unavailable,
                    FailKind::Exception => Cause::Exception,
                };
                self.abandon(cause, message);
            }
            (phase, other) => self.abandon(Cause::Protocol, format!("unexpected {other:?} while {phase:?}")),
        }
    }

    /// A session is open (after the welcome and, when asked for, the module).
    fn opened(&mut self, retry: Retry) {
        self.in_flight = None;
        self.events.push_back(ConnEvent::NewSession);
        match retry {
            Retry::WhenOpen => self.events.push_back(ConnEvent::Retried),
            Retry::WhenReplicated => self.retry_pending = Retry::WhenReplicated,
            Retry::No => {}
        }
        self.list_files();
    }

    /// The module's bytes, after [`ConnEvent::ModuleWanted`].
    pub fn module(&mut self, bytes: Vec<u8>) {
        let Phase::OwingModule { retry } = self.phase else { return };
        match self.session.as_mut().map(|s| s.module(bytes)) {
            Some(Ok(m)) => {
                self.transmits.push_back(m);
                self.opened(retry);
            }
            _ => self.abandon(Cause::Protocol, "the module is not owed".into()),
        }
    }

    /// The directories' listing, after [`ConnEvent::ListFiles`].
    pub fn files(&mut self, trees: Vec<Tree>) {
        if self.phase != Phase::Listing {
            return;
        }
        match self.session.as_mut().map(|s| s.files(trees)) {
            Some(Ok(m)) => {
                self.transmits.push_back(m);
                self.phase = Phase::AwaitNeedFiles;
            }
            _ => self.abandon(Cause::Protocol, "cannot send the files now".into()),
        }
    }

    /// Nothing to replicate, after [`ConnEvent::ListFiles`].
    pub fn files_unchanged(&mut self) {
        if self.phase == Phase::Listing {
            self.capture();
        }
    }

    /// One content the clone asked for, after [`ConnEvent::NeedFiles`].
    pub fn file_data(&mut self, hash: ContentHash, bytes: Vec<u8>) {
        if self.phase != Phase::SendingFiles {
            return;
        }
        match self.session.as_mut().map(|s| s.file_data(hash, bytes)) {
            Some(Ok(m)) => self.transmits.push_back(m),
            _ => self.abandon(Cause::Protocol, "cannot send a file now".into()),
        }
    }

    /// Every content asked for is given.
    pub fn files_sent(&mut self) {
        if self.phase == Phase::SendingFiles {
            self.capture();
        }
    }

    fn capture(&mut self) {
        if self.open_only.take().is_some() {
            // Opened ahead: nothing to migrate yet.
            self.retry_pending = Retry::No;
            self.phase = Phase::Idle;
            self.deadline = None;
            self.events.push_back(ConnEvent::Ready);
            return;
        }
        if self.retry_pending == Retry::WhenReplicated {
            self.retry_pending = Retry::No;
            self.events.push_back(ConnEvent::Retried);
        }
        self.phase = Phase::Capturing;
        self.events.push_back(ConnEvent::Capture);
    }

    /// The migration, after [`ConnEvent::Capture`].
    pub fn migrate(&mut self, point: u32, args: Vec<Value>, state: State, clocks: Clocks, descriptors: Descriptors) {
        if self.phase != Phase::Capturing {
            return;
        }
        match self.session.as_mut().map(|s| s.migrate(point, args, state, clocks, descriptors)) {
            Some(Ok(m)) => {
                if let Message::Migrate { id, .. } = &m {
                    self.in_flight = Some(*id);
                }
                self.transmits.push_back(m);
                self.phase = Phase::Migrating;
            }
            _ => self.abandon(Cause::Protocol, "cannot migrate now".into()),
        }
    }

    /// The answer to [`ConnEvent::ImportCall`].
    pub fn import_return(&mut self, results: Vec<Value>, state: State) {
        if self.phase != Phase::Proxying {
            return;
        }
        let id = self.in_flight.unwrap_or(0);
        match self.session.as_mut().map(|s| s.import_return(id, results, state)) {
            Some(Ok(m)) => {
                self.transmits.push_back(m);
                self.phase = Phase::Migrating;
            }
            _ => self.abandon(Cause::Protocol, "cannot answer an import call now".into()),
        }
    }

    /// The current connection failed (a send or a receive) with `cause`.
    pub fn handle_broken(&mut self, now: Instant, cause: Cause, detail: String) {
        // What was queued after the messages that did not go out is void (but not what was
        // decided with nothing under way: an abandonment whose farewell did not go out).
        self.transmits.clear();
        if self.phase != Phase::Idle {
            self.events.clear();
        }
        match self.phase {
            Phase::Idle | Phase::Dialing(_) | Phase::Backoff { .. } => {
                // Nothing was under way on it: the session is of no more use.
                self.session = None;
            }
            // The link broke under the migration: reconnect and resume.
            Phase::Migrating | Phase::Proxying if cause.link_broke() && self.breaks < self.config.max_breaks => {
                self.breaks += 1;
                self.session = None;
                self.pause = self.config.first_pause;
                self.broke = Some((cause, detail, now + self.config.reconnect_window));
                self.dial(Purpose::Resume);
            }
            // On the way to the migration (or the session had gone stale, the clone having
            // restarted): once more, on a new session.
            // (The directories' contents go out after `Capture` is queued, which waits for them.)
            Phase::Opening { retry: Retry::No } | Phase::OwingModule { retry: Retry::No } | Phase::Listing | Phase::AwaitNeedFiles | Phase::SendingFiles | Phase::Capturing
                if retries_open(cause) && self.retry_pending == Retry::No && self.breaks == 0 && !self.retried_open() =>
            {
                self.session = None;
                self.unreachable_until = None;
                self.phase = Phase::Backoff { until: now + self.config.first_pause, purpose: Purpose::Open { retried: true } };
            }
            _ => {
                // Nothing more can be said on a broken link; on a link that holds (a send that
                // timed out, an answer that does not decode) the clone is told, as for any
                // migration given up.
                if cause.link_broke() {
                    self.session = None;
                }
                self.abandon(cause, detail);
            }
        }
    }

    /// Whether this migration has already opened a second session before it was sent.
    fn retried_open(&self) -> bool {
        matches!(self.phase, Phase::Opening { retry: Retry::WhenReplicated } | Phase::OwingModule { retry: Retry::WhenReplicated })
    }

    /// The time came (see [`DeviceConn::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Idle
            && self.deadline.is_some_and(|d| now >= d)
        {
            let within = self.open_only.unwrap_or(self.config.answer_within);
            return self.abandon(Cause::Timeout, format!("the clone did not answer within {within:?}"));
        }
        if let Phase::Backoff { until, purpose } = self.phase
            && now >= until
        {
            self.dial(purpose);
        }
    }

    /// The next message to send on the current connection.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    /// The next thing to act on. Events wait until every queued message is sent: an event
    /// stands for what those messages did (a session is open once its hello and module went
    /// out), and a send that fails ([`DeviceConn::handle_broken`]) voids them.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        if !self.transmits.is_empty() {
            return None;
        }
        let event = self.events.pop_front();
        if event == Some(ConnEvent::NewSession) {
            // Reconnecting ends when the new session is open.
            self.broke = None;
        }
        event
    }

    /// When to call [`DeviceConn::handle_timeout`], if nothing arrives first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle => None,
            Phase::Backoff { until, .. } => Some(self.deadline.map_or(until, |d| d.min(until))),
            _ => self.deadline,
        }
    }

    /// Whether the migration's answer (or a call it makes) is awaited.
    pub fn awaits_answer(&self) -> bool {
        self.phase == Phase::Migrating
    }

    /// Whether a message from the clone is awaited on the current connection.
    pub fn awaits_message(&self) -> bool {
        matches!(self.phase, Phase::Opening { .. } | Phase::AwaitNeedFiles | Phase::Migrating | Phase::Resuming)
    }

    /// The run is over: the goodbye to send, if a session is open.
    pub fn close(&mut self) -> Option<Message> {
        let mut session = self.session.take()?;
        session.is_ready().then(|| session.goodbye())
    }
}

/// Whether a failure to open a session before the migration is sent gets one more try: the link
/// broke, or the clone was not reachable for a moment (not a timeout, a refused key or an
/// address that does not resolve).
fn retries_open(cause: Cause) -> bool {
    cause.link_broke() || cause == Cause::Connect
}
