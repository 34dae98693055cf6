//! The clone's copy of a device's thread: a second instance of the same rewritten module, whose
//! state is kept equal to the device's at every migration, and in which migrated functions run.
//!
//! The replica serves little WASI of its own: `random_get` (fresh randomness is as good as the
//! device's), the run's arguments and environment (sent in the hello), and `fd_write` to stdout
//! and stderr, which goes to a journal the device writes out when it merges the return (and drops
//! if the migration fails). Any other WASI call stops the
//! function with [`WasiOnClone`], and the device runs it locally instead (nothing on the device
//! changed since the function's entry, so that is always correct). Nested migration points run
//! locally: every flag is cleared.

use crate::error::ExecError;
use crate::state::{ApplyError, PAGE_SIZE, Page, PageTable, StateHandles};
use wasmtime::{Engine, Func, Linker, Module, Store, Trap, Val};

/// A function on the clone called an import the clone cannot serve.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the function called `{module}`.`{name}`, which the clone does not serve")]
pub struct WasiOnClone {
    pub module: String,
    pub name: String,
}

/// Why a call on the replica did not return.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("wasm trap: {0}")]
    Trap(Trap),
    #[error("the call ran past the clone's limit of {0:?}")]
    Deadline(std::time::Duration),
    #[error("the call wanted more memory than the clone allows ({0} bytes)")]
    Memory(usize),
    #[error(transparent)]
    Import(WasiOnClone),
    #[error("no migration point {0} in this module")]
    NoPoint(u32),
    #[error("{0}")]
    Other(wasmtime::Error),
}

fn is_wasi_module(m: &str) -> bool {
    m == "wasi_snapshot_preview1" || m == "wasi_unstable"
}

/// WASI `random_get(buf, len) -> errno`, from the operating system's random source.
fn deadline_ticks(t: std::time::Duration) -> u64 {
    (t.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

fn random_get(mut caller: wasmtime::Caller<'_, Data>, buf: i32, len: i32) -> wasmtime::Result<i32> {
    use std::io::Read;
    const EFAULT: i32 = 21;
    const EIO: i32 = 29;
    let Some(mem) = caller.get_export("__cc_memory.0").and_then(|e| e.into_memory()) else {
        return Err(wasmtime::Error::new(WasiOnClone { module: "wasi_snapshot_preview1".into(), name: "random_get".into() }));
    };
    let (buf, len) = (buf as u32 as usize, len as u32 as usize);
    let Some(out) = buf.checked_add(len).and_then(|end| mem.data_mut(&mut caller).get_mut(buf..end)) else {
        return Ok(EFAULT);
    };
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(out)) {
        Ok(()) => Ok(0),
        Err(_) => Ok(EIO),
    }
}

/// What a migrated function wrote to stdout (1) and stderr (2), in order.
pub type Output = Vec<(u32, Vec<u8>)>;

/// How often a clone engine's epoch advances: the granularity of run deadlines.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// What one migrated call may use on the clone.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory, in bytes.
    pub memory: usize,
    /// Wall time of one call.
    pub run_time: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory: 4 << 30, run_time: std::time::Duration::from_secs(300) }
    }
}

/// The replica's store data: the output journal, the memory limit, and the run's arguments and
/// environment (served to `args_get` and `environ_get`).
#[derive(Debug)]
pub struct Data {
    output: Output,
    limits: wasmtime::StoreLimits,
    lists: [Vec<Vec<u8>>; 2],
}

/// WASI `args_sizes_get` / `environ_sizes_get` over list `which` (0 args, 1 environment).
fn list_sizes(which: usize) -> impl Fn(wasmtime::Caller<'_, Data>, i32, i32) -> wasmtime::Result<i32> + Send + Sync + 'static {
    move |mut caller, count_ptr, size_ptr| {
        let list = &caller.data().lists[which];
        let count = list.len() as u32;
        let size: u32 = list.iter().map(|a| a.len() as u32 + 1).sum();
        Ok(match memory(&mut caller) {
            Some(mem) => store_u32s(mem.data_mut(&mut caller), &[(count_ptr, count), (size_ptr, size)]),
            None => 21,
        })
    }
}

/// WASI `args_get` / `environ_get` over list `which`: pointers into the buffer, then the strings,
/// each NUL-terminated.
fn list_get(which: usize) -> impl Fn(wasmtime::Caller<'_, Data>, i32, i32) -> wasmtime::Result<i32> + Send + Sync + 'static {
    move |mut caller, ptrs, buf| {
        let list = caller.data().lists[which].clone();
        let Some(mem) = memory(&mut caller) else { return Ok(21) };
        let data = mem.data_mut(&mut caller);
        let (mut at, mut words) = (buf as u32, Vec::new());
        for (i, item) in list.iter().enumerate() {
            words.push((ptrs + 4 * i as i32, at));
            let start = at as usize;
            let Some(dst) = data.get_mut(start..start + item.len() + 1) else { return Ok(21) };
            dst[..item.len()].copy_from_slice(item);
            dst[item.len()] = 0;
            at += item.len() as u32 + 1;
        }
        Ok(store_u32s(data, &words))
    }
}

fn memory(caller: &mut wasmtime::Caller<'_, Data>) -> Option<wasmtime::Memory> {
    caller.get_export("__cc_memory.0").and_then(|e| e.into_memory())
}

/// Writes little-endian u32s at guest addresses: errno 0, or 21 (EFAULT) out of bounds.
fn store_u32s(data: &mut [u8], words: &[(i32, u32)]) -> i32 {
    for &(at, v) in words {
        let at = at as u32 as usize;
        match data.get_mut(at..at + 4) {
            Some(d) => d.copy_from_slice(&v.to_le_bytes()),
            None => return 21,
        }
    }
    0
}

/// WASI `fd_write(fd, iovs, iovs_len, nwritten) -> errno` for stdout and stderr: into the journal.
fn fd_write(mut caller: wasmtime::Caller<'_, Data>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> wasmtime::Result<i32> {
    const EFAULT: i32 = 21;
    if fd != 1 && fd != 2 {
        return Err(wasmtime::Error::new(WasiOnClone { module: "wasi_snapshot_preview1".into(), name: format!("fd_write (descriptor {fd})") }));
    }
    let Some(mem) = caller.get_export("__cc_memory.0").and_then(|e| e.into_memory()) else {
        return Err(wasmtime::Error::new(WasiOnClone { module: "wasi_snapshot_preview1".into(), name: "fd_write".into() }));
    };
    let data = mem.data(&caller);
    let word = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let mut bytes = Vec::new();
    for k in 0..iovs_len as u32 as usize {
        let at = iovs as u32 as usize + 8 * k;
        let (Some(ptr), Some(len)) = (word(at), word(at + 4)) else { return Ok(EFAULT) };
        let Some(chunk) = ptr.checked_add(len).and_then(|end| data.get(ptr..end)) else { return Ok(EFAULT) };
        bytes.extend_from_slice(chunk);
    }
    let n = bytes.len() as u32;
    let at = nwritten as u32 as usize;
    let Some(out) = at.checked_add(4).and_then(|end| mem.data_mut(&mut caller).get_mut(at..end)) else { return Ok(EFAULT) };
    out.copy_from_slice(&n.to_le_bytes());
    let journal = &mut caller.data_mut().output;
    match journal.last_mut() {
        Some((last, b)) if *last == fd as u32 => b.extend_from_slice(&bytes),
        _ => journal.push((fd as u32, bytes)),
    }
    Ok(0)
}

/// One replica.
pub struct Replica {
    store: Store<Data>,
    limits: Limits,
    /// The memory's content as last agreed with the device, for XOR deltas.
    shadow: Vec<u8>,
    handles: StateHandles,
    table: PageTable,
    locals: std::collections::HashMap<u32, Func>,
    instance: wasmtime::Instance,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replica({} pages agreed)", self.table.len())
    }
}

impl Replica {
    /// Instantiates `module` (a module rewritten by clonecloud), clears its flags and zeroes its
    /// memory: the baseline every device starts from.
    pub fn new(engine: &Engine, module: &Module) -> Result<Replica, ExecError> {
        Replica::with_limits(engine, module, Limits::default(), Vec::new(), Vec::new())
    }

    /// A replica whose calls may use at most `limits` (deadlines need an engine from
    /// [`crate::new_clone_engine`]), serving the run's `args` and `env` (`NAME=value`).
    pub fn with_limits(engine: &Engine, module: &Module, limits: Limits, args: Vec<Vec<u8>>, env: Vec<Vec<u8>>) -> Result<Replica, ExecError> {
        let mut linker: Linker<Data> = Linker::new(engine);
        for import in module.imports() {
            let Some(ty) = import.ty().func().cloned() else {
                return Err(ExecError::Runtime(wasmtime::Error::msg(format!(
                    "the clone cannot provide the non-function import `{}`.`{}`",
                    import.module(),
                    import.name()
                ))));
            };
            let (m, n) = (import.module().to_string(), import.name().to_string());
            if is_wasi_module(&m) && n == "random_get" {
                // Randomness is served here: fresh random bytes are as good as the device's.
                linker.func_wrap(import.module(), import.name(), random_get).map_err(ExecError::Runtime)?;
                continue;
            }
            if is_wasi_module(&m) && n == "fd_write" {
                linker.func_wrap(import.module(), import.name(), fd_write).map_err(ExecError::Runtime)?;
                continue;
            }
            let list = match n.as_str() {
                "args_sizes_get" | "args_get" => Some(0),
                "environ_sizes_get" | "environ_get" => Some(1),
                _ => None,
            };
            if let (true, Some(which)) = (is_wasi_module(&m), list) {
                let r = if n.ends_with("sizes_get") {
                    linker.func_wrap(import.module(), import.name(), list_sizes(which))
                } else {
                    linker.func_wrap(import.module(), import.name(), list_get(which))
                };
                r.map_err(ExecError::Runtime)?;
                continue;
            }
            linker
                .func_new(import.module(), import.name(), ty, move |_, _, _| {
                    Err(wasmtime::Error::new(WasiOnClone { module: m.clone(), name: n.clone() }))
                })
                .map_err(ExecError::Runtime)?;
        }
        let data = Data {
            output: Output::new(),
            limits: wasmtime::StoreLimitsBuilder::new().memory_size(limits.memory).trap_on_grow_failure(true).build(),
            lists: [args, env],
        };
        let mut store = Store::new(engine, data);
        store.limiter(|d| &mut d.limits);
        // Instantiation itself gets the run-time limit too.
        store.set_epoch_deadline(deadline_ticks(limits.run_time));
        store.epoch_deadline_trap();
        let instance = linker.instantiate(&mut store, module).map_err(ExecError::Runtime)?;
        let mut memory = None;
        let mut globals = Vec::new();
        let mut flags = Vec::new();
        for e in module.exports() {
            let name = e.name();
            if let Some(g) = name.strip_prefix("__cc_global.").and_then(|g| g.parse::<u32>().ok()) {
                globals.push((g, name.to_string()));
            } else if name == "__cc_memory.0" {
                memory = Some(name.to_string());
            } else if name.starts_with("__cc_flag.") {
                flags.push(name.to_string());
            }
        }
        for f in flags {
            if let Some(g) = instance.get_global(&mut store, &f) {
                g.set(&mut store, Val::I32(0)).map_err(ExecError::Runtime)?;
            }
        }
        let handles = StateHandles::resolve(memory.as_deref(), &globals, |n| instance.get_export(&mut store, n));
        if let Some(m) = handles.memory {
            m.data_mut(&mut store).fill(0);
        }
        Ok(Replica { store, limits, shadow: Vec::new(), handles, table: PageTable::new(), locals: Default::default(), instance })
    }

    /// Applies a device's delta (pages XORed into the agreed content with `xor`).
    pub fn apply(&mut self, wasm_pages: u32, pages: &[Page], xor: bool, globals: &[(u32, Val)]) -> Result<(), ApplyError> {
        if wasm_pages as usize * 65536 > self.limits.memory {
            return Err(ApplyError::Grow { wasm_pages, why: format!("over the clone's memory limit of {} bytes", self.limits.memory) });
        }
        self.handles.apply(&mut self.store, wasm_pages, pages, xor, globals)?;
        let memory = self.handles.memory_bytes(&self.store);
        self.table.record(memory, pages.iter().map(|(i, _)| *i));
        self.shadow.resize(memory.len(), 0);
        for (i, _) in pages {
            let at = *i as usize * PAGE_SIZE;
            self.shadow[at..at + PAGE_SIZE].copy_from_slice(&memory[at..at + PAGE_SIZE]);
        }
        Ok(())
    }

    /// What changed since the last agreed state: memory size, pages (with `xor`, each XORed with
    /// its agreed content), every mutable global. The result is the new agreed state.
    pub fn capture(&mut self, xor: bool) -> (u32, Vec<Page>, Vec<(u32, Val)>) {
        let memory = self.handles.memory_bytes(&self.store);
        let mut pages = self.table.diff(memory);
        self.shadow.resize(memory.len(), 0);
        for (i, page) in &mut pages {
            let at = *i as usize * PAGE_SIZE;
            let agreed = &mut self.shadow[at..at + PAGE_SIZE];
            if xor {
                page.iter_mut().zip(agreed.iter()).for_each(|(p, a)| *p ^= a);
                agreed.iter_mut().zip(&memory[at..at + PAGE_SIZE]).for_each(|(a, m)| *a = *m);
            } else {
                agreed.copy_from_slice(page);
            }
        }
        (self.handles.wasm_pages(&self.store), pages, self.handles.globals(&mut self.store))
    }

    /// What the last call wrote to stdout and stderr, taken.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.store.data_mut().output)
    }

    /// Calls migration point `function` (its original index) with `params`; its output starts a
    /// fresh journal.
    pub fn call(&mut self, function: u32, params: &[Val], results: &mut [Val]) -> Result<(), CallError> {
        self.store.data_mut().output.clear();
        self.store.set_epoch_deadline(deadline_ticks(self.limits.run_time));
        let f = match self.locals.get(&function) {
            Some(f) => *f,
            None => {
                let f = self
                    .instance
                    .get_func(&mut self.store, &format!("__cc_local.{function}"))
                    .ok_or(CallError::NoPoint(function))?;
                self.locals.insert(function, f);
                f
            }
        };
        let ty = f.ty(&self.store);
        if ty.params().len() != params.len() || ty.results().len() != results.len() {
            return Err(CallError::Other(wasmtime::Error::msg("arguments or results do not match the point's type")));
        }
        f.call(&mut self.store, params, results).map_err(|e| {
            if let Some(w) = e.downcast_ref::<WasiOnClone>() {
                CallError::Import(w.clone())
            } else if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
                CallError::Deadline(self.limits.run_time)
            } else if let Some(t) = e.downcast_ref::<Trap>() {
                CallError::Trap(*t)
            } else if format!("{e:?}").contains("growing memory") {
                // The limiter refused to grow memory: a local run would have had it.
                CallError::Memory(self.limits.memory)
            } else {
                CallError::Other(e)
            }
        })
    }

    /// The result types of point `function`, to size the results.
    pub fn result_count(&mut self, function: u32) -> Option<usize> {
        let f = self.instance.get_func(&mut self.store, &format!("__cc_local.{function}"))?;
        Some(f.ty(&self.store).results().len())
    }
}
