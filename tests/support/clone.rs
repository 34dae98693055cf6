//! Clone servers for tests, through clonecloud-harness (`keygen`, `ServeChild`), with paths as
//! strings and failures as panics. Shared by test suites (`#[path]`-included).
#![allow(dead_code)]

use std::path::Path;

/// `clonecloud keygen --out DIR/NAME`: returns the paths of NAME.key and NAME.pub.
pub fn keygen(clonecloud: &str, dir: &Path, name: &str) -> (String, String) {
    let (key, public) = clonecloud_harness::keygen(clonecloud.as_ref(), dir, name).unwrap();
    (key.display().to_string(), public.display().to_string())
}

/// A running `clonecloud serve` (killed when dropped) and the address it listens on.
pub type Server = clonecloud_harness::ServeChild;

/// Starts `clonecloud serve --listen LISTEN --key KEY --allow ALLOW` and waits for its address.
pub fn serve(clonecloud: &str, key: &str, allow: &Path, listen: &str) -> Server {
    clonecloud_harness::ServeChild::start(clonecloud.as_ref(), key.as_ref(), allow, listen).unwrap()
}
