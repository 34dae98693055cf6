//! The device's protocol core, driven by hand in virtual time: every rule it owns (opening,
//! the module, file sync, proxied calls, resume, retry on a new session, the break budget, the
//! reconnect window and its back-off, the unreachable pause, the zero baseline after a failure)
//! shown by the messages it sends and the events it gives.

use std::time::{Duration, Instant};

use clonecloud_wire::{
    Cause, Clocks, ConnEvent, Descriptors, DeviceConfig, DeviceConn, Environment, FailKind, Message, State, Tree,
};

fn config() -> DeviceConfig {
    DeviceConfig {
        module: [7; 32],
        run: 42,
        thread: 0,
        environment: Environment::default(),
        max_breaks: 3,
        reconnect_window: Duration::from_secs(3),
        first_pause: Duration::from_millis(50),
        retry_after: Duration::from_secs(5),
        answer_within: Duration::from_secs(60),
        max_proxied: 1000,
    }
}

/// The test's side of the link: what the core sent, and its events, in order.
struct Pair {
    core: DeviceConn,
    now: Instant,
}

impl Pair {
    fn new() -> Pair {
        Pair { core: DeviceConn::new(config()), now: Instant::now() }
    }
    fn sent(&mut self) -> Vec<&'static str> {
        std::iter::from_fn(|| self.core.poll_transmit()).map(|m| m.kind()).collect()
    }
    fn sent_messages(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.core.poll_transmit()).collect()
    }
    fn events(&mut self) -> Vec<ConnEvent> {
        std::iter::from_fn(|| self.core.poll_event()).collect()
    }
    fn receive(&mut self, m: Message) {
        self.core.handle_message(self.now, m);
    }
    fn migrate(&mut self) {
        self.core.migrate(3, vec![], State::default(), Clocks::default(), Descriptors::default());
    }
    fn returned() -> Message {
        Self::returned_to(1)
    }
    fn returned_to(id: u64) -> Message {
        Message::Return { id, results: vec![], state: State::default(), micros: 1, output: vec![], files: vec![], exit: None, freed: 0, thrown: None, access: None }
    }
    /// From `start_migration` with no session to the migrate message sent, the clone having the
    /// module and no files to ask for.
    fn open_and_migrate(&mut self) {
        self.core.start_migration(self.now);
        assert_eq!(self.events(), [ConnEvent::Dial]);
        self.core.handle_connected(self.now);
        assert_eq!(self.sent(), ["hello"]);
        self.receive(Message::Welcome { need_module: false, concurrency: 1 });
        assert_eq!(self.events(), [ConnEvent::NewSession, ConnEvent::ListFiles]);
        self.core.files_unchanged();
        assert_eq!(self.events(), [ConnEvent::Capture]);
        self.migrate();
        assert_eq!(self.sent(), ["migrate"]);
    }
}

#[test]
fn a_whole_migration_with_the_module_files_and_a_proxied_call() {
    let mut p = Pair::new();
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
    assert!(p.sent().is_empty(), "nothing before the connection");
    p.core.handle_connected(p.now);
    assert_eq!(p.sent(), ["hello"]);
    assert!(p.core.awaits_message());
    p.receive(Message::Welcome { need_module: true, concurrency: 1 });
    assert_eq!(p.events(), [ConnEvent::ModuleWanted]);
    p.core.module(b"\0asm".to_vec());
    assert_eq!(p.sent(), ["module"]);
    assert_eq!(p.events(), [ConnEvent::NewSession, ConnEvent::ListFiles]);
    p.core.files(vec![Tree::default()]);
    assert_eq!(p.sent(), ["files"]);
    p.receive(Message::NeedFiles { hashes: vec![[1; 32], [2; 32]] });
    assert_eq!(p.events(), [ConnEvent::NeedFiles { hashes: vec![[1; 32], [2; 32]] }]);
    p.core.file_data([1; 32], vec![1]);
    p.core.file_data([2; 32], vec![2]);
    p.core.files_sent();
    assert_eq!(p.sent(), ["file-data", "file-data"]);
    assert_eq!(p.events(), [ConnEvent::Capture]);
    p.migrate();
    assert_eq!(p.sent(), ["migrate"]);
    p.receive(Message::ImportCall { id: 1, import: 2, args: vec![], state: State::default() });
    assert!(matches!(p.events()[..], [ConnEvent::ImportCall { import: 2, .. }]));
    assert!(!p.core.awaits_message(), "the device runs the import first");
    p.core.import_return(vec![], State::default());
    assert_eq!(p.sent(), ["import-return"]);
    p.receive(Pair::returned());
    assert!(matches!(p.events()[..], [ConnEvent::Returned { micros: 1, .. }]));
    assert!(p.core.is_idle() && p.core.has_session());

    // The next migration goes on the same session: no dial, no hello.
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::ListFiles]);
    p.core.files_unchanged();
    assert_eq!(p.events(), [ConnEvent::Capture]);
    p.migrate();
    assert_eq!(p.sent(), ["migrate"]);
    p.receive(Pair::returned_to(2));
    assert!(matches!(p.events()[..], [ConnEvent::Returned { .. }]), "the session's second migration is number 2");
    assert_eq!(p.core.close().map(|m| m.kind()), Some("goodbye"));
}

#[test]
fn a_break_under_the_migration_resumes_it_on_a_new_connection() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.core.handle_broken(p.now, Cause::Link, "reset".into());
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_connected(p.now);
    // The resume names the migration awaited: the first of this session.
    assert!(matches!(p.sent_messages()[..], [Message::Resume { run: 42, ref awaiting, .. }] if awaiting[..] == [1]));
    p.receive(Message::Resumed { ok: true });
    assert_eq!(p.events(), [ConnEvent::Resumed]);
    assert!(p.core.awaits_message());
    p.receive(Pair::returned());
    assert!(matches!(p.events()[..], [ConnEvent::Returned { .. }]));
}

#[test]
fn a_refused_resume_sends_the_migration_again_on_a_new_session_captured_from_zero() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.core.handle_broken(p.now, Cause::Tls, "bad record".into());
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_connected(p.now);
    assert_eq!(p.sent(), ["resume"]);
    p.receive(Message::Resumed { ok: false });
    assert_eq!(p.sent(), ["hello"], "a new session on the same connection");
    p.receive(Message::Welcome { need_module: false, concurrency: 1 });
    // The new session agrees on nothing: the state is captured again, and this is a retry.
    assert_eq!(p.events(), [ConnEvent::NewSession, ConnEvent::Retried, ConnEvent::ListFiles]);
    p.core.files_unchanged();
    assert_eq!(p.events(), [ConnEvent::Capture]);
    p.migrate();
    assert_eq!(p.sent(), ["migrate"]);
    // Numbered from 1 again on the new session.
    p.core.handle_broken(p.now, Cause::Link, "again".into());
    p.events();
    p.core.handle_connected(p.now);
    assert!(matches!(p.sent_messages()[..], [Message::Resume { ref awaiting, .. }] if awaiting[..] == [1]));
}

#[test]
fn the_break_budget_ends_in_a_local_run() {
    let mut p = Pair::new();
    p.open_and_migrate();
    for _ in 0..config().max_breaks {
        p.core.handle_broken(p.now, Cause::Link, "reset".into());
        assert_eq!(p.events(), [ConnEvent::Dial]);
        p.core.handle_connected(p.now);
        p.sent();
        p.receive(Message::Resumed { ok: true });
        assert_eq!(p.events(), [ConnEvent::Resumed]);
    }
    p.core.handle_broken(p.now, Cause::Link, "once too often".into());
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Link, detail: "once too often".into() }]);
    assert!(p.core.is_idle() && !p.core.has_session());
}

#[test]
fn reconnecting_backs_off_until_the_window_closes() {
    let mut p = Pair::new();
    p.open_and_migrate();
    let t0 = p.now;
    p.core.handle_broken(p.now, Cause::Link, "reset".into());
    assert_eq!(p.events(), [ConnEvent::Dial]);
    let mut pauses = Vec::new();
    loop {
        p.core.handle_dial_failed(p.now, Cause::Connect, "refused".into());
        match p.core.poll_timeout() {
            Some(t) => {
                pauses.push((t - p.now).as_millis());
                assert!(p.events().is_empty() && p.sent().is_empty(), "nothing until the time comes");
                p.core.handle_timeout(t - Duration::from_millis(1));
                assert!(p.events().is_empty(), "not before the time");
                p.now = t;
                p.core.handle_timeout(p.now);
                assert_eq!(p.events(), [ConnEvent::Dial]);
            }
            None => break,
        }
    }
    assert_eq!(pauses[..5], [50, 100, 200, 400, 800]);
    assert!(pauses[5..].iter().all(|&ms| ms == 1000), "{pauses:?}");
    assert!(p.now - t0 <= config().reconnect_window);
    let events = p.events();
    assert_eq!(events, [ConnEvent::Abandoned { cause: Cause::Link, detail: "reset; reconnecting: refused".into() }]);
}

#[test]
fn an_unreachable_clone_is_tried_twice_then_left_alone_for_a_while() {
    let mut p = Pair::new();
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_dial_failed(p.now, Cause::Connect, "refused".into());
    let t = p.core.poll_timeout().expect("a second try");
    assert_eq!(t - p.now, Duration::from_millis(50));
    p.now = t;
    p.core.handle_timeout(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_dial_failed(p.now, Cause::Connect, "refused again".into());
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Connect, detail: "refused again".into() }]);
    // Within the pause: abandoned at once, without dialling.
    p.now += Duration::from_secs(1);
    p.core.start_migration(p.now);
    assert!(matches!(p.events()[..], [ConnEvent::Abandoned { cause: Cause::Unreachable, .. }]));
    // After it: dialled again.
    p.now += config().retry_after;
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
}

#[test]
fn a_failure_on_the_clone_ends_the_session_so_the_next_starts_from_zero() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.receive(Message::Failed { id: 1, kind: FailKind::Trap, message: "unreachable".into() });
    // The clone is told the session is over (it frees it at once), then the call runs here.
    assert_eq!(p.sent(), ["goodbye"]);
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Trap, detail: "unreachable".into() }]);
    assert!(!p.core.has_session(), "the clone zeroed its replica");
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_connected(p.now);
    assert_eq!(p.sent(), ["hello"]);
    p.receive(Message::Welcome { need_module: false, concurrency: 1 });
    assert_eq!(p.events(), [ConnEvent::NewSession, ConnEvent::ListFiles]);
}

#[test]
fn a_stale_session_is_opened_again_once_before_the_migration() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.receive(Pair::returned());
    p.events();
    // The clone restarted since: the listing's send fails.
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::ListFiles]);
    p.core.files(vec![]);
    p.sent();
    p.core.handle_broken(p.now, Cause::Link, "closed".into());
    let t = p.core.poll_timeout().expect("a pause, then a new session");
    p.now = t;
    p.core.handle_timeout(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_connected(p.now);
    assert_eq!(p.sent(), ["hello"]);
    p.receive(Message::Welcome { need_module: false, concurrency: 1 });
    assert_eq!(p.events(), [ConnEvent::NewSession, ConnEvent::ListFiles]);
    p.core.files(vec![]);
    assert_eq!(p.sent(), ["files"]);
    p.receive(Message::NeedFiles { hashes: vec![] });
    assert_eq!(p.events(), [ConnEvent::NeedFiles { hashes: vec![] }]);
    p.core.files_sent();
    // Counted as a retry once the new session has the files.
    assert_eq!(p.events(), [ConnEvent::Retried, ConnEvent::Capture]);
    // A new migration gets its own try.
    p.migrate();
    p.sent();
    p.receive(Pair::returned());
    p.events();
    p.core.start_migration(p.now);
    p.events();
    p.core.files(vec![]);
    p.core.handle_broken(p.now, Cause::Link, "closed".into());
    p.now = p.core.poll_timeout().expect("a new session after a pause");
    p.core.handle_timeout(p.now);
    p.events();
    p.core.handle_connected(p.now);
    p.sent();
    p.receive(Message::Welcome { need_module: false, concurrency: 1 });
    p.events();
    // But one only: a second break before this migration is sent ends it.
    p.core.files(vec![]);
    p.core.handle_broken(p.now, Cause::Link, "closed again".into());
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Link, detail: "closed again".into() }]);
    assert!(p.core.poll_timeout().is_none());
}

#[test]
fn a_message_out_of_place_abandons_with_a_protocol_cause() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.receive(Message::Welcome { need_module: false, concurrency: 1 });
    let events = p.events();
    assert!(matches!(&events[..], [ConnEvent::Abandoned { cause: Cause::Protocol, .. }]), "{events:?}");
    assert!(!p.core.has_session());
    // A timeout is not a break: no reconnecting, and the clone, still reachable, is told.
    p.open_and_migrate();
    p.core.handle_broken(p.now, Cause::Timeout, "no answer in 60 s".into());
    assert_eq!(p.sent(), ["cancel", "goodbye"]);
    assert!(matches!(p.events()[..], [ConnEvent::Abandoned { cause: Cause::Timeout, .. }]));
}

#[test]
fn contents_that_fail_to_go_out_void_the_capture_and_open_a_new_session_once() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.receive(Pair::returned());
    p.events();
    p.core.start_migration(p.now);
    p.events();
    p.core.files(vec![Tree::default()]);
    assert_eq!(p.sent(), ["files"]);
    p.receive(Message::NeedFiles { hashes: vec![[1; 32]] });
    p.events();
    p.core.file_data([1; 32], vec![1; 10]);
    p.core.files_sent();
    // The capture waits for the content to go out; it does not.
    assert!(p.core.poll_event().is_none(), "events wait for the messages before them");
    assert_eq!(p.core.poll_transmit().map(|m| m.kind()), Some("file-data"));
    p.core.handle_broken(p.now, Cause::Link, "reset".into());
    assert!(p.events().is_empty(), "the capture is void");
    p.now = p.core.poll_timeout().expect("a new session after a pause");
    p.core.handle_timeout(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
}

#[test]
fn a_module_that_fails_to_go_out_after_a_refused_resume_ends_the_reconnect() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.core.handle_broken(p.now, Cause::Link, "reset".into());
    p.events();
    p.core.handle_connected(p.now);
    p.sent();
    p.receive(Message::Resumed { ok: false });
    assert_eq!(p.sent(), ["hello"]);
    p.receive(Message::Welcome { need_module: true, concurrency: 1 });
    assert_eq!(p.events(), [ConnEvent::ModuleWanted]);
    p.core.module(vec![0; 8]);
    assert!(p.core.poll_event().is_none(), "not open before the module went out");
    assert_eq!(p.core.poll_transmit().map(|m| m.kind()), Some("module"));
    p.core.handle_broken(p.now, Cause::Link, "reset again".into());
    // No new session was opened, so no retry is counted; the break is the cause.
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Link, detail: "reset; reconnecting: reset again".into() }]);
}

#[test]
fn a_background_session_that_found_the_link_down_gets_one_more_try() {
    let mut p = Pair::new();
    p.core.handle_unreachable(p.now, Cause::Connect, "refused".into());
    p.core.start_migration(p.now);
    assert!(p.events().is_empty(), "a pause first");
    p.now = p.core.poll_timeout().expect("one more try");
    p.core.handle_timeout(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_connected(p.now);
    p.sent();
    p.receive(Message::Welcome { need_module: false, concurrency: 1 });
    assert_eq!(p.events(), [ConnEvent::NewSession, ConnEvent::ListFiles]);
    p.core.files_unchanged();
    assert_eq!(p.events(), [ConnEvent::Retried, ConnEvent::Capture]);

    // A cause that another try cannot help is the fallback's, once.
    let mut p = Pair::new();
    p.core.handle_unreachable(p.now, Cause::Resolve, "no such host".into());
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Resolve, detail: "no such host".into() }]);
    p.core.start_migration(p.now);
    assert!(matches!(p.events()[..], [ConnEvent::Abandoned { cause: Cause::Unreachable, .. }]));
}

#[test]
fn a_dial_that_times_out_is_not_tried_again() {
    let mut p = Pair::new();
    p.core.start_migration(p.now);
    p.events();
    p.core.handle_dial_failed(p.now, Cause::Timeout, "handshake stalled".into());
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Timeout, detail: "handshake stalled".into() }]);
    assert!(p.core.poll_timeout().is_none());
}

#[test]
fn a_break_while_answering_a_proxied_call_resumes_the_migration() {
    let mut p = Pair::new();
    p.open_and_migrate();
    p.receive(Message::ImportCall { id: 1, import: 1, args: vec![], state: State::default() });
    p.events();
    p.core.import_return(vec![], State::default());
    assert_eq!(p.core.poll_transmit().map(|m| m.kind()), Some("import-return"));
    p.core.handle_broken(p.now, Cause::Tls, "bad record".into());
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_connected(p.now);
    assert_eq!(p.sent(), ["resume"]);
    // A break while resuming keeps the first break as the cause.
    p.core.handle_broken(p.now, Cause::Timeout, "no answer".into());
    assert_eq!(p.events(), [ConnEvent::Abandoned { cause: Cause::Tls, detail: "bad record; reconnecting: no answer".into() }]);
}

#[test]
fn an_adopted_session_is_used_and_giving_up_drops_it() {
    let mut p = Pair::new();
    let mut session = clonecloud_wire::DeviceSession::new([7; 32], 42, 0, Environment::default());
    session.hello().unwrap();
    session.on_message(Message::Welcome { need_module: false, concurrency: 1 }).unwrap();
    p.core.adopt(session);
    assert!(p.core.has_session());
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::ListFiles], "no dial: the session is open");
    p.core.files_unchanged();
    p.events();
    p.migrate();
    p.sent();
    p.receive(Pair::returned());
    p.events();
    // The driver could not merge the answer: the session is of no more use.
    p.core.give_up(Cause::Merge);
    assert!(!p.core.has_session() && p.core.is_idle());
    assert_eq!(p.core.close(), None, "no goodbye without a session");
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::Dial]);
}

#[test]
fn one_deadline_for_the_whole_migration_however_the_clone_keeps_it_busy() {
    let mut p = Pair::new();
    let start = p.now;
    p.open_and_migrate();
    assert_eq!(p.core.poll_timeout(), Some(start + Duration::from_secs(60)), "the answer is awaited until the deadline");
    // A clone that keeps the device busy with calls, each answered at once, and a break that
    // is resumed: neither moves the deadline.
    for i in 0..10 {
        p.now = start + Duration::from_secs(5 * i);
        p.receive(Message::ImportCall { id: 1, import: 1, args: vec![], state: State::default() });
        assert!(matches!(p.events()[..], [ConnEvent::ImportCall { .. }]));
        p.core.import_return(vec![], State::default());
        assert_eq!(p.sent(), ["import-return"]);
    }
    p.core.handle_broken(p.now, Cause::Link, "reset".into());
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_connected(p.now);
    assert_eq!(p.sent(), ["resume"]);
    p.receive(Message::Resumed { ok: true });
    assert_eq!(p.events(), [ConnEvent::Resumed]);
    assert_eq!(p.core.poll_timeout(), Some(start + Duration::from_secs(60)));
    p.core.handle_timeout(start + Duration::from_secs(59));
    assert!(p.events().is_empty(), "not yet");
    p.core.handle_timeout(start + Duration::from_secs(60));
    assert!(p.events().is_empty(), "the clone is told first");
    // The clone stops the call nobody awaits, and frees the session.
    assert_eq!(p.sent_messages(), [Message::Cancel { id: 1 }, Message::Goodbye]);
    assert!(matches!(&p.events()[..], [ConnEvent::Abandoned { cause: Cause::Timeout, .. }]));
    assert!(p.core.is_idle() && !p.core.has_session(), "the session is dropped with the migration");
    assert_eq!(p.core.poll_timeout(), None);
}

#[test]
fn a_deadline_that_passes_while_backing_off_ends_the_migration() {
    let mut p = Pair::new();
    let start = p.now;
    p.open_and_migrate();
    p.now = start + Duration::from_millis(59_990);
    p.core.handle_broken(p.now, Cause::Link, "reset".into());
    assert_eq!(p.events(), [ConnEvent::Dial]);
    p.core.handle_dial_failed(p.now, Cause::Connect, "refused".into());
    assert_eq!(p.core.poll_timeout(), Some(start + Duration::from_secs(60)), "the deadline comes before the next try");
    p.core.handle_timeout(start + Duration::from_secs(60));
    assert!(matches!(&p.events()[..], [ConnEvent::Abandoned { cause: Cause::Link, .. }]), "the break is the cause");
}

#[test]
fn a_clone_that_keeps_calling_the_device_is_cut_off_at_the_cap() {
    let mut p = Pair::new();
    p.open_and_migrate();
    for _ in 0..1000 {
        p.receive(Message::ImportCall { id: 1, import: 1, args: vec![], state: State::default() });
        assert!(matches!(p.events()[..], [ConnEvent::ImportCall { .. }]));
        p.core.import_return(vec![], State::default());
        assert_eq!(p.sent(), ["import-return"]);
    }
    p.receive(Message::ImportCall { id: 1, import: 1, args: vec![], state: State::default() });
    assert_eq!(p.sent(), ["cancel", "goodbye"], "the call the device will not answer is cancelled");
    assert!(matches!(&p.events()[..], [ConnEvent::Abandoned { cause: Cause::Protocol, detail }] if detail.contains("1000")));
    // The next migration starts its count again.
    p.open_and_migrate();
    p.receive(Message::ImportCall { id: 1, import: 1, args: vec![], state: State::default() });
    assert!(matches!(p.events()[..], [ConnEvent::ImportCall { .. }]));
}

/// A session opened ahead of any migration (at launch, in the background): the same opening
/// and file sync as at a migration point, then `Ready` instead of `Capture`; another core
/// adopts the session and migrates on it with no dial and no hello.
#[test]
fn a_session_opened_ahead_is_taken_by_the_core_that_migrates() {
    let mut ahead = Pair::new();
    ahead.core.open(ahead.now, Duration::from_secs(600));
    assert_eq!(ahead.events(), [ConnEvent::Dial]);
    ahead.core.handle_connected(ahead.now);
    assert_eq!(ahead.sent(), ["hello"]);
    ahead.receive(Message::Welcome { need_module: true, concurrency: 1 });
    assert_eq!(ahead.events(), [ConnEvent::ModuleWanted]);
    ahead.core.module(b"\0asm".to_vec());
    assert_eq!(ahead.sent(), ["module"]);
    assert_eq!(ahead.events(), [ConnEvent::NewSession, ConnEvent::ListFiles]);
    // An empty listing still goes: its answer says the module is compiled.
    ahead.core.files(vec![]);
    assert_eq!(ahead.sent(), ["files"]);
    assert!(ahead.core.take_session().is_none(), "not before it is ready");
    ahead.receive(Message::NeedFiles { hashes: vec![] });
    assert_eq!(ahead.events(), [ConnEvent::NeedFiles { hashes: vec![] }]);
    ahead.core.files_sent();
    assert_eq!(ahead.events(), [ConnEvent::Ready]);
    assert!(ahead.core.is_idle());
    let session = ahead.core.take_session().expect("the session opened ahead");

    let mut p = Pair::new();
    p.core.adopt(session);
    p.core.start_migration(p.now);
    assert_eq!(p.events(), [ConnEvent::ListFiles], "no dial, no hello");
    p.core.files_unchanged();
    assert_eq!(p.events(), [ConnEvent::Capture]);
    p.migrate();
    assert_eq!(p.sent(), ["migrate"]);
}

/// Opening ahead has its own time: a clone that compiles for longer than that is left, with a
/// timeout naming it, and nothing is kept.
#[test]
fn a_session_opened_ahead_gives_up_at_its_own_deadline() {
    let mut p = Pair::new();
    p.core.open(p.now, Duration::from_secs(600));
    let _ = p.events();
    p.core.handle_connected(p.now);
    p.receive(Message::Welcome { need_module: true, concurrency: 1 });
    let _ = p.events();
    p.core.module(vec![0; 10]);
    let _ = (p.sent(), p.events());
    p.core.files(vec![]);
    let _ = p.sent();
    // Past the migration's own limit (60 s) it still waits; at 600 s it gives up.
    p.core.handle_timeout(p.now + Duration::from_secs(61));
    assert!(p.events().is_empty());
    assert_eq!(p.core.poll_timeout(), Some(p.now + Duration::from_secs(600)));
    p.core.handle_timeout(p.now + Duration::from_secs(600));
    match &p.events()[..] {
        [ConnEvent::Abandoned { cause: Cause::Timeout, detail }] => assert!(detail.contains("600s"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(p.core.take_session().is_none());
}

/// A migration the device gives up (its deadline passed) is cancelled on the clone, and the
/// session ended with a goodbye, when the link still takes them; if the farewell cannot be
/// sent (the link broke too), the migration is still abandoned with its own cause, and the
/// next starts a new session.
#[test]
fn a_migration_given_up_is_cancelled_and_a_farewell_that_fails_loses_nothing() {
    let mut p = Pair::new();
    let start = p.now;
    p.open_and_migrate();
    p.core.handle_timeout(start + Duration::from_secs(60));
    assert_eq!(p.core.poll_transmit(), Some(Message::Cancel { id: 1 }));
    // The cancel's send fails: the abandonment stands, and its cause is the deadline.
    p.core.handle_broken(p.now, Cause::Link, "reset".into());
    assert!(matches!(&p.events()[..], [ConnEvent::Abandoned { cause: Cause::Timeout, .. }]));
    assert!(p.sent().is_empty(), "nothing more on a broken link");
    // The next migration opens a new session (a dial, a hello). The driver gives it up itself
    // (say, a proxied call it cannot serve): the same farewell, queued for it to send; giving
    // up again changes nothing.
    p.open_and_migrate();
    p.receive(Message::ImportCall { id: 1, import: 1, args: vec![], state: State::default() });
    assert!(matches!(p.events()[..], [ConnEvent::ImportCall { .. }]));
    p.core.give_up(Cause::Files);
    p.core.give_up(Cause::Files);
    assert_eq!(p.sent_messages(), [Message::Cancel { id: 1 }, Message::Goodbye]);
    assert!(p.events().is_empty() && p.core.is_idle() && !p.core.has_session());
}
