//! The fuzz targets' kept corpora, replayed: every input the fuzzers found interesting (those that
//! reached new code, in fuzz/corpus/TARGET) goes through the target's property again
//! (fuzz/checks/TARGET.rs, the very code the fuzz target runs), so a change that breaks one
//! fails `cargo test` without a fuzzing run. All of them: some 22,000 inputs take seconds.

#[path = "../../../fuzz/checks/analyze.rs"]
mod analyze;
#[path = "../../../fuzz/checks/delta.rs"]
mod delta;
#[path = "../../../fuzz/checks/rewrite.rs"]
mod rewrite;
#[path = "../../../fuzz/checks/wire.rs"]
mod wire;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: the kept corpus is empty", dir.display());
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = corpus(target);
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: {} breaks the property (replay it with fuzz/target/*/release/{target} {})", f.display(), f.display());
        }
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn the_wire_corpus_replays() {
    replay("wire", wire::check);
}

#[test]
fn the_delta_corpus_replays() {
    replay("delta", delta::check);
}

#[test]
fn the_rewrite_corpus_replays() {
    replay("rewrite", rewrite::check);
}

#[test]
fn the_analyze_corpus_replays() {
    replay("analyze", analyze::check);
}
