//! The compiled-module cache's byte budget: least-recently-used eviction, entries that outlive
//! the process that wrote them, and entries too big to keep.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clonecloud_exec::{ExecError, ModuleCache};
use clonecloud_model::RewriteConfig;
use wasmtime::{Engine, Instance, Module, Store};

/// A module whose export `f` returns `n`: every `n` is a different module (and cache entry) of
/// the same size.
fn wasm(n: i32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (func (export "f") (result i32) i32.const {n}))"#
    ))
    .unwrap()
}

/// The key the rewrite of module `n` is cached under.
fn key(n: i32) -> u128 {
    ModuleCache::rewrite_key(n as u128, &[0], &RewriteConfig::default())
}

/// What `f` returns.
fn call(engine: &Engine, module: &Module) -> i32 {
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, module, &[]).unwrap();
    instance
        .get_typed_func::<(), i32>(&mut store, "f")
        .unwrap()
        .call(&mut store, ())
        .unwrap()
}

/// Loads (or makes, counting it in `made`) the rewrite of module `n`, and checks it runs.
fn rewrite(cache: &ModuleCache, engine: &Engine, n: i32, made: &Cell<u32>) {
    let (module, _) = cache
        .load_or_rewrite(engine, key(n), false, || -> Result<Vec<u8>, ExecError> {
            made.set(made.get() + 1);
            Ok(wasm(n))
        })
        .unwrap();
    assert_eq!(call(engine, &module), n);
    // Modification times order the entries: keep successive uses apart on any file system.
    std::thread::sleep(Duration::from_millis(20));
}

/// The size of one rewritten entry (they are all the same size).
fn entry_size(engine: &Engine) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModuleCache::new(dir.path());
    rewrite(&cache, engine, 0, &Cell::new(0));
    std::fs::metadata(cache.rewritten_path_for(engine, key(0)).unwrap())
        .unwrap()
        .len()
}

/// The `*.cwasm` files in `dir`, by name, and their total size.
fn entries(dir: &Path) -> (Vec<PathBuf>, u64) {
    let mut names = Vec::new();
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".cwasm") {
            total += e.metadata().unwrap().len();
            names.push(e.path());
        }
    }
    names.sort();
    (names, total)
}

fn paths(cache: &ModuleCache, engine: &Engine, ns: &[i32]) -> Vec<PathBuf> {
    let mut p: Vec<_> = ns
        .iter()
        .map(|&n| cache.rewritten_path_for(engine, key(n)).unwrap())
        .collect();
    p.sort();
    p
}

#[test]
fn the_least_recently_used_entry_is_evicted_not_the_least_recently_written() {
    let engine = Engine::default();
    let size = entry_size(&engine);
    let dir = tempfile::tempdir().unwrap();
    // Room for three entries, not four.
    let cache = ModuleCache::new(dir.path()).with_limit(size * 7 / 2);
    let made = Cell::new(0);
    for n in 1..=3 {
        rewrite(&cache, &engine, n, &made);
    }
    assert_eq!(made.get(), 3);
    assert_eq!(entries(dir.path()).0, paths(&cache, &engine, &[1, 2, 3]));
    // Entry 1 was written first but is now the most recently used: a hit.
    rewrite(&cache, &engine, 1, &made);
    assert_eq!(made.get(), 3, "entry 1 came from the cache");
    rewrite(&cache, &engine, 4, &made);
    assert_eq!(made.get(), 4);
    let (left, total) = entries(dir.path());
    assert_eq!(
        left,
        paths(&cache, &engine, &[1, 3, 4]),
        "entry 2, used longest ago, is gone"
    );
    assert!(total <= size * 7 / 2);
    // And the evicted one is made again when asked for, pushing out 3 (4 and 1 are newer).
    rewrite(&cache, &engine, 2, &made);
    assert_eq!(made.get(), 5);
    assert_eq!(entries(dir.path()).0, paths(&cache, &engine, &[1, 2, 4]));
}

#[test]
fn plain_entries_are_bounded_and_ordered_by_use_too() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    let probe = ModuleCache::new(dir.path());
    probe.load_or_compile(&engine, &wasm(0)).unwrap();
    let size = std::fs::metadata(probe.path_for(&engine, &wasm(0)).unwrap())
        .unwrap()
        .len();
    std::fs::remove_file(probe.path_for(&engine, &wasm(0)).unwrap()).unwrap();

    let cache = ModuleCache::new(dir.path()).with_limit(size * 5 / 2);
    let path = |n| cache.path_for(&engine, &wasm(n)).unwrap();
    let load = |n| {
        let m = cache.load_or_compile(&engine, &wasm(n)).unwrap();
        assert_eq!(call(&engine, &m), n);
        std::thread::sleep(Duration::from_millis(20));
    };
    load(1);
    load(2);
    load(1);
    load(3);
    let mut want = vec![path(1), path(3)];
    want.sort();
    assert_eq!(entries(dir.path()).0, want, "2 was used longest ago");
}

#[test]
fn an_entry_is_reused_by_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let made = Cell::new(0);
    let (path, inode) = {
        let engine = Engine::default();
        let cache = ModuleCache::new(dir.path()).with_limit(64 << 20);
        rewrite(&cache, &engine, 5, &made);
        let plain = cache.load_or_compile(&engine, &wasm(6)).unwrap();
        assert_eq!(call(&engine, &plain), 6);
        let path = cache.path_for(&engine, &wasm(6)).unwrap();
        (
            path.clone(),
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()),
        )
    };
    assert_eq!(made.get(), 1);
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));

    // A restart: a new engine and a new cache on the same directory.
    let engine = Engine::default();
    let cache = ModuleCache::new(dir.path()).with_limit(64 << 20);
    rewrite(&cache, &engine, 5, &made);
    assert_eq!(
        made.get(),
        1,
        "the rewrite was not made (nor compiled) again"
    );
    let plain = cache.load_or_compile(&engine, &wasm(6)).unwrap();
    assert_eq!(call(&engine, &plain), 6);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&meta),
        inode,
        "the plain entry was not written again"
    );
    assert!(
        meta.modified().unwrap() > before,
        "the hit marked the entry as used"
    );
    assert_eq!(entries(dir.path()).0.len(), 2);
}

#[test]
fn the_directory_stays_within_the_budget() {
    let engine = Engine::default();
    let size = entry_size(&engine);
    let dir = tempfile::tempdir().unwrap();
    let limit = size * 3 + size / 2;
    let cache = ModuleCache::new(dir.path()).with_limit(limit);
    let made = Cell::new(0);
    for n in 1..=8 {
        rewrite(&cache, &engine, n, &made);
        let (names, total) = entries(dir.path());
        assert!(
            total <= limit,
            "after entry {n}: {total} bytes over the limit of {limit}"
        );
        assert!(
            names.contains(&cache.rewritten_path_for(&engine, key(n)).unwrap()),
            "the entry just written is kept"
        );
    }
    assert_eq!(made.get(), 8);
    assert_eq!(entries(dir.path()).0, paths(&cache, &engine, &[6, 7, 8]));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn an_entry_over_the_whole_budget_is_not_kept_but_loads() {
    let engine = Engine::default();
    let size = entry_size(&engine);
    let dir = tempfile::tempdir().unwrap();
    // An entry kept under a larger budget, then a smaller one.
    rewrite(&ModuleCache::new(dir.path()), &engine, 1, &Cell::new(0));
    let cache = ModuleCache::new(dir.path()).with_limit(size / 2);
    let made = Cell::new(0);
    let (module, bytes) = cache
        .load_or_rewrite(&engine, key(2), true, || -> Result<Vec<u8>, ExecError> {
            made.set(made.get() + 1);
            Ok(wasm(2))
        })
        .unwrap();
    assert_eq!((made.get(), bytes), (1, Some(wasm(2))));
    assert_eq!(call(&engine, &module), 2);
    let plain = cache.load_or_compile(&engine, &wasm(3)).unwrap();
    assert_eq!(call(&engine, &plain), 3);
    assert!(!cache.rewritten_path_for(&engine, key(2)).unwrap().exists());
    assert!(!cache.path_for(&engine, &wasm(3)).unwrap().exists());
    let only = vec![cache.rewritten_path_for(&engine, key(1)).unwrap()];
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(entries(dir.path()).0, only);
    // Asked again, it is made again: nothing was kept.
    rewrite(&cache, &engine, 2, &made);
    assert_eq!(made.get(), 2);
    // The smaller budget applies to the older entry when the cache is trimmed.
    cache.trim();
    assert_eq!(entries(dir.path()).0, Vec::<PathBuf>::new());
}

#[test]
fn trim_keeps_the_most_recently_used_entries() {
    let engine = Engine::default();
    let size = entry_size(&engine);
    let dir = tempfile::tempdir().unwrap();
    let unbounded = ModuleCache::new(dir.path());
    let made = Cell::new(0);
    for n in [1, 2, 3, 4, 2] {
        rewrite(&unbounded, &engine, n, &made);
    }
    assert_eq!(made.get(), 4);
    assert_eq!(
        entries(dir.path()).0.len(),
        4,
        "an unbounded cache evicts nothing"
    );
    let cache = ModuleCache::new(dir.path()).with_limit(size * 5 / 2);
    cache.trim();
    assert_eq!(entries(dir.path()).0, paths(&cache, &engine, &[2, 4]));
}

#[test]
fn stale_temporary_files_are_removed() {
    let engine = Engine::default();
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join(".999999.0.dead.cwasm.tmp");
    let fresh = dir.path().join(".999999.1.writing.cwasm.tmp");
    let other = dir.path().join("notes.txt");
    for p in [&stale, &fresh, &other] {
        std::fs::write(p, b"x").unwrap();
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&other)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    ModuleCache::new(dir.path())
        .load_or_compile(&engine, &wasm(1))
        .unwrap();
    assert!(
        !stale.exists(),
        "a temporary file a dead writer left is removed"
    );
    assert!(
        fresh.exists(),
        "one a live writer may still be writing is not"
    );
    assert!(
        other.exists(),
        "files that are not the cache's are left alone"
    );
}

#[test]
fn processes_sharing_a_directory_keep_it_within_the_budget() {
    let engine = Engine::default();
    let size = entry_size(&engine);
    let dir = tempfile::tempdir().unwrap();
    let limit = size * 4 + size / 2;
    std::thread::scope(|s| {
        for t in 0..4 {
            let (engine, dir) = (engine.clone(), dir.path());
            s.spawn(move || {
                // Each its own cache, as each process has.
                let cache = ModuleCache::new(dir).with_limit(limit);
                for i in 0..6 {
                    let n = t * 100 + i;
                    let (m, _) = cache
                        .load_or_rewrite(&engine, key(n), false, || Ok(wasm(n)))
                        .unwrap();
                    assert_eq!(call(&engine, &m), n);
                }
            });
        }
    });
    let (names, total) = entries(dir.path());
    assert!(total <= limit, "{total} bytes over the limit of {limit}");
    assert!(!names.is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        names.len(),
        "no temporary file is left"
    );
}
