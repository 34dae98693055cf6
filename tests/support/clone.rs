//! Clone servers for tests: key pairs made with `clonecloud keygen` and `clonecloud serve` child
//! processes, killed when dropped. Shared by test suites (`#[path]`-included).
#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

/// `clonecloud keygen --out DIR/NAME`: returns the paths of NAME.key and NAME.pub.
pub fn keygen(clonecloud: &str, dir: &Path, name: &str) -> (String, String) {
    let prefix = dir.join(name);
    let out = Command::new(clonecloud).args(["keygen", "--out"]).arg(&prefix).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (format!("{}.key", prefix.display()), format!("{}.pub", prefix.display()))
}

/// A running `clonecloud serve` and the address it listens on.
#[derive(Debug)]
pub struct Server {
    child: std::process::Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `clonecloud serve --listen LISTEN --key KEY --allow ALLOW` and waits for its address.
pub fn serve(clonecloud: &str, key: &str, allow: &Path, listen: &str) -> Server {
    let mut child = Command::new(clonecloud)
        .args(["serve", "--listen", listen, "--key", key, "--allow"])
        .arg(allow)
        .env("CLONECLOUD_LOG", "off")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("serve printed {line:?}")).to_string();
    Server { child, addr }
}
