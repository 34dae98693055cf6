//! The state a migration moves, and the page bookkeeping that keeps it small.
//!
//! A thread's state at a migration point is what a wasm call can see: its arguments, the
//! module's mutable globals and its linear memory. Both sides keep a [`PageTable`]: the hash of
//! every page as of the last state they agreed on. A sender ships the pages whose hash changed
//! (and the memory's size and every mutable global); the receiver grows its memory if needed and
//! copies the pages in. The baseline both sides start from is an all-zero memory, so the first
//! delta carries every non-zero page.

use wasmtime::{AsContext, AsContextMut, Global, Memory, Val};
use xxhash_rust::xxh3::xxh3_64;

/// Bytes per delta page: small enough for scattered writes, large enough to hash fast.
pub const PAGE_SIZE: usize = 4096;
const WASM_PAGE: usize = 65536;

/// A changed page: its index and its bytes.
pub type Page = (u32, Vec<u8>);

/// The hashes of the pages of the last agreed state.
#[derive(Debug, Clone, Default)]
pub struct PageTable {
    hashes: Vec<u64>,
    /// Pages the last [`PageTable::diff_skipping`] left out although they had changed.
    skipped: Vec<u32>,
}

fn zero_hash() -> u64 {
    xxh3_64(&[0u8; PAGE_SIZE])
}

impl PageTable {
    /// The baseline: an empty (all-zero) memory.
    pub fn new() -> PageTable {
        PageTable::default()
    }

    fn hash_at(&self, i: usize) -> u64 {
        self.hashes.get(i).copied().unwrap_or_else(zero_hash)
    }

    /// The pages of `memory` that differ from the agreed state; the table then holds `memory`'s
    /// hashes (the caller is about to make the peer agree).
    pub fn diff(&mut self, memory: &[u8]) -> Vec<Page> {
        self.diff_skipping(memory, &[])
    }

    /// [`PageTable::diff`], leaving out the pages in `skip` (sorted): they are not shipped and
    /// stay as agreed before.
    pub fn diff_skipping(&mut self, memory: &[u8], skip: &[u32]) -> Vec<Page> {
        let zero = zero_hash();
        let mut skip = skip.iter().peekable();
        self.skipped.clear();
        let n = memory.len() / PAGE_SIZE;
        let mut out = Vec::new();
        let mut hashes = Vec::with_capacity(n);
        for i in 0..n {
            let old = self.hashes.get(i).copied().unwrap_or(zero);
            while skip.next_if(|&&s| (s as usize) < i).is_some() {}
            let page = &memory[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
            let h = xxh3_64(page);
            if skip.next_if(|&&s| s as usize == i).is_some() {
                if h != old {
                    self.skipped.push(i as u32);
                }
                hashes.push(old);
                continue;
            }
            if h != old {
                out.push((i as u32, page.to_vec()));
            }
            hashes.push(h);
        }
        self.hashes = hashes;
        out
    }

    /// Records that `pages` were applied to a memory of `len` bytes.
    pub fn applied(&mut self, len: usize, pages: &[Page]) {
        let n = len / PAGE_SIZE;
        if self.hashes.len() < n {
            self.hashes.resize(n, zero_hash());
        }
        for (i, p) in pages {
            self.hashes[*i as usize] = xxh3_64(p);
        }
    }

    /// Records the current content of pages `indices` of `memory` as agreed.
    pub fn record(&mut self, memory: &[u8], indices: impl IntoIterator<Item = u32>) {
        let n = memory.len() / PAGE_SIZE;
        if self.hashes.len() < n {
            self.hashes.resize(n, zero_hash());
        }
        for i in indices {
            let at = i as usize * PAGE_SIZE;
            if let Some(page) = memory.get(at..at + PAGE_SIZE) {
                self.hashes[i as usize] = xxh3_64(page);
            }
        }
    }

    /// Forgets the agreed state (the peer lost its copy): the next diff ships every non-zero page.
    pub fn reset(&mut self) {
        self.hashes.clear();
    }

    /// How many changed pages the last [`PageTable::diff_skipping`] left out.
    pub fn skipped(&self) -> usize {
        self.skipped.len()
    }

    /// The changed pages the last capture left out (ascending).
    pub fn skipped_pages(&self) -> &[u32] {
        &self.skipped
    }

    /// Notes the changed pages the last capture left out (one that chose the pages itself).
    pub fn note_skipped(&mut self, pages: Vec<u32>) {
        self.skipped = pages;
    }

    /// How many pages are recorded, for statistics.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The hash of page `i` as agreed.
    pub fn page_hash(&self, i: usize) -> u64 {
        self.hash_at(i)
    }
}

/// Why a delta cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the module has no exported memory to apply pages to")]
    NoMemory,
    #[error("cannot grow memory to {wasm_pages} pages: {why}")]
    Grow { wasm_pages: u32, why: String },
    #[error("page {0} does not fit the memory")]
    OutOfRange(u32),
    #[error("page {0} comes more than once in one delta")]
    Duplicate(u32),
    #[error("page of {0} bytes, expected {PAGE_SIZE}")]
    PageSize(usize),
    #[error("global {0}: {1}")]
    Global(u32, String),
}

/// The exported handles of an instance's state: its memory and mutable globals (by the
/// original global index), resolved once.
#[derive(Debug, Clone, Default)]
pub struct StateHandles {
    pub memory: Option<Memory>,
    pub globals: Vec<(u32, Global)>,
}

impl StateHandles {
    /// Resolves the memory export and the mutable globals' exports with `lookup`.
    pub fn resolve(memory: Option<&str>, global_exports: &[(u32, String)], mut lookup: impl FnMut(&str) -> Option<wasmtime::Extern>) -> StateHandles {
        let memory = memory.and_then(&mut lookup).and_then(|e| e.into_memory());
        let globals = global_exports
            .iter()
            .filter_map(|(g, name)| lookup(name).and_then(|e| e.into_global()).map(|h| (*g, h)))
            .collect();
        StateHandles { memory, globals }
    }

    /// The memory's bytes (empty without a memory).
    pub fn memory_bytes<'a, T: 'static>(&self, store: &'a impl AsContext<Data = T>) -> &'a [u8] {
        match self.memory {
            Some(m) => m.data(store),
            None => &[],
        }
    }

    /// Memory size in 64 KiB wasm pages.
    pub fn wasm_pages(&self, store: impl AsContext) -> u32 {
        self.memory.map_or(0, |m| (m.data_size(&store) / WASM_PAGE) as u32)
    }

    /// Every mutable global's value.
    pub fn globals(&self, mut store: impl AsContextMut) -> Vec<(u32, Val)> {
        self.globals.iter().map(|(g, h)| (*g, h.get(&mut store))).collect()
    }

    /// Grows memory to `wasm_pages`, copies `pages` in (or, with `xor`, XORs them into the
    /// agreed content the memory holds) and sets `globals`.
    /// Everything is checked before anything changes: on an error the instance is as it was.
    pub fn apply(&self, mut store: impl AsContextMut, wasm_pages: u32, pages: &[Page], xor: bool, globals: &[(u32, Val)]) -> Result<(), ApplyError> {
        let setters = self.check(&mut store, wasm_pages, pages, globals)?;
        if let Some(m) = self.memory {
            let have = (m.data_size(&store) / WASM_PAGE) as u64;
            if u64::from(wasm_pages) > have {
                m.grow(&mut store, u64::from(wasm_pages) - have)
                    .map_err(|e| ApplyError::Grow { wasm_pages, why: e.to_string() })?;
            }
            let data = m.data_mut(&mut store);
            for (i, p) in pages {
                let at = *i as usize * PAGE_SIZE;
                let dst = data.get_mut(at..at + PAGE_SIZE).ok_or(ApplyError::OutOfRange(*i))?;
                if xor {
                    dst.iter_mut().zip(p).for_each(|(d, x)| *d ^= x);
                } else {
                    dst.copy_from_slice(p);
                }
            }
        }
        for (h, v) in setters {
            h.set(&mut store, v).map_err(|e| ApplyError::Global(0, e.to_string()))?;
        }
        Ok(())
    }

    /// Checks what [`StateHandles::apply`] would do, changing nothing: the globals' types, the
    /// pages' sizes and places, and that the memory may grow to `wasm_pages` (its type's
    /// maximum). Answers with the globals' setters.
    pub fn check(&self, store: impl AsContextMut, wasm_pages: u32, pages: &[Page], globals: &[(u32, Val)]) -> Result<Vec<(Global, Val)>, ApplyError> {
        let mut setters = Vec::with_capacity(globals.len());
        for (g, v) in globals {
            let h = self.globals.iter().find(|(x, _)| x == g).map(|(_, h)| *h).ok_or_else(|| ApplyError::Global(*g, "not a mutable global of this module".into()))?;
            if !v.ty(&store).is_ok_and(|t| t.matches(h.ty(&store).content())) {
                return Err(ApplyError::Global(*g, "the value's type is not the global's".into()));
            }
            setters.push((h, *v));
        }
        // One entry per page: applied in turn, a repeated page would end other than a reader of
        // the delta page by page (a redundant clone's check) expects.
        let mut indices: Vec<u32> = pages.iter().map(|(i, _)| *i).collect();
        indices.sort_unstable();
        if let Some(w) = indices.windows(2).find(|w| w[0] == w[1]) {
            return Err(ApplyError::Duplicate(w[0]));
        }
        let limit = u64::from(wasm_pages) * WASM_PAGE as u64 / PAGE_SIZE as u64;
        for (i, p) in pages {
            if p.len() != PAGE_SIZE {
                return Err(ApplyError::PageSize(p.len()));
            }
            if u64::from(*i) >= limit.max(self.memory.map_or(0, |m| (m.data_size(&store) / PAGE_SIZE) as u64)) {
                return Err(ApplyError::OutOfRange(*i));
            }
        }
        match self.memory {
            Some(m) => {
                let ty = m.ty(&store);
                let absolute = if ty.is_64() { u64::MAX } else { (1u64 << 32) / ty.page_size() };
                if u64::from(wasm_pages) > ty.maximum().unwrap_or(u64::MAX).min(absolute) {
                    return Err(ApplyError::Grow { wasm_pages, why: "past the memory's maximum".into() });
                }
            }
            None if !pages.is_empty() => return Err(ApplyError::NoMemory),
            None => {}
        }
        Ok(setters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ships_changed_pages_only() {
        let mut t = PageTable::new();
        let mut mem = vec![0u8; 4 * PAGE_SIZE];
        assert!(t.diff(&mem).is_empty(), "zero pages match the zero baseline");
        mem[PAGE_SIZE + 5] = 1;
        mem[3 * PAGE_SIZE] = 2;
        let d = t.diff(&mem);
        assert_eq!(d.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!(t.diff(&mem).is_empty(), "nothing changed since");
        mem.resize(6 * PAGE_SIZE, 0);
        mem[5 * PAGE_SIZE + 1] = 9;
        assert_eq!(t.diff(&mem).iter().map(|p| p.0).collect::<Vec<_>>(), vec![5]);

        // The receiving side records what it applied and agrees.
        let mut other = PageTable::new();
        other.applied(mem.len(), &[(1, mem[PAGE_SIZE..2 * PAGE_SIZE].to_vec())]);
        assert_eq!(other.page_hash(1), t.page_hash(1));
        assert_eq!(other.page_hash(0), t.page_hash(0));
        t.reset();
        assert_eq!(t.diff(&mem).len(), 3, "after a reset every non-zero page goes again");
    }
}
