//! The WASI preview 1 interface: the import modules and function names a command module uses.

/// Import module names under which WASI preview 1 is provided (`wasi_unstable` is preview 0, kept
/// because old toolchains still emit it for the same functions).
pub const WASI_P1_MODULES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];

/// Every function of WASI preview 1 (`wasi_snapshot_preview1.witx`).
pub const WASI_P1_FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Whether `module`.`name` is a WASI preview 1 function.
pub fn is_wasi_p1(module: &str, name: &str) -> bool {
    WASI_P1_MODULES.contains(&module) && WASI_P1_FUNCTIONS.contains(&name)
}

/// The device API (docs/device-api.md): what only the device has, a module imports from here.
pub mod device_api {
    /// The import module.
    pub const MODULE: &str = "clonecloud_device";
    /// `camera_frame(buf, buf_len, size_out) -> status`.
    pub const CAMERA_FRAME: &str = "camera_frame";
    /// `position(out) -> status`: 24 bytes at `out`.
    pub const POSITION: &str = "position";
    /// `screen_text(ptr, len) -> status`.
    pub const SCREEN_TEXT: &str = "screen_text";
    /// `screen_progress(permille) -> status`.
    pub const SCREEN_PROGRESS: &str = "screen_progress";
    /// Every function: its name and its number of `i32` parameters (each returns an `i32`).
    pub const FUNCTIONS: &[(&str, usize)] = &[(CAMERA_FRAME, 3), (POSITION, 1), (SCREEN_TEXT, 2), (SCREEN_PROGRESS, 1)];
    /// The functions a clone asks the device to run; the screen's are journaled on a clone
    /// (shown at the merge, in order with the call's other output, compared by witnesses).
    pub const PROXIED: &[&str] = &[CAMERA_FRAME, POSITION];
    /// The output journal's channel for the device's screen (not a descriptor of the guest).
    pub const SCREEN_FD: u32 = u32::MAX;
    pub const OK: i32 = 0;
    pub const TOO_SMALL: i32 = 1;
    pub const END: i32 = 2;
    pub const NO_DEVICE: i32 = 3;
    pub const FAULT: i32 = 4;
    pub const INVALID: i32 = 5;
    /// The bytes `position` writes.
    pub const FIX_BYTES: usize = 24;
    /// Whether `module`.`name` is a function of the device API.
    pub fn is_device_api(module: &str, name: &str) -> bool {
        module == MODULE && FUNCTIONS.iter().any(|(n, _)| *n == name)
    }

    /// How the device's screen shows `text`.
    pub fn screen_line(text: &str) -> String {
        format!("screen: {text}\n")
    }

    /// How the device's screen shows progress `permille`.
    pub fn progress_line(permille: i32) -> String {
        format!("screen: progress {permille}/1000\n")
    }
}
