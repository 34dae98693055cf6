//! Mutual authentication by pinned keys on real loopback sockets: the allowed device gets in;
//! an unknown device, a device without a key, a device pinning the wrong server key and a peer
//! speaking something else are all refused, and the server goes on serving.

use clonecloud_net::{AllowList, Connection, Identity, Listener, NetError, PublicKey};
use clonecloud_wire::Message;
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// A server that answers every hello with a welcome and reports each connection's outcome
/// (the authenticated peer, or the error).
fn server(allow: &[&Identity]) -> (std::net::SocketAddr, PublicKey, mpsc::Receiver<Result<PublicKey, String>>) {
    let id = Identity::generate().unwrap();
    let listener = Listener::bind("127.0.0.1:0", &id, AllowList::new(allow.iter().map(|i| i.public().clone())), T).unwrap();
    let addr = listener.local_addr();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        loop {
            let Ok(incoming) = listener.incoming() else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let outcome = incoming.accept().and_then(|mut c| {
                    let m = c.recv()?;
                    assert_eq!(m.kind(), "hello");
                    c.send(&Message::Welcome { need_module: false, concurrency: 1 })?;
                    Ok(c.peer().clone())
                });
                let _ = tx.send(outcome.map_err(|e| e.to_string()));
            });
        }
    });
    (addr, id.public().clone(), rx)
}

fn hello() -> Message {
    Message::Hello { version: 1, module: [0; 32], run: 1, thread: 0, environment: Default::default() }
}

/// Connects and exchanges hello/welcome; the error, if any, as text.
fn exchange(addr: std::net::SocketAddr, id: Option<&Identity>, server: &PublicKey) -> Result<(), NetError> {
    let mut c = Connection::connect(addr, id, server, T)?;
    c.send(&hello())?;
    match c.recv()? {
        Message::Welcome { .. } => Ok(()),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn only_allowed_devices_talk_to_the_pinned_server() {
    let device = Identity::generate().unwrap();
    let stranger = Identity::generate().unwrap();
    let (addr, server_key, outcomes) = server(&[&device]);

    exchange(addr, Some(&device), &server_key).unwrap();
    assert_eq!(outcomes.recv_timeout(T).unwrap(), Ok(device.public().clone()), "the server knows the device by its key");

    // An unknown device: refused by the server, which says why in its log and to the device.
    let err = exchange(addr, Some(&stranger), &server_key).unwrap_err();
    assert!(matches!(err, NetError::Tls(_) | NetError::Closed | NetError::Io { .. }), "{err}");
    assert!(outcomes.recv_timeout(T).unwrap().unwrap_err().contains("TLS"));

    // A device without a key.
    assert!(exchange(addr, None, &server_key).is_err());
    assert!(outcomes.recv_timeout(T).unwrap().is_err());

    // A device that pins another server key refuses the server.
    let other = Identity::generate().unwrap();
    let err = exchange(addr, Some(&device), other.public()).unwrap_err();
    assert!(matches!(err, NetError::Tls(rustls::Error::InvalidCertificate(_))), "{err}");
    let _ = outcomes.recv_timeout(T);

    // Something that is not TLS at all.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    assert!(outcomes.recv_timeout(T).unwrap().is_err());

    // And the allowed device still gets in.
    exchange(addr, Some(&device), &server_key).unwrap();
    assert_eq!(outcomes.recv_timeout(T).unwrap(), Ok(device.public().clone()));
}

#[test]
fn keys_round_trip_through_files() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::generate().unwrap();
    let (key, public) = id.save(&dir.path().join("device"), false).unwrap();
    assert_eq!(Identity::load(&key).unwrap().public(), id.public());
    let line = std::fs::read_to_string(&public).unwrap();
    assert_eq!(line.lines().count(), 1, "the public key is one line");
    assert_eq!(&PublicKey::load(&public).unwrap(), id.public());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let allow = AllowList::parse(&format!("# devices\n\n{line}")).unwrap();
    assert!(allow.contains(id.public()));
    assert!(AllowList::parse("not a key").unwrap_err().to_string().contains("line 1"));
    assert!(Identity::from_pem("-----BEGIN NOTHING-----").is_err());
}

#[test]
fn keys_are_refused_with_the_fix_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::generate().unwrap();
    let prefix = dir.path().join("device");
    let (key, _) = id.save(&prefix, false).unwrap();
    // An identity is not replaced by accident.
    let other = Identity::generate().unwrap();
    let e = other.save(&prefix, false).unwrap_err().to_string();
    assert!(e.contains("exists already") && e.contains("--force"), "{e}");
    assert_eq!(Identity::load(&key).unwrap().public(), id.public(), "the old key is kept");
    other.save(&prefix, true).unwrap();
    assert_eq!(Identity::load(&key).unwrap().public(), other.public());
    // A link planted at the key's path (dangling: pointing where the key would land) is not
    // followed.
    #[cfg(unix)]
    {
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(dir.path().join("elsewhere.key"), &planted.with_extension("key")).unwrap();
        let e = id.save(&planted, false).unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
        assert!(!dir.path().join("elsewhere.key").exists(), "the key was written through the link");
    }
    // A private key others can read is refused, with the command that fixes it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load(&key).unwrap_err().to_string();
        assert!(e.contains("readable by others") && e.contains("chmod 600"), "{e}");
        // Saving over it makes it private again.
        other.save(&prefix, true).unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        Identity::load(&key).unwrap();
    }
    // Lines that are not keys: errors, never a panic (a multi-byte character where a hex pair
    // was expected used to split a character).
    let line = id.public().to_string();
    for bad in ["clonecloud-ed25519 é", "clonecloud-ed25519 aé", "clonecloud-ed25519 ééé0", "clonecloud-ed25519 zz", "clonecloud-ed25519 00", "ssh-ed25519 AAAA"] {
        assert!(PublicKey::parse(bad).is_err(), "{bad}");
        assert!(AllowList::parse(&format!("{line}\n{bad}")).unwrap_err().to_string().contains("line 2"), "{bad}");
    }
    // A well-formed key of another algorithm (an RSA SubjectPublicKeyInfo's start) is refused.
    let e = PublicKey::parse("clonecloud-ed25519 30820122300d06092a864886f70d01010105000382010f00").unwrap_err();
    assert_eq!(e, clonecloud_net::KeyParseError::NotEd25519);
    // Devices are told apart by their whole key, not a fingerprint.
    assert_eq!(id.public().id().len(), 88);
    assert_ne!(id.public().id(), other.public().id());
}
