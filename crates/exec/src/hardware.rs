//! The device API's host side (docs/device-api.md, `clonecloud_model::device_api`): what only
//! the device has. A camera fed from a directory of frames (`run --camera DIR`), a position
//! from a recorded track (`run --gps TRACK.csv`), and the screen, which is the terminal
//! (stderr).
//!
//! The run's camera and track are shared by all its threads and by the scratch instance that
//! answers a clone's proxied calls: a migration that took frames or fixes through the device and
//! is then abandoned gives them back ([`Hardware`]'s record and rewind, driven by the
//! offloader), so the call run here instead sees the same ones.
//!
//! What it does not know: the protocol, how a clone reaches these (the replica proxies the
//! camera and the position here, `offload::proxy`, and journals the screen, shown at the merge).

use crate::run::Device;
use clonecloud_model::device_api::{self as api, FAULT, FIX_BYTES, INVALID, NO_DEVICE, OK, TOO_SMALL};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::{Caller, Extern, Linker};

/// One position fix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub latitude: f64,
    pub longitude: f64,
    pub unix_ms: i64,
}

/// Why the device's hardware cannot be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    #[error("--camera {}: {source} (give a directory of frames, taken in name order)", dir.display())]
    Camera { dir: PathBuf, source: std::io::Error },
    #[error("--gps {}: {why}", file.display())]
    Track { file: PathBuf, why: String },
}

/// What the device has, as a run is given it: the frames of its camera, in the order they are
/// taken, and its track.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HardwareConfig {
    pub frames: Option<Vec<PathBuf>>,
    pub track: Option<Vec<Fix>>,
}

impl HardwareConfig {
    /// The camera's frames (the regular files of `camera`, by name) and the track read from
    /// `gps`, checked now (a bad line is named).
    pub fn load(camera: Option<&Path>, gps: Option<&Path>) -> Result<HardwareConfig, HardwareError> {
        let frames = camera
            .map(|dir| {
                let err = |source| HardwareError::Camera { dir: dir.to_path_buf(), source };
                let mut files = Vec::new();
                for e in std::fs::read_dir(dir).map_err(err)? {
                    let e = e.map_err(err)?;
                    // A link to a regular file is a frame too.
                    if std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()) {
                        files.push(e.path());
                    }
                }
                files.sort_by(|a, b| a.file_name().map(|n| n.as_encoded_bytes()).cmp(&b.file_name().map(|n| n.as_encoded_bytes())));
                Ok(files)
            })
            .transpose()?;
        let track = gps
            .map(|file| {
                let err = |why: String| HardwareError::Track { file: file.to_path_buf(), why };
                let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
                parse_track(&text).map_err(err)
            })
            .transpose()?;
        Ok(HardwareConfig { frames, track })
    }
}

/// A track: `UNIX_MS,LATITUDE,LONGITUDE` per line; a first line that does not start with a digit
/// or `-` is a header, lines starting with `#` are skipped; any other line that is not a fix (a
/// blank one too) is an error that names it.
pub fn parse_track(text: &str) -> Result<Vec<Fix>, String> {
    let mut fixes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') || (n == 0 && !line.is_empty() && !line.starts_with(|c: char| c.is_ascii_digit() || c == '-')) {
            continue;
        }
        let bad = || format!("line {}: `{line}` is not UNIX_MS,LATITUDE,LONGITUDE", n + 1);
        let mut parts = line.split(',').map(str::trim);
        let (Some(t), Some(lat), Some(lon), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        let unix_ms = t.parse::<i64>().map_err(|_| bad())?;
        let (latitude, longitude) = (lat.parse::<f64>().map_err(|_| bad())?, lon.parse::<f64>().map_err(|_| bad())?);
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return Err(format!("line {}: a position outside -90..90, -180..180", n + 1));
        }
        fixes.push(Fix { latitude, longitude, unix_ms });
    }
    if fixes.is_empty() {
        return Err("no fix in the track".into());
    }
    Ok(fixes)
}

/// A run's hardware: where its camera and track are, and what a migration under way took.
#[derive(Debug, Default)]
pub(crate) struct Hardware {
    config: HardwareConfig,
    next_frame: usize,
    next_fix: usize,
    /// Where the camera and the track were when a migration's first proxied call took from
    /// them (see [`Hardware::record`]).
    saved: Option<(usize, usize)>,
}

/// The run's hardware, shared by its threads.
pub(crate) type Shared = Arc<Mutex<Hardware>>;

pub(crate) fn shared(config: HardwareConfig) -> Shared {
    Arc::new(Mutex::new(Hardware { config, ..Hardware::default() }))
}

impl Hardware {
    /// A migration's proxied call is about to take from the camera or the track: the first
    /// such call of the migration notes where they are.
    pub(crate) fn record(&mut self) {
        self.saved.get_or_insert((self.next_frame, self.next_fix));
    }

    /// The migration ended: committed (what it took stays taken) or abandoned (given back).
    pub(crate) fn end(&mut self, committed: bool) {
        if let Some((frame, fix)) = self.saved.take()
            && !committed
        {
            (self.next_frame, self.next_fix) = (frame, fix);
        }
    }
}

thread_local! {
    /// Calls of the camera and the position on this thread, and the bytes they gave.
    static CALLS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// How many calls of the camera and the position the calling thread made so far, and the bytes
/// they wrote to the guest (for the profiler: a clone's call of one is a round trip to here).
pub fn device_calls() -> (u64, u64) {
    CALLS.with(|c| c.get())
}

fn counted(bytes: usize) {
    CALLS.with(|c| {
        let (n, b) = c.get();
        c.set((n + 1, b + bytes as u64));
    });
}

/// Reads `len` bytes at `at` of the caller's memory (`memory`, plain or shared).
fn read(caller: &mut Caller<'_, Device>, at: i32, len: i32) -> Option<Vec<u8>> {
    let (at, len) = (at as u32 as usize, len as u32 as usize);
    match caller.get_export("memory")? {
        Extern::Memory(m) => m.data(&*caller).get(at..at.checked_add(len)?).map(<[u8]>::to_vec),
        Extern::SharedMemory(m) => {
            let data = m.data();
            let cells = data.get(at..at.checked_add(len)?)?;
            // SAFETY: in bounds; other threads may write meanwhile, as wasm's racy reads allow.
            Some(cells.iter().map(|c| unsafe { *c.get() }).collect())
        }
        _ => None,
    }
}

/// Writes `bytes` at `at` of the caller's memory; false when out of bounds.
fn write(caller: &mut Caller<'_, Device>, at: i32, bytes: &[u8]) -> bool {
    let at = at as u32 as usize;
    let Some(end) = at.checked_add(bytes.len()) else { return false };
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => match m.data_mut(&mut *caller).get_mut(at..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        },
        Some(Extern::SharedMemory(m)) => match m.data().get(at..end) {
            Some(cells) => {
                for (c, b) in cells.iter().zip(bytes) {
                    // SAFETY: in bounds of the shared memory; racy writes are wasm's semantics.
                    unsafe { *c.get() = *b };
                }
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn hardware(caller: &Caller<'_, Device>) -> Shared {
    caller.data().hardware.clone()
}

fn camera_frame(mut caller: Caller<'_, Device>, buf: i32, buf_len: i32, size_out: i32) -> wasmtime::Result<i32> {
    let hw = hardware(&caller);
    let mut hw = hw.lock().unwrap_or_else(|e| e.into_inner());
    let Some(frames) = &hw.config.frames else { return Ok(NO_DEVICE) };
    let Some(path) = frames.get(hw.next_frame).cloned() else {
        return Ok(if write(&mut caller, size_out, &0u32.to_le_bytes()) { api::END } else { FAULT });
    };
    // A frame the camera cannot give ends the film here, as a broken camera would.
    let bytes = std::fs::read(&path).map_err(|e| wasmtime::Error::msg(format!("the camera cannot read its frame {}: {e}", path.display())))?;
    let size = u32::try_from(bytes.len()).map_err(|_| wasmtime::Error::msg(format!("the camera's frame {} is over 4 GiB", path.display())))?;
    if !write(&mut caller, size_out, &size.to_le_bytes()) {
        return Ok(FAULT);
    }
    if (buf_len as u32) < size {
        return Ok(TOO_SMALL);
    }
    if !write(&mut caller, buf, &bytes) {
        return Ok(FAULT);
    }
    hw.next_frame += 1;
    counted(bytes.len());
    Ok(OK)
}

fn position(mut caller: Caller<'_, Device>, out: i32) -> wasmtime::Result<i32> {
    let hw = hardware(&caller);
    let mut hw = hw.lock().unwrap_or_else(|e| e.into_inner());
    let Some(track) = &hw.config.track else { return Ok(NO_DEVICE) };
    let fix = track[hw.next_fix.min(track.len() - 1)];
    let mut bytes = [0u8; FIX_BYTES];
    bytes[..8].copy_from_slice(&fix.latitude.to_le_bytes());
    bytes[8..16].copy_from_slice(&fix.longitude.to_le_bytes());
    bytes[16..].copy_from_slice(&fix.unix_ms.to_le_bytes());
    if !write(&mut caller, out, &bytes) {
        return Ok(FAULT);
    }
    hw.next_fix = (hw.next_fix + 1).min(track.len());
    counted(FIX_BYTES);
    Ok(OK)
}

/// Shows `line` on the screen (the terminal), unless the run discards its output.
fn show(caller: &Caller<'_, Device>, line: &str) {
    use std::io::Write;
    if caller.data().stdio == crate::Stdio::Inherit {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

fn screen_text(mut caller: Caller<'_, Device>, ptr: i32, len: i32) -> wasmtime::Result<i32> {
    let Some(bytes) = read(&mut caller, ptr, len) else { return Ok(FAULT) };
    let Ok(text) = String::from_utf8(bytes) else { return Ok(INVALID) };
    show(&caller, &api::screen_line(&text));
    Ok(OK)
}

fn screen_progress(caller: Caller<'_, Device>, permille: i32) -> wasmtime::Result<i32> {
    if !(0..=1000).contains(&permille) {
        return Ok(INVALID);
    }
    show(&caller, &api::progress_line(permille));
    Ok(OK)
}

/// Defines the device API in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Device>) -> wasmtime::Result<()> {
    linker.func_wrap(api::MODULE, api::CAMERA_FRAME, camera_frame)?;
    linker.func_wrap(api::MODULE, api::POSITION, position)?;
    linker.func_wrap(api::MODULE, api::SCREEN_TEXT, screen_text)?;
    linker.func_wrap(api::MODULE, api::SCREEN_PROGRESS, screen_progress)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_parse_or_name_the_bad_line() {
        let t = parse_track("unix_ms,latitude,longitude\n# a comment\n1700000000000,37.5,-122.25\n1700000005000, 37.6 ,-122.2\n").unwrap();
        assert!(parse_track("1,2,3\n\n4,5,6").unwrap_err().contains("line 2"), "a blank line is not a fix");
        assert_eq!(t, [Fix { latitude: 37.5, longitude: -122.25, unix_ms: 1_700_000_000_000 }, Fix { latitude: 37.6, longitude: -122.2, unix_ms: 1_700_000_005_000 }]);
        assert_eq!(parse_track("-5,1,2").unwrap()[0].unix_ms, -5, "a first line starting with `-` is a fix");
        assert!(parse_track("t,lat,lon\n1,2\n").unwrap_err().contains("line 2"));
        assert!(parse_track("1,95,0").unwrap_err().contains("outside"));
        assert!(parse_track("# nothing\n").unwrap_err().contains("no fix"));
    }

    #[test]
    fn an_abandoned_migration_gives_back_what_it_took() {
        let mut h = Hardware { config: HardwareConfig { frames: Some(vec![]), track: None }, next_frame: 2, next_fix: 5, saved: None };
        h.record();
        (h.next_frame, h.next_fix) = (4, 7);
        h.record();
        h.end(false);
        assert_eq!((h.next_frame, h.next_fix), (2, 5));
        h.record();
        h.next_frame = 3;
        h.end(true);
        assert_eq!((h.next_frame, h.saved), (3, None));
    }
}
