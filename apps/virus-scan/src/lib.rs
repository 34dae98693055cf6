//! virus-scan: scans every file under a directory against ClamAV-style extended signatures
//! (`.ndb`: hex byte patterns with wildcards, gaps, alternatives and offsets), with one
//! Aho-Corasick pass per file over the signatures' anchors and a verification of each anchor hit.
//!
//! A plain program: it knows nothing of clonecloud, and builds natively and for wasm32-wasip1.

pub mod ac;
pub mod db;
pub mod pe;
pub mod signature;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Every regular file under `root`, as (path relative to `root` with `/` separators, full path),
/// sorted by the relative path so the report does not depend on the directory's order.
pub fn walk(root: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    fn go(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
        let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let kind = entry.file_type().map_err(|e| format!("cannot stat {rel}: {e}"))?;
            if kind.is_dir() {
                go(&entry.path(), &rel, out)?;
            } else if kind.is_file() {
                out.push((rel, entry.path()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(root, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// Scans `INPUT_DIR/files` with the signatures of `INPUT_DIR/signatures/*.ndb` and returns the
/// report: one `path: Name FOUND` line per match (all matches, as `clamscan --allmatch`), `path: OK`
/// for clean files, then a summary.
pub fn run(input: &Path) -> Result<String, String> {
    let sig_dir = input.join("signatures");
    let files_dir = input.join("files");
    for (dir, what) in [(&sig_dir, "signature files (*.ndb)"), (&files_dir, "the files to scan")] {
        if !dir.is_dir() {
            return Err(format!(
                "{} is not a directory: INPUT_DIR must hold signatures/ and files/ ({what} go in {})",
                dir.display(),
                dir.display()
            ));
        }
    }
    let mut texts = Vec::new();
    for (rel, path) in walk(&sig_dir)? {
        if rel.ends_with(".ndb") {
            let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {rel}: {e}"))?;
            texts.push((rel, text));
        }
    }
    if texts.is_empty() {
        return Err(format!("no .ndb signature file in {}", sig_dir.display()));
    }
    let (db, skipped) = Database::load(&texts)?;
    drop(texts);

    let mut report = String::new();
    let (mut scanned, mut infected, mut bytes) = (0u64, 0u64, 0u64);
    for (rel, path) in walk(&files_dir)? {
        let data = fs::read(&path).map_err(|e| format!("cannot read {rel}: {e}"))?;
        scanned += 1;
        bytes += data.len() as u64;
        let hits = db.scan(&data);
        if hits.is_empty() {
            let _ = writeln!(report, "{rel}: OK");
            continue;
        }
        infected += 1;
        let mut names: Vec<&str> = hits.iter().map(|&i| db.signatures[i].name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let _ = writeln!(report, "{rel}: {name} FOUND");
        }
    }
    let _ = writeln!(report, "\n----------- SCAN SUMMARY -----------");
    let _ = writeln!(report, "Known signatures: {}", db.signatures.len());
    let _ = writeln!(report, "Skipped signatures: {}", skipped.len());
    let _ = writeln!(report, "Scanned files: {scanned}");
    let _ = writeln!(report, "Infected files: {infected}");
    let _ = writeln!(report, "Data scanned: {bytes} bytes");
    Ok(report)
}

pub use db::Database;
