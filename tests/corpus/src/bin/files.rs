//! Reads and writes files in the preopened directory /data.
use std::fs;
use std::io::{BufRead, Write};

fn main() -> std::io::Result<()> {
    let input = fs::read_to_string("/data/input.txt")?;
    let lines: Vec<&str> = input.lines().collect();
    println!("read {} lines, {} bytes", lines.len(), input.len());

    fs::create_dir_all("/data/out/nested")?;
    let mut report = fs::File::create("/data/out/report.txt")?;
    for (i, line) in lines.iter().enumerate() {
        let words = line.split_whitespace().count();
        writeln!(report, "{i:03} {words:2} {}", line.to_uppercase())?;
    }
    drop(report);

    let mut log = fs::OpenOptions::new().create(true).append(true).open("/data/log.txt")?;
    writeln!(log, "run appended a line")?;
    drop(log);

    fs::write("/data/out/nested/tmp.bin", (0u8..=255).cycle().take(70_000).collect::<Vec<u8>>())?;
    fs::rename("/data/out/nested/tmp.bin", "/data/out/nested/bytes.bin")?;
    fs::write("/data/out/doomed.txt", b"to be removed")?;
    fs::remove_file("/data/out/doomed.txt")?;
    if fs::read("/data/remove-me.txt").is_ok() {
        fs::remove_file("/data/remove-me.txt")?;
        println!("removed remove-me.txt");
    }

    let mut names: Vec<String> = fs::read_dir("/data/out")?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    println!("out/: {names:?}");
    let size = fs::metadata("/data/out/nested/bytes.bin")?.len();
    println!("bytes.bin is {size} bytes");

    let f = fs::File::open("/data/out/report.txt")?;
    let first = std::io::BufReader::new(f).lines().next().transpose()?;
    println!("first report line: {first:?}");
    match fs::read("/data/does-not-exist") {
        Ok(_) => println!("unexpected"),
        Err(e) => println!("missing file: {:?}", e.kind()),
    }
    Ok(())
}
