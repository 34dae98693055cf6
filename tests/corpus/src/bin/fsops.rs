//! File-system corner cases in /data, printed: the listing in the directory's own order, errors
//! (missing, existing, not a directory, not empty, no right to write), seeks, holes, appends,
//! truncation, renames over files, metadata read through a path and through a handle.
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

fn kind<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

fn main() -> std::io::Result<()> {
    // The preopen as the host lists it (no sorting): names, types, sizes.
    for e in fs::read_dir("/data")? {
        let e = e?;
        let m = e.metadata()?;
        let size = if m.is_dir() { 0 } else { m.len() };
        println!("listed {:?} dir={} size={size}", e.file_name(), m.is_dir());
    }
    let meta = fs::metadata("/data/input.txt")?;
    let via_handle = File::open("/data/input.txt")?.metadata()?;
    println!("same times through path and handle: {}", meta.modified()? == via_handle.modified()? && meta.accessed()? == via_handle.accessed()?);

    println!("open missing: {}", kind(File::open("/data/nope.txt")));
    println!("create_new existing: {}", kind(OpenOptions::new().write(true).create_new(true).open("/data/input.txt")));
    println!("file as directory: {}", kind(File::open("/data/input.txt/inner")));
    println!("read_dir of a file: {}", kind(fs::read_dir("/data/input.txt")));
    println!("remove missing: {}", kind(fs::remove_file("/data/nope.txt")));
    println!("rename missing: {}", kind(fs::rename("/data/nope.txt", "/data/nope2.txt")));

    fs::create_dir("/data/fsops")?;
    println!("create_dir existing: {}", kind(fs::create_dir("/data/fsops")));
    println!("create_dir under missing: {}", kind(fs::create_dir("/data/missing/child")));
    fs::write("/data/fsops/a.txt", b"0123456789")?;
    println!("remove_dir not empty: {}", kind(fs::remove_dir("/data/fsops")));
    println!("remove_dir of a file: {}", kind(fs::remove_dir("/data/fsops/a.txt")));
    let mut ro = File::open("/data/fsops/a.txt")?;
    println!("write to a read-only handle: {}", kind(ro.write_all(b"x")));

    // Seeks, overwrite in the middle, a hole past the end.
    let mut f = OpenOptions::new().read(true).write(true).open("/data/fsops/a.txt")?;
    f.seek(SeekFrom::Start(3))?;
    f.write_all(b"abc")?;
    let end = f.seek(SeekFrom::End(-2))?;
    let mut two = String::new();
    f.read_to_string(&mut two)?;
    f.seek(SeekFrom::Start(14))?;
    f.write_all(b"Z")?;
    println!("after seeks: end-2={end} tail={two:?} position={}", f.stream_position()?);
    drop(f);
    println!("with a hole: {:?}", fs::read("/data/fsops/a.txt")?);

    // Appends go to the end whatever the position; set_len shrinks and grows.
    let mut log = OpenOptions::new().append(true).open("/data/log.txt")?;
    log.write_all(b"one\n")?;
    log.write_all(b"two\n")?;
    drop(log);
    let f = OpenOptions::new().write(true).open("/data/fsops/a.txt")?;
    f.set_len(4)?;
    f.set_len(6)?;
    drop(f);
    println!("resized: {:?}", fs::read("/data/fsops/a.txt")?);

    // Rename over an existing file, then read through an old handle and the new name.
    fs::write("/data/fsops/b.txt", b"bee")?;
    let mut old = File::open("/data/fsops/b.txt")?;
    fs::rename("/data/fsops/a.txt", "/data/fsops/b.txt")?;
    let mut s = String::new();
    old.read_to_string(&mut s)?;
    println!("old handle reads {s:?}, new name holds {:?}", fs::read("/data/fsops/b.txt")?);
    println!("a.txt gone: {}", kind(fs::metadata("/data/fsops/a.txt")));

    // A nested tree, listed sorted, and removed bottom up.
    fs::create_dir_all("/data/fsops/x/y/z")?;
    fs::write("/data/fsops/x/y/z/leaf", vec![7u8; 5000])?;
    let mut names: Vec<String> = fs::read_dir("/data/fsops")?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<Result<_, _>>()?;
    names.sort();
    println!("fsops holds {names:?}; leaf is {} bytes", fs::metadata("/data/fsops/x/y/z/leaf")?.len());
    fs::remove_file("/data/fsops/x/y/z/leaf")?;
    fs::remove_dir("/data/fsops/x/y/z")?;
    fs::rename("/data/fsops/x/y", "/data/fsops/moved")?;
    println!("moved is a dir: {}", fs::metadata("/data/fsops/moved")?.is_dir());
    // A big read in pieces.
    fs::write("/data/fsops/big", (0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>())?;
    let mut big = File::open("/data/fsops/big")?;
    let (mut total, mut sum, mut buf) = (0usize, 0u64, [0u8; 4096]);
    loop {
        let n = big.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
        sum += buf[..n].iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    println!("big: {total} bytes, sum {sum}");
    Ok(())
}
