//! The session state machines: a whole conversation, and every out-of-order message refused.

use clonecloud_wire::{CloneEvent, CloneSession, DeviceEvent, DeviceSession, FailKind, Message, ProtocolError, Returned, State, Value};

#[test]
fn a_whole_conversation() {
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    let mut clone = CloneSession::new();
    let hello = dev.hello().unwrap();
    assert_eq!(clone.on_message(hello).unwrap(), CloneEvent::Hello { module: [1; 32], run: 7, thread: 0, environment: Default::default() });
    let welcome = clone.welcome(true).unwrap();
    assert_eq!(dev.on_message(welcome).unwrap(), DeviceEvent::Welcomed { need_module: true });
    assert!(!dev.is_ready());
    let module = dev.module(vec![0, 97, 115, 109]).unwrap();
    assert!(matches!(clone.on_message(module).unwrap(), CloneEvent::Module { .. }));
    assert!(dev.is_ready());

    for round in 0..3 {
        let migrate = dev.migrate(5, vec![Value::I32(round)], State::default(), Default::default(), Default::default()).unwrap();
        assert!(matches!(clone.on_message(migrate).unwrap(), CloneEvent::Migrate { point: 5, .. }));
        // A proxied import in the middle.
        let call = clone.import_call(2, vec![Value::I32(1)], State::default()).unwrap();
        assert!(matches!(dev.on_message(call).unwrap(), DeviceEvent::ImportCall { import: 2, .. }));
        assert!(dev.migrate(5, vec![], State::default(), Default::default(), Default::default()).is_err(), "no second migration inside a call");
        let answer = dev.import_return(vec![Value::I32(0)], State::default()).unwrap();
        assert!(matches!(clone.on_message(answer).unwrap(), CloneEvent::ImportReturned { .. }));
        let back = if round == 1 {
            clone.failed(FailKind::Trap, "unreachable".into()).unwrap()
        } else {
            clone.returned(Returned { results: vec![Value::I64(9)], micros: 1, ..Default::default() }).unwrap()
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
        clone.on_message(Message::Migrate { point: 0, args: vec![], state: State::default(), clocks: Default::default(), descriptors: Default::default() }),
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
    assert!(dev.on_message(Message::Return { results: vec![], state: State::default(), micros: 0, output: vec![], files: vec![], exit: None, freed: 0 }).is_err());
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
    assert_eq!(new_conn.on_message(dev.resume(3).unwrap()).unwrap(), CloneEvent::Resume { run: 7, migration: 3 });
    assert!(dev.migrate(0, vec![], State::default(), Default::default(), Default::default()).is_err(), "no migration before the answer");
    assert_eq!(dev.on_message(new_conn.accept_resume().unwrap()).unwrap(), DeviceEvent::Resumed { ok: true });
    assert!(new_conn.on_message(Message::Goodbye).is_err(), "the accepting connection's own session is over");
    // (The old session, still running the migration, answers on the new connection.)
    let mut old = CloneSession::new();
    old.on_message(DeviceSession::new([1; 32], 7, 0, Default::default()).hello().unwrap()).unwrap();
    old.welcome(false).unwrap();
    old.on_message(Message::Migrate { point: 0, args: vec![], state: State::default(), clocks: Default::default(), descriptors: Default::default() }).unwrap();
    let back = old.returned(Returned { results: vec![Value::I32(1)], ..Default::default() }).unwrap();
    assert!(matches!(dev.on_message(back).unwrap(), DeviceEvent::Returned { .. }));
    assert!(dev.is_ready());

    // Refused: the device says hello on the same connection.
    let mut dev = DeviceSession::new([1; 32], 7, 0, Default::default());
    let mut clone = CloneSession::new();
    clone.on_message(dev.resume(1).unwrap()).unwrap();
    assert_eq!(dev.on_message(clone.refuse_resume().unwrap()).unwrap(), DeviceEvent::Resumed { ok: false });
    assert!(matches!(clone.on_message(dev.hello().unwrap()).unwrap(), CloneEvent::Hello { run: 7, .. }));
    assert_eq!(dev.on_message(clone.welcome(false).unwrap()).unwrap(), DeviceEvent::Welcomed { need_module: false });

    // A resume is only a first message, and only answered once asked.
    let mut clone = CloneSession::new();
    clone.on_message(DeviceSession::new([0; 32], 0, 0, Default::default()).hello().unwrap()).unwrap();
    assert!(clone.on_message(Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 0, migration: 1 }).is_err());
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
    assert!(clone.welcome(false).is_err(), "nothing after an error");
}
