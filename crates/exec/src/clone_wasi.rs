//! WASI preview 1 as a replica serves it: files from the replicated preopens
//! ([`clonecloud_files::Fs`]), output to the journal, the run's arguments and environment,
//! clocks continued from the device's, randomness, `proc_exit` carried back to the device. Each
//! function is linked only where the module imports it with the type preview 1 gives it; any
//! other import, and any call [`Fs`] cannot answer exactly as the device would, stops the
//! migrated function with [`WasiOnClone`] so that the device runs it instead.

use crate::replica::{Data, WasiOnClone};
use clonecloud_files::{Fs, FsError};
use wasmtime::{Caller, Val, ValType};

/// WASI's EFAULT: a pointer out of bounds.
const EFAULT: i32 = 21;
/// WASI's EINVAL.
const EINVAL: i32 = 28;

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

/// Whether a call of preview 1 function `name` with `args` that a clone cannot answer goes to
/// the device instead of failing the migration: queries without side effects (descriptor and
/// file status, CPU clocks, clock resolutions) and stdin reads, which the device journals and
/// puts back if the migration is then abandoned (see `crate::stdin`). The device checks the same
/// list before it runs anything a clone asks for.
pub fn proxied(module: &str, name: &str, args: &[Val]) -> bool {
    module == "wasi_snapshot_preview1"
        && match name {
            "fd_fdstat_get" | "fd_filestat_get" | "clock_time_get" | "clock_res_get" => true,
            "fd_read" => matches!(args.first(), Some(Val::I32(0))),
            _ => false,
        }
}

/// The handler for preview 1 function `name` if the import's type is the one preview 1 gives
/// it.
pub(crate) fn served(module: &str, name: &str, ty: &wasmtime::FuncType) -> Option<Handler> {
    if module != "wasi_snapshot_preview1" {
        return None;
    }
    let (_, params, errno, handler) = SERVED.iter().find(|(n, ..)| *n == name)?;
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
    Ok(at.checked_add(len).and_then(|end| mem.data(&*caller).get(at..end)).map(<[u8]>::to_vec))
}

/// Writes `bytes` at guest address `at`; false when out of bounds.
fn write_bytes(caller: &mut Caller<'_, Data>, at: i32, bytes: &[u8]) -> wasmtime::Result<bool> {
    let mem = memory(caller)?;
    let at = at as u32 as usize;
    match at.checked_add(bytes.len()).and_then(|end| mem.data_mut(&mut *caller).get_mut(at..end)) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
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
    }
}

/// The replica's file system, with its clock brought up to date (for the times of writes).
fn fs<'a>(caller: &'a mut Caller<'_, Data>) -> &'a mut Fs {
    let now = caller.data().clocks.realtime();
    let fs = &mut caller.data_mut().fs;
    fs.set_now(now);
    fs
}

/// The first non-empty buffer of an iovec array, as wasmtime-wasi reads and writes only that one.
fn first_iovec(caller: &mut Caller<'_, Data>, iovs: i32, n: i32) -> wasmtime::Result<Option<(i32, i32)>> {
    for k in 0..n as u32 {
        let Some(pair) = read_bytes(caller, iovs.wrapping_add(8 * k as i32), 8)? else { return Ok(None) };
        let ptr = i32::from_le_bytes(pair[..4].try_into().expect("4 bytes"));
        let len = i32::from_le_bytes(pair[4..].try_into().expect("4 bytes"));
        if len != 0 {
            return Ok(Some((ptr, len)));
        }
    }
    Ok(Some((0, 0)))
}

fn write_impl(caller: &mut Caller<'_, Data>, a: &[Val], at: Option<u64>, out: i32, call: &str) -> Served {
    let Some((ptr, len)) = first_iovec(caller, i(&a[1]), i(&a[2]))? else { return Ok(Some(EFAULT)) };
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
    let Some((ptr, len)) = first_iovec(caller, i(&a[1]), i(&a[2]))? else { return Ok(Some(EFAULT)) };
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

fn fd_filestat_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    match fs_result(fs(c).filestat(i(&a[0]) as u32), "fd_filestat_get")? {
        Ok(s) => answer(c, i(&a[1]), &filestat_bytes(&s)),
        Err(e) => Ok(Some(e)),
    }
}

fn path_filestat_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    let p = match path(c, i(&a[2]), i(&a[3]), "path_filestat_get")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    match fs_result(fs(c).path_filestat(i(&a[0]) as u32, &p), "path_filestat_get")? {
        Ok(s) => answer(c, i(&a[4]), &filestat_bytes(&s)),
        Err(e) => Ok(Some(e)),
    }
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
    if i(&a[1]) & !1 != 0 {
        return Err(refuse("path_open", "unknown lookup flags"));
    }
    let p = match path(c, i(&a[2]), i(&a[3]), "path_open")? {
        Ok(p) => p,
        Err(e) => return Ok(Some(e)),
    };
    let (oflags, rights, fdflags) = (i(&a[4]) as u16, wide(&a[5]) as u64, i(&a[7]) as u16);
    match fs_result(fs(c).open(i(&a[0]) as u32, &p, oflags, rights, fdflags), "path_open")? {
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

fn random_get(c: &mut Caller<'_, Data>, a: &[Val]) -> Served {
    use std::io::Read;
    let len = i(&a[1]) as u32 as usize;
    let mut buf = vec![0u8; len];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).is_err() {
        return Err(refuse("random_get", "no random source on the clone"));
    }
    answer(c, i(&a[0]), &buf)
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
