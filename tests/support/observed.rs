//! What a run of a program looks like from outside, and how two runs differ: shared by the
//! differential tests that hold `clonecloud run` against plain wasmtime.

use std::collections::{BTreeMap, BTreeSet};

/// What a run looks like from outside.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub stdout: String,
    pub stderr: String,
    pub exit: i32,
    pub files: BTreeMap<String, String>,
}

/// A line diff (longest common subsequence): `-` expected only, `+` got only, with a line of
/// context around each change.
pub fn diff_lines(expected: &str, got: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let mut out = String::new();
    let mut last_printed: Option<usize> = None;
    for (k, (op, line)) in ops.iter().enumerate() {
        let near = (k.saturating_sub(1)..=(k + 1).min(ops.len() - 1)).any(|x| ops[x].0 != ' ');
        if !near {
            continue;
        }
        if last_printed.is_some_and(|l| l + 1 != k) {
            out.push_str("      ...\n");
        }
        out.push_str(&format!("    {op} {line}\n"));
        last_printed = Some(k);
    }
    if expected.ends_with('\n') != got.ends_with('\n') {
        out.push_str("    (one ends with a newline, the other does not)\n");
    }
    out
}

/// How `got` differs from `expected`, empty when equal.
pub fn differences(expected: &Observed, got: &Observed) -> String {
    let mut out = String::new();
    if expected.exit != got.exit {
        out.push_str(&format!(
            "  exit code: wasmtime {}, clonecloud {}\n",
            expected.exit, got.exit
        ));
    }
    if expected.stdout != got.stdout {
        out.push_str(&format!(
            "  stdout (- wasmtime, + clonecloud):\n{}",
            diff_lines(&expected.stdout, &got.stdout)
        ));
    }
    if expected.stderr != got.stderr {
        out.push_str(&format!(
            "  stderr (- wasmtime, + clonecloud):\n{}",
            diff_lines(&expected.stderr, &got.stderr)
        ));
    }
    let keys: BTreeSet<&String> = expected.files.keys().chain(got.files.keys()).collect();
    for k in keys {
        match (expected.files.get(k), got.files.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => out.push_str(&format!(
                "  file {k}:\n    - {}\n    + {}\n",
                a.map_or("(absent)", String::as_str),
                b.map_or("(absent)", String::as_str)
            )),
        }
    }
    out
}

/// Runs `cmd` (its stdin empty), reading its stdout and stderr as it goes, and kills it after
/// `timeout`: its stdout, stderr and exit code, or why there are none.
pub fn run_with_timeout(cmd: &mut std::process::Command, timeout: std::time::Duration) -> Result<(Vec<u8>, Vec<u8>, i32), String> {
    use std::io::Read;
    use std::process::Stdio;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start clonecloud: {e}"))?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {timeout:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let Some(exit) = status.code() else {
        return Err(format!("clonecloud was killed by a signal ({status}); stderr:\n{}", String::from_utf8_lossy(&stderr)));
    };
    Ok((stdout, stderr, exit))
}

/// The tree under `dir`, by relative path, without following symbolic links: directories with
/// their mode, links with their target, files with mode, link count, contents, and their mtime
/// when it is one set explicitly (before 2020; later ones are "recent").
pub fn snapshot(dir: &std::path::Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("symlink -> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(format!("{rel}/"), format!("directory mode {mode:o}"));
                walk(base, &path, out);
            } else {
                let mtime = if meta.mtime() < 1_577_836_800 {
                    format!("{}.{:09}", meta.mtime(), meta.mtime_nsec())
                } else {
                    "recent".into()
                };
                let contents = std::fs::read(&path).unwrap();
                out.insert(
                    rel,
                    format!(
                        "file mode {mode:o} nlink {} mtime {mtime} contents {:?}",
                        meta.nlink(),
                        String::from_utf8_lossy(&contents)
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
