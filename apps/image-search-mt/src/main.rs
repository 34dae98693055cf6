//! `image-search-mt INPUT_DIR [THREADS]`: image-search (see its library and the README's Workloads
//! section) with the images searched by THREADS `std::thread` workers (default 4, 1..=64). A plain
//! program: it knows nothing of clonecloud, and builds natively and for `wasm32-wasip1-threads`.
//!
//! stdout is byte for byte `image-search INPUT_DIR`'s stdout, whatever THREADS: the same report,
//! and for bad input the same nothing (the error on stderr, exit code 2).
//!
//! How it works:
//! - The main thread reads cascade.xml and settings.txt and lists the images
//!   ([`image_search::load`], the same checks in the same order as image-search).
//! - Sharding, deterministic and balanced by bytes: the images, largest file first (ties in path
//!   order), each go to the shard with the fewest bytes so far (ties to the lowest shard). A file
//!   whose size cannot be read counts as 0 bytes (its search will say why it is unreadable).
//! - THREADS workers each run [`search_shard`] on their shard: read, decode, integral image,
//!   detect, format the image's line ([`image_search::search_one`]), then add 1 to the shard's
//!   counter. Shards may be empty (fewer images than threads): those workers return at once.
//! - Meanwhile the main thread only sleeps 20 ms at a time, sums the counters and prints progress
//!   on stderr; it never runs the search itself. Then it joins the workers, puts the lines back in
//!   path order and prints the report as image-search does.
//!
//! Why the progress output is the same on every run: it says nothing about timing. Quarter q
//! (25, 50, 75, 100 %) counts as crossed once `done * 4 >= q * N`, and at each look every crossed
//! quarter not yet printed is printed, in order; `done` only grows and ends at N. So however the
//! threads are scheduled, and however many images finished between two looks (a whole shard, or
//! all of them), stderr is exactly the four lines
//! `image-search-mt: searched 25% of N images` … `100% of N images`. (With no images at all, all
//! four are crossed at the first look.)

use image_search::Searched;
use image_search::cascade::{Cascade, Params};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const USAGE: &str = "usage: image-search-mt INPUT_DIR [THREADS]   (cascade.xml, settings.txt, images/; THREADS 1..=64, default 4)";
const DEFAULT_THREADS: usize = 4;
const MAX_THREADS: usize = 64;
/// How often the main thread looks at the workers' counters.
const PROGRESS_EVERY: Duration = Duration::from_millis(20);

/// A worker's whole job: searches each image of its shard in turn and returns their outcomes in
/// the shard's order, adding 1 to `done` after each image.
#[inline(never)]
pub fn search_shard(cascade: &Cascade, params: &Params, files: &[(String, PathBuf)], done: &AtomicUsize) -> Vec<Searched> {
    files
        .iter()
        .map(|(rel, path)| {
            let searched = image_search::search_one(cascade, params, rel, path);
            done.fetch_add(1, Ordering::Relaxed);
            searched
        })
        .collect()
}

/// Splits the images (by their sizes in bytes, in path order) into `n` shards of indices: largest
/// first, ties in path order, each to the shard with the fewest bytes so far, ties to the lowest.
fn shard(sizes: &[u64], n: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut shards = vec![Vec::new(); n];
    let mut bytes = vec![0u64; n];
    for i in order {
        // `min_by_key` returns the first of equal minima: the lowest shard.
        let s = (0..n).min_by_key(|&s| bytes[s]).expect("at least one shard");
        bytes[s] += sizes[i];
        shards[s].push(i);
    }
    shards
}

/// The quarters of the images searched so far that have been reported on stderr.
#[derive(Debug)]
struct Progress {
    total: usize,
    /// Quarters printed: 0..=4.
    printed: usize,
}

impl Progress {
    /// Prints every quarter that `done` images have crossed and that was not printed yet, in order.
    fn show(&mut self, done: usize) {
        while self.printed < 4 && done * 4 >= (self.printed + 1) * self.total {
            self.printed += 1;
            eprintln!("image-search-mt: searched {}% of {} images", self.printed * 25, self.total);
        }
    }
}

/// Loads the input, runs the workers while showing progress, and returns the report.
fn run(input: &std::path::Path, threads: usize) -> Result<String, String> {
    let image_search::Input { cascade, params, files } = image_search::load(input)?;
    let sizes: Vec<u64> = files.iter().map(|(_, path)| std::fs::metadata(path).map_or(0, |m| m.len())).collect();
    let shards = shard(&sizes, threads);
    let shard_files: Vec<Vec<(String, PathBuf)>> = shards.iter().map(|s| s.iter().map(|&i| files[i].clone()).collect()).collect();
    let counters: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
    let total = files.len();
    let (cascade_ref, params_ref) = (&cascade, &params);
    let done = || counters.iter().map(|c| c.load(Ordering::Relaxed)).sum::<usize>();

    let results: Vec<Vec<Searched>> = std::thread::scope(|scope| {
        let workers: Vec<_> = shard_files
            .iter()
            .zip(&counters)
            .map(|(files, counter)| scope.spawn(move || search_shard(cascade_ref, params_ref, files, counter)))
            .collect();
        let mut progress = Progress { total, printed: 0 };
        loop {
            std::thread::sleep(PROGRESS_EVERY);
            // Every worker ended: stop looking (the show after the joins sees their last counts).
            let ended = workers.iter().all(|w| w.is_finished());
            let done = done();
            progress.show(done);
            if done == total || ended {
                break;
            }
        }
        let results = workers.into_iter().map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect();
        // The joins make every count visible: a no-op unless the last look raced the last image.
        progress.show(done());
        results
    });

    let mut by_path: Vec<Option<Searched>> = vec![None; total];
    for (indices, searched) in shards.iter().zip(results) {
        for (&i, s) in indices.iter().zip(searched) {
            by_path[i] = Some(s);
        }
    }
    let searched: Vec<Searched> = by_path.into_iter().map(|s| s.expect("every image is in one shard")).collect();
    Ok(image_search::report(&cascade, &params, &searched))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (input, threads) = match args.as_slice() {
        [_, input] => (input, DEFAULT_THREADS),
        [_, input, threads] => match threads.parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => (input, n),
            _ => {
                eprintln!("image-search-mt: THREADS must be a whole number from 1 to {MAX_THREADS}, not `{threads}`");
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(input.as_ref(), threads) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(report.as_bytes()).and_then(|_| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("image-search-mt: {e}");
            ExitCode::from(2)
        }
    }
}
