//! The device's commit of a clone's journal: nothing outside the preopen is reached, however the
//! journal names it, and a journal that fails part-way leaves the directories as they were.
//! The oracle for a journal that succeeds is the same changes made with `std::fs`.

use clonecloud_files::{ApplyError, FdOp, FileOp, Root, apply};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// An entry: kind, content (or link target), mode, inode (a file put back must be the same file,
/// so its other names and open descriptors still see it) and modification time (for files).
type Snap = BTreeMap<String, (String, Vec<u8>, u32, u64, i64)>;

/// Every entry under `dir`.
fn snapshot(dir: &Path) -> Snap {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let (kind, data) = if m.file_type().is_symlink() {
                ("link", std::fs::read_link(&p).unwrap().to_string_lossy().into_owned().into_bytes())
            } else if m.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&p).unwrap())
            };
            let (ino, mtime) = if m.is_dir() { (0, 0) } else { (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()) };
            out.insert(rel, (kind.to_string(), data, m.mode(), ino, mtime));
        }
    }
    out
}

fn mtime(p: &Path) -> i64 {
    std::fs::symlink_metadata(p).unwrap().mtime()
}

fn no_op(_: &FdOp) -> Result<Option<FdOp>, clonecloud_files::DescriptorError> {
    Ok(None)
}

/// A preopen `pre` beside a directory `outside` the guest must never reach, with links out of
/// the preopen in it.
fn sandbox() -> (tempfile::TempDir, Vec<Root>) {
    let t = tempfile::tempdir().unwrap();
    let pre = t.path().join("pre");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(pre.join("sub")).unwrap();
    std::fs::create_dir_all(outside.join("d")).unwrap();
    std::fs::write(outside.join("secret"), b"keep me").unwrap();
    std::fs::write(pre.join("sub/a"), b"inside").unwrap();
    std::os::unix::fs::symlink("../outside", pre.join("rel")).unwrap();
    std::os::unix::fs::symlink(&outside, pre.join("abs")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", pre.join("file-link")).unwrap();
    std::os::unix::fs::symlink("sub", pre.join("inner")).unwrap();
    let roots = vec![Root { host: pre, guest: "/pre".into() }];
    (t, roots)
}

#[test]
fn a_journal_through_a_symbolic_link_changes_nothing_outside_the_preopen() {
    let (t, roots) = sandbox();
    let before_out = snapshot(&t.path().join("outside"));
    let before_pre = snapshot(&roots[0].host);
    let out_times = (mtime(&t.path().join("outside")), mtime(&t.path().join("outside/secret")));
    let p = |s: &str| s.to_string();
    let mut attacks = Vec::new();
    for via in ["rel", "abs", "inner"] {
        attacks.extend([
            FileOp::Write { root: 0, path: format!("{via}/secret"), offset: 0, data: b"pwned".to_vec() },
            FileOp::Create { root: 0, path: format!("{via}/new") },
            FileOp::SetSize { root: 0, path: format!("{via}/secret"), size: 0 },
            FileOp::Unlink { root: 0, path: format!("{via}/secret") },
            FileOp::Rmdir { root: 0, path: format!("{via}/d") },
            FileOp::Mkdir { root: 0, path: format!("{via}/made") },
            FileOp::Rename { root: 0, from: format!("{via}/secret"), to_root: 0, to: p("taken") },
            FileOp::Rename { root: 0, from: p("sub/a"), to_root: 0, to: format!("{via}/secret") },
            FileOp::Link { root: 0, from: format!("{via}/secret"), to_root: 0, to: p("hard") },
            FileOp::Link { root: 0, from: p("sub/a"), to_root: 0, to: format!("{via}/planted") },
            FileOp::Symlink { root: 0, target: p("x"), path: format!("{via}/planted") },
            FileOp::SetTimes { root: 0, path: format!("{via}/secret"), atim: Some(0), mtim: Some(0) },
        ]);
    }
    // The last component a link: written through, resized through, opened through: refused.
    attacks.extend([
        FileOp::Write { root: 0, path: p("file-link"), offset: 0, data: b"pwned".to_vec() },
        FileOp::SetSize { root: 0, path: p("file-link"), size: 1 << 20 },
        FileOp::Create { root: 0, path: p("file-link") },
        FileOp::Symlink { root: 0, target: p("../outside/secret"), path: p("planted") },
        FileOp::Write { root: 0, path: p("../outside/secret"), offset: 0, data: b"pwned".to_vec() },
        FileOp::Write { root: 3, path: p("sub/a"), offset: 0, data: b"pwned".to_vec() },
    ]);
    for attack in attacks {
        // Each after an honest change, which must be undone too.
        let journal = vec![FileOp::Write { root: 0, path: p("sub/a"), offset: 0, data: b"CHANGED".to_vec() }, attack.clone()];
        let r = apply(&roots, &journal, &mut no_op);
        assert!(r.is_err(), "{attack:?} was carried out");
        assert_eq!(snapshot(&t.path().join("outside")), before_out, "{attack:?} reached outside the preopen");
        assert_eq!(snapshot(&roots[0].host), before_pre, "{attack:?} left the preopen changed");
        assert_eq!((mtime(&t.path().join("outside")), mtime(&t.path().join("outside/secret"))), out_times, "{attack:?}");
    }
}

/// A link may be made only where its target stays inside the preopen; moving it (or a directory
/// above it) to where the same target leads out is refused too, so a journal cannot plant a link
/// that points out of the preopen by making it deep and moving it up. A move that keeps it
/// inside goes through.
#[test]
fn a_link_moved_to_where_it_points_out_is_refused() {
    let p = |s: &str| s.to_string();
    let plant = |then: Vec<FileOp>| {
        let mut j = vec![
            FileOp::Mkdir { root: 0, path: p("d") },
            FileOp::Mkdir { root: 0, path: p("d/e") },
            FileOp::Symlink { root: 0, target: p("../x"), path: p("d/l") },
            FileOp::Symlink { root: 0, target: p("../../sub/a"), path: p("d/e/deep") },
        ];
        j.extend(then);
        j
    };
    let attacks = [
        vec![FileOp::Rename { root: 0, from: p("d/l"), to_root: 0, to: p("l") }],
        vec![FileOp::Link { root: 0, from: p("d/l"), to_root: 0, to: p("l") }],
        vec![FileOp::Rename { root: 0, from: p("d/e"), to_root: 0, to: p("e") }],
        vec![FileOp::Rename { root: 0, from: p("d"), to_root: 0, to: p("top") }, FileOp::Rename { root: 0, from: p("top/e"), to_root: 0, to: p("e") }],
    ];
    for then in attacks {
        let (_t, roots) = sandbox();
        let before = snapshot(&roots[0].host);
        let journal = plant(then.clone());
        assert!(matches!(apply(&roots, &journal, &mut no_op), Err(ApplyError::BadPath(_))), "{then:?} was carried out");
        assert_eq!(snapshot(&roots[0].host), before, "{then:?} left the preopen changed");
    }
    // Moved to the same depth, or deeper where the target still lands inside: carried out.
    let (_t, roots) = sandbox();
    let journal = plant(vec![
        FileOp::Rename { root: 0, from: p("d/l"), to_root: 0, to: p("sub/l") },
        FileOp::Rename { root: 0, from: p("d/e"), to_root: 0, to: p("sub/e") },
    ]);
    apply(&roots, &journal, &mut no_op).unwrap().commit(&mut no_op).unwrap();
    assert_eq!(std::fs::read(roots[0].host.join("sub/e/deep")).unwrap(), b"inside");
}

/// The sample tree every journal below starts from.
fn tree() -> (tempfile::TempDir, Vec<Root>) {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    std::fs::create_dir_all(a.join("dir/deep")).unwrap();
    std::fs::create_dir_all(a.join("empty")).unwrap();
    std::fs::create_dir_all(b.join("keep")).unwrap();
    std::fs::write(a.join("log"), b"0123456789").unwrap();
    std::fs::write(a.join("dir/deep/data"), vec![7u8; 100_000]).unwrap();
    std::fs::write(a.join("victim"), b"to be replaced").unwrap();
    std::fs::write(a.join("gone"), b"to be removed").unwrap();
    std::fs::hard_link(a.join("gone"), b.join("gone-too")).unwrap();
    std::fs::write(b.join("keep/x"), b"x").unwrap();
    std::os::unix::fs::symlink("dir/deep/data", a.join("alias")).unwrap();
    let roots = vec![Root { host: a, guest: "/a".into() }, Root { host: b, guest: "/b".into() }];
    (t, roots)
}

/// A journal with every kind of change, as a clone records them for this tree.
fn journal() -> Vec<FileOp> {
    let p = |s: &str| s.to_string();
    vec![
        FileOp::Create { root: 0, path: p("new") },
        FileOp::Write { root: 0, path: p("new"), offset: 0, data: b"fresh".to_vec() },
        FileOp::Write { root: 0, path: p("log"), offset: 5, data: b"ABCDEFGHIJ".to_vec() },
        FileOp::SetSize { root: 0, path: p("dir/deep/data"), size: 10 },
        FileOp::SetSize { root: 0, path: p("new"), size: 4096 },
        FileOp::Mkdir { root: 0, path: p("made") },
        FileOp::Mkdir { root: 0, path: p("made/inner") },
        FileOp::Unlink { root: 0, path: p("gone") },
        FileOp::Rmdir { root: 0, path: p("empty") },
        FileOp::Rename { root: 0, from: p("new"), to_root: 0, to: p("victim") },
        FileOp::Rename { root: 0, from: p("made"), to_root: 1, to: p("moved") },
        FileOp::Link { root: 0, from: p("log"), to_root: 1, to: p("log-link") },
        FileOp::Symlink { root: 1, target: p("keep/x"), path: p("points") },
        FileOp::Unlink { root: 0, path: p("alias") },
        FileOp::SetTimes { root: 0, path: p("log"), atim: Some(1_000_000_000), mtim: Some(2_000_000_000) },
        FileOp::Write { root: 1, path: p("keep/x"), offset: 1 << 20, data: b"far".to_vec() },
    ]
}

/// The same changes made with `std::fs`: the oracle for a journal carried out.
fn by_hand(roots: &[Root]) {
    let (a, b) = (&roots[0].host, &roots[1].host);
    use std::os::unix::fs::FileExt;
    std::fs::write(a.join("new"), b"fresh").unwrap();
    std::fs::OpenOptions::new().write(true).open(a.join("log")).unwrap().write_all_at(b"ABCDEFGHIJ", 5).unwrap();
    std::fs::OpenOptions::new().write(true).open(a.join("dir/deep/data")).unwrap().set_len(10).unwrap();
    std::fs::OpenOptions::new().write(true).open(a.join("new")).unwrap().set_len(4096).unwrap();
    std::fs::create_dir_all(a.join("made/inner")).unwrap();
    std::fs::remove_file(a.join("gone")).unwrap();
    std::fs::remove_dir(a.join("empty")).unwrap();
    std::fs::rename(a.join("new"), a.join("victim")).unwrap();
    std::fs::rename(a.join("made"), b.join("moved")).unwrap();
    std::fs::hard_link(a.join("log"), b.join("log-link")).unwrap();
    std::os::unix::fs::symlink("keep/x", b.join("points")).unwrap();
    std::fs::remove_file(a.join("alias")).unwrap();
    std::fs::OpenOptions::new().write(true).open(b.join("keep/x")).unwrap().write_all_at(b"far", 1 << 20).unwrap();
}

fn both(roots: &[Root]) -> [Snap; 2] {
    [snapshot(&roots[0].host), snapshot(&roots[1].host)]
}

/// Inodes and times differ between two trees made apart; content, kinds and modes must not.
/// An entry without its inode and time: kind, content and mode.
type Entry = (String, Vec<u8>, u32);

fn without_inodes(s: [Snap; 2]) -> Vec<BTreeMap<String, Entry>> {
    s.into_iter().map(|m| m.into_iter().map(|(k, (a, b, c, _, _))| (k, (a, b, c))).collect()).collect()
}

#[test]
fn a_committed_journal_equals_the_same_changes_made_by_hand_and_leaves_nothing_behind() {
    let (_t, roots) = tree();
    let (_u, oracle) = tree();
    by_hand(&oracle);
    apply(&roots, &journal(), &mut no_op).expect("the journal applies").commit(&mut no_op).unwrap();
    // Before anything reads it (a read moves the access time).
    let meta = std::fs::metadata(roots[0].host.join("log")).unwrap();
    assert_eq!((meta.atime(), meta.mtime()), (1, 2), "the times the journal set");
    assert_eq!(without_inodes(both(&roots)), without_inodes(both(&oracle)));
}

#[test]
fn a_journal_that_fails_at_any_change_leaves_the_directories_as_they_were() {
    let ops = journal();
    // A change the disk refuses: the file is not there.
    let failing = FileOp::Unlink { root: 0, path: "not-there".into() };
    for k in 0..=ops.len() {
        let (_t, roots) = tree();
        // Directories made with every mode bit, which a umask would not give back.
        std::fs::set_permissions(roots[0].host.join("empty"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let before = both(&roots);
        let mut j = ops[..k].to_vec();
        j.push(failing.clone());
        match apply(&roots, &j, &mut no_op) {
            Err(ApplyError::Io { .. }) => {}
            other => panic!("after {k} changes: {other:?}"),
        }
        assert_eq!(both(&roots), before, "after {k} changes the failed journal left its mark");
        let mode = std::fs::metadata(roots[0].host.join("empty")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o777, "after {k} changes: the removed directory's mode");
    }
}

#[test]
fn a_journal_applied_then_undone_leaves_the_directories_as_they_were() {
    let (_t, roots) = tree();
    let before = both(&roots);
    let applied = apply(&roots, &journal(), &mut no_op).expect("the journal applies");
    assert_ne!(both(&roots), before);
    assert_eq!(applied.undo(&mut no_op), 0, "every change undone");
    assert_eq!(both(&roots), before);
}

#[test]
fn a_long_tail_cut_by_a_failed_journal_comes_back() {
    let (_t, roots) = tree();
    let big = roots[0].host.join("big");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(80 << 20).unwrap();
        f.write_all_at(b"the end", (80 << 20) - 7).unwrap();
        f.write_all_at(b"middle", 40 << 20).unwrap();
    }
    let before = std::fs::read(&big).unwrap();
    let ino = std::fs::metadata(&big).unwrap().ino();
    let j = vec![FileOp::SetSize { root: 0, path: "big".into(), size: 1 }, FileOp::Unlink { root: 0, path: "not-there".into() }];
    assert!(apply(&roots, &j, &mut no_op).is_err());
    assert_eq!(std::fs::metadata(&big).unwrap().ino(), ino, "the same file");
    assert!(std::fs::read(&big).unwrap() == before, "the file's bytes came back");
    let names: Vec<_> = std::fs::read_dir(&roots[0].host).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().starts_with(".clonecloud")), "{names:?}");
}

#[test]
fn descriptor_changes_of_a_failed_journal_are_undone_through_the_device() {
    let (_t, roots) = tree();
    let mut seen = Vec::new();
    let mut descriptors = |op: &FdOp| {
        seen.push(op.clone());
        Ok(match op {
            FdOp::Open { fd, .. } => Some(FdOp::Close { fd: *fd }),
            FdOp::Seek { fd, .. } => Some(FdOp::Seek { fd: *fd, offset: 3 }),
            _ => None,
        })
    };
    let j = vec![
        FileOp::Fd(FdOp::Open { dirfd: 3, path: "log".into(), directory: false, rights: 0, fdflags: 0, fd: 5 }),
        FileOp::Fd(FdOp::Seek { fd: 5, offset: 9 }),
        FileOp::Unlink { root: 0, path: "not-there".into() },
    ];
    assert!(apply(&roots, &j, &mut descriptors).is_err());
    assert_eq!(
        seen,
        vec![
            FdOp::Open { dirfd: 3, path: "log".into(), directory: false, rights: 0, fdflags: 0, fd: 5 },
            FdOp::Seek { fd: 5, offset: 9 },
            FdOp::Seek { fd: 5, offset: 3 },
            FdOp::Close { fd: 5 },
        ],
        "replayed, then undone in reverse order"
    );
}

/// A close waits for the commit: a journal that opens and seeks a descriptor, closes it, and
/// then fails, has closed nothing, so all of it is undone (the seek put back, the open closed).
#[test]
fn a_close_is_held_to_the_commit_so_a_failed_journal_undoes_everything() {
    let (_t, roots) = tree();
    let mut seen = Vec::new();
    let mut descriptors = |op: &FdOp| {
        seen.push(op.clone());
        Ok(match op {
            FdOp::Open { fd, .. } => Some(FdOp::Close { fd: *fd }),
            FdOp::Seek { fd, .. } => Some(FdOp::Seek { fd: *fd, offset: 0 }),
            _ => None,
        })
    };
    let open = |fd| FdOp::Open { dirfd: 3, path: "log".into(), directory: false, rights: 0, fdflags: 0, fd };
    let j = vec![
        FileOp::Fd(open(5)),
        FileOp::Fd(FdOp::Seek { fd: 5, offset: 9 }),
        FileOp::Fd(FdOp::Close { fd: 5 }),
        FileOp::Fd(FdOp::Renumber { from: 4, to: 1 }),
        FileOp::Unlink { root: 0, path: "not-there".into() },
    ];
    let e = apply(&roots, &j, &mut descriptors).unwrap_err();
    assert!(matches!(e, ApplyError::Io { .. }), "the journal's own failure, not a failed undo: {e}");
    assert_eq!(
        seen,
        [open(5), FdOp::Seek { fd: 5, offset: 9 }, FdOp::Seek { fd: 5, offset: 0 }, FdOp::Close { fd: 5 }],
        "neither the close nor the renumbering was carried out; the open and seek are undone"
    );
}

/// Closes and renumberings are carried out at the commit, in order, after every change to the
/// files; an open after a close (whose number the close decides) carries it out first, and
/// then it cannot be undone: undoing the journal leaves that descriptor alone.
#[test]
fn closes_wait_for_the_commit_or_for_an_open_that_depends_on_them() {
    let (_t, roots) = tree();
    let seen = std::cell::RefCell::new(Vec::new());
    let mut descriptors = |op: &FdOp| {
        seen.borrow_mut().push(op.clone());
        Ok(match op {
            FdOp::Open { fd, .. } => Some(FdOp::Close { fd: *fd }),
            FdOp::Seek { fd, .. } => Some(FdOp::Seek { fd: *fd, offset: 0 }),
            _ => None,
        })
    };
    let open = |fd| FdOp::Open { dirfd: 3, path: "log".into(), directory: false, rights: 0, fdflags: 0, fd };
    let j = vec![
        FileOp::Fd(FdOp::Close { fd: 6 }),
        FileOp::Write { root: 0, path: "log".into(), offset: 0, data: b"x".to_vec() },
        FileOp::Fd(FdOp::Seek { fd: 7, offset: 2 }),
        FileOp::Fd(FdOp::Renumber { from: 8, to: 7 }),
        FileOp::Fd(FdOp::Seek { fd: 9, offset: 1 }),
    ];
    let applied = apply(&roots, &j, &mut descriptors).unwrap();
    assert_eq!(*seen.borrow(), [FdOp::Seek { fd: 7, offset: 2 }, FdOp::Seek { fd: 9, offset: 1 }], "nothing irreversible before the commit");
    seen.borrow_mut().clear();
    applied.commit(&mut descriptors).unwrap();
    assert_eq!(*seen.borrow(), [FdOp::Close { fd: 6 }, FdOp::Renumber { from: 8, to: 7 }], "at the commit, in the journal's order");

    // A seek of a renumbering's target, and an open, each need what is held first.
    seen.borrow_mut().clear();
    let j = vec![
        FileOp::Fd(FdOp::Renumber { from: 8, to: 7 }),
        FileOp::Fd(FdOp::Seek { fd: 7, offset: 2 }),
        FileOp::Fd(FdOp::Close { fd: 6 }),
        FileOp::Fd(open(6)),
        FileOp::Unlink { root: 0, path: "not-there".into() },
    ];
    assert!(apply(&roots, &j, &mut descriptors).is_err());
    assert_eq!(
        *seen.borrow(),
        [FdOp::Renumber { from: 8, to: 7 }, FdOp::Seek { fd: 7, offset: 2 }, FdOp::Close { fd: 6 }, open(6), FdOp::Close { fd: 6 }, FdOp::Seek { fd: 7, offset: 0 }],
        "carried out in order where one depends on another; then undone in reverse: the open closed, the seek put back"
    );
}

/// A journal that empties a directory and then removes it (as `remove_dir_all` does) applies
/// as `std::fs` would, and undoes to what was there, with nothing of the merge left behind.
#[test]
fn a_directory_emptied_then_removed_applies_and_undoes() {
    let build = |d: &Path| {
        std::fs::create_dir_all(d.join("x/y/z")).unwrap();
        std::fs::write(d.join("x/y/z/f"), b"f").unwrap();
        std::fs::write(d.join("x/y/g"), b"g").unwrap();
        std::fs::write(d.join("keep"), b"k").unwrap();
    };
    let t = tempfile::tempdir().unwrap();
    let (pre, oracle) = (t.path().join("pre"), t.path().join("oracle"));
    build(&pre);
    build(&oracle);
    let roots = vec![Root { host: pre.clone(), guest: "/pre".into() }];
    let before = snapshot(&pre);
    let p = |s: &str| s.to_string();
    let j = vec![
        FileOp::Unlink { root: 0, path: p("x/y/z/f") },
        FileOp::Rmdir { root: 0, path: p("x/y/z") },
        FileOp::Unlink { root: 0, path: p("x/y/g") },
        FileOp::Rmdir { root: 0, path: p("x/y") },
        FileOp::Rmdir { root: 0, path: p("x") },
    ];
    // Undone: as it was.
    apply(&roots, &j, &mut no_op).unwrap().undo(&mut no_op);
    assert_eq!(snapshot(&pre), before);
    // Failing at the end: as it was.
    let mut failing = j.clone();
    failing.push(FileOp::Unlink { root: 0, path: p("not-there") });
    assert!(apply(&roots, &failing, &mut no_op).is_err());
    assert_eq!(snapshot(&pre), before);
    // Committed: as std::fs does it.
    apply(&roots, &j, &mut no_op).unwrap().commit(&mut no_op).unwrap();
    std::fs::remove_dir_all(oracle.join("x")).unwrap();
    let strip = |s: Snap| s.into_iter().map(|(k, (kind, data, mode, _, _))| (k, (kind, data, mode))).collect::<BTreeMap<_, _>>();
    assert_eq!(strip(snapshot(&pre)), strip(snapshot(&oracle)));
}

/// A journal that grows a file to a terabyte's size and cuts it again, over and over, keeps at
/// most the file's original bytes to undo it (not the sparse terabyte each time), and undoes
/// to the original.
#[test]
fn growing_and_cutting_a_file_keeps_only_its_original_bytes_to_undo() {
    let (_t, roots) = tree();
    let before = snapshot(&roots[0].host);
    let p = |s: &str| s.to_string();
    let mut j = Vec::new();
    for _ in 0..3 {
        j.push(FileOp::SetSize { root: 0, path: p("log"), size: 1 << 40 });
        j.push(FileOp::Write { root: 0, path: p("log"), offset: 1 << 30, data: b"far".to_vec() });
        j.push(FileOp::SetSize { root: 0, path: p("log"), size: 0 });
    }
    let applied = apply(&roots, &j, &mut no_op).unwrap();
    // What the merge keeps aside so far: nothing beyond the 10 original bytes.
    let kept: u64 = std::fs::read_dir(&roots[0].host)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".clonecloud-undo-"))
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum();
    assert!(kept <= 4096, "{kept} bytes kept aside");
    applied.undo(&mut no_op);
    assert_eq!(snapshot(&roots[0].host), before);
}

/// The device's descriptor table as wasmtime-wasi keeps it decides which journals are refused
/// before anything changes: a close, renumbering, seek or change of flags of a number not open,
/// or an open that would get another number there (the highest freed one, else one above the
/// highest in use).
#[test]
fn a_journal_whose_descriptors_do_not_fit_the_device_s_table_is_refused_before_any_change() {
    use clonecloud_files::Descriptors;
    let table = Descriptors { open: vec![0, 1, 2, 3, 4, 6], free: vec![5], complete: true, free_exact: true, files: vec![] };
    let open = |fd| FileOp::Fd(FdOp::Open { dirfd: 3, path: "log".into(), directory: false, rights: 0, fdflags: 0, fd });
    let fits = [
        vec![open(5), open(7)],
        vec![FileOp::Fd(FdOp::Close { fd: 4 }), open(5), open(4)],
        vec![FileOp::Fd(FdOp::Close { fd: 6 }), open(6), FileOp::Fd(FdOp::Seek { fd: 6, offset: 1 })],
        // A renumbering frees its source and keeps its target.
        vec![FileOp::Fd(FdOp::Renumber { from: 6, to: 4 }), open(6), open(5), open(7)],
        vec![FileOp::Fd(FdOp::Renumber { from: 4, to: 4 }), FileOp::Fd(FdOp::SetFlags { fd: 4, fdflags: 1 })],
    ];
    for j in &fits {
        assert_eq!(table.check_journal(j), Ok(()), "{j:?}");
    }
    let misfits = [
        vec![FileOp::Fd(FdOp::Close { fd: 5 })],
        vec![FileOp::Fd(FdOp::Close { fd: 4 }), FileOp::Fd(FdOp::Close { fd: 4 })],
        vec![FileOp::Fd(FdOp::Renumber { from: 4, to: 5 })],
        vec![FileOp::Fd(FdOp::Renumber { from: 9, to: 4 })],
        vec![FileOp::Fd(FdOp::Seek { fd: 7, offset: 0 })],
        vec![FileOp::Fd(FdOp::SetFlags { fd: 5, fdflags: 0 })],
        vec![open(7)],
        vec![open(4)],
        vec![FileOp::Fd(FdOp::Close { fd: 4 }), open(4)],
        vec![FileOp::Fd(FdOp::Close { fd: 6 }), FileOp::Fd(FdOp::Seek { fd: 6, offset: 0 })],
    ];
    for j in &misfits {
        assert!(table.check_journal(j).is_err(), "{j:?}");
    }
    // Freed numbers not all known: an open need only take a number not in use.
    let unsure = Descriptors { free_exact: false, ..table.clone() };
    assert_eq!(unsure.check_journal(&[open(9)]), Ok(()));
    assert!(unsure.check_journal(&[open(4)]).is_err());
    // Without a complete table, the replay checks each change.
    let unknown = Descriptors::default();
    assert_eq!(unknown.check_journal(&[FileOp::Fd(FdOp::Close { fd: 40 })]), Ok(()));
}
