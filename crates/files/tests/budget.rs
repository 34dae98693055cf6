//! The replica's file system holds at most its budget of host memory for what the guest does
//! (contents written on the clone, the nodes it makes, the journal, the output): anything past
//! it is refused with `FsError::Budget` before a byte is allocated, so a guest's
//! `set_len(1 << 40)` or a write at a terabyte's offset fails the migration (the device runs the
//! function on its real file system) instead of aborting the server.

use clonecloud_files::{Entry, EntryKind, FileStat, Fs, FsError, Tree, errno};
use clonecloud_files::{Descriptors, OpenFile};

const O_CREAT: u16 = 1;
const READ_WRITE: u64 = (1 << 1) | (1 << 6);
const TIB: u64 = 1 << 40;

/// A view of one empty preopened directory, `/pre` (descriptor 3), holding at most `budget`.
fn fs(budget: u64) -> Fs {
    let root = Entry { path: String::new(), kind: EntryKind::Dir, stat: FileStat { ino: 1, nlink: 2, ..FileStat::default() } };
    let mut fs = Fs::new(vec![Tree { guest: "/pre".into(), entries: vec![root] }], None);
    fs.set_budget(budget);
    fs
}

fn over_budget<T: std::fmt::Debug>(r: Result<T, FsError>) -> u64 {
    match r {
        Err(FsError::Budget { wanted, budget }) => {
            assert!(wanted > budget, "{wanted} {budget}");
            wanted
        }
        other => panic!("not a budget error: {other:?}"),
    }
}

#[test]
fn set_len_to_a_terabyte_is_refused_without_allocating_it() {
    let mut fs = fs(64 << 20);
    let fd = fs.open(3, "big", false, O_CREAT, READ_WRITE, 0).unwrap();
    let held = fs.held();
    // Before the budget, this resized a Vec to 1 TiB and the process aborted.
    let wanted = over_budget(fs.set_size(fd, TIB));
    assert!(wanted >= TIB, "{wanted}");
    assert_eq!(fs.held(), held, "nothing was charged (or allocated) for the refused growth");
    assert_eq!(fs.filestat(fd).unwrap().size, 0, "the file is as it was");
    // Within the budget the file grows, and a cut gives the bytes back.
    fs.set_size(fd, 1 << 20).unwrap();
    assert!(fs.held() >= held + (1 << 20));
    fs.set_size(fd, 0).unwrap();
    assert!(fs.held() < held + (1 << 20), "the cut gave its bytes back: {}", fs.held());
}

#[test]
fn pwrite_at_a_terabyte_offset_is_refused_without_allocating_it() {
    let mut fs = fs(64 << 20);
    let fd = fs.open(3, "big", false, O_CREAT, READ_WRITE, 0).unwrap();
    let held = fs.held();
    let wanted = over_budget(fs.write(fd, b"x", Some(TIB)));
    assert!(wanted > TIB, "{wanted}");
    assert_eq!(fs.held(), held);
    // A positional write past the end reached by seeking is the same.
    fs.seek(fd, TIB as i64, 0).unwrap();
    over_budget(fs.write(fd, b"x", None));
    assert_eq!(fs.filestat(fd).unwrap().size, 0);
    // An ordinary write goes through.
    assert_eq!(fs.write(fd, b"hello", Some(0)).unwrap(), 5);
    assert_eq!(fs.read(fd, 5, Some(0)).unwrap(), b"hello");
}

#[test]
fn many_small_writes_add_up_to_the_budget() {
    // Contents and the journal that carries them both count: 1 MiB of writes holds 2 MiB.
    let mut fs = fs(3 << 20);
    let fd = fs.open(3, "f", false, O_CREAT, READ_WRITE, 0).unwrap();
    let chunk = vec![7u8; 64 << 10];
    let mut written = 0u64;
    let refused = loop {
        match fs.write(fd, &chunk, None) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(written < 4 << 20, "the budget never stopped the writes");
    };
    assert!(matches!(refused, FsError::Budget { .. }), "{refused:?}");
    assert!((1 << 20..=(3 << 20) / 2).contains(&written), "{written}");
    assert!(fs.held() <= 3 << 20);
}

#[test]
fn output_and_journal_growth_are_charged() {
    let mut fs = fs(1 << 20);
    // Output to stdout, buffered until the call returns.
    let line = vec![b'a'; 4096];
    let mut n = 0;
    while fs.write(1, &line, None).is_ok() {
        n += 1;
        assert!(n < 1000, "stdout grew past the budget");
    }
    assert!(n >= 200, "{n}");
    assert!(fs.held() > (1 << 20) - 4096 && fs.held() <= 1 << 20, "{}", fs.held());
    // A new call starts with an empty journal and output: their bytes are given back.
    fs.begin(&Descriptors::default(), 0);
    assert!(fs.held() < 4096, "{}", fs.held());
    // Opening and closing a file over and over journals each: bounded too.
    fs.open(3, "f", false, O_CREAT, READ_WRITE, 0).unwrap();
    let mut opens = 0;
    let refused = loop {
        match fs.open(3, "f", false, 0, READ_WRITE, 0) {
            Ok(fd) => {
                opens += 1;
                if let Err(e) = fs.close(fd) {
                    break e;
                }
            }
            Err(e) => break e,
        }
        assert!(opens < 100_000, "the journal grew past the budget");
    };
    assert!(matches!(refused, FsError::Budget { .. }), "{refused:?}");
    // Directories made are nodes the view keeps: bounded as well.
    let mut fs = self::fs(1 << 20);
    let mut dirs = 0;
    while fs.mkdir(3, &format!("d{dirs}")).is_ok() {
        dirs += 1;
        assert!(dirs < 100_000);
    }
    assert!(matches!(fs.mkdir(3, "one-more"), Err(FsError::Budget { .. })));
}

#[test]
fn the_budget_answers_nothing_in_place_of_the_device() {
    // Ordinary errors are still the device's errors, not budget refusals.
    let mut fs = fs(1 << 20);
    assert_eq!(fs.open(3, "missing", false, 0, READ_WRITE, 0), Err(FsError::Errno(errno::NOENT)));
    let fd = fs.open(3, "f", false, O_CREAT, READ_WRITE, 0).unwrap();
    fs.close(fd).unwrap();
    let fd = fs.open(3, "f", false, 0, 1 << 1, 0).unwrap();
    // A read-only descriptor cannot be resized, however large the size: EINVAL, not the budget.
    assert_eq!(fs.set_size(fd, TIB), Err(FsError::Errno(errno::INVAL)));
}

#[test]
fn a_long_descriptor_list_is_matched_in_linear_time() {
    // 100,000 files, each listed as open on the device: matching them is one pass over the nodes,
    // not a scan of every node per descriptor (10^10 steps, which the run-time limit would not
    // stop: this is host code).
    let n = 100_000u64;
    let mut entries = vec![Entry { path: String::new(), kind: EntryKind::Dir, stat: FileStat { ino: 1, ..FileStat::default() } }];
    entries.extend((0..n).map(|k| Entry { path: format!("f{k}"), kind: EntryKind::File([0; 32]), stat: FileStat { ino: 10 + k, nlink: 1, ..FileStat::default() } }));
    let mut fs = Fs::new(vec![Tree { guest: "/pre".into(), entries }], None);
    let files: Vec<OpenFile> =
        (0..n).map(|k| OpenFile { fd: 10 + k as u32, ino: 10 + k, dir: false, offset: 0, read: true, write: false, fdflags: 0 }).collect();
    let open: Vec<u32> = (0..4).chain(files.iter().map(|f| f.fd)).collect();
    let started = std::time::Instant::now();
    fs.begin(&Descriptors { open, free: vec![], complete: true, free_exact: true, files }, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?} for {n} descriptors", started.elapsed());
    assert_eq!(fs.tell(10 + n as u32 - 1), Ok(0), "the last listed file is served");
}

/// One device's views (its replicas' files) share the device's budget: what one holds the other
/// cannot, each within its own budget too, and a view gives back its share when its journal is
/// taken or it is dropped. (A write holds its bytes twice: in the file and in the journal.)
#[test]
fn a_device_s_views_share_its_budget() {
    const MIB: usize = 1 << 20;
    let pool = clonecloud_files::Pool::new(5 << 20);
    let (mut a, mut b) = (fs(4 << 20), fs(4 << 20));
    a.set_pool(pool.clone());
    b.set_pool(pool.clone());
    let fa = a.open(3, "a", false, O_CREAT, READ_WRITE, 0).unwrap();
    let fb = b.open(3, "b", false, O_CREAT, READ_WRITE, 0).unwrap();
    a.write(fa, &vec![1; 3 * MIB / 2], None).unwrap();
    assert!(pool.used() >= 3 << 20, "{}", pool.used());
    // B alone may hold 4 MiB, but A holds 3 of the device's 5.
    match b.write(fb, &vec![2; 3 * MIB / 2], None) {
        Err(FsError::DeviceBudget { wanted, limit }) => assert!(wanted > limit && limit == 5 << 20, "{wanted} {limit}"),
        other => panic!("expected the device's budget to refuse: {other:?}"),
    }
    assert!(pool.used() <= pool.limit());
    // (A refused call fails the migration, and its replica's view is dropped: its share too.)
    drop(b);
    assert!(pool.used() < 4 << 20, "{}", pool.used());
    let mut c = fs(4 << 20);
    c.set_pool(pool.clone());
    let fc = c.open(3, "c", false, O_CREAT, READ_WRITE, 0).unwrap();
    c.write(fc, &vec![2; MIB / 2], None).unwrap();
    // A's file stays (it outlives the call) but its journal is given back at the next call.
    let (held, used) = (a.held(), pool.used());
    a.begin(&Descriptors::default(), 0);
    assert!(a.held() < held && pool.used() < used, "{} {}", a.held(), pool.used());
    // A dropped view gives back all it took.
    drop(a);
    drop(c);
    assert_eq!(pool.used(), 0);
}

/// The device's listing is held for the view's life: it counts against the budget like the
/// nodes a guest makes, so a listing of a million entries leaves no room for more.
#[test]
fn the_listing_itself_is_charged() {
    let root = Entry { path: String::new(), kind: EntryKind::Dir, stat: FileStat { ino: 1, nlink: 2, ..FileStat::default() } };
    let mut entries = vec![root];
    entries.extend((0..10_000).map(|i| Entry { path: format!("f{i:05}"), kind: EntryKind::Other(0), stat: FileStat { ino: 2 + i, nlink: 1, ..FileStat::default() } }));
    let mut fs = Fs::new(vec![Tree { guest: "/pre".into(), entries }], None);
    assert!(fs.held() >= 10_000 * 128, "{}", fs.held());
    fs.set_budget(fs.held());
    assert!(matches!(fs.mkdir(3, "one-more"), Err(FsError::Budget { .. })));
}
