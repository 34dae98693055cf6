//! The clone's file store: sealed at rest, within its quota, and read back only as written.

use clonecloud_files::{Store, content_hash};

/// A million tiny files cost a disk block and an index entry each: the quota counts them so.
#[test]
fn tiny_files_cost_a_block_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_path_buf(), &[3; 32], 64 * 1024).unwrap();
    for n in 0u32..100 {
        let bytes = n.to_le_bytes();
        store.put(&content_hash(&bytes), &bytes).unwrap();
    }
    let kept = std::fs::read_dir(dir.path()).unwrap().count() as u64;
    assert!(kept <= 64 * 1024 / 4096, "{kept} files of 4 bytes kept within a 64 KiB quota");
    assert!(store.used() <= store.limit());
}

fn files_in(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())).collect();
    all.sort();
    all
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn contents_are_sealed_and_named_by_a_keyed_hash() {
    let dir = tempfile::tempdir().unwrap();
    let secret = b"the contents of a private diary, 4096 bytes or so".repeat(80);
    let h = content_hash(&secret);
    let store = Store::open(dir.path().join("d"), &[7; 32], 1 << 20).unwrap();
    store.put(&h, &secret).unwrap();
    assert_eq!(&*store.get(&h).unwrap(), &secret[..]);

    let on_disk = files_in(&dir.path().join("d"));
    assert_eq!(on_disk.len(), 1);
    let (name, bytes) = &on_disk[0];
    assert_ne!(name, &hex(&h), "the name is not the content hash");
    assert!(!bytes.windows(16).any(|w| secret.windows(16).any(|s| s == w)), "no 16 bytes of the plaintext are on disk");

    // The same key finds it again; another key (another server, another device) does not.
    drop(store);
    let again = Store::open(dir.path().join("d"), &[7; 32], 1 << 20).unwrap();
    assert!(again.has(&h));
    assert_eq!(&*again.get(&h).unwrap(), &secret[..]);
    let other = Store::open(dir.path().join("d"), &[8; 32], 1 << 20).unwrap();
    assert!(!other.has(&h));
}

#[test]
fn a_tampered_file_is_refused_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_path_buf(), &[1; 32], 1 << 20).unwrap();
    let bytes = vec![42u8; 1000];
    let h = content_hash(&bytes);
    store.put(&h, &bytes).unwrap();
    let (name, mut sealed) = files_in(dir.path()).remove(0);
    sealed[20] ^= 1;
    std::fs::write(dir.path().join(&name), sealed).unwrap();
    let e = store.get(&h).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(!store.has(&h), "a damaged file is forgotten, so it is asked for again");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn the_quota_holds_and_the_least_recently_used_go_first() {
    let dir = tempfile::tempdir().unwrap();
    // Room for three files of 10,000 bytes (each costs its nonce, tag and index entry too).
    let store = Store::open(dir.path().to_path_buf(), &[2; 32], 3 * clonecloud_files::store_cost(10_000)).unwrap();
    let file = |n: u8| vec![n; 10_000];
    let hs: Vec<_> = (0..5).map(|n| content_hash(&file(n))).collect();
    for (n, h) in hs.iter().enumerate().take(3) {
        store.put(h, &file(n as u8)).unwrap();
    }
    // File 0 is used again, so file 1 is now the least recently used.
    store.get(&hs[0]).unwrap();
    store.put(&hs[3], &file(3)).unwrap();
    assert!(store.has(&hs[0]) && !store.has(&hs[1]) && store.has(&hs[2]) && store.has(&hs[3]));
    store.put(&hs[4], &file(4)).unwrap();
    assert!(!store.has(&hs[2]));
    let on_disk: u64 = files_in(dir.path()).iter().map(|(_, b)| b.len() as u64).sum();
    assert!(on_disk <= store.limit(), "{on_disk} bytes on disk, over the quota of {}", store.limit());
    assert!(on_disk <= store.used());

    // A file larger than the whole quota is refused, and pushes nothing out.
    let big = vec![9u8; 40_000];
    let e = store.put(&content_hash(&big), &big).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
    assert!(store.has(&hs[0]) && store.has(&hs[3]) && store.has(&hs[4]));

    // Contents that do not match their hash are refused.
    assert_eq!(store.put(&hs[0], &file(1)).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
}

/// Two runs of one device on one machine share its store: opening it must not remove a file
/// the other is writing (a put then failed with "No such file or directory"), but does remove
/// what a process that is gone left half-written.
#[test]
fn opening_a_store_removes_only_writes_whose_process_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join(format!(".incoming-{}-999", std::process::id()));
    std::fs::write(&live, b"being written").unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let dead = dir.path().join(format!(".incoming-{gone}-0"));
    std::fs::write(&dead, b"left over").unwrap();

    let store = Store::open(dir.path().to_path_buf(), &[5; 32], 1 << 20).unwrap();
    assert!(live.exists(), "a write in progress in a live process is left alone");
    assert!(!dead.exists(), "a write whose process is gone is removed");
    // And the store itself still writes beside it.
    store.put(&content_hash(b"x"), b"x").unwrap();
}

/// Which contents were used last survives a restart of the server: reopened, the store still
/// drops the least recently used first, not the least recently written.
#[test]
fn the_order_of_use_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 3 * clonecloud_files::store_cost(10_000);
    let file = |n: u8| vec![n; 10_000];
    let hs: Vec<_> = (0..4).map(|n| content_hash(&file(n))).collect();
    {
        let store = Store::open(dir.path().to_path_buf(), &[4; 32], limit).unwrap();
        for (n, h) in hs.iter().enumerate().take(3) {
            store.put(h, &file(n as u8)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Written first, used last.
        store.get(&hs[0]).unwrap();
    }
    let store = Store::open(dir.path().to_path_buf(), &[4; 32], limit).unwrap();
    store.put(&hs[3], &file(3)).unwrap();
    assert!(store.has(&hs[0]), "the file used last is kept");
    assert!(!store.has(&hs[1]), "the least recently used goes");
    assert!(store.has(&hs[2]) && store.has(&hs[3]));
}
