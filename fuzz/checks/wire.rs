//! The wire decoder and both session state machines: any bytes, fed in two pieces, decode to
//! messages or a clean error, never a panic; a decoded message re-encodes (under every
//! compression) to bytes that decode to the same message; the state machines take any message
//! in any state with an answer, never a panic; and the device's protocol core, driven through
//! migrations as a driver would, takes every decoded message with no panic and never waits for
//! nothing; so does the clone's protocol core, whose session ends (never panics) on anything out
//! of place.
//!
//! Shared by the fuzz target of the same name (fuzz/fuzz_targets/) and by the replay of its kept
//! corpus under `cargo test` (crates/cli/tests/fuzz_corpus.rs).

use clonecloud_wire::{
    Cause, CloneConfig, CloneConn, CloneConnEvent, CloneSession, Returned, Compression, ConnEvent, Decoder, DeviceConfig, DeviceConn, DeviceSession, Environment, State,
    from_bytes, to_bytes_with,
};
use std::time::{Duration, Instant};

const MAX_FRAME: usize = 1 << 22;

/// One input: panics (the fuzzer's crash) when the property does not hold.
pub fn check(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else { return };
    let cut = (split as usize * data.len()) / 255;
    let mut decoder = Decoder::new(MAX_FRAME);
    let mut clone = CloneSession::new();
    let mut device = DeviceSession::new([7; 32], 1, 0, Environment::default());
    let _ = device.hello();
    let now = Instant::now();
    let mut core = DeviceConn::new(DeviceConfig {
        module: [7; 32],
        run: 1,
        thread: 0,
        environment: Environment::default(),
        max_breaks: 2,
        reconnect_window: Duration::from_secs(3),
        first_pause: Duration::from_millis(50),
        retry_after: Duration::from_secs(5),
        answer_within: Duration::from_secs(60),
        max_proxied: 1000,
    });
    core.start_migration(now);
    drive(&mut core, now);
    let clone_config = CloneConfig { max_module: 1 << 20, resume_window: Duration::from_secs(30) };
    let mut clone_core = CloneConn::new(clone_config.clone());
    for piece in [&data[..cut], &data[cut..]] {
        decoder.feed(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => {
                    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
                        let again = from_bytes(&to_bytes_with(&m, c), usize::MAX).expect("a re-encoded message decodes");
                        assert_eq!(again, m, "re-encoded under {c:?}");
                    }
                    let _ = clone.on_message(m.clone());
                    if clone_core.is_ended() {
                        clone_core = CloneConn::new(clone_config.clone());
                    }
                    clone_core.handle_message(now, m.clone());
                    serve(&mut clone_core, now);
                    let _ = device.on_message(m.clone());
                    if core.awaits_message() {
                        core.handle_message(now, m);
                    } else {
                        core.handle_broken(now, Cause::Link, "the fuzzer's link".into());
                    }
                    drive(&mut core, now);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Answers the core's events as a driver would (connections always succeed), until it waits for
/// a message; a migration that ends starts another.
fn drive(core: &mut DeviceConn, now: Instant) {
    for _ in 0..64 {
        while core.poll_transmit().is_some() {}
        match core.poll_event() {
            Some(ConnEvent::Dial) => core.handle_connected(now),
            Some(ConnEvent::ModuleWanted) => core.module(vec![0, 97, 115, 109]),
            Some(ConnEvent::ListFiles) => core.files_unchanged(),
            Some(ConnEvent::NeedFiles { hashes }) => {
                for h in hashes {
                    core.file_data(h, vec![1]);
                }
                core.files_sent();
            }
            Some(ConnEvent::Capture) => core.migrate(0, vec![], State::default(), Default::default(), Default::default()),
            Some(ConnEvent::ImportCall { .. }) => core.import_return(vec![], State::default()),
            Some(ConnEvent::Returned { .. } | ConnEvent::Abandoned { .. }) => {
                assert!(core.is_idle(), "a migration that ended leaves the core idle");
                core.start_migration(now + Duration::from_secs(60));
            }
            Some(ConnEvent::NewSession | ConnEvent::Resumed | ConnEvent::Retried) => {}
            Some(ConnEvent::Ready) => panic!("the core said a session opened ahead is ready, though none was asked for"),
            None if core.awaits_message() => return,
            None => match core.poll_timeout() {
                Some(t) => core.handle_timeout(t),
                None => panic!("the core waits for nothing"),
            },
        }
    }
}

/// Answers the clone core's events as the server would (every module known after its upload, no
/// file held, every migration returning, and the link breaking and resuming after each answer).
fn serve(core: &mut CloneConn, now: Instant) {
    for _ in 0..64 {
        while core.poll_transmit().is_some() {}
        match core.poll_event() {
            Some(CloneConnEvent::Opened { .. }) => core.welcome(false),
            Some(CloneConnEvent::Module { .. }) => core.module_loaded(),
            Some(CloneConnEvent::Files { .. }) => core.need_files(|_| true),
            Some(CloneConnEvent::Migrate { migration, .. }) => {
                assert_eq!(migration, core.migrations());
                if migration % 2 == 0 {
                    core.failed(clonecloud_wire::FailKind::Trap, "fuzz".into());
                } else {
                    core.returned(Returned::default());
                }
                core.handle_broken(now, "the fuzzer's link".into(), false);
                assert!(core.awaits_resume().is_some(), "a session waits to be resumed");
                assert!(core.handle_resume(now, &[migration]), "the answer is held for a resume");
            }
            Some(CloneConnEvent::ResumeWanted { .. }) => core.refuse_resume(),
            Some(CloneConnEvent::Ended(_)) => assert!(core.is_ended()),
            Some(CloneConnEvent::FileData { .. } | CloneConnEvent::ImportReturned { .. } | CloneConnEvent::DropReplica | CloneConnEvent::Reset) => {}
            None => return,
        }
    }
}
