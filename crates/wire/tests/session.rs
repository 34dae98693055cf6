//! The session state machines: a whole conversation, and every out-of-order message refused.

use clonecloud_wire::{CloneEvent, CloneSession, DeviceEvent, DeviceSession, FailKind, Message, ProtocolError, Returned, State, Value};

#[test]
fn a_whole_conversation() {
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    let mut clone = CloneSession::new();
    let hello = dev.hello().unwrap();
    assert_eq!(clone.on_message(hello).unwrap(), CloneEvent::Hello { module: [1; 32], run: 7, thread: 0, environment: Default::default() });
    let welcome = clone.welcome(true, 1).unwrap();
    assert_eq!(dev.on_message(welcome).unwrap(), DeviceEvent::Welcomed { need_module: true, concurrency: 1 });
    assert!(!dev.is_ready());
    let module = dev.module(vec![0, 97, 115, 109]).unwrap();
    assert!(matches!(clone.on_message(module).unwrap(), CloneEvent::Module { .. }));
    assert!(dev.is_ready());

    for round in 0..3 {
        let id = round as u64 + 1;
        let migrate = dev.migrate(5, vec![Value::I32(round)], State::default(), Default::default(), Default::default()).unwrap();
        assert!(matches!(clone.on_message(migrate).unwrap(), CloneEvent::Migrate { point: 5, id: i, .. } if i == id), "numbered from 1");
        // A proxied import in the middle.
        let call = clone.import_call(id, 2, vec![Value::I32(1)], State::default()).unwrap();
        assert!(matches!(dev.on_message(call).unwrap(), DeviceEvent::ImportCall { import: 2, .. }));
        assert!(dev.migrate(5, vec![], State::default(), Default::default(), Default::default()).is_err(), "one at a time, as welcomed");
        let answer = dev.import_return(id, vec![Value::I32(0)], State::default()).unwrap();
        assert!(matches!(clone.on_message(answer).unwrap(), CloneEvent::ImportReturned { .. }));
        let back = if round == 1 {
            clone.failed(id, FailKind::Trap, "unreachable".into()).unwrap()
        } else {
            clone.returned(id, Returned { results: vec![Value::I64(9)], micros: 1, ..Default::default() }).unwrap()
        };
        match dev.on_message(back).unwrap() {
            DeviceEvent::Returned { results, .. } => assert_eq!(results, vec![Value::I64(9)]),
            DeviceEvent::Failed { kind, .. } => assert_eq!((round, kind), (1, FailKind::Trap)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(clone.on_message(dev.goodbye()).unwrap(), CloneEvent::Goodbye);
}

#[test]
fn out_of_order_messages_are_protocol_errors() {
    // A clone never accepts a migration before the hello, nor a second hello.
    let mut clone = CloneSession::new();
    assert!(matches!(
        clone.on_message(Message::Migrate { id: 1, point: 0, args: vec![], state: State::default(), clocks: Default::default(), descriptors: Default::default() }),
        Err(ProtocolError::Unexpected { got: "migrate", .. })
    ));
    let mut clone = CloneSession::new();
    clone.on_message(DeviceSession::new([0; 32], 0, 0, Default::default()).hello().unwrap()).unwrap();
    assert!(clone.on_message(Message::Goodbye).is_err(), "no goodbye before the welcome");

    // Another protocol version is refused.
    let mut clone = CloneSession::new();
    let hello = Message::Hello { version: 99, module: [0; 32], run: 0, thread: 0, environment: Default::default() };
    assert_eq!(clone.on_message(hello), Err(ProtocolError::Version(99)));

    // A device never accepts a return it did not ask for, and an error closes the session.
    let mut dev = DeviceSession::new([0; 32], 0, 0, Default::default());
    dev.hello().unwrap();
    assert!(dev.on_message(Message::Return { id: 1, results: vec![], state: State::default(), micros: 0, output: vec![], files: vec![], exit: None, freed: 0, thrown: None, access: None }).is_err());
    assert!(dev.migrate(0, vec![], State::default(), Default::default(), Default::default()).is_err(), "closed after the error");
    let mut dev = DeviceSession::new([0; 32], 0, 0, Default::default());
    dev.hello().unwrap();
    assert_eq!(dev.on_message(Message::Error { message: "no".into() }), Err(ProtocolError::Peer("no".into())));
    assert!(dev.module(vec![]).is_err(), "no module the clone did not ask for");
}

#[test]
fn a_resumed_session_gets_its_answer_and_a_refused_one_starts_over() {
    // Accepted: the new connection carries the migration's answer.
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    let mut new_conn = CloneSession::new();
    assert_eq!(new_conn.on_message(dev.resume(vec![1], 1).unwrap()).unwrap(), CloneEvent::Resume { run: 7, awaiting: vec![1] });
    assert!(dev.migrate(0, vec![], State::default(), Default::default(), Default::default()).is_err(), "no migration before the answer");
    assert_eq!(dev.on_message(new_conn.accept_resume().unwrap()).unwrap(), DeviceEvent::Resumed { ok: true });
    assert!(new_conn.on_message(Message::Goodbye).is_err(), "the accepting connection's own session is over");
    // (The old session, still running the migration, answers on the new connection.)
    let mut old = CloneSession::new();
    old.on_message(DeviceSession::new([1; 32], 7, 0, Default::default()).hello().unwrap()).unwrap();
    old.welcome(false, 1).unwrap();
    old.on_message(Message::Migrate { id: 1, point: 0, args: vec![], state: State::default(), clocks: Default::default(), descriptors: Default::default() }).unwrap();
    let back = old.returned(1, Returned { results: vec![Value::I32(1)], ..Default::default() }).unwrap();
    assert!(matches!(dev.on_message(back).unwrap(), DeviceEvent::Returned { .. }));
    assert!(dev.is_ready());

    // Refused: the device says hello on the same connection.
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    let mut clone = CloneSession::new();
    clone.on_message(dev.resume(vec![1], 1).unwrap()).unwrap();
    assert_eq!(dev.on_message(clone.refuse_resume().unwrap()).unwrap(), DeviceEvent::Resumed { ok: false });
    assert!(matches!(clone.on_message(dev.hello().unwrap()).unwrap(), CloneEvent::Hello { run: 7, .. }));
    assert_eq!(dev.on_message(clone.welcome(false, 1).unwrap()).unwrap(), DeviceEvent::Welcomed { need_module: false, concurrency: 1 });

    // A resume is only a first message, and only answered once asked.
    let mut clone = CloneSession::new();
    clone.on_message(DeviceSession::new([0; 32], 0, 0, Default::default()).hello().unwrap()).unwrap();
    assert!(clone.on_message(Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 0, awaiting: vec![1] }).is_err());
    let mut dev = DeviceSession::new([0; 32], 0, 0, Default::default());
    dev.hello().unwrap();
    assert!(dev.on_message(Message::Resumed { ok: true }).is_err(), "a resumed answer to a hello");
}

#[test]
fn the_clone_answers_probes_only_before_the_hello_and_an_error_ends_its_session() {
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    let mut clone = CloneSession::new();
    let probe = dev.probe(vec![1; 10], 300).unwrap();
    assert_eq!(clone.on_message(probe).unwrap(), CloneEvent::Probe { size: 10, reply: 300 });
    let reply = clone.probe_reply(300).unwrap();
    assert_eq!(dev.on_message(reply).unwrap(), DeviceEvent::ProbeReply { size: 300 });
    clone.on_message(dev.hello().unwrap()).unwrap();
    assert!(clone.probe_reply(16).is_err(), "not once the session started");
    let error = clone.error("no room".into());
    assert_eq!(dev.on_message(error), Err(ProtocolError::Peer("no room".into())));
    assert!(clone.welcome(false, 1).is_err(), "nothing after an error");
}

fn migrate(dev: &mut DeviceSession, point: u32) -> Message {
    dev.migrate(point, vec![Value::I32(point as i32)], State::default(), Default::default(), Default::default()).unwrap()
}

/// Several migrations in flight on one session (one per device thread), as many as the welcome
/// allows: each goes through its own calls and answer, interleaved with the others'.
#[test]
fn several_migrations_interleave_on_one_session() {
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    let mut clone = CloneSession::new();
    clone.on_message(dev.hello().unwrap()).unwrap();
    assert_eq!(dev.on_message(clone.welcome(false, 3).unwrap()).unwrap(), DeviceEvent::Welcomed { need_module: false, concurrency: 3 });
    assert_eq!(dev.concurrency(), 3);

    let ids: Vec<u64> = (0..3)
        .map(|point| match clone.on_message(migrate(&mut dev, point)).unwrap() {
            CloneEvent::Migrate { id, point: p, .. } if p == point => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(dev.in_flight(), [1, 2, 3]);
    assert!(!dev.is_ready(), "three in flight, as many as welcomed");
    assert!(matches!(dev.migrate(9, vec![], State::default(), Default::default(), Default::default()), Err(ProtocolError::TooMany(3))));
    assert!(dev.files(vec![]).is_err(), "no listing while migrations are in flight");

    // Migration 2 calls the device while 1 and 3 run; 3 answers first, then 2 is answered.
    let call = clone.import_call(2, 0, vec![], State::default()).unwrap();
    assert!(matches!(dev.on_message(call).unwrap(), DeviceEvent::ImportCall { id: 2, .. }));
    assert!(clone.returned(2, Returned::default()).is_err(), "2 waits for its call's answer");
    let back = clone.returned(3, Returned { results: vec![Value::I32(3)], ..Default::default() }).unwrap();
    assert!(matches!(dev.on_message(back).unwrap(), DeviceEvent::Returned { id: 3, .. }));
    assert!(dev.is_ready(), "room for another");
    assert!(clone.on_message(dev.import_return(2, vec![], State::default()).unwrap()).is_ok());
    let fourth = migrate(&mut dev, 4);
    assert!(matches!(clone.on_message(fourth).unwrap(), CloneEvent::Migrate { id: 4, .. }), "numbering goes on");
    assert!(matches!(dev.on_message(clone.failed(1, FailKind::Trap, "x".into()).unwrap()).unwrap(), DeviceEvent::Failed { id: 1, .. }));
    for id in [2, 4] {
        assert!(matches!(dev.on_message(clone.returned(id, Returned::default()).unwrap()).unwrap(), DeviceEvent::Returned { id: i, .. } if i == id));
    }
    assert!(dev.in_flight().is_empty() && clone.in_flight().is_empty());
    assert!(clone.on_message(dev.files(vec![]).unwrap()).is_ok(), "a listing once none is in flight");
}

/// A migration out of its number, past the welcome's concurrency, or a message naming one not
/// in flight (or not where it is) breaks the session, on either side.
#[test]
fn numbering_and_concurrency_are_held_on_both_sides() {
    let open = |concurrency| {
        let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
        let mut clone = CloneSession::new();
        clone.on_message(dev.hello().unwrap()).unwrap();
        dev.on_message(clone.welcome(false, concurrency).unwrap()).unwrap();
        (dev, clone)
    };
    let m = |id| Message::Migrate { id, point: 0, args: vec![], state: State::default(), clocks: Default::default(), descriptors: Default::default() };
    let (_, mut clone) = open(2);
    assert_eq!(clone.on_message(m(2)), Err(ProtocolError::Numbering { got: 2, expected: 1 }));
    let (_, mut clone) = open(2);
    clone.on_message(m(1)).unwrap();
    assert_eq!(clone.on_message(m(1)), Err(ProtocolError::Numbering { got: 1, expected: 2 }), "no number used twice");
    let (_, mut clone) = open(1);
    clone.on_message(m(1)).unwrap();
    assert_eq!(clone.on_message(m(2)), Err(ProtocolError::TooMany(1)), "past the welcome's concurrency");
    let (_, mut clone) = open(2);
    clone.on_message(m(1)).unwrap();
    assert!(clone.on_message(Message::Goodbye).is_err(), "no goodbye with a migration in flight");
    let (_, mut clone) = open(2);
    clone.on_message(m(1)).unwrap();
    let stray = Message::ImportReturn { id: 1, results: vec![], state: State::default() };
    assert!(matches!(clone.on_message(stray), Err(ProtocolError::Migration { id: 1, .. })), "no call of 1 is out");
    assert!(clone.welcome(false, 0).is_err());

    let (mut dev, _) = open(2);
    migrate(&mut dev, 0);
    let ghost = Message::Return { id: 5, results: vec![], state: State::default(), micros: 0, output: vec![], files: vec![], exit: None, freed: 0, thrown: None, access: None };
    assert!(matches!(dev.on_message(ghost), Err(ProtocolError::Migration { id: 5, .. })), "an answer to no migration");
    let (mut dev, _) = open(2);
    migrate(&mut dev, 0);
    let call = Message::ImportCall { id: 1, import: 0, args: vec![], state: State::default() };
    dev.on_message(call.clone()).unwrap();
    assert!(matches!(dev.on_message(call), Err(ProtocolError::Migration { id: 1, .. })), "a second call before the first is answered");
}

/// A resume names every migration in flight; accepted, the answers come in any order.
#[test]
fn a_resume_awaits_every_migration_in_flight() {
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    assert!(dev.resume(vec![], 2).is_err(), "a resume awaits something");
    assert!(dev.resume(vec![3, 2], 2).is_err(), "in increasing order");
    assert!(dev.resume(vec![1, 2, 3], 2).is_err(), "no more than welcomed");
    let mut clone = CloneSession::new();
    assert_eq!(clone.on_message(dev.resume(vec![4, 6], 2).unwrap()).unwrap(), CloneEvent::Resume { run: 7, awaiting: vec![4, 6] });
    dev.on_message(clone.accept_resume().unwrap()).unwrap();
    assert_eq!(dev.in_flight(), [4, 6]);
    let answer = |id| Message::Return { id, results: vec![], state: State::default(), micros: 0, output: vec![], files: vec![], exit: None, freed: 0, thrown: None, access: None };
    assert!(matches!(dev.on_message(answer(6)).unwrap(), DeviceEvent::Returned { id: 6, .. }));
    assert!(dev.migrate(0, vec![], State::default(), Default::default(), Default::default()).is_ok(), "number 7 while 4 is out");
    assert!(matches!(dev.on_message(answer(4)).unwrap(), DeviceEvent::Returned { id: 4, .. }));

    let mut clone = CloneSession::new();
    let unordered = Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 7, awaiting: vec![2, 2] };
    assert!(clone.on_message(unordered).is_err());
}
