//! Reading a module's heap from outside: which memory pages hold only memory its allocator has
//! freed, so a clone need not send them back.
//!
//! wasi-libc's allocator (dlmalloc, which both Rust's `std` and C programs get on
//! `wasm32-wasip1`) keeps its state in one static, `_gm_`: among other fields `topsize` (12),
//! `least_addr` (16) and `top` (24). From `least_addr` the heap is a chain of chunks, each
//! `prev_foot | head` where `head` holds the size and two bits (previous chunk in use, this one
//! in use), up to `top`, the free remainder. A free chunk keeps its links in its first 32 bytes
//! and its size in the next chunk's `prev_foot`; the bytes between are never read, by the
//! allocator or a correct program, until the memory is handed out again and written.
//!
//! The static's address is not exported: candidates are the fixed addresses `dlmalloc`'s code
//! loads from ([`clonecloud_model::Module::static_addresses`]), and a candidate is believed only
//! when the whole chain checks out: every size a multiple of 8, every free chunk's footer equal to
//! its size, every "previous in use" bit equal to the previous chunk's state, the chain ending
//! exactly at `top`, `top`'s size reaching the end of the heap. Anything else (another
//! allocator, a heap with several segments, a guess that reads garbage) gives no free pages, and
//! every changed page travels as before.

use crate::state::PAGE_SIZE;

/// The bytes at the start of a free chunk that the allocator uses (prev_foot, head, links).
const FREE_HEADER: usize = 32;
/// Chunks walked at most over all candidates, beyond one per 16 bytes of memory (each chunk has
/// at least 16): the walks together stay linear in the memory however many candidates a module
/// names and however its heap is laid out (this runs on the clone's host, past the reach of the
/// run-time limit).
const SPARE_CHUNKS: usize = 1 << 16;

/// Where to look for the allocator's state in one module.
#[derive(Debug, Clone, Default)]
pub struct HeapHint {
    candidates: Vec<u32>,
}

fn word(memory: &[u8], at: usize) -> Option<usize> {
    let b = memory.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
}

impl HeapHint {
    /// The hint for `wasm`: the static addresses of its `dlmalloc`, if it has one by that name.
    pub fn of(model: &clonecloud_model::Module, wasm: &[u8]) -> HeapHint {
        let candidates = model
            .functions
            .iter()
            .find(|f| f.name.as_deref() == Some("dlmalloc"))
            .map(|f| model.static_addresses(wasm, f.index))
            .unwrap_or_default();
        HeapHint { candidates }
    }

    /// Whether there is anything to look for.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The indices of the [`PAGE_SIZE`] pages of `memory` that lie wholly inside memory the
    /// allocator holds free; empty when the heap cannot be read with certainty.
    pub fn free_pages(&self, memory: &[u8]) -> Vec<u32> {
        let mut steps = memory.len() / 16 + SPARE_CHUNKS;
        for &gm in &self.candidates {
            for align in [16usize, 8] {
                if steps == 0 {
                    return Vec::new();
                }
                if let Some(free) = walk(memory, gm as usize, align, &mut steps) {
                    return free;
                }
            }
        }
        Vec::new()
    }
}

/// The pages wholly inside the free memory of the heap whose state is at `gm`, with chunk
/// payloads aligned to `align`, if the heap checks out within `steps` chunks (taken from it).
fn walk(memory: &[u8], gm: usize, align: usize, steps: &mut usize) -> Option<Vec<u32>> {
    let topsize = word(memory, gm + 12)?;
    let least = word(memory, gm + 16)?;
    let top = word(memory, gm + 24)?;
    if top == 0 || least == 0 || least > top || topsize < 16 || top.checked_add(topsize)? > memory.len() {
        return None;
    }
    // The first chunk's payload (chunk + 8) is aligned.
    let mask = align - 1;
    let first = least + ((align - ((least + 8) & mask)) & mask);
    let top_head = word(memory, top + 4)?;
    if top_head & !7 != topsize {
        return None;
    }
    // Pages, not ranges: at most one entry per page of memory, whatever the chunks.
    let mut free = Vec::new();
    let (mut p, mut prev_in_use) = (first, true);
    while p < top {
        if *steps == 0 {
            return None;
        }
        *steps -= 1;
        let head = word(memory, p + 4)?;
        let size = head & !7;
        let (pinuse, cinuse) = (head & 1 != 0, head & 2 != 0);
        if size < 16 || size % 8 != 0 || pinuse != prev_in_use || p.checked_add(size)? > top {
            return None;
        }
        if !cinuse {
            // A free chunk's size is repeated in the next chunk's prev_foot; two free chunks are
            // never neighbours (they would have been merged).
            if word(memory, p + size)? != size || !prev_in_use {
                return None;
            }
            pages_inside(&mut free, p + FREE_HEADER, p + size);
        }
        prev_in_use = cinuse;
        p += size;
    }
    if p != top || (top_head & 1 != 0) != prev_in_use {
        return None;
    }
    pages_inside(&mut free, top + FREE_HEADER, top + topsize);
    Some(free)
}

/// Adds the pages wholly inside bytes `start..end`.
fn pages_inside(pages: &mut Vec<u32>, start: usize, end: usize) {
    let first = start.div_ceil(PAGE_SIZE);
    let last = end / PAGE_SIZE;
    pages.extend((first..last).map(|i| i as u32));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap laid out by hand: state at 64, heap from 4096: an in-use chunk, a free chunk of
    /// three pages and more, an in-use chunk, then top to the end.
    fn heap() -> Vec<u8> {
        let mut m = vec![0u8; 16 * PAGE_SIZE];
        let put = |m: &mut Vec<u8>, at: usize, v: usize| m[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        let gm = 64;
        let least = 4096 - 8; // the first payload is at 4096, 16-aligned
        let a = least; // in use, 48 bytes
        put(&mut m, a + 4, 48 | 1 | 2);
        let b = a + 48; // free, 4 pages
        let bsize = 4 * PAGE_SIZE;
        put(&mut m, b + 4, bsize | 1);
        let c = b + bsize; // in use, 32 bytes; prev free: pinuse 0, prev_foot = bsize
        put(&mut m, c, bsize);
        put(&mut m, c + 4, 32 | 2);
        let top = c + 32;
        let topsize = m.len() - top;
        put(&mut m, top + 4, topsize | 1);
        put(&mut m, gm + 12, topsize);
        put(&mut m, gm + 16, least);
        put(&mut m, gm + 24, top);
        m
    }

    #[test]
    fn free_chunks_and_top_are_found() {
        let m = heap();
        let hint = HeapHint { candidates: vec![8, 64] };
        let free = hint.free_pages(&m);
        // The free chunk spans bytes 4136..20520: pages 2, 3, 4 are inside; top starts at 20552.
        assert!(free.starts_with(&[2, 3, 4]), "{free:?}");
        assert!(!free.contains(&1) && !free.contains(&5));
        assert_eq!(free[3..], (6..16).collect::<Vec<u32>>()[..]);
    }

    #[test]
    fn many_candidates_over_a_long_chain_walk_it_a_bounded_number_of_times() {
        // 64 MiB of 16-byte in-use chunks (2^22 of them) that fail the check only at the end,
        // and a module naming 10,000 candidates that all point at such a state: without a
        // shared bound each candidate walked the whole chain, 10^10 steps in host code.
        let mut m = vec![0u8; 64 << 20];
        let put = |m: &mut Vec<u8>, at: usize, v: usize| m[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        let least = 4096 - 8;
        let top = m.len() - 4096;
        let mut p = least;
        while p < top {
            put(&mut m, p + 4, 16 | 1 | 2);
            p += 16;
        }
        // top says its previous chunk is free, which the last one is not: the walk fails after
        // the whole chain.
        put(&mut m, top + 4, 4096);
        let mut candidates = Vec::new();
        for k in 0..10_000u32 {
            let gm = 64 + 32 * (k as usize % 100);
            put(&mut m, gm + 12, 4096);
            put(&mut m, gm + 16, least);
            put(&mut m, gm + 24, top);
            candidates.push(gm as u32);
        }
        let started = std::time::Instant::now();
        assert!(HeapHint { candidates }.free_pages(&m).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn a_heap_that_does_not_check_out_frees_nothing() {
        let mut m = heap();
        // A footer that disagrees with the free chunk's size.
        let c = 4096 - 8 + 48 + 4 * PAGE_SIZE;
        m[c] ^= 8;
        assert!(HeapHint { candidates: vec![64] }.free_pages(&m).is_empty());
        assert!(HeapHint { candidates: vec![128] }.free_pages(&heap()).is_empty(), "a wrong guess reads zeros");
    }
}
