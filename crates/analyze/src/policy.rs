//! The import policy: what each import of a module may do on which side.

use std::path::Path;

/// Where an import may run, for the partitioner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Runs on the clone too: served there (files from the replica, clocks, randomness,
    /// arguments, output into the journal) or proxied to the device with the guarantee kept.
    Proxiable,
    /// Only the device can run it (a sensor, a socket, a call the clone neither serves nor
    /// proxies): whatever can reach it stays on the device.
    DeviceOnly,
    /// Only the clone has it (a capability the device lacks).
    CloneOnly,
    /// No state, no effect: runs anywhere.
    Pure,
    /// Only the device has it (the device API's camera and position), but
    /// a migrated call reaches it through the device, a round trip per call: what can reach it
    /// may still migrate, at that cost.
    Device,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Class::Proxiable => "proxiable",
            Class::DeviceOnly => "device-only",
            Class::CloneOnly => "clone-only",
            Class::Pure => "pure",
            Class::Device => "device (proxied from a clone)",
        }
    }
}

/// `module.name` patterns per class, checked before the built-in defaults. A pattern is
/// `module.name` where `*` matches any run of characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    #[serde(default)]
    pub device_only: Vec<String>,
    #[serde(default)]
    pub clone_only: Vec<String>,
    #[serde(default)]
    pub pure: Vec<String>,
    #[serde(default)]
    pub proxiable: Vec<String>,
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the policy {path} is not valid: {message}\nexpected TOML like: device-only = [\"env.camera_*\"], with keys device-only, clone-only, pure, proxiable")]
    Parse { path: String, message: String },
    #[error("the policy {path}: pattern `{pattern}` is not `module.name` (use `*` for any run of characters)")]
    Pattern { path: String, pattern: String },
}

fn matches(pattern: &str, text: &str) -> bool {
    // Glob with `*` only: each literal piece in order, the first anchored at the start and the
    // last at the end.
    let pieces: Vec<&str> = pattern.split('*').collect();
    if pieces.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

impl Policy {
    /// The built-in policy alone.
    pub fn builtin() -> Policy {
        Policy::default()
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: shown.clone(), source })?;
        Policy::parse(&text, &shown)
    }

    /// Parses policy text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse { path: origin.to_string(), message: e.to_string() })?;
        for pattern in p.device_only.iter().chain(&p.clone_only).chain(&p.pure).chain(&p.proxiable) {
            if !pattern.contains('.') || pattern.starts_with('.') {
                return Err(PolicyError::Pattern { path: origin.to_string(), pattern: pattern.clone() });
            }
        }
        Ok(p)
    }

    /// The class of import `module`.`name`: the policy's patterns first (device-only, then
    /// clone-only, pure, proxiable: the most restrictive wins), then the built-in defaults: WASI
    /// preview 1 is proxiable except the calls the clone does not serve, anything else is
    /// device-only.
    pub fn class(&self, module: &str, name: &str) -> Class {
        let full = format!("{module}.{name}");
        for (list, class) in [(&self.device_only, Class::DeviceOnly), (&self.clone_only, Class::CloneOnly), (&self.pure, Class::Pure), (&self.proxiable, Class::Proxiable)] {
            if list.iter().any(|p| matches(p, &full)) {
                return class;
            }
        }
        // The device API: the camera and the position are the device's (a clone's call is
        // proxied to it); the screen is journaled on a clone and shown at the merge.
        if clonecloud_model::device_api::is_device_api(module, name) {
            return if clonecloud_model::device_api::PROXIED.contains(&name) { Class::Device } else { Class::Proxiable };
        }
        // The clone serves every function of preview 1 and of `wasi_unstable`, or proxies it to
        // the device (`replica::clone_wasi`); a call it cannot answer exactly as the device
        // would runs on the device, at run time.
        if clonecloud_model::WASI_P1_MODULES.contains(&module) && clonecloud_model::WASI_P1_FUNCTIONS.contains(&name) {
            return Class::Proxiable;
        }
        // wasi-threads' spawn: on a clone (one thread) a call that reaches it fails and runs
        // here, and the profiler marks the functions whose calls start threads so the optimizer
        // never offers them. Statically it pins nothing: nearly every function of a threaded
        // program can reach it through an indirect call the analysis cannot resolve (the panic
        // machinery's), so pinning by it would pin them all.
        if module == "wasi" && (name == "thread-spawn" || name == "thread_spawn") {
            return Class::Proxiable;
        }
        Class::DeviceOnly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_precedence() {
        assert!(matches("env.camera_*", "env.camera_capture"));
        assert!(matches("*.sock_*", "wasi_snapshot_preview1.sock_send"));
        assert!(!matches("env.camera_*", "env.gps"));
        assert!(matches("a*b*c", "a-b-b-c"));
        assert!(!matches("ab*ba", "aba"));
        let p = Policy::parse("device-only = [\"env.*\"]\npure = [\"env.log2\"]\nclone-only = [\"gpu.*\"]", "t").unwrap();
        assert_eq!(p.class("env", "log2"), Class::DeviceOnly, "the most restrictive class wins");
        assert_eq!(p.class("gpu", "matmul"), Class::CloneOnly);
        assert_eq!(p.class("wasi_snapshot_preview1", "fd_read"), Class::Proxiable);
        assert_eq!(p.class("wasi_snapshot_preview1", "sock_recv"), Class::Proxiable, "served on the clone (or proxied)");
        assert_eq!(p.class("wasi_unstable", "poll_oneoff"), Class::Proxiable);
        assert_eq!(p.class("wasi", "thread-spawn"), Class::Proxiable, "a spawn on the clone runs here at run time");
        assert_eq!(p.class("env", "camera"), Class::DeviceOnly, "any other import stays on the device");
        assert_eq!(p.class("other", "thing"), Class::DeviceOnly);
        assert_eq!(p.class("clonecloud_device", "camera_frame"), Class::Device);
        assert_eq!(p.class("clonecloud_device", "screen_text"), Class::Proxiable, "journaled on a clone");
        assert!(matches!(Policy::parse("device_only = []", "t"), Err(PolicyError::Parse { .. })));
        assert!(matches!(Policy::parse("pure = [\"nodot\"]", "t"), Err(PolicyError::Pattern { .. })));
        assert!(matches!(Policy::parse("pure = 3", "t"), Err(PolicyError::Parse { .. })));
    }
}
