//! Merging a thread's migrated call into a memory the program's other threads kept changing
//! while the call was away.
//!
//! The guarantee: the call behaves as if it ran atomically at the instant of its merge. The
//! device keeps a copy of memory as the call's state was taken (the *snapshot*: taken while the
//! other threads run, so possibly torn, which does not matter, below); the clone runs the call
//! on that state, instrumented, and answers with the bytes the call read and the bytes it wrote
//! (a bit per byte: [`MASK_BYTES`] per page). At the merge every other thread is stopped at a
//! safe point; then:
//!
//! 1. every byte the call read must hold now what it held in the snapshot
//!    ([`first_conflict`]). Then a run of the call now, atomically, would read the same values,
//!    so compute the same writes (and results): the answer is that run's, whatever the other
//!    threads did meanwhile and however torn the snapshot was. Otherwise the call *conflicts*:
//!    its answer is discarded and the call runs again (sent again to the clone, a few times,
//!    then locally: each run is from the state of its own start, so always correct);
//! 2. the bytes the call wrote are written, and only those ([`write_masked`]): changes of the
//!    other threads to neighbouring bytes, even of the same word, stay;
//! 3. every wait under way on a word (4 or 8 bytes) of which the call wrote a byte is woken
//!    (`memory.atomic.notify`; the waits are known, [`Written`] says which words were written):
//!    a thread waiting for a value the call changed wakes, as it would have had the call
//!    notified it here (a wake-up without a change is one every wait may have, and every waiter
//!    checks). A notify the call made on a word it did not write wakes nobody here: the
//!    futex-style waits of std and wasi-libc change the word before they notify.
//!
//! What the call saw of files and descriptors is not validated byte by byte: the device counts
//! the WASI calls of its other threads while the call is away (writes to stdout and stderr,
//! queries, clocks and randomness, and its own probes of the descriptor table aside), and any
//! is a conflict.
//!
//! Reads are checked whether or not the call wrote the byte first (the clone does not tell):
//! a byte the call wrote and then read, which another thread also changed, is a conflict that
//! need not be. That costs a local run, never a wrong answer.
//!
//! Not here: which bytes a call read and wrote (the clone's instrumentation), stopping the
//! threads (`threads::World`), the files and descriptors a call changed.

use crate::state::PAGE_SIZE;

/// Bytes of a page's mask: a bit per byte of the page, the lowest bit of mask byte `k` for page
/// byte `8k`.
pub const MASK_BYTES: usize = PAGE_SIZE / 8;

/// Why a tracked answer cannot be merged (the call then runs locally).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("byte {at} was read by the migrated call and changed by another thread meanwhile")]
    Conflict { at: u64 },
    #[error("a mask of {0} bytes, expected {MASK_BYTES}")]
    MaskSize(usize),
    #[error("page {0} was written but not sent, or sent twice")]
    Unmatched(u32),
    #[error("page {0} does not fit the memory")]
    OutOfRange(u32),
}

/// The byte offsets within a page set in `mask`.
fn set_bits(mask: &[u8]) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().filter(|(_, b)| **b != 0).flat_map(|(k, &b)| (0..8).filter(move |bit| b >> bit & 1 == 1).map(move |bit| k * 8 + bit))
}

/// The byte at `at`, zero past the end (memory not grown yet holds zeros).
fn byte(memory: &[u8], at: usize) -> u8 {
    memory.get(at).copied().unwrap_or(0)
}

/// The first byte set in `reads` (page, mask) whose value in `now` differs from `snapshot`'s.
pub fn first_conflict(now: &[u8], snapshot: &[u8], reads: &[(u32, Vec<u8>)]) -> Result<(), MergeError> {
    for (page, mask) in reads {
        if mask.len() != MASK_BYTES {
            return Err(MergeError::MaskSize(mask.len()));
        }
        let base = *page as usize * PAGE_SIZE;
        // Most pages read did not change at all: one comparison of the page.
        if let (Some(a), Some(b)) = (now.get(base..base + PAGE_SIZE), snapshot.get(base..base + PAGE_SIZE))
            && a == b
        {
            continue;
        }
        if let Some(i) = set_bits(mask).find(|&i| byte(now, base + i) != byte(snapshot, base + i)) {
            return Err(MergeError::Conflict { at: (base + i) as u64 });
        }
    }
    Ok(())
}

/// Writes into `memory` the bytes `writes` (page, mask) says the call wrote, from `pages` (the
/// same pages, in the same order: each page's content after the call). Checked before anything
/// changes.
pub fn write_masked(memory: &mut [u8], pages: &[(u32, &[u8])], writes: &[(u32, Vec<u8>)]) -> Result<(), MergeError> {
    if pages.len() != writes.len() {
        let odd = pages.iter().map(|p| p.0).chain(writes.iter().map(|w| w.0)).last().unwrap_or(0);
        return Err(MergeError::Unmatched(odd));
    }
    for ((i, content), (w, mask)) in pages.iter().zip(writes) {
        if i != w {
            return Err(MergeError::Unmatched(*w));
        }
        if mask.len() != MASK_BYTES {
            return Err(MergeError::MaskSize(mask.len()));
        }
        if content.len() != PAGE_SIZE || (*i as usize + 1) * PAGE_SIZE > memory.len() {
            return Err(MergeError::OutOfRange(*i));
        }
    }
    for ((i, content), (_, mask)) in pages.iter().zip(writes) {
        let base = *i as usize * PAGE_SIZE;
        for at in set_bits(mask) {
            memory[base + at] = content[at];
        }
    }
    Ok(())
}

/// The bytes a call wrote, by address: `writes` (page, mask) looked up.
#[derive(Debug)]
pub struct Written<'a>(std::collections::HashMap<u32, &'a [u8]>);

impl<'a> Written<'a> {
    pub fn new(writes: &'a [(u32, Vec<u8>)]) -> Written<'a> {
        Written(writes.iter().map(|(p, m)| (*p, m.as_slice())).collect())
    }

    /// Whether any of the `len` bytes at `at` was written.
    pub fn any(&self, at: u64, len: u64) -> bool {
        (at..at.saturating_add(len)).any(|a| {
            let (page, off) = ((a / PAGE_SIZE as u64) as u32, (a % PAGE_SIZE as u64) as usize);
            self.0.get(&page).is_some_and(|m| m.get(off / 8).is_some_and(|b| b & (1 << (off % 8)) != 0))
        })
    }
}

/// A page's mask with the bits of `range` (offsets within the page) set: for tests and tools.
pub fn mask_of(range: std::ops::Range<usize>) -> Vec<u8> {
    let mut m = vec![0u8; MASK_BYTES];
    for i in range {
        m[i / 8] |= 1 << (i % 8);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency for it).
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Against brute force: random snapshots, random changes of the other threads, random
    /// read and write sets; the merge conflicts exactly when a read byte changed, and otherwise
    /// leaves each byte as the serial order "other threads' writes, then the call's" does.
    #[test]
    fn the_merge_is_the_call_run_atomically_at_the_merge() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..300 {
            let pages = 3usize;
            let len = pages * PAGE_SIZE;
            let snapshot: Vec<u8> = (0..len).map(|_| (next(&mut seed) % 4) as u8).collect();
            // Other threads change a few bytes (sometimes none, sometimes to the same value).
            let mut now = snapshot.clone();
            let changes = next(&mut seed) % 6;
            for _ in 0..changes {
                let at = (next(&mut seed) as usize) % len;
                now[at] = (next(&mut seed) % 4) as u8;
            }
            // The call reads and writes a few ranges.
            let mut read = vec![false; len];
            let mut wrote = vec![false; len];
            let mut after = snapshot.clone();
            for _ in 0..(next(&mut seed) % 5) {
                let (at, n) = ((next(&mut seed) as usize) % (len - 8), 1 + (next(&mut seed) as usize) % 8);
                if next(&mut seed).is_multiple_of(2) {
                    read[at..at + n].iter_mut().for_each(|r| *r = true);
                } else {
                    for i in at..at + n {
                        wrote[i] = true;
                        after[i] = (next(&mut seed) % 4) as u8;
                    }
                }
            }
            let masks = |set: &[bool]| -> Vec<(u32, Vec<u8>)> {
                (0..pages)
                    .filter(|p| set[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].iter().any(|b| *b))
                    .map(|p| {
                        let mut m = vec![0u8; MASK_BYTES];
                        for i in 0..PAGE_SIZE {
                            if set[p * PAGE_SIZE + i] {
                                m[i / 8] |= 1 << (i % 8);
                            }
                        }
                        (p as u32, m)
                    })
                    .collect()
            };
            let (reads, writes) = (masks(&read), masks(&wrote));
            let conflict = (0..len).find(|&i| read[i] && now[i] != snapshot[i]);
            match (first_conflict(&now, &snapshot, &reads), conflict) {
                (Err(MergeError::Conflict { at }), Some(want)) => assert_eq!(at, want as u64, "round {round}"),
                (Ok(()), None) => {
                    let sent: Vec<(u32, &[u8])> = writes.iter().map(|(p, _)| (*p, &after[*p as usize * PAGE_SIZE..(*p as usize + 1) * PAGE_SIZE])).collect();
                    let mut merged = now.clone();
                    write_masked(&mut merged, &sent, &writes).unwrap();
                    let serial: Vec<u8> = (0..len).map(|i| if wrote[i] { after[i] } else { now[i] }).collect();
                    assert_eq!(merged, serial, "round {round}");
                    // Which words a merge wakes waiters on: those with a byte written.
                    let written = Written::new(&writes);
                    for w in 0..len / 4 {
                        assert_eq!(written.any(w as u64 * 4, 4), wrote[w * 4..w * 4 + 4].iter().any(|b| *b), "round {round} word {w}");
                    }
                }
                (got, want) => panic!("round {round}: merge said {got:?}, brute force {want:?}"),
            }
        }
    }

    #[test]
    fn neighbouring_bytes_of_one_word_merge_and_bad_answers_are_refused() {
        let snapshot = vec![0u8; PAGE_SIZE];
        // Another thread wrote byte 1; the call read and wrote byte 0 of the same word.
        let mut now = snapshot.clone();
        now[1] = 7;
        let reads = vec![(0, mask_of(0..1))];
        assert_eq!(first_conflict(&now, &snapshot, &reads), Ok(()));
        let mut after = snapshot.clone();
        after[0] = 9;
        write_masked(&mut now, &[(0, &after)], &[(0, mask_of(0..1))]).unwrap();
        assert_eq!((now[0], now[1]), (9, 7));
        let writes = [(0, mask_of(0..1))];
        assert!(Written::new(&writes).any(0, 4) && !Written::new(&writes).any(4, 8));
        // Had it read byte 1, it would conflict.
        assert_eq!(first_conflict(&now, &snapshot, &[(0, mask_of(1..2))]), Err(MergeError::Conflict { at: 1 }));
        // A read past the snapshot (memory the call grew) compares with zero.
        assert_eq!(first_conflict(&[0u8; 2 * PAGE_SIZE], &snapshot, &[(1, mask_of(0..8))]), Ok(()));
        // Masks of the wrong size, pages without masks, pages out of range.
        assert_eq!(first_conflict(&now, &snapshot, &[(0, vec![1])]), Err(MergeError::MaskSize(1)));
        assert_eq!(write_masked(&mut now, &[(0, &after)], &[]), Err(MergeError::Unmatched(0)));
        assert_eq!(write_masked(&mut now, &[(3, &after)], &[(3, mask_of(0..1))]), Err(MergeError::OutOfRange(3)));
        assert_eq!(write_masked(&mut now, &[(0, &after)], &[(1, mask_of(0..1))]), Err(MergeError::Unmatched(1)));
    }
}
