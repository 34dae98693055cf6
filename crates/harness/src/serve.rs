//! Clone servers as child processes, and their keys.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A `clonecloud serve` child process (for a harness or a test that puts a link emulator or a
/// proxy in front of it); killed when dropped.
#[derive(Debug)]
pub struct ServeChild {
    pub child: std::process::Child,
    /// Where it listens (from its first line, `listening on ADDR`).
    pub addr: String,
}

impl ServeChild {
    /// Spawns `cmd` (a `clonecloud serve` command; its stdout is piped here) and waits for the
    /// address it prints.
    pub fn spawn(mut cmd: Command) -> io::Result<ServeChild> {
        use std::io::BufRead;
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
        let mut line = String::new();
        let read = io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        match (read, line.trim().strip_prefix("listening on ")) {
            (Ok(_), Some(addr)) => Ok(ServeChild { child, addr: addr.to_string() }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io::Error::other("the clone server exited before saying where it listens"))
            }
        }
    }

    /// `clonecloud serve --listen LISTEN --key KEY --allow ALLOW`, logging nothing.
    pub fn start(clonecloud: &Path, key: &Path, allow: &Path, listen: &str) -> io::Result<ServeChild> {
        let mut cmd = Command::new(clonecloud);
        cmd.args(["serve", "--listen", listen, "--key"]).arg(key).arg("--allow").arg(allow).env("CLONECLOUD_LOG", "off");
        ServeChild::spawn(cmd)
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `clonecloud keygen --out DIR/NAME`: the paths of NAME.key and NAME.pub.
pub fn keygen(clonecloud: &Path, dir: &Path, name: &str) -> io::Result<(PathBuf, PathBuf)> {
    let prefix = dir.join(name);
    let out = Command::new(clonecloud).args(["keygen", "--out"]).arg(&prefix).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("clonecloud keygen failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok((dir.join(format!("{name}.key")), dir.join(format!("{name}.pub"))))
}
