//! WASI preview 1 as a replica serves it: files from the replicated preopens
//! ([`clonecloud_files::Fs`]), output to the journal, the run's arguments and environment,
//! clocks continued from the device's, randomness, `proc_exit` carried back to the device. Each
//! function is linked only where the module imports it with the type preview 1 gives it; any
//! other import, and any call [`Fs`] cannot answer exactly as the device would, stops the
//! migrated function with [`WasiOnClone`] so that the device runs it instead.
//!
//! In threaded mode every byte of guest memory a call here reads or writes is marked in the
//! replica's access maps (`crate::replica::mark`): the instrumented module sees only its own
//! accesses.

use crate::replica::{Data, Mark, WasiOnClone, mark};
use clonecloud_files::{Fs, FsError, PollTarget};
use wasmtime::{Caller, Val, ValType};

/// WASI's EFAULT: a pointer out of bounds.
const EFAULT: i32 = 21;
/// WASI's EINVAL.
const EINVAL: i32 = 28;
/// WASI's ENOTSUP.
const ENOTSUP: i32 = 58;
/// WASI's ENOMEM: what wasmtime-wasi answers when a call would copy more than its fuel.
const ENOMEM: i32 = 48;
/// The bytes one host call may copy in wasmtime-wasi (wasmtime's default hostcall fuel, which
/// the device keeps): an iovec array and the buffer it names count, and past it the answer is
/// ENOMEM. The clone charges the same, which also bounds its scans of iovecs.
const HOSTCALL_FUEL: usize = 128 << 20;

/// What a served function returns: an errno, or nothing (`proc_exit`).
type Served = wasmtime::Result<Option<i32>>;
type Handler = fn(&mut Caller<'_, Data>, &[Val]) -> Served;

/// `proc_exit(code)` on the clone: the call stops, and the device exits with `code` after the
/// merge.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the function called proc_exit({0})")]
pub struct Exit(pub u32);

/// Preview 1 functions served here: name, parameter types (`i` i32, `I` i64), whether it
/// returns an errno, and the handler.
const SERVED: &[(&str, &str, bool, Handler)] = &[
    ("fd_write", "iiii", true, fd_write),
    ("fd_pwrite", "iiiIi", true, fd_pwrite),
    ("fd_read", "iiii", true, fd_read),
    ("fd_pread", "iiiIi", true, fd_pread),
    ("fd_seek", "iIii", true, fd_seek),
    ("fd_tell", "ii", true, fd_tell),
    ("fd_close", "i", true, fd_close),
    ("fd_fdstat_get", "ii", true, fd_fdstat_get),
    ("fd_filestat_get", "ii", true, fd_filestat_get),
    ("fd_filestat_set_size", "iI", true, fd_filestat_set_size),
    ("fd_prestat_get", "ii", true, fd_prestat_get),
    ("fd_prestat_dir_name", "iii", true, fd_prestat_dir_name),
    ("fd_readdir", "iiiIi", true, fd_readdir),
    ("fd_sync", "i", true, fd_check),
    ("fd_datasync", "i", true, fd_check),
    ("fd_advise", "iIIi", true, fd_check),
    ("fd_allocate", "iII", true, fd_allocate),
    ("fd_renumber", "ii", true, fd_renumber),
    ("fd_fdstat_set_flags", "ii", true, fd_fdstat_set_flags),
    ("fd_fdstat_set_rights", "iII", true, fd_fdstat_set_rights),
    ("fd_filestat_set_times", "iIIi", true, fd_filestat_set_times),
    ("path_filestat_set_times", "iiiiIIi", true, path_filestat_set_times),
    ("poll_oneoff", "iiii", true, poll_oneoff),
    ("path_symlink", "iiiii", true, path_symlink),
    ("path_link", "iiiiiii", true, path_link),
    ("path_readlink", "iiiiii", true, path_readlink),
    ("proc_raise", "i", true, proc_raise),
    ("sock_accept", "iii", true, sock_call),
    ("sock_recv", "iiiiii", true, sock_call),
    ("sock_send", "iiiii", true, sock_call),
    ("sock_shutdown", "ii", true, sock_call),
    ("path_open", "iiiiiIIii", true, path_open),
    ("path_filestat_get", "iiiii", true, path_filestat_get),
    ("path_create_directory", "iii", true, path_create_directory),
    ("path_unlink_file", "iii", true, path_unlink_file),
    ("path_remove_directory", "iii", true, path_remove_directory),
    ("path_rename", "iiiiii", true, path_rename),
    ("clock_time_get", "iIi", true, clock_time_get),
    ("sched_yield", "", true, sched_yield),
    ("proc_exit", "i", false, proc_exit),
    ("random_get", "ii", true, random_get),
    ("args_sizes_get", "ii", true, args_sizes_get),
    ("args_get", "ii", true, args_get),
    ("environ_sizes_get", "ii", true, environ_sizes_get),
    ("environ_get", "ii", true, environ_get),
];

/// The device API's screen, journaled (the camera and the position are proxied).
const SCREEN: &[(&str, &str, bool, Handler)] =
    &[(clonecloud_model::device_api::SCREEN_TEXT, "ii", true, screen_text), (clonecloud_model::device_api::SCREEN_PROGRESS, "i", true, screen_progress)];

fn screen_text(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    use clonecloud_model::device_api as api;
    let Some(bytes) = read_bytes(c, i(&a[0]), i(&a[1]))? else { return Ok(Some(api::FAULT)) };
    let Ok(text) = String::from_utf8(bytes) else { return Ok(Some(api::INVALID)) };
    screen(c, &api::screen_line(&text))
}

fn screen_progress(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    use clonecloud_model::device_api as api;
    let permille = i(&a[0]);
    if !(0..=1000).contains(&permille) {
        return Ok(Some(api::INVALID));
    }
    screen(c, &api::progress_line(permille))
}

/// Journals `line` for the device's screen (past the device's budget, the call runs there).
fn screen(c: &mut Caller<'_, Data>, line: &str) -> Served {
    match fs_result(fs(c).journal(clonecloud_model::device_api::SCREEN_FD, line.as_bytes()), "screen_text")? {
        Ok(()) => Ok(Some(clonecloud_model::device_api::OK)),
        Err(errno) => Ok(Some(errno)),
    }
}

/// The functions of `wasi_unstable` whose layouts differ from preview 1's.
const UNSTABLE: &[(&str, &str, bool, Handler)] = &[
    ("fd_seek", "iIii", true, fd_seek_unstable),
    ("fd_filestat_get", "ii", true, fd_filestat_get_unstable),
    ("path_filestat_get", "iiiii", true, path_filestat_get_unstable),
    ("poll_oneoff", "iiii", true, poll_oneoff_unstable),
];

/// Whether a call of preview 1 function `name` with `args` that a clone cannot answer goes to
/// the device instead of failing the migration: queries without side effects (descriptor and
/// file status, CPU clocks, clock resolutions) and stdin reads, which the device journals and
/// puts back if the migration is then abandoned (see `clonecloud_exec::stdin`). The device checks the same
/// list before it runs anything a clone asks for.
pub fn proxied(module: &str, name: &str, args: &[Val]) -> bool {
    // The device API (docs/device-api.md): the device takes the frame or the fix (and gives
    // it back if the migration is abandoned); the screen is journaled here.
    if module == clonecloud_model::device_api::MODULE {
        return clonecloud_model::device_api::PROXIED.contains(&name);
    }
    matches!(module, "wasi_snapshot_preview1" | "wasi_unstable")
        && match name {
            "fd_fdstat_get" | "fd_filestat_get" | "clock_time_get" | "clock_res_get" => true,
            // Waiting on stdin or on a descriptor the device opened.
            "poll_oneoff" => true,
            "fd_read" => matches!(args.first(), Some(Val::I32(0))),
            _ => false,
        }
}

/// The arguments of a call to proxy to the device, as the device must see them: a descriptor
/// the call renumbered here still has its old number there until the commit.
pub(crate) fn on_device(c: &mut Caller<'_, Data>, name: &str, args: &[Val]) -> Vec<Val> {
    let mut args = args.to_vec();
    if matches!(name, "fd_fdstat_get" | "fd_filestat_get" | "fd_read")
        && let Some(Val::I32(fd)) = args.first()
        && let Some(there) = fs(c).device_number(*fd as u32)
    {
        args[0] = Val::I32(there as i32);
    }
    args
}

/// The handler for preview 1 function `name` (or the device API's screen) if the import's type
/// is the one preview 1 (the API) gives it.
pub(crate) fn served(module: &str, name: &str, ty: &wasmtime::FuncType) -> Option<Handler> {
    let (_, params, errno, handler) = match module {
        // The screen: journaled, shown on the device at the merge, in order with the output.
        clonecloud_model::device_api::MODULE => SCREEN.iter().find(|(n, ..)| *n == name)?,
        "wasi_snapshot_preview1" => SERVED.iter().find(|(n, ..)| *n == name)?,
        // The older snapshot: the same calls and layouts but for these.
        "wasi_unstable" => match UNSTABLE.iter().find(|(n, ..)| *n == name) {
            Some(f) => f,
            None => SERVED.iter().find(|(n, ..)| *n == name)?,
        },
        _ => return None,
    };
    let want: Vec<bool> = params.chars().map(|c| c == 'I').collect();
    let params_match = ty.params().len() == want.len()
        && ty.params().zip(&want).all(|(p, wide)| matches!((p, wide), (ValType::I32, false) | (ValType::I64, true)));
    let results_match = if *errno { ty.results().len() == 1 && matches!(ty.results().next(), Some(ValType::I32)) } else { ty.results().len() == 0 };
    (params_match && results_match).then_some(*handler)
}

fn i(v: &Val) -> i32 {
    v.unwrap_i32()
}

fn wide(v: &Val) -> i64 {
    v.unwrap_i64()
}

fn memory(caller: &mut Caller<'_, Data>) -> wasmtime::Result<wasmtime::Memory> {
    caller
        .get_export("__cc_memory.0")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::new(WasiOnClone { module: "wasi_snapshot_preview1".into(), name: "a call without a memory".into() }))
}

/// `len` bytes at guest address `at`, copied out.
fn read_bytes(caller: &mut Caller<'_, Data>, at: i32, len: i32) -> wasmtime::Result<Option<Vec<u8>>> {
    let mem = memory(caller)?;
    let (at, len) = (at as u32 as usize, len as u32 as usize);
    let bytes = at.checked_add(len).and_then(|end| mem.data(&*caller).get(at..end)).map(<[u8]>::to_vec);
    if bytes.is_some() {
        mark(&mut *caller, Mark::Read, at, len);
    }
    Ok(bytes)
}

/// Writes `bytes` at guest address `at`; false when out of bounds.
fn write_bytes(caller: &mut Caller<'_, Data>, at: i32, bytes: &[u8]) -> wasmtime::Result<bool> {
    let mem = memory(caller)?;
    let at = at as u32 as usize;
    match at.checked_add(bytes.len()).and_then(|end| mem.data_mut(&mut *caller).get_mut(at..end)) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            mark(&mut *caller, Mark::Write, at, bytes.len());
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Errno 0 after writing `bytes` at `at`, or EFAULT.
fn answer(caller: &mut Caller<'_, Data>, at: i32, bytes: &[u8]) -> Served {
    Ok(Some(if write_bytes(caller, at, bytes)? { 0 } else { EFAULT }))
}

/// A path argument; a path that is not UTF-8 is not served.
fn path(caller: &mut Caller<'_, Data>, at: i32, len: i32, call: &str) -> wasmtime::Result<Result<String, i32>> {
    let Some(bytes) = read_bytes(caller, at, len)? else { return Ok(Err(EFAULT)) };
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Ok(s)),
        Err(_) => Err(refuse(call, "a path that is not UTF-8")),
    }
}

fn refuse(call: &str, why: &str) -> wasmtime::Error {
    wasmtime::Error::new(WasiOnClone { module: "wasi_snapshot_preview1".into(), name: format!("{call} ({why})") })
}

/// Maps a file-system answer: a WASI error is returned to the guest, a refusal stops the call.
fn fs_result<T>(r: Result<T, FsError>, call: &str) -> wasmtime::Result<Result<T, i32>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(FsError::Errno(e)) => Ok(Err(i32::from(e))),
        Err(FsError::Unsupported(why)) => Err(refuse(call, &why)),
        Err(e @ (FsError::Budget { .. } | FsError::DeviceBudget { .. })) => Err(wasmtime::Error::new(crate::replica::HostBudget(format!("{call}: {e}")))),
    }
}

/// Host code looping over guest data checks the call's deadline every this many steps (the
/// epoch deadline interrupts wasm, not the host).
const STEPS_PER_CHECK: usize = 1 << 16;

/// The call ran past its time inside host code: it ends as a wasm call past its time does.
fn past_deadline(caller: &Caller<'_, Data>) -> wasmtime::Result<()> {
    if std::time::Instant::now() >= caller.data().deadline { Err(wasmtime::Error::new(wasmtime::Trap::Interrupt)) } else { Ok(()) }
}

/// The longest a sleep the guest asked for goes without checking the call's deadline and
/// whether the device still awaits the call.
const SLEEP_SLICE: std::time::Duration = std::time::Duration::from_millis(50);

/// Sleeps for `wait`, in slices: a sleep cannot hold the replica past the call's run-time limit
/// or after the device gave the call up.
fn sleep_within_call(c: &mut Caller<'_, Data>, wait: std::time::Duration) -> wasmtime::Result<()> {
    // (A wait too long to add never ends by itself: the deadline ends it.)
    let until = std::time::Instant::now().checked_add(wait);
    loop {
        crate::replica::check_call(c.data_mut())?;
        let left = until.map_or(SLEEP_SLICE, |u| u.saturating_duration_since(std::time::Instant::now()));
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(SLEEP_SLICE));
    }
}

/// Subscriptions one `poll_oneoff` may have on the clone; more run on the device (where
/// wasmtime-wasi takes them all), so the clone never holds a host copy the size of memory.
const MAX_SUBSCRIPTIONS: u32 = 4096;

/// The replica's file system, with its clock brought up to date (for the times of writes).
fn fs<'a>(caller: &'a mut Caller<'_, Data>) -> &'a mut Fs {
    let now = caller.data().clocks.realtime();
    let fs = &mut caller.data_mut().fs;
    fs.set_now(now);
    fs
}

/// The first non-empty buffer of an iovec array, as wasmtime-wasi reads and writes only that one
/// (`Err`: the errno, EFAULT for an element out of bounds, ENOMEM for an array and buffer over
/// the hostcall fuel). The array is read in place, each element at its own address (an address
/// past 4 GiB is out of bounds, as wasmtime-wasi's array is): at most 2^24 steps (the fuel),
/// checked against the call's deadline.
fn first_iovec(caller: &mut Caller<'_, Data>, iovs: i32, n: i32) -> wasmtime::Result<Result<(i32, i32), i32>> {
    let mem = memory(caller)?;
    let base = iovs as u32 as usize;
    let n = n as u32 as usize;
    let array = n.saturating_mul(8);
    if array > HOSTCALL_FUEL {
        return Ok(Err(ENOMEM));
    }
    let mut k = 0;
    while k < n {
        let data = mem.data(&*caller);
        let (start, end) = (k, n.min(k + STEPS_PER_CHECK));
        let mut found = None;
        while k < end {
            let Some(pair) = base.checked_add(8 * k).and_then(|at| data.get(at..at.checked_add(8)?)) else {
                found = Some(Err(EFAULT));
                break;
            };
            let ptr = i32::from_le_bytes(pair[..4].try_into().expect("4 bytes"));
            let len = i32::from_le_bytes(pair[4..].try_into().expect("4 bytes"));
            k += 1;
            if len != 0 {
                found = Some(if array + len as u32 as usize > HOSTCALL_FUEL { Err(ENOMEM) } else { Ok((ptr, len)) });
                break;
            }
        }
        // The elements this round read, marked in one go.
        mark(&mut *caller, Mark::Read, base.saturating_add(8 * start), 8 * (k - start));
        if let Some(r) = found {
            return Ok(r);
        }
        past_deadline(caller)?;
    }
    Ok(Ok((0, 0)))
}

fn write_impl(caller: &mut Caller<'_, Data>, a: &[Val], at: Option<u64>, out: i32, call: &str) -> Served {
    let (ptr, len) = match first_iovec(caller, i(&a[1]), i(&a[2]))? {
        Ok(buffer) => buffer,
        Err(e) => return Ok(Some(e)),
    };
    let Some(data) = read_bytes(caller, ptr, len)? else { return Ok(Some(EFAULT)) };
    match fs_result(fs(caller).write(i(&a[0]) as u32, &data, at), call)? {
        Ok(n) => answer(caller, out, &(n as u32).to_le_bytes()),
        Err(e) => Ok(Some(e)),
    }
}

fn fd_write(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    write_impl(c, a, None, i(&a[3]), "fd_write")
}

fn fd_pwrite(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    write_impl(c, a, Some(wide(&a[3]) as u64), i(&a[4]), "fd_pwrite")
}

fn read_impl(caller: &mut Caller<'_, Data>, a: &[Val], at: Option<u64>, out: i32, call: &str) -> Served {
    let (ptr, len) = match first_iovec(caller, i(&a[1]), i(&a[2]))? {
        Ok(buffer) => buffer,
        Err(e) => return Ok(Some(e)),
    };
    match fs_result(fs(caller).read(i(&a[0]) as u32, len as u32 as usize, at), call)? {
        Ok(data) => {
            if !write_bytes(caller, ptr, &data)? {
                return Ok(Some(EFAULT));
            }
            answer(caller, out, &(data.len() as u32).to_le_bytes())
        }
        Err(e) => Ok(Some(e)),
    }
}

fn fd_read(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    read_impl(c, a, None, i(&a[3]), "fd_read")
}

fn fd_pread(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    read_impl(c, a, Some(wide(&a[3]) as u64), i(&a[4]), "fd_pread")
}

fn fd_seek(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let whence = i(&a[2]);
    if !(0..=2).contains(&whence) {
        return Ok(Some(EINVAL));
    }
    match fs_result(fs(c).seek(i(&a[0]) as u32, wide(&a[1]), whence as u8), "fd_seek")? {
        Ok(pos) => answer(c, i(&a[3]), &pos.to_le_bytes()),
        Err(e) => Ok(Some(e)),
    }
}

fn fd_tell(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    match fs_result(fs(c).tell(i(&a[0]) as u32), "fd_tell")? {
        Ok(pos) => answer(c, i(&a[1]), &pos.to_le_bytes()),
        Err(e) => Ok(Some(e)),
    }
}

fn fd_close(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    Ok(Some(fs_result(fs(c).close(i(&a[0]) as u32), "fd_close")?.err().unwrap_or(0)))
}

fn fd_check(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    Ok(Some(fs_result(fs(c).check(i(&a[0]) as u32), "fd_sync")?.err().unwrap_or(0)))
}

fn fd_fdstat_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    match fs_result(fs(c).fdstat(i(&a[0]) as u32), "fd_fdstat_get")? {
        Ok(s) => {
            let mut b = [0u8; 24];
            b[0] = s.filetype;
            b[2..4].copy_from_slice(&s.flags.to_le_bytes());
            b[8..16].copy_from_slice(&s.rights_base.to_le_bytes());
            b[16..24].copy_from_slice(&s.rights_inheriting.to_le_bytes());
            answer(c, i(&a[1]), &b)
        }
        Err(e) => Ok(Some(e)),
    }
}

fn filestat_bytes(s: &clonecloud_files::Filestat) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&s.dev.to_le_bytes());
    b[8..16].copy_from_slice(&s.ino.to_le_bytes());
    b[16] = s.filetype;
    b[24..32].copy_from_slice(&s.nlink.to_le_bytes());
    b[32..40].copy_from_slice(&s.size.to_le_bytes());
    b[40..48].copy_from_slice(&s.atim.to_le_bytes());
    b[48..56].copy_from_slice(&s.mtim.to_le_bytes());
    b[56..64].copy_from_slice(&s.ctim.to_le_bytes());
    b
}

/// A filestat answer at `at`, in preview 1's layout or (`unstable`) `wasi_unstable`'s.
fn put_filestat(c: &mut Caller<'_, Data>, r: Result<clonecloud_files::Filestat, FsError>, call: &str, at: i32, unstable: bool) -> Served {
    match fs_result(r, call)? {
        Ok(s) if unstable => answer(c, at, &filestat_bytes_unstable(&s)),
        Ok(s) => answer(c, at, &filestat_bytes(&s)),
        Err(e) => Ok(Some(e)),
    }
}

fn fd_filestat_impl(c: &mut Caller<'_, Data>, a: &[Val], unstable: bool) -> Served {
    let r = fs(c).filestat(i(&a[0]) as u32);
    put_filestat(c, r, "fd_filestat_get", i(&a[1]), unstable)
}

fn path_filestat_impl(c: &mut Caller<'_, Data>, a: &[Val], unstable: bool) -> Served {
    let p = match path(c, i(&a[2]), i(&a[3]), "path_filestat_get")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let r = fs(c).path_filestat(i(&a[0]) as u32, &p, i(&a[1]) & 1 != 0);
    put_filestat(c, r, "path_filestat_get", i(&a[4]), unstable)
}

fn fd_filestat_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    fd_filestat_impl(c, a, false)
}

fn path_filestat_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    path_filestat_impl(c, a, false)
}

fn fd_filestat_set_size(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    Ok(Some(fs_result(fs(c).set_size(i(&a[0]) as u32, wide(&a[1]) as u64), "fd_filestat_set_size")?.err().unwrap_or(0)))
}

fn fd_prestat_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    match fs_result(fs(c).prestat(i(&a[0]) as u32).map(str::len), "fd_prestat_get")? {
        Ok(len) => {
            let mut b = [0u8; 8];
            b[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            answer(c, i(&a[1]), &b)
        }
        Err(e) => Ok(Some(e)),
    }
}

fn fd_prestat_dir_name(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let max = i(&a[2]) as u32 as usize;
    match fs_result(fs(c).prestat_dir_name(i(&a[0]) as u32, max).map(|s| s.as_bytes().to_vec()), "fd_prestat_dir_name")? {
        Ok(name) => answer(c, i(&a[1]), &name),
        Err(e) => Ok(Some(e)),
    }
}

fn fd_readdir(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let (buf, len) = (i(&a[1]), i(&a[2]));
    match fs_result(fs(c).readdir(i(&a[0]) as u32, len as u32, wide(&a[3]) as u64), "fd_readdir")? {
        Ok(bytes) => {
            if !write_bytes(c, buf, &bytes)? {
                return Ok(Some(EFAULT));
            }
            answer(c, i(&a[4]), &(bytes.len() as u32).to_le_bytes())
        }
        Err(e) => Ok(Some(e)),
    }
}

fn path_open(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let follow = i(&a[1]) & 1 != 0;
    let p = match path(c, i(&a[2]), i(&a[3]), "path_open")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let (oflags, rights, fdflags) = (i(&a[4]) as u16, wide(&a[5]) as u64, i(&a[7]) as u16);
    match fs_result(fs(c).open(i(&a[0]) as u32, &p, follow, oflags, rights, fdflags), "path_open")? {
        Ok(fd) => answer(c, i(&a[8]), &fd.to_le_bytes()),
        Err(e) => Ok(Some(e)),
    }
}

/// `path_create_directory`, `path_unlink_file`, `path_remove_directory`: a descriptor and a path.
fn path_call(c: &mut Caller<'_, Data>, a: &[Val], call: &str, f: fn(&mut Fs, u32, &str) -> Result<(), FsError>) -> Served {
    let p = match path(c, i(&a[1]), i(&a[2]), call)? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    Ok(Some(fs_result(f(fs(c), i(&a[0]) as u32, &p), call)?.err().unwrap_or(0)))
}

fn path_create_directory(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    path_call(c, a, "path_create_directory", Fs::mkdir)
}

fn path_unlink_file(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    path_call(c, a, "path_unlink_file", Fs::unlink)
}

fn path_remove_directory(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    path_call(c, a, "path_remove_directory", Fs::rmdir)
}

fn path_rename(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let from = match path(c, i(&a[1]), i(&a[2]), "path_rename")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let to = match path(c, i(&a[4]), i(&a[5]), "path_rename")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    Ok(Some(fs_result(fs(c).rename(i(&a[0]) as u32, &from, i(&a[3]) as u32, &to), "path_rename")?.err().unwrap_or(0)))
}

fn clock_time_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let clocks = &c.data().clocks;
    let now = match i(&a[0]) {
        0 => clocks.realtime(),
        1 => clocks.monotonic(),
        2 | 3 => return Err(refuse("clock_time_get", "CPU-time clocks are the device's")),
        _ => return Ok(Some(EINVAL)),
    };
    answer(c, i(&a[2]), &now.to_le_bytes())
}

fn sched_yield(_: &mut Caller<'_, Data>, _: &[Val]) -> Served {
    std::thread::yield_now();
    Ok(Some(0))
}

fn proc_exit(_: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    Err(wasmtime::Error::new(Exit(i(&a[0]) as u32)))
}

/// `random_get`: the buffer checked against memory first (EFAULT, as wasmtime-wasi answers,
/// before anything is read), then filled in place a piece at a time, within the call's deadline:
/// no host buffer the size the guest asks for.
fn random_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    use std::io::Read;
    const PIECE: usize = 1 << 20;
    let (at, len) = (i(&a[0]) as u32 as usize, i(&a[1]) as u32 as usize);
    let mem = memory(c)?;
    let Some(end) = at.checked_add(len).filter(|&end| end <= mem.data_size(&*c)) else { return Ok(Some(EFAULT)) };
    let Ok(mut source) = std::fs::File::open("/dev/urandom") else { return Err(refuse("random_get", "no random source on the clone")) };
    let mut from = at;
    while from < end {
        let to = end.min(from + PIECE);
        if source.read_exact(&mut mem.data_mut(&mut *c)[from..to]).is_err() {
            return Err(refuse("random_get", "no random source on the clone"));
        }
        mark(&mut *c, Mark::Write, from, to - from);
        from = to;
        past_deadline(c)?;
    }
    Ok(Some(0))
}

/// `*_sizes_get` over list `which` (0 arguments, 1 environment).
fn sizes(c: &mut Caller<'_, Data>, a: &[Val], which: usize) -> Served {
    let list = &c.data().lists[which];
    let count = list.len() as u32;
    let size: u32 = list.iter().map(|s| s.len() as u32 + 1).sum();
    if !write_bytes(c, i(&a[0]), &count.to_le_bytes())? {
        return Ok(Some(EFAULT));
    }
    answer(c, i(&a[1]), &size.to_le_bytes())
}

/// `args_get` / `environ_get`: pointers, then the NUL-terminated strings.
fn strings(c: &mut Caller<'_, Data>, a: &[Val], which: usize) -> Served {
    let list = c.data().lists[which].clone();
    let (ptrs, mut at) = (i(&a[0]), i(&a[1]));
    for (k, item) in list.iter().enumerate() {
        let mut s = item.clone();
        s.push(0);
        if !write_bytes(c, ptrs.wrapping_add(4 * k as i32), &at.to_le_bytes())? || !write_bytes(c, at, &s)? {
            return Ok(Some(EFAULT));
        }
        at = at.wrapping_add(s.len() as i32);
    }
    Ok(Some(0))
}

fn args_sizes_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    sizes(c, a, 0)
}

fn args_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    strings(c, a, 0)
}

fn environ_sizes_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    sizes(c, a, 1)
}

fn environ_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    strings(c, a, 1)
}

/// An errno-only answer from the file system.
fn status(r: Result<(), FsError>, call: &str) -> Served {
    Ok(Some(fs_result(r, call)?.err().unwrap_or(0)))
}

fn fd_allocate(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    status(fs(c).allocate(i(&a[0]) as u32), "fd_allocate")
}

fn fd_renumber(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    status(fs(c).renumber(i(&a[0]) as u32, i(&a[1]) as u32), "fd_renumber")
}

fn fd_fdstat_set_flags(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    status(fs(c).set_fdflags(i(&a[0]) as u32, i(&a[1]) as u16), "fd_fdstat_set_flags")
}

fn fd_fdstat_set_rights(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    status(fs(c).set_rights(i(&a[0]) as u32), "fd_fdstat_set_rights")
}

fn sock_call(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    status(fs(c).socket(i(&a[0]) as u32), "sock_*")
}

fn proc_raise(_: &mut Caller<'_, Data>, _: &[Val]) -> Served {
    Ok(Some(ENOTSUP))
}

/// The times `*_set_times` asks for, as wasmtime-wasi reads `fst_flags` (1 atim, 2 atim now,
/// 4 mtim, 8 mtim now): a time and "now" for the same one is EINVAL.
fn set_times_args(c: &mut Caller<'_, Data>, atim: i64, mtim: i64, flags: i32) -> Result<(Option<u64>, Option<u64>), i32> {
    let now = c.data().clocks.realtime();
    let pick = |set: bool, value: i64, use_now: bool| match (set, use_now) {
        (true, true) => Err(EINVAL),
        (true, false) => Ok(Some(value as u64)),
        (false, true) => Ok(Some(now)),
        (false, false) => Ok(None),
    };
    Ok((pick(flags & 1 != 0, atim, flags & 2 != 0)?, pick(flags & 4 != 0, mtim, flags & 8 != 0)?))
}

fn fd_filestat_set_times(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let (atim, mtim) = match set_times_args(c, wide(&a[1]), wide(&a[2]), i(&a[3])) {
        Ok(t) => t,
        Err(e) => return Ok(Some(e)),
    };
    status(fs(c).set_times(i(&a[0]) as u32, atim, mtim), "fd_filestat_set_times")
}

fn path_filestat_set_times(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let (atim, mtim) = match set_times_args(c, wide(&a[4]), wide(&a[5]), i(&a[6])) {
        Ok(t) => t,
        Err(e) => return Ok(Some(e)),
    };
    let p = match path(c, i(&a[2]), i(&a[3]), "path_filestat_set_times")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    status(fs(c).path_set_times(i(&a[0]) as u32, &p, i(&a[1]) & 1 != 0, atim, mtim), "path_filestat_set_times")
}

/// One subscription of `poll_oneoff`, read from guest memory.
enum Sub {
    /// A clock: its deadline on the device's monotonic clock.
    Clock { deadline: u64 },
    /// A descriptor that is ready at once (files, stdout, stderr), with its event's flags.
    Ready { kind: u8, flags: u16 },
}

/// `poll_oneoff` as wasmtime-wasi answers it: files and stdout/stderr are ready at once, clocks
/// when their time comes. Stdin, and a descriptor
/// the device opened, are the device's to wait for (the call is proxied).
fn poll_oneoff(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    const SUB: i32 = 48;
    /// `fd_readwrite_hangup`.
    const HANGUP: u16 = 1;
    const EVENT: usize = 32;
    let (subs, events, n, out) = (i(&a[0]), i(&a[1]), i(&a[2]) as u32, i(&a[3]));
    if n == 0 {
        return Ok(Some(EINVAL));
    }
    if (n as usize).saturating_mul(SUB as usize + EVENT) > HOSTCALL_FUEL {
        return Ok(Some(ENOMEM));
    }
    if n > MAX_SUBSCRIPTIONS {
        return Err(refuse("poll_oneoff", "more subscriptions than the clone takes"));
    }
    let Some(bytes) = read_bytes(c, subs, (n as i32).wrapping_mul(SUB))? else { return Ok(Some(EFAULT)) };
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let event = |userdata: u64, kind: u8, nbytes: u64, flags: u16| {
        let mut e = [0u8; EVENT];
        e[0..8].copy_from_slice(&userdata.to_le_bytes());
        e[10] = kind;
        e[16..24].copy_from_slice(&nbytes.to_le_bytes());
        e[24..26].copy_from_slice(&flags.to_le_bytes());
        e
    };
    let one = |k: u32| &bytes[(k * SUB as u32) as usize..((k + 1) * SUB as u32) as usize];
    // (wasmtime-wasi sleeps on a lone relative clock only where the context allows blocking the
    // thread, which the device's does not: every subscription takes the general path.)
    let (now_mono, now_real) = (c.data().clocks.monotonic(), c.data().clocks.realtime());
    let mut parsed = Vec::with_capacity(n as usize);
    for k in 0..n {
        let b = one(k);
        let sub = match b[8] {
            0 => {
                let (id, timeout, abs) = (u32_at(b, 16), u64_at(b, 24), u16::from_le_bytes([b[40], b[41]]) & 1 != 0);
                let deadline = match (id, abs) {
                    (1, true) => timeout,
                    (0 | 1, false) => now_mono.saturating_add(timeout),
                    (0, true) => now_mono.saturating_add(timeout.saturating_sub(now_real)),
                    _ => return Ok(Some(EINVAL)),
                };
                Sub::Clock { deadline }
            }
            tag @ (1 | 2) => {
                let fd = u32_at(b, 16);
                match fs_result(fs(c).poll_target(fd), "poll_oneoff")? {
                    Err(e) => return Ok(Some(e)),
                    Ok(PollTarget::Stdin) if tag == 1 => return Err(refuse("poll_oneoff", "waiting on stdin")),
                    Ok(PollTarget::File { left }) if tag == 1 => Sub::Ready { kind: 1, flags: if left == 0 { HANGUP } else { 0 } },
                    Ok(PollTarget::File { .. } | PollTarget::Output) if tag == 2 => Sub::Ready { kind: 2, flags: 0 },
                    Ok(_) => return Ok(Some(i32::from(clonecloud_files::errno::BADF))),
                }
            }
            // wasmtime-wasi cannot read an unknown tag: the guest's memory is bad.
            _ => return Ok(Some(EINVAL)),
        };
        parsed.push((u64_at(b, 0), sub));
    }
    let any_ready = parsed.iter().any(|(_, s)| matches!(s, Sub::Ready { .. }));
    if !any_ready {
        let first = parsed.iter().filter_map(|(_, s)| if let Sub::Clock { deadline } = s { Some(*deadline) } else { None }).min().unwrap_or(now_mono);
        let wait = first.saturating_sub(c.data().clocks.monotonic());
        sleep_within_call(c, std::time::Duration::from_nanos(wait))?;
    }
    let now = c.data().clocks.monotonic();
    let mut written = 0u32;
    for (userdata, sub) in &parsed {
        let e = match *sub {
            Sub::Clock { deadline } if deadline <= now => event(*userdata, 0, 0, 0),
            Sub::Clock { .. } => continue,
            Sub::Ready { kind, flags } => event(*userdata, kind, 1, flags),
        };
        if !write_bytes(c, events.wrapping_add((written as usize * EVENT) as i32), &e)? {
            return Ok(Some(EFAULT));
        }
        written += 1;
    }
    answer(c, out, &written.to_le_bytes())
}

/// `wasi_unstable`'s `poll_oneoff`, as wasmtime-wasi 48 answers it: each 56-byte subscription
/// (a clock's has an `identifier` before its clock id) is rewritten in place, at its own slot, in
/// preview 1's 48-byte layout; preview 1's `poll_oneoff` then reads the array with preview 1's
/// stride (so from the second subscription on it reads what lies at `48 * k`, as wasmtime-wasi
/// does), and the original subscriptions are put back. A subscription that does not read stops
/// the rewriting there with `EINVAL`, the ones before it left rewritten, again as wasmtime-wasi.
fn poll_oneoff_unstable(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    const OLD: usize = 56;
    let (subs, n) = (i(&a[0]), i(&a[2]) as u32 as usize);
    if n > MAX_SUBSCRIPTIONS as usize {
        return Err(refuse("poll_oneoff", "more subscriptions than the clone takes"));
    }
    let Some(old) = read_bytes(c, subs, (n as i32).wrapping_mul(OLD as i32))? else { return Ok(Some(EFAULT)) };
    for k in 0..n {
        let b = &old[k * OLD..(k + 1) * OLD];
        let mut new = [0u8; 48];
        new[..9].copy_from_slice(&b[..9]);
        match b[8] {
            0 => {
                let id = u32::from_le_bytes(b[24..28].try_into().expect("4 bytes"));
                let flags = u16::from_le_bytes([b[48], b[49]]);
                if id > 3 || flags & !1 != 0 {
                    return Ok(Some(EINVAL));
                }
                new[16..20].copy_from_slice(&b[24..28]);
                new[24..42].copy_from_slice(&b[32..50]);
            }
            1 | 2 => new[16..20].copy_from_slice(&b[16..20]),
            _ => return Ok(Some(EINVAL)),
        }
        if !write_bytes(c, subs.wrapping_add((k * OLD) as i32), &new)? {
            return Ok(Some(EFAULT));
        }
    }
    let answer = poll_oneoff(c, a);
    write_bytes(c, subs, &old)?;
    answer
}

/// `wasi_unstable`'s whence: 0 current, 1 end, 2 set.
fn fd_seek_unstable(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let whence = match i(&a[2]) {
        0 => 1,
        1 => 2,
        2 => 0,
        _ => return Ok(Some(EINVAL)),
    };
    fd_seek(c, &[a[0], a[1], Val::I32(whence), a[3]])
}

/// `wasi_unstable`'s filestat: a 32-bit link count, 56 bytes in all.
fn filestat_bytes_unstable(s: &clonecloud_files::Filestat) -> [u8; 56] {
    let p1 = filestat_bytes(s);
    let mut b = [0u8; 56];
    b[0..17].copy_from_slice(&p1[0..17]);
    b[20..24].copy_from_slice(&(s.nlink as u32).to_le_bytes());
    b[24..56].copy_from_slice(&p1[32..64]);
    b
}

fn fd_filestat_get_unstable(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    fd_filestat_impl(c, a, true)
}

fn path_filestat_get_unstable(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    path_filestat_impl(c, a, true)
}

fn path_symlink(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let target = match path(c, i(&a[0]), i(&a[1]), "path_symlink")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let p = match path(c, i(&a[3]), i(&a[4]), "path_symlink")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    status(fs(c).symlink(&target, i(&a[2]) as u32, &p), "path_symlink")
}

/// `path_readlink`: the target, cut to the buffer, and its length written.
fn path_readlink(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let p = match path(c, i(&a[1]), i(&a[2]), "path_readlink")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    match fs_result(fs(c).readlink(i(&a[0]) as u32, &p), "path_readlink")? {
        Ok(target) => {
            let mut bytes = target.into_bytes();
            bytes.truncate(i(&a[4]) as u32 as usize);
            if !write_bytes(c, i(&a[3]), &bytes)? {
                return Ok(Some(EFAULT));
            }
            answer(c, i(&a[5]), &(bytes.len() as u32).to_le_bytes())
        }
        Err(e) => Ok(Some(e)),
    }
}

fn path_link(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let from = match path(c, i(&a[2]), i(&a[3]), "path_link")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let to = match path(c, i(&a[5]), i(&a[6]), "path_link")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    status(fs(c).link(i(&a[0]) as u32, i(&a[1]) & 1 != 0, &from, i(&a[4]) as u32, &to), "path_link")
}
