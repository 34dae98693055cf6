//! `Connection::try_recv` on real loopback sockets: it never waits, keeps a message that
//! arrived in part for the next try, delivers each whole message once and in order, and tells a
//! closed connection from one with nothing to read.

use clonecloud_net::{AllowList, Connection, Identity, Listener, NetError};
use clonecloud_wire::Message;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

/// Tries until something other than "nothing yet" comes, for at most `T`.
fn next(c: &mut Connection) -> Result<Message, NetError> {
    let until = Instant::now() + T;
    loop {
        match c.try_recv() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) if Instant::now() < until => std::thread::yield_now(),
            Ok(None) => panic!("nothing arrived within {T:?}"),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn try_recv_never_waits_and_loses_nothing() {
    let (device, server) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let listener = Listener::bind("127.0.0.1:0", &server, AllowList::new([device.public().clone()]), T).unwrap();
    let addr = listener.local_addr();
    let accepting = std::thread::spawn(move || listener.incoming().unwrap().accept().unwrap());
    let mut d = Connection::connect(addr, Some(&device), server.public(), T).unwrap();
    let mut s = accepting.join().unwrap();
    // Blocking reads wait a long time: a try must not.
    s.set_timeout(Some(Duration::from_secs(60)));
    let t0 = Instant::now();
    assert!(s.try_recv().unwrap().is_none());
    assert!(t0.elapsed() < Duration::from_secs(1), "try_recv waited");

    // Two messages, the second large enough to arrive in several reads: each comes once, in
    // order, and a blocking recv afterwards still works on the same connection.
    let big = Message::FileData { hash: [1; 32], bytes: (0..300_000u32).map(|i| (i * 7) as u8).collect() };
    d.send(&Message::Cancel { id: 3 }).unwrap();
    d.send(&big).unwrap();
    d.send(&Message::Goodbye).unwrap();
    assert_eq!(next(&mut s).unwrap(), Message::Cancel { id: 3 });
    assert_eq!(next(&mut s).unwrap(), big);
    assert_eq!(s.recv().unwrap(), Message::Goodbye);
    assert!(s.try_recv().unwrap().is_none());

    // The peer goes away: closed, not "nothing yet".
    d.close();
    assert!(matches!(next(&mut s), Err(NetError::Closed)));
}
