//! clonecloud-device-api: safe Rust wrappers over clonecloud's device API (`docs/device-api.md`),
//! what only a phone has: a camera, a position fix and a screen.
//!
//! - On `wasm32` the functions are the imports of the module `clonecloud_device`, which
//!   `clonecloud run --camera DIR --gps TRACK.csv` provides on the device (and which a clone
//!   proxies to the device or journals).
//! - Natively they are the same behaviour over the same files: the camera is the directory named
//!   by `CLONECLOUD_CAMERA`, the track the CSV file named by `CLONECLOUD_GPS`, and the screen is
//!   stderr (`screen: TEXT`, `screen: progress N/1000`), so a native build and a wasm build under
//!   `clonecloud run` give the same output.
//!
//! What it does not know: anything of clonecloud itself (migration, proxying, journaling: the
//! host does that, invisibly to the program), or what the frames hold (they are the camera's
//! encoded bytes, PNG or JPEG, never decoded here).

use std::fmt;

/// Done.
pub const OK: i32 = 0;
/// The buffer is too small: nothing was consumed, the size needed was written.
pub const TOO_SMALL: i32 = 1;
/// The camera has no more frames.
pub const END: i32 = 2;
/// The device has no such hardware (`run` was not given `--camera`, `--gps`; natively, the
/// environment variable is not set).
pub const NO_DEVICE: i32 = 3;
/// A pointer or length is outside memory.
pub const FAULT: i32 = 4;
/// An argument is not valid (text that is not UTF-8, a progress out of range).
pub const INVALID: i32 = 5;

/// A position fix: where the device was, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// Degrees, north positive.
    pub latitude: f64,
    /// Degrees, east positive.
    pub longitude: f64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

impl Fix {
    /// The 24 bytes `position` writes: latitude, longitude (`f64`), time (`i64`), little-endian.
    fn from_bytes(b: &[u8; 24]) -> Fix {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            w
        };
        Fix { latitude: f64::from_le_bytes(word(0)), longitude: f64::from_le_bytes(word(1)), unix_ms: i64::from_le_bytes(word(2)) }
    }

    #[cfg(any(test, not(target_arch = "wasm32")))]
    fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.latitude.to_le_bytes());
        b[8..16].copy_from_slice(&self.longitude.to_le_bytes());
        b[16..24].copy_from_slice(&self.unix_ms.to_le_bytes());
        b
    }
}

/// A status other than `OK` (or one the call did not expect), as a device function returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub i32);

impl Status {
    /// The status's name in docs/device-api.md (`UNKNOWN` for a number it does not list).
    pub fn name(self) -> &'static str {
        match self.0 {
            OK => "OK",
            TOO_SMALL => "TOO_SMALL",
            END => "END",
            NO_DEVICE => "NO_DEVICE",
            FAULT => "FAULT",
            INVALID => "INVALID",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meaning = match self.0 {
            OK => "done",
            TOO_SMALL => "the buffer is too small",
            END => "the camera has no more frames",
            NO_DEVICE => "the device has no such hardware (no `run --camera`/`--gps`; natively, no CLONECLOUD_CAMERA/CLONECLOUD_GPS)",
            FAULT => "a pointer or length is outside memory",
            INVALID => "an argument is not valid",
            _ => "not a status of the device API",
        };
        write!(f, "device status {} ({}): {meaning}", self.0, self.name())
    }
}

impl std::error::Error for Status {}

/// Takes the next frame from the camera: its encoded bytes (PNG or JPEG, as the camera gives
/// them), or `None` once the camera has no more frames (`END`). Asks the frame's size first
/// (a buffer of 0 bytes), then reads it into a buffer of that size.
pub fn camera_frame() -> Result<Option<Vec<u8>>, Status> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut size = 0u32;
        match sys::camera_frame(&mut buf, &mut size) {
            OK => {
                buf.truncate(size as usize);
                return Ok(Some(buf));
            }
            END => return Ok(None),
            // The frame is kept: grow to the size it needs and ask again. A size that does not
            // grow the buffer would loop forever: the device broke its contract.
            TOO_SMALL if size as usize > buf.len() => buf.resize(size as usize, 0),
            other => return Err(Status(other)),
        }
    }
}

/// The next fix of the device's track (after the last one, the last again).
pub fn position() -> Result<Fix, Status> {
    let mut out = [0u8; 24];
    match sys::position(&mut out) {
        OK => Ok(Fix::from_bytes(&out)),
        other => Err(Status(other)),
    }
}

/// Shows a line of text on the screen (no newline needed).
pub fn screen_text(text: &str) -> Result<(), Status> {
    match sys::screen_text(text.as_bytes()) {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Shows progress, `0` to `1000` per mille (`INVALID` otherwise).
pub fn screen_progress(permille: u32) -> Result<(), Status> {
    // Above i32::MAX: a negative number, which the device refuses as it refuses 1001.
    match sys::screen_progress(i32::try_from(permille).unwrap_or(-1)) {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// The raw calls, over slices: the imports on wasm32.
#[cfg(target_arch = "wasm32")]
mod sys {
    mod imports {
        #[link(wasm_import_module = "clonecloud_device")]
        unsafe extern "C" {
            pub fn camera_frame(buf: *mut u8, buf_len: i32, size_out: *mut u32) -> i32;
            pub fn position(out: *mut u8) -> i32;
            pub fn screen_text(ptr: *const u8, len: i32) -> i32;
            pub fn screen_progress(permille: i32) -> i32;
        }
    }

    /// A length as the ABI's `i32` (a slice longer than `i32::MAX` is offered as `i32::MAX`).
    fn len(n: usize) -> i32 {
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    pub fn camera_frame(buf: &mut [u8], size_out: &mut u32) -> i32 {
        // SAFETY: the device writes at most `buf.len()` bytes at `buf` and 4 at `size_out`, both
        // borrowed mutably for the call.
        unsafe { imports::camera_frame(buf.as_mut_ptr(), len(buf.len()), size_out) }
    }

    pub fn position(out: &mut [u8; 24]) -> i32 {
        // SAFETY: the device writes 24 bytes at `out`, borrowed mutably for the call.
        unsafe { imports::position(out.as_mut_ptr()) }
    }

    pub fn screen_text(text: &[u8]) -> i32 {
        // SAFETY: the device reads `text.len()` bytes at `text`.
        unsafe { imports::screen_text(text.as_ptr(), len(text.len())) }
    }

    pub fn screen_progress(permille: i32) -> i32 {
        // SAFETY: no memory is passed.
        unsafe { imports::screen_progress(permille) }
    }
}

/// The raw calls, over slices: natively, the camera directory and the track named by the
/// environment, and stderr.
#[cfg(not(target_arch = "wasm32"))]
mod sys {
    use super::native::{Track, device};
    use super::{INVALID, NO_DEVICE, OK};
    use std::io::Write;

    pub fn camera_frame(buf: &mut [u8], size_out: &mut u32) -> i32 {
        let mut dev = device();
        match dev.camera.as_mut() {
            Some(camera) => camera.take(buf, size_out).unwrap_or_else(|e| super::native::fatal(&e)),
            None => NO_DEVICE,
        }
    }

    pub fn position(out: &mut [u8; 24]) -> i32 {
        let mut dev = device();
        match dev.gps.as_mut() {
            Some(track) => {
                *out = Track::next(track).to_bytes();
                OK
            }
            None => NO_DEVICE,
        }
    }

    fn show(line: &str) {
        // The screen is best effort, as stderr is: a closed stderr does not stop the program.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    pub fn screen_text(text: &[u8]) -> i32 {
        match std::str::from_utf8(text) {
            Ok(t) => {
                show(&format!("screen: {t}\n"));
                OK
            }
            Err(_) => INVALID,
        }
    }

    pub fn screen_progress(permille: i32) -> i32 {
        if !(0..=1000).contains(&permille) {
            return INVALID;
        }
        show(&format!("screen: progress {permille}/1000\n"));
        OK
    }
}

/// The native device: the camera and the track, read from the files the environment names.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::{END, Fix, OK, TOO_SMALL};
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, MutexGuard, OnceLock};

    /// The environment variable naming the camera directory (`run --camera DIR`).
    pub const CAMERA_VAR: &str = "CLONECLOUD_CAMERA";
    /// The environment variable naming the track (`run --gps TRACK.csv`).
    pub const GPS_VAR: &str = "CLONECLOUD_GPS";

    /// The camera: the regular files of a directory, in byte order of their names, each read
    /// when it is taken.
    #[derive(Debug)]
    pub struct Camera {
        files: Vec<PathBuf>,
        /// The next frame to take.
        next: usize,
        /// The next frame's bytes, once its size was asked (read once, kept until taken).
        pending: Option<Vec<u8>>,
    }

    impl Camera {
        /// Lists `dir`'s regular files (a symbolic link to a regular file counts), sorted by the
        /// bytes of their names.
        pub fn open(dir: &Path) -> Result<Camera, String> {
            let cannot = |e: std::io::Error| format!("cannot list the camera directory {}: {e}", dir.display());
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(cannot)? {
                let entry = entry.map_err(cannot)?;
                if std::fs::metadata(entry.path()).map(|m| m.is_file()).unwrap_or(false) {
                    names.push(entry.file_name());
                }
            }
            names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
            Ok(Camera { files: names.iter().map(|n| dir.join(n)).collect(), next: 0, pending: None })
        }

        /// `camera_frame` over a slice: writes the next frame's size at `size_out` and, if `buf`
        /// holds it, copies it and moves on (`OK`); else keeps it (`TOO_SMALL`). After the last
        /// frame, `END` with size 0. An error is a frame file that cannot be read.
        pub fn take(&mut self, buf: &mut [u8], size_out: &mut u32) -> Result<i32, String> {
            let Some(path) = self.files.get(self.next) else {
                *size_out = 0;
                return Ok(END);
            };
            let frame = match self.pending.take() {
                Some(f) => f,
                None => std::fs::read(path).map_err(|e| format!("cannot read the camera frame {}: {e}", path.display()))?,
            };
            *size_out = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            if buf.len() < frame.len() {
                self.pending = Some(frame);
                return Ok(TOO_SMALL);
            }
            buf[..frame.len()].copy_from_slice(&frame);
            self.next += 1;
            Ok(OK)
        }
    }

    /// The track: its fixes in order, and the next one to give.
    #[derive(Debug)]
    pub struct Track {
        fixes: Vec<Fix>,
        next: usize,
    }

    impl Track {
        /// Reads a track: `UNIX_MS,LATITUDE,LONGITUDE` a line; a first line that does not start
        /// with a digit or `-` (a header) and lines starting with `#` are skipped. `name` names
        /// the file in the error, which names the line.
        pub fn parse(text: &str, name: &str) -> Result<Track, String> {
            let mut fixes = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let header = i == 0 && !line.starts_with(|c: char| c.is_ascii_digit() || c == '-');
                if header || line.starts_with('#') {
                    continue;
                }
                let bad = || format!("{name}:{}: `{line}` is not a fix: expected UNIX_MS,LATITUDE,LONGITUDE (three numbers, such as 1700000000000,37.427500,-122.169700)", i + 1);
                let fields: Vec<&str> = line.split(',').map(str::trim).collect();
                let [ms, lat, lon] = fields.as_slice() else { return Err(bad()) };
                let unix_ms = ms.parse::<i64>().map_err(|_| bad())?;
                let degrees = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
                let (Some(latitude), Some(longitude)) = (degrees(lat), degrees(lon)) else { return Err(bad()) };
                fixes.push(Fix { latitude, longitude, unix_ms });
            }
            if fixes.is_empty() {
                return Err(format!("{name}: the track holds no fix (expected lines UNIX_MS,LATITUDE,LONGITUDE)"));
            }
            Ok(Track { fixes, next: 0 })
        }

        /// The next fix; after the last one, the last again.
        pub fn next(&mut self) -> Fix {
            let fix = self.fixes[self.next.min(self.fixes.len() - 1)];
            self.next = (self.next + 1).min(self.fixes.len());
            fix
        }
    }

    /// The device's hardware: `None` when the environment does not name it.
    #[derive(Debug)]
    pub struct Device {
        pub camera: Option<Camera>,
        pub gps: Option<Track>,
    }

    /// Prints `message` as the device's launch error and exits with status 2, as `clonecloud
    /// run` refuses a bad `--camera` or `--gps`.
    pub fn fatal(message: &str) -> ! {
        eprintln!("clonecloud-device-api: {message}");
        std::process::exit(2)
    }

    fn var(name: &str) -> Option<PathBuf> {
        std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// Reads the device named by the environment; any error is fatal (see [`fatal`]).
    fn open() -> Device {
        let camera = var(CAMERA_VAR).map(|dir| Camera::open(&dir).unwrap_or_else(|e| fatal(&format!("{CAMERA_VAR}: {e}"))));
        let gps = var(GPS_VAR).map(|path| {
            let text = std::fs::read(&path)
                .map_err(|e| format!("{GPS_VAR}: cannot read the track {}: {e}", path.display()))
                .and_then(|b| String::from_utf8(b).map_err(|_| format!("{GPS_VAR}: the track {} is not UTF-8 text", path.display())))
                .unwrap_or_else(|e| fatal(&e));
            Track::parse(&text, &path.display().to_string()).unwrap_or_else(|e| fatal(&format!("{GPS_VAR}: {e}")))
        });
        Device { camera, gps }
    }

    static DEVICE: OnceLock<Mutex<Device>> = OnceLock::new();

    /// The device, opened from the environment at the first call of any device function.
    pub fn device() -> MutexGuard<'static, Device> {
        // A thread that panicked holding the lock left the state whole: each change is one step.
        DEVICE.get_or_init(|| Mutex::new(open())).lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::native::{Camera, Track};
    use super::*;
    use std::path::PathBuf;

    /// A new empty directory under the temp dir, unique to this process and `label`.
    fn temp_dir(label: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("clonecloud-device-api-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Takes one frame the way `camera_frame()` does, over a camera.
    fn take_all(camera: &mut Camera) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        loop {
            let mut size = 99u32;
            match camera.take(&mut [], &mut size).unwrap() {
                END => {
                    assert_eq!(size, 0);
                    return frames;
                }
                TOO_SMALL => {
                    let mut buf = vec![0u8; size as usize + 3];
                    let mut again = 0u32;
                    assert_eq!(camera.take(&mut buf, &mut again).unwrap(), OK);
                    assert_eq!(again, size);
                    buf.truncate(size as usize);
                    frames.push(buf);
                }
                OK => {
                    assert_eq!(size, 0, "only an empty frame fits an empty buffer");
                    frames.push(Vec::new());
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }

    #[test]
    fn camera_gives_regular_files_in_name_order_then_end() {
        let dir = temp_dir("camera");
        std::fs::write(dir.join("frame-0002.png"), b"second").unwrap();
        std::fs::write(dir.join("frame-0001.png"), b"first!").unwrap();
        std::fs::write(dir.join("Z-upper-sorts-first"), b"Z").unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        std::fs::create_dir(dir.join("frame-0000.d")).unwrap();
        let mut camera = Camera::open(&dir).unwrap();
        let frames = take_all(&mut camera);
        assert_eq!(frames, vec![b"Z".to_vec(), b"".to_vec(), b"first!".to_vec(), b"second".to_vec()]);
        // END again, every later call.
        let mut size = 7u32;
        assert_eq!(camera.take(&mut [0u8; 16], &mut size).unwrap(), END);
        assert_eq!(size, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn camera_keeps_the_frame_when_the_buffer_is_too_small() {
        let dir = temp_dir("small");
        std::fs::write(dir.join("a"), b"0123456789").unwrap();
        let mut camera = Camera::open(&dir).unwrap();
        let mut size = 0u32;
        assert_eq!(camera.take(&mut [0u8; 4], &mut size).unwrap(), TOO_SMALL);
        assert_eq!(size, 10);
        // Read when taken: the size was asked, the file may go; the frame is kept.
        std::fs::remove_file(dir.join("a")).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(camera.take(&mut buf, &mut size).unwrap(), OK);
        assert_eq!(&buf, b"0123456789");
        assert_eq!(camera.take(&mut buf, &mut size).unwrap(), END);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn camera_reads_each_frame_when_taken() {
        let dir = temp_dir("late");
        std::fs::write(dir.join("1"), b"one").unwrap();
        std::fs::write(dir.join("2"), b"two").unwrap();
        let mut camera = Camera::open(&dir).unwrap();
        std::fs::write(dir.join("2"), b"changed").unwrap();
        assert_eq!(take_all(&mut camera), vec![b"one".to_vec(), b"changed".to_vec()]);
        let mut camera = Camera::open(&dir).unwrap();
        std::fs::remove_file(dir.join("1")).unwrap();
        let err = camera.take(&mut [], &mut 0).unwrap_err();
        assert!(err.contains("cannot read the camera frame") && err.contains('1'), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Camera::open(&dir).unwrap_err().contains("cannot list the camera directory"));
    }

    #[test]
    fn track_skips_header_and_comments_and_repeats_the_last_fix() {
        let text = "unix_ms,latitude,longitude\n# a comment\n1700000000000,37.4275,-122.1697\n#another\n1700000005000, 37.5 ,-122\r\n";
        let mut track = Track::parse(text, "t.csv").unwrap();
        let a = Fix { latitude: 37.4275, longitude: -122.1697, unix_ms: 1_700_000_000_000 };
        let b = Fix { latitude: 37.5, longitude: -122.0, unix_ms: 1_700_000_005_000 };
        assert_eq!([track.next(), track.next(), track.next(), track.next()], [a, b, b, b]);
        // No header: the first line is a fix (a negative time starts with `-`).
        let mut track = Track::parse("-5,1,2\n", "t.csv").unwrap();
        assert_eq!(track.next(), Fix { latitude: 1.0, longitude: 2.0, unix_ms: -5 });
        // The fix survives its bytes.
        assert_eq!(Fix::from_bytes(&b.to_bytes()), b);
    }

    #[test]
    fn track_errors_name_the_line() {
        let err = Track::parse("unix_ms,lat,lon\n1,2,3\n4,five,6\n", "walk.csv").unwrap_err();
        assert!(err.starts_with("walk.csv:3: `4,five,6` is not a fix"), "{err}");
        let err = Track::parse("1,2\n", "w.csv").unwrap_err();
        assert!(err.starts_with("w.csv:1:"), "{err}");
        let err = Track::parse("1,2,3,4\n", "w.csv").unwrap_err();
        assert!(err.starts_with("w.csv:1:"), "{err}");
        let err = Track::parse("1,2,3\n\n", "w.csv").unwrap_err();
        assert!(err.starts_with("w.csv:2:"), "a blank line is not a fix: {err}");
        let err = Track::parse("1,NaN,3\n", "w.csv").unwrap_err();
        assert!(err.starts_with("w.csv:1:"), "{err}");
        let err = Track::parse("unix_ms,latitude,longitude\n# nothing\n", "w.csv").unwrap_err();
        assert!(err.contains("no fix"), "{err}");
    }

    #[test]
    fn progress_range_and_status_names() {
        assert_eq!(screen_progress(0), Ok(()));
        assert_eq!(screen_progress(1000), Ok(()));
        assert_eq!(screen_progress(1001), Err(Status(INVALID)));
        assert_eq!(screen_progress(u32::MAX), Err(Status(INVALID)));
        assert_eq!(sys::screen_progress(-1), INVALID);
        assert_eq!(sys::screen_text(b"\xff\xfe"), INVALID);
        assert_eq!(screen_text("hello"), Ok(()));
        assert_eq!(Status(END).name(), "END");
        assert_eq!(Status(42).name(), "UNKNOWN");
        let shown = Status(NO_DEVICE).to_string();
        assert!(shown.starts_with("device status 3 (NO_DEVICE)"), "{shown}");
    }

    /// The only test that touches the environment and the process's device: the public
    /// functions end to end.
    #[test]
    fn public_functions_over_the_environment() {
        let dir = temp_dir("env");
        let camera = dir.join("camera");
        std::fs::create_dir(&camera).unwrap();
        std::fs::write(camera.join("frame-0001.png"), vec![7u8; 5000]).unwrap();
        std::fs::write(camera.join("frame-0002.jpg"), b"jpeg").unwrap();
        let track = dir.join("track.csv");
        std::fs::write(&track, "unix_ms,latitude,longitude\n1700000000000,37.4275,-122.1697\n").unwrap();
        // SAFETY: no other test reads or writes the environment, and nothing else in this
        // process runs threads that do.
        unsafe {
            std::env::set_var(native::CAMERA_VAR, &camera);
            std::env::set_var(native::GPS_VAR, &track);
        }
        assert_eq!(camera_frame(), Ok(Some(vec![7u8; 5000])));
        assert_eq!(camera_frame(), Ok(Some(b"jpeg".to_vec())));
        assert_eq!(camera_frame(), Ok(None));
        assert_eq!(camera_frame(), Ok(None));
        let fix = Fix { latitude: 37.4275, longitude: -122.1697, unix_ms: 1_700_000_000_000 };
        assert_eq!(position(), Ok(fix));
        assert_eq!(position(), Ok(fix));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
