//! The codec: every message survives a round trip, a stream split anywhere decodes the same, and
//! no input (random, truncated, corrupted, oversized) makes the decoder panic.

use clonecloud_wire::codec::{DEFAULT_MAX_FRAME, HEADER_LEN};
use clonecloud_wire::{
    ACCESS_BITMAP, Access, Clocks, Compression, DecodeError, Decoder, Descriptors, Entry, EntryKind, FailKind, FdOp, FileOp, OpenFile, FileStat, Kind, Message, PageDelta, State, Tree, Value,
    from_bytes, to_bytes, to_bytes_with,
};

#[path = "../../../tests/support/rng.rs"]
mod rng;
use rng::Rng;

fn state(rng: &mut Rng) -> State {
    let page_size = 1 << (8 + rng.below(5));
    let wasm_pages = 1 + rng.below(4) as u32;
    let per_wasm_page = 65536 / page_size;
    let pages = (0..rng.below(4))
        .map(|_| {
            let i = rng.below(u64::from(wasm_pages) * per_wasm_page) as u32;
            (i, (0..page_size).map(|_| rng.next() as u8).collect())
        })
        .collect();
    State {
        globals: (0..rng.below(3)).map(|i| (i as u32, Value::I32(rng.next() as i32))).collect(),
        memory: PageDelta { wasm_pages, page_size: page_size as u32, pages, xor: rng.below(2) == 1 },
    }
}

/// A bitmap of a page with some bytes marked (at least one).
fn bitmap(rng: &mut Rng) -> Vec<u8> {
    let mut b: Vec<u8> = (0..ACCESS_BITMAP).map(|_| if rng.below(4) == 0 { rng.next() as u8 } else { 0 }).collect();
    b[rng.below(ACCESS_BITMAP as u64) as usize] |= 1 << rng.below(8);
    b
}

/// The answer of a threaded migration: 4 KiB pages, exactly the written ones, in increasing
/// order, each with its write bitmap; some pages read.
fn threaded(rng: &mut Rng) -> Message {
    let wasm_pages = 1 + rng.below(2) as u32;
    let n = wasm_pages * 16;
    let written: Vec<u32> = (0..n).filter(|_| rng.below(10) == 0).collect();
    let read: Vec<u32> = (0..n).filter(|_| rng.below(6) == 0).collect();
    let pages = written.iter().map(|&i| (i, (0..4096).map(|_| rng.next() as u8).collect())).collect();
    Message::Return {
        id: rng.next(),
        results: values(rng),
        state: State { globals: vec![(0, Value::I32(rng.next() as i32))], memory: PageDelta { wasm_pages, page_size: 4096, pages, xor: rng.below(2) == 1 } },
        micros: rng.next(),
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0,
        thrown: None,
        access: Some(Access { reads: read.iter().map(|&i| (i, bitmap(rng))).collect(), writes: written.iter().map(|&i| (i, bitmap(rng))).collect() }),
    }
}

fn values(rng: &mut Rng) -> Vec<Value> {
    (0..rng.below(4))
        .map(|_| match rng.below(4) {
            0 => Value::I32(rng.next() as i32),
            1 => Value::I64(rng.next() as i64),
            2 => Value::F32(rng.next() as u32),
            _ => Value::F64(rng.next()),
        })
        .collect()
}

fn stat(rng: &mut Rng) -> FileStat {
    FileStat { ino: rng.next(), nlink: 1, size: rng.below(1 << 20), atim: rng.next(), mtim: rng.next(), ctim: rng.next() }
}

fn tree(rng: &mut Rng) -> Tree {
    Tree {
        guest: "/data".into(),
        entries: vec![
            Entry { path: String::new(), kind: EntryKind::Dir, stat: stat(rng) },
            Entry { path: "a b".into(), kind: EntryKind::File([rng.next() as u8; 32]), stat: stat(rng) },
            Entry { path: "sub".into(), kind: EntryKind::Dir, stat: stat(rng) },
            Entry { path: "sub/link".into(), kind: EntryKind::Other(7), stat: stat(rng) },
            Entry { path: "sub/to-file".into(), kind: EntryKind::Symlink("../file".into()), stat: stat(rng) },
        ],
    }
}

fn file_ops(rng: &mut Rng) -> Vec<FileOp> {
    vec![
        FileOp::Create { root: 0, path: "out".into() },
        FileOp::Write { root: 0, path: "out".into(), offset: rng.below(100), data: vec![b'x'; rng.below(3000) as usize] },
        FileOp::SetSize { root: 1, path: "d/f".into(), size: 7 },
        FileOp::Mkdir { root: 0, path: "d".into() },
        FileOp::Unlink { root: 0, path: "d/f".into() },
        FileOp::Rmdir { root: 0, path: "d".into() },
        FileOp::Rename { root: 0, from: "a".into(), to_root: 1, to: "b/c".into() },
        FileOp::SetTimes { root: 0, path: "a".into(), atim: Some(rng.next()), mtim: None },
        FileOp::Symlink { root: 0, target: "../b/c".into(), path: "d/link".into() },
        FileOp::Link { root: 1, from: "a".into(), to_root: 0, to: "d/b".into() },
        FileOp::SetTimes { root: 1, path: "b".into(), atim: None, mtim: Some(rng.next()) },
        FileOp::Fd(FdOp::Open { dirfd: 3, path: "d/f".into(), directory: false, rights: rng.next(), fdflags: 1, fd: 7 }),
        FileOp::Fd(FdOp::Open { dirfd: 4, path: "".into(), directory: true, rights: 0, fdflags: 0, fd: 5 }),
        FileOp::Fd(FdOp::Renumber { from: 7, to: 5 }),
        FileOp::Fd(FdOp::Seek { fd: 5, offset: rng.next() }),
        FileOp::Fd(FdOp::SetFlags { fd: 5, fdflags: 1 }),
        FileOp::Fd(FdOp::Close { fd: 5 }),
    ]
}

fn every_kind(rng: &mut Rng) -> Vec<Message> {
    vec![
        Message::Hello {
            version: clonecloud_wire::PROTOCOL_VERSION,
            module: [7; 32],
            run: rng.next(),
            thread: 3,
            environment: clonecloud_wire::Environment { args: vec![b"app.wasm".to_vec(), vec![]], env: vec![b"A=1".to_vec()] },
        },
        Message::Welcome { need_module: true, concurrency: 1 },
        Message::Welcome { need_module: false, concurrency: 1 },
        Message::Welcome { need_module: false, concurrency: clonecloud_wire::MAX_IN_FLIGHT },
        Message::Module { bytes: b"\0asm\x01\0\0\0".to_vec() },
        Message::Migrate {
            id: rng.next(),
            point: 12,
            args: values(rng),
            state: state(rng),
            clocks: Clocks { realtime: rng.next(), monotonic: rng.next() },
            descriptors: Descriptors {
                open: vec![0, 1, 2, 3, 5, 9],
                free: vec![4],
                complete: true,
                free_exact: false,
                files: vec![
                    OpenFile { fd: 5, dir: false, ino: rng.next(), offset: rng.next(), fdflags: 1, read: true, write: false },
                    OpenFile { fd: 9, dir: true, ino: 3, offset: 0, fdflags: 0, read: true, write: true },
                ],
            },
        },
        Message::Return {
            id: rng.next(),
            results: values(rng),
            state: state(rng),
            micros: rng.next(),
            output: vec![(1, b"out".to_vec()), (2, vec![])],
            files: file_ops(rng),
            exit: None,
            freed: 2, thrown: None, access: None,
        },
        Message::Return { id: 1, results: vec![], state: state(rng), micros: 0, output: vec![], files: vec![], exit: Some(3), freed: 7, thrown: None, access: None },
        Message::Return { id: 2, results: vec![], state: state(rng), micros: 0, output: vec![], files: vec![], exit: None, freed: 0, thrown: Some(clonecloud_wire::Thrown { tag: 3, fields: values(rng) }), access: None },
        threaded(rng),
        Message::Files { trees: vec![tree(rng), Tree::default()] },
        Message::NeedFiles { hashes: vec![[1; 32], [2; 32]] },
        Message::FileData { hash: [3; 32], bytes: (0..rng.below(5000)).map(|i| (i % 7) as u8).collect() },
        Message::ImportCall { id: 1, import: 4, args: values(rng), state: state(rng) },
        Message::ImportReturn { id: 1, results: values(rng), state: state(rng) },
        Message::Failed { id: 1, kind: FailKind::Trap, message: "wasm trap: unreachable".into() },
        Message::Failed { id: 1, kind: FailKind::ResourceLimit, message: String::new() },
        Message::Error { message: "ünïcode".into() },
        Message::Goodbye,
        Message::Cancel { id: rng.next() },
        Message::Probe { bytes: (0..rng.below(3000)).map(|i| i as u8).collect(), reply: 1 << 16 },
        Message::Probe { bytes: vec![], reply: 0 },
        Message::ProbeReply { bytes: vec![9; rng.below(3000) as usize] },
        Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: rng.next(), awaiting: vec![7] },
        Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 1, awaiting: vec![2, 5, rng.next()] },
        Message::Resumed { ok: true },
        Message::Resumed { ok: false },
    ]
}

#[test]
fn the_tests_cover_every_kind_and_the_table_is_consistent() {
    let mut rng = Rng(7);
    let covered: std::collections::BTreeSet<Kind> = every_kind(&mut rng).iter().map(Message::kind_of).collect();
    let all: std::collections::BTreeSet<Kind> = Kind::ALL.iter().copied().collect();
    assert_eq!(covered, all, "every_kind lacks a sample of some kind");
    let mut names = std::collections::BTreeSet::new();
    for &k in Kind::ALL {
        assert_eq!(Kind::from_code(k.code()), Some(k));
        assert!(names.insert(k.name()), "{} named twice", k.name());
    }
    assert_eq!(Kind::from_code(0), None);
    assert_eq!(Kind::from_code(Kind::ALL.len() as u8 + 1), None);
}

#[test]
fn every_message_round_trips_and_splits_anywhere() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..50 {
        let msgs = every_kind(&mut rng);
        let mut stream = Vec::new();
        for (k, m) in msgs.iter().enumerate() {
            let compression = [Compression::Lz4, Compression::None, Compression::Zstd][k % 3];
            let bytes = to_bytes_with(m, compression);
            assert_eq!(&from_bytes(&bytes, DEFAULT_MAX_FRAME).unwrap(), m);
            stream.extend_from_slice(&bytes);
        }
        // Feed the whole stream in random pieces: the same messages come out, in order.
        let mut d = Decoder::default();
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = (1 + rng.below(40) as usize).min(stream.len() - at);
            d.feed(&stream[at..at + n]);
            at += n;
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }
}

#[test]
fn truncated_frames_wait_and_corrupted_ones_fail_cleanly() {
    let mut rng = Rng(99);
    for (m, compression) in every_kind(&mut rng).into_iter().flat_map(|m| [(m.clone(), Compression::None), (m.clone(), Compression::Lz4), (m, Compression::Zstd)]) {
        let bytes = to_bytes_with(&m, compression);
        for cut in 0..bytes.len() {
            let mut d = Decoder::default();
            d.feed(&bytes[..cut]);
            assert_eq!(d.next_message(), Ok(None), "{} cut at {cut}", m.kind());
            assert!(from_bytes(&bytes[..cut], DEFAULT_MAX_FRAME).is_err());
        }
        // Flip every byte of the frame in turn: a clean error or another valid message.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1 + (rng.below(255) as u8);
            let _ = from_bytes(&bad, DEFAULT_MAX_FRAME);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0xdead_beef);
    for round in 0..20_000 {
        let len = rng.below(64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 2 == 0 && len >= HEADER_LEN {
            // A valid header with a random payload reaches the payload decoders.
            bytes[..3].copy_from_slice(b"CC\x01");
            bytes[3] = 1 + rng.below(11) as u8;
            let n = (len - HEADER_LEN) as u32;
            bytes[4..8].copy_from_slice(&n.to_le_bytes());
        }
        let mut d = Decoder::new(1 << 16);
        d.feed(&bytes);
        let _ = d.next_message();
    }
}

#[test]
fn oversized_and_foreign_frames_are_refused_before_buffering() {
    let mut d = Decoder::new(1024);
    let mut header = b"CC\x01\x03".to_vec();
    header.extend_from_slice(&(1u32 << 30).to_le_bytes());
    d.feed(&header);
    assert_eq!(d.next_message(), Err(DecodeError::TooLarge { len: 1 << 30, max: 1024 }));

    let mut d = Decoder::default();
    d.feed(b"GET / HTTP/1.1\r\n");
    assert!(matches!(d.next_message(), Err(DecodeError::BadMagic(_))));

    let mut d = Decoder::default();
    d.feed(b"CC\x02\x01\0\0\0\0");
    assert_eq!(d.next_message(), Err(DecodeError::Format(2)));

    // A forged count larger than the frame allocates nothing and is refused.
    let mut frame = b"CC\x01\x03".to_vec();
    frame.extend_from_slice(&4u32.to_le_bytes());
    frame.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(from_bytes(&frame, DEFAULT_MAX_FRAME), Err(DecodeError::Truncated { .. })));

    // A compressed delta claiming more pages than its bytes can hold is refused unallocated.
    let mut frame = b"CC\x01\x05".to_vec();
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u64.to_le_bytes()); // migration 1
    payload.extend_from_slice(&0u32.to_le_bytes()); // no results
    payload.extend_from_slice(&0u32.to_le_bytes()); // no globals
    payload.extend_from_slice(&65536u32.to_le_bytes()); // 4 GiB of memory
    payload.extend_from_slice(&4096u32.to_le_bytes());
    payload.push(0); // not XOR
    payload.extend_from_slice(&1_000_000u32.to_le_bytes()); // a million pages...
    payload.push(1);
    payload.extend_from_slice(&4u32.to_le_bytes()); // ...from four bytes
    payload.extend_from_slice(&[0x1f, 0, 0, 0]);
    payload.extend_from_slice(&0u64.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    assert!(matches!(from_bytes(&frame, DEFAULT_MAX_FRAME), Err(DecodeError::Invalid { .. })));

    // Zero pages compress: a delta of empty pages travels in a few bytes.
    let zeros = Message::Return {
        id: 1,
        results: vec![],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 16, page_size: 4096, pages: (0..64).map(|i| (i, vec![0; 4096])).collect(), xor: false } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0, thrown: None, access: None,
    };
    for c in [Compression::Lz4, Compression::Zstd] {
        let packed = to_bytes_with(&zeros, c);
        assert!(packed.len() * 50 < to_bytes(&zeros).len(), "{c:?}: {} bytes", packed.len());
        assert_eq!(from_bytes(&packed, DEFAULT_MAX_FRAME).unwrap(), zeros);
    }
    // A forged zstd frame that claims far more than it holds is refused without allocating it.
    // (The page count sits after the migration's number, the results' count, the globals'
    // count, the memory size, the page size and the XOR flag.)
    let mut forged = to_bytes_with(&zeros, Compression::Zstd);
    let at = HEADER_LEN + 8 + 4 + 4 + 4 + 4 + 1;
    assert_eq!(forged[at..at + 4], 64u32.to_le_bytes());
    forged[at..at + 4].copy_from_slice(&200u32.to_le_bytes());
    assert!(matches!(from_bytes(&forged, DEFAULT_MAX_FRAME), Err(DecodeError::Invalid { .. })));

    // A page outside the declared memory is refused.
    let m = Message::Return {
        id: 1,
        results: vec![],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![(16, vec![0; 4096])], xor: false } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0, thrown: None, access: None,
    };
    assert!(matches!(from_bytes(&to_bytes(&m), DEFAULT_MAX_FRAME), Err(DecodeError::Invalid { .. })));
}

/// One decompression budget for the whole message: many compressed writes, each well within
/// the limit, that together expand past it are refused (a small frame must not make the
/// receiver allocate many times its limit).
#[test]
fn a_message_has_one_decompression_budget() {
    let bomb = Message::Return {
        id: 1,
        results: vec![],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![], xor: false } },
        micros: 0,
        output: vec![],
        files: (0..64).map(|i| FileOp::Write { root: 0, path: format!("f{i}"), offset: 0, data: vec![0; 1 << 20] }).collect(),
        exit: None,
        freed: 0, thrown: None, access: None,
    };
    for c in [Compression::Lz4, Compression::Zstd] {
        let packed = to_bytes_with(&bomb, c);
        assert!(packed.len() < 1 << 20, "{c:?}: {} bytes", packed.len());
        assert!(matches!(from_bytes(&packed, 16 << 20), Err(DecodeError::Invalid { .. })), "{c:?}: 64 MiB out of a 16 MiB limit");
        assert_eq!(from_bytes(&packed, 65 << 20).unwrap(), bomb, "{c:?}: within the limit");
    }
}

/// The device sets its module's memory maximum on its decoder: an answer describing a larger
/// memory is refused before its pages are decompressed (a 1 MiB frame claiming a 4 GiB memory
/// of zero pages costs nothing), and one message may decompress to that memory plus the frame
/// limit, so a legitimate answer whose memory is bigger than the frame limit still decodes.
#[test]
fn the_device_s_memory_maximum_bounds_what_an_answer_may_describe_and_expand_to() {
    let answer = |wasm_pages: u32, pages: Vec<(u32, Vec<u8>)>| Message::Return {
        id: 1,
        results: vec![],
        state: State { globals: vec![], memory: PageDelta { wasm_pages, page_size: 4096, pages, xor: false } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0, thrown: None, access: None,
    };
    let decode = |m: &Message, max_frame: usize, max_pages: Option<u32>| {
        let mut d = clonecloud_wire::Decoder::new(max_frame);
        if let Some(p) = max_pages {
            d.set_memory_maximum(p, 4096);
        }
        d.feed(&to_bytes_with(m, Compression::Zstd));
        d.next_message()
    };
    // 8 MiB of zero pages in a memory of 128 wasm pages: a frame of a few KiB.
    let big = answer(128, (0..2048).map(|i| (i, vec![0; 4096])).collect());
    assert!(to_bytes_with(&big, Compression::Zstd).len() < 1 << 20);
    assert!(matches!(decode(&big, 1 << 20, None), Err(DecodeError::Invalid { .. })), "over the frame limit alone");
    assert_eq!(decode(&big, 1 << 20, Some(128)).unwrap(), Some(big.clone()), "within the module's memory plus the frame limit");
    // The module's memory is at most 64 pages: the same answer is refused by its header.
    let e = decode(&big, 1 << 20, Some(64)).unwrap_err();
    assert!(e.to_string().contains("over the receiver's maximum of 64"), "{e}");
    // Files and output have the frame limit, not the memory's share: 64 MiB of files in a
    // message whose memory could take 4 GiB is still refused.
    let mut bomb = answer(1, vec![]);
    if let Message::Return { files, .. } = &mut bomb {
        *files = (0..64).map(|i| FileOp::Write { root: 0, path: format!("f{i}"), offset: 0, data: vec![0; 1 << 20] }).collect();
    }
    assert!(matches!(decode(&bomb, 16 << 20, Some(65536)), Err(DecodeError::Invalid { .. })), "64 MiB of files over a 16 MiB frame limit");
    // Pages smaller than the receiver's cost it more per byte than its memory (a 4 GiB memory
    // of 256-byte pages is 16 million of them): refused before anything is decompressed.
    let small = Message::Return {
        id: 1,
        results: vec![],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 65536, page_size: 256, pages: (0..4096).map(|i| (i, vec![0; 256])).collect(), xor: false } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0,
        thrown: None, access: None,
    };
    let e = decode(&small, 16 << 20, Some(65536)).unwrap_err();
    assert!(e.to_string().contains("pages of 256 bytes"), "{e}");
    assert!(decode(&small, 16 << 20, None).is_ok(), "a receiver that set no maximum (the clone) takes any page size");
}

/// A hello or a resume of another protocol version decodes to its version whatever follows (the
/// session then refuses the version, which tells the peer more than a decoding error would);
/// a welcome's concurrency is 1 to MAX_IN_FLIGHT, and a resume awaits no more than that.
#[test]
fn another_version_decodes_to_its_version_and_counts_are_bounded() {
    let mut frame = b"CC\x01\x10".to_vec();
    let payload = [&3u16.to_le_bytes()[..], &9u64.to_le_bytes(), b"an older layout"].concat();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    let m = from_bytes(&frame, DEFAULT_MAX_FRAME).unwrap();
    assert!(matches!(m, Message::Resume { version: 3, ref awaiting, .. } if awaiting.is_empty()), "{m:?}");
    let mut frame = b"CC\x01\x01".to_vec();
    let payload = [&(clonecloud_wire::PROTOCOL_VERSION + 1).to_le_bytes()[..], b"anything"].concat();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    let m = from_bytes(&frame, DEFAULT_MAX_FRAME).unwrap();
    assert!(matches!(m, Message::Hello { version: v, .. } if v == clonecloud_wire::PROTOCOL_VERSION + 1));

    for concurrency in [0, clonecloud_wire::MAX_IN_FLIGHT + 1] {
        let bytes = to_bytes(&Message::Welcome { need_module: false, concurrency });
        assert!(matches!(from_bytes(&bytes, DEFAULT_MAX_FRAME), Err(DecodeError::Invalid { .. })), "{concurrency}");
    }
    let many = Message::Resume { version: clonecloud_wire::PROTOCOL_VERSION, run: 1, awaiting: (1..=u64::from(clonecloud_wire::MAX_IN_FLIGHT) + 1).collect() };
    assert!(matches!(from_bytes(&to_bytes(&many), DEFAULT_MAX_FRAME), Err(DecodeError::Invalid { .. })));
}

/// A threaded migration's answer: the bytes read and written travel as bitmaps, round trip
/// under every compression, and say exactly which bytes were marked.
#[test]
fn an_access_report_round_trips_and_names_its_bytes() {
    let mut reads = vec![0u8; ACCESS_BITMAP];
    reads[0] = 0b0000_0101; // bytes 0 and 2 of page 3
    reads[511] = 0x80; // byte 4095 of page 3
    let mut writes = vec![0u8; ACCESS_BITMAP];
    writes[1] = 0b0001_0000; // byte 12 of page 1
    let m = Message::Return {
        id: 4,
        results: vec![Value::I32(1)],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![(1, vec![7; 4096])], xor: false } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0,
        thrown: None,
        access: Some(Access { reads: vec![(3, reads)], writes: vec![(1, writes)] }),
    };
    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
        assert_eq!(from_bytes(&to_bytes_with(&m, c), DEFAULT_MAX_FRAME).unwrap(), m, "{c:?}");
    }
    let Message::Return { access: Some(a), .. } = &m else { unreachable!() };
    let read: Vec<u64> = (0..65536).filter(|&b| a.read(b)).collect();
    assert_eq!(read, [3 * 4096, 3 * 4096 + 2, 4 * 4096 - 1]);
    let wrote: Vec<u64> = (0..65536).filter(|&b| a.wrote(b)).collect();
    assert_eq!(wrote, [4096 + 12]);
    assert!(!a.read(1 << 40) && !a.wrote(u64::MAX));

    // Compressed, full bitmaps cost next to nothing: a call that read 256 KiB.
    let mut full = m.clone();
    if let Message::Return { state, access, .. } = &mut full {
        *state = State { globals: vec![], memory: PageDelta { wasm_pages: 4, page_size: 4096, pages: vec![], xor: false } };
        *access = Some(Access { reads: (0..64).map(|i| (i, vec![0xff; ACCESS_BITMAP])).collect(), writes: vec![] });
    }
    for c in [Compression::Lz4, Compression::Zstd] {
        let packed = to_bytes_with(&full, c);
        assert!(packed.len() * 20 < to_bytes(&full).len(), "{c:?}: {} bytes", packed.len());
        assert_eq!(from_bytes(&packed, DEFAULT_MAX_FRAME).unwrap(), full);
    }
}

/// What an access report must be: its pages of 4 KiB, the writes exactly the state's pages in
/// their order, both lists strictly increasing within the memory, every bitmap exactly 512
/// bytes marking something; anything else is refused, under every compression, never a panic.
#[test]
fn a_malformed_access_report_is_refused() {
    let mut rng = Rng(0xacce55);
    let good = |rng: &mut Rng| Message::Return {
        id: 1,
        results: vec![],
        state: State { globals: vec![], memory: PageDelta { wasm_pages: 1, page_size: 4096, pages: vec![(2, vec![1; 4096]), (5, vec![2; 4096])], xor: true } },
        micros: 0,
        output: vec![],
        files: vec![],
        exit: None,
        freed: 0,
        thrown: None,
        access: Some(Access { reads: vec![(0, bitmap(rng)), (5, bitmap(rng))], writes: vec![(2, bitmap(rng)), (5, bitmap(rng))] }),
    };
    let base = good(&mut rng);
    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
        assert_eq!(from_bytes(&to_bytes_with(&base, c), DEFAULT_MAX_FRAME).unwrap(), base);
    }
    type Change = fn(&mut State, &mut Access);
    let bad: [(&str, Change); 10] = [
        ("a written page the state lacks", |_, a| a.writes[1].0 = 6),
        ("fewer writes than pages", |_, a| {
            a.writes.pop();
        }),
        ("more writes than pages", |_, a| a.writes.push((9, vec![1; ACCESS_BITMAP]))),
        ("writes out of order", |s, a| {
            s.memory.pages.swap(0, 1);
            a.writes.swap(0, 1);
        }),
        ("a page read twice", |_, a| a.reads[1].0 = 0),
        ("a page read beyond the memory", |_, a| a.reads[1].0 = 16),
        ("an empty bitmap", |_, a| a.reads[0].1 = vec![0; ACCESS_BITMAP]),
        ("a short bitmap", |_, a| a.reads[0].1.pop().map(drop).unwrap_or(())),
        ("a long bitmap", |_, a| a.writes[1].1.push(1)),
        ("pages of 8 KiB", |s, _| {
            s.memory.page_size = 8192;
            s.memory.pages.iter_mut().for_each(|p| p.1.resize(8192, 0));
        }),
    ];
    for (what, change) in bad {
        let mut m = base.clone();
        let Message::Return { state, access: Some(a), .. } = &mut m else { unreachable!() };
        change(state, a);
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let r = from_bytes(&to_bytes_with(&m, c), DEFAULT_MAX_FRAME);
            assert!(r.is_err(), "{what} ({c:?}) decoded: {r:?}");
        }
    }
    // A flag other than 0 or 1.
    let mut none = base.clone();
    if let Message::Return { access, .. } = &mut none {
        *access = None;
    }
    let mut bytes = to_bytes(&none);
    *bytes.last_mut().unwrap() = 2;
    assert!(matches!(from_bytes(&bytes, DEFAULT_MAX_FRAME), Err(DecodeError::Invalid { .. })));
}

/// The counts of an access report are bounded before anything is allocated or decompressed:
/// pages read by the memory the state describes, pages written by the state's pages, the bytes
/// by the frame (as they are) or by the message's decompression budget (compressed).
#[test]
fn an_access_report_s_counts_are_bounded_before_allocation() {
    // A Return with no results, no globals, no pages, nothing else, in a memory of
    // `wasm_pages`, then an access report of `reads` and `writes` pages and `tail`.
    let frame = |wasm_pages: u32, reads: u32, writes: u32, tail: &[u8]| {
        let mut p = Vec::new();
        p.extend_from_slice(&1u64.to_le_bytes()); // migration 1
        p.extend_from_slice(&0u32.to_le_bytes()); // no results
        p.extend_from_slice(&0u32.to_le_bytes()); // no globals
        p.extend_from_slice(&wasm_pages.to_le_bytes());
        p.extend_from_slice(&4096u32.to_le_bytes());
        p.push(0); // not XOR
        p.extend_from_slice(&0u32.to_le_bytes()); // no pages
        p.push(0); // as they are
        p.extend_from_slice(&0u64.to_le_bytes()); // micros
        p.extend_from_slice(&0u32.to_le_bytes()); // no output
        p.extend_from_slice(&0u32.to_le_bytes()); // no file changes
        p.push(0); // no exit
        p.extend_from_slice(&0u32.to_le_bytes()); // freed
        p.push(0); // nothing thrown
        p.push(1); // an access report
        p.extend_from_slice(&reads.to_le_bytes());
        p.extend_from_slice(&writes.to_le_bytes());
        p.extend_from_slice(tail);
        let mut f = b"CC\x01\x05".to_vec();
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&p);
        f
    };
    // The layout is the encoder's: an empty report decodes.
    let empty = from_bytes(&frame(1, 0, 0, &[0]), DEFAULT_MAX_FRAME).unwrap();
    assert!(matches!(empty, Message::Return { access: Some(ref a), .. } if a.reads.is_empty() && a.writes.is_empty()), "{empty:?}");
    let invalid = |f: Vec<u8>, max: usize| matches!(from_bytes(&f, max), Err(DecodeError::Invalid { .. }));
    // More pages read than the memory has; pages written the state does not carry.
    assert!(invalid(frame(1, 17, 0, &[0]), DEFAULT_MAX_FRAME));
    assert!(invalid(frame(1, u32::MAX, 0, &[0]), DEFAULT_MAX_FRAME));
    assert!(invalid(frame(1, 0, 1, &[0]), DEFAULT_MAX_FRAME));
    // Bitmaps the frame does not hold: cut short, nothing allocated.
    assert!(matches!(from_bytes(&frame(65536, 1 << 20, 0, &[0]), DEFAULT_MAX_FRAME), Err(DecodeError::Truncated { .. })));
    // A compressed block claiming 512 MiB of bitmaps (every page of a 4 GiB memory read) from
    // a few bytes: over a 16 MiB message budget, refused before decompressing.
    let mut tail = vec![2];
    tail.extend_from_slice(&4u32.to_le_bytes());
    tail.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
    assert!(invalid(frame(65536, 1 << 20, 0, &tail), 16 << 20));
    // Within the budget, a block that does not expand to what the counts say.
    assert!(invalid(frame(1, 2, 0, &tail), DEFAULT_MAX_FRAME));
    let mut lz4 = vec![1];
    lz4.extend_from_slice(&2u32.to_le_bytes());
    lz4.extend_from_slice(&[0x10, 0xff]);
    assert!(invalid(frame(1, 16, 0, &lz4), DEFAULT_MAX_FRAME));
}
