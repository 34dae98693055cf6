//! The device's side of a proxied import: the clone asks the device to run an import it cannot
//! answer itself, inside a migration that has not committed yet.
//!
//! The import runs in the guest's scratch instance (`exec::Guest::scratch_load`): a second
//! instance of the module in the same store, sharing the WASI context (descriptors, stdin) but
//! not the memory. Its memory is loaded with the guest's, the clone's changes so far are applied
//! to it, and the import runs there through its trampoline; the pages it wrote go back to the
//! clone. The guest's own memory does not change until the migration commits, when the pages
//! the migration touched are copied over from the scratch memory. If the migration is abandoned
//! instead, the stdin bytes the imports consumed are put back (`exec::stdin`) and the function
//! runs locally from exactly its entry state. The device runs only the imports on
//! `clonecloud_replica::proxied`'s list, whatever the clone asks: queries without side effects,
//! and stdin reads.

use crate::convert;
use crate::device::{Abort, abort};
use clonecloud_stats::Cause;
use clonecloud_exec::Guest;
use clonecloud_exec::state::{PAGE_SIZE, Page};
use clonecloud_wire::{PageDelta, State, Value};
use std::collections::BTreeSet;
use wasmtime::Val;

/// The proxied calls of the migration under way: which pages of the scratch memory differ
/// from the guest's.
#[derive(Debug, Default)]
pub(crate) struct Proxying {
    touched: BTreeSet<u32>,
    loaded: bool,
}

impl Proxying {
    /// Whether any import ran for the migration under way.
    pub(crate) fn active(&self) -> bool {
        self.loaded
    }

    /// The migration is over: committed (stdin stays read) or abandoned (stdin gets back what
    /// the imports took).
    pub(crate) fn end(&mut self, guest: &mut Guest<'_, '_>, committed: bool) {
        if let Some(s) = guest.stdin() {
            if committed { s.commit() } else { s.rewind() }
        }
        // (Only this migration's proxied calls can have taken from the camera or the track.)
        if self.loaded {
            guest.hardware_end(committed);
        }
        self.touched.clear();
        self.loaded = false;
    }

    /// The commit after proxied imports: applies the clone's final pages to the scratch memory
    /// and returns every page the migration changed, from there, with the memory's size.
    pub(crate) fn final_pages(&mut self, guest: &mut Guest<'_, '_>, delta: &PageDelta) -> Result<(u32, Vec<Page>), Abort> {
        guest.scratch_apply(delta.wasm_pages, &delta.pages, delta.xor).map_err(|e| abort(Cause::Merge, e))?;
        self.touched.extend(delta.pages.iter().map(|(i, _)| *i));
        // (The scratch memory may be larger, from an earlier migration: the clone's size counts.)
        let memory = guest.scratch_memory().0;
        let pages = self.touched.iter().map(|&i| (i, memory[i as usize * PAGE_SIZE..(i as usize + 1) * PAGE_SIZE].to_vec())).collect();
        Ok((delta.wasm_pages, pages))
    }
}

fn arg(args: &[Val], k: usize) -> usize {
    args.get(k).and_then(Val::i32).map_or(0, |v| v as u32 as usize)
}

/// The memory ranges import `name` may write for `args`: its out-parameters and, for `fd_read`,
/// the buffers its iovecs name.
fn writes(name: &str, args: &[Val], memory: &[u8]) -> Vec<(usize, usize)> {
    match name {
        "fd_fdstat_get" => vec![(arg(args, 1), 24)],
        "fd_filestat_get" => vec![(arg(args, 1), 64)],
        "clock_time_get" => vec![(arg(args, 2), 8)],
        "clock_res_get" => vec![(arg(args, 1), 8)],
        // The events (32 bytes each, at most one per subscription) and their count.
        "poll_oneoff" => vec![(arg(args, 1), 32 * arg(args, 2).min(1 << 16)), (arg(args, 3), 4)],
        "fd_read" => {
            let word = |at: usize| memory.get(at..at + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
            let (iovs, n) = (arg(args, 1), arg(args, 2));
            let mut out: Vec<(usize, usize)> = (0..n.min(1024)).map(|k| (word(iovs + 8 * k), word(iovs + 8 * k + 4))).collect();
            out.push((arg(args, 3), 4));
            out
        }
        _ => Vec::new(),
    }
}

/// Runs the clone's import call on the device: returns the results and the pages it wrote. A
/// device API call is served only if it is one of `reach`, those the migrated function can
/// reach (the camera, the position and the screen are the user's, not the clone's to ask for).
pub(crate) fn serve(guest: &mut Guest<'_, '_>, p: &mut Proxying, import: u32, args: &[Value], state: State, reach: &[String]) -> Result<(Vec<Value>, State), Abort> {
    let (module, name) = guest.layout().imports.get(import as usize).cloned().ok_or_else(|| abort(Cause::Protocol, format!("the clone asked for import {import}, which the module lacks")))?;
    let args = convert::values_from_wire(args);
    if !clonecloud_replica::proxied(&module, &name, &args) {
        return Err(abort(Cause::Protocol, format!("the clone asked the device to run `{module}`.`{name}`, which a device does not run for a clone")));
    }
    if module == clonecloud_model::device_api::MODULE && !reach.contains(&name) {
        return Err(abort(Cause::Protocol, format!("the clone asked the device for `{module}`.`{name}`, which the migrated function cannot reach")));
    }
    if state.memory.page_size as usize != PAGE_SIZE && !state.memory.pages.is_empty() {
        return Err(abort(Cause::Protocol, format!("pages of {} bytes", state.memory.page_size)));
    }
    if !p.loaded {
        guest.scratch_load().map_err(|e| abort(Cause::Unavailable, format!("cannot prepare `{name}` on the device: {e}")))?;
        p.loaded = true;
    }
    guest.scratch_apply(state.memory.wasm_pages, &state.memory.pages, state.memory.xor).map_err(|e| abort(Cause::Merge, e))?;
    p.touched.extend(state.memory.pages.iter().map(|(i, _)| *i));
    let ranges = writes(&name, &args, guest.scratch_memory().0);
    if name == "fd_read"
        && let Some(s) = guest.stdin()
    {
        s.record();
    }
    if module == clonecloud_model::device_api::MODULE {
        guest.hardware_record();
    }
    let results = guest.scratch_call_import(import, &args).map_err(|e| abort(Cause::Unavailable, format!("`{name}` on the device: {e}")))?;
    // The device API writes only on success: the frame (its size read back) and its size; the
    // size alone when the buffer is too small or the film ended; the fix.
    let ranges = if module == clonecloud_model::device_api::MODULE {
        use clonecloud_model::device_api as api;
        let status = results.first().and_then(Val::i32).unwrap_or(api::FAULT);
        let memory = guest.scratch_memory().0;
        match (name.as_str(), status) {
            (api::CAMERA_FRAME, api::OK) => {
                let at = arg(&args, 2);
                let size = memory.get(at..at + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
                vec![(arg(&args, 0), size), (at, 4)]
            }
            (api::CAMERA_FRAME, api::TOO_SMALL | api::END) => vec![(arg(&args, 2), 4)],
            (api::POSITION, api::OK) => vec![(arg(&args, 0), api::FIX_BYTES)],
            _ => Vec::new(),
        }
    } else {
        ranges
    };
    let memory = guest.scratch_memory().0;
    // Only what lies in the clone's memory goes back (the scratch memory may be larger, from an
    // earlier migration, and an import does not grow memory).
    let wasm_pages = state.memory.wasm_pages;
    let limit = memory.len().min(wasm_pages as usize * 65536);
    let mut written = BTreeSet::new();
    for (at, len) in ranges {
        let end = at.saturating_add(len).min(limit);
        written.extend((at / PAGE_SIZE..end.div_ceil(PAGE_SIZE)).map(|i| i as u32));
    }
    let pages: Vec<Page> = written.iter().map(|&i| (i, memory[i as usize * PAGE_SIZE..(i as usize + 1) * PAGE_SIZE].to_vec())).collect();
    p.touched.extend(written);
    let back = State { globals: Vec::new(), memory: PageDelta { wasm_pages, page_size: PAGE_SIZE as u32, pages, xor: false } };
    let results = convert::values_to_wire(&results).ok_or_else(|| abort(Cause::Unsupported, "a reference-typed result"))?;
    Ok((results, back))
}
