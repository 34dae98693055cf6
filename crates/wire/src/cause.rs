//! Why a migration did not complete on the clone: the one cause type that the protocol core
//! decides by, and that the device's stats and logs count.

use serde::{Deserialize, Serialize};

/// Why a migration fell back to running the function on the device: the class of the failure,
/// for counting and for the runtime's decisions (a detail message goes with it). The names are
/// those of `--stats` (`fallbacks.causes`) and of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The clone could not be connected to (refused, no route, connect timeout).
    Connect,
    /// The clone's address did not resolve.
    Resolve,
    /// The clone failed to connect moments ago; not dialled again yet.
    Unreachable,
    /// The connection broke mid-migration (closed, reset) and could not be resumed.
    Link,
    /// The clone did not answer within the reply timeout.
    Timeout,
    /// The TLS handshake or record layer failed.
    Tls,
    /// A key could not be read or a peer's key did not match.
    Key,
    /// The peer sent something the protocol does not allow here.
    Protocol,
    /// The device's files could not be replicated (a file changed while it was sent).
    Files,
    /// The clone's answer could not be merged (its file changes or descriptors do not fit the
    /// device's); nothing of the guest changed.
    Merge,
    /// Something cannot migrate (a reference-typed argument, result or global).
    Unsupported,
    /// The clone could not run the call (no replica, unknown point), or the device could not
    /// serve a call the clone proxied to it.
    Unavailable,
    /// The function trapped on the clone.
    Trap,
    /// The clone hit a resource limit (memory, time).
    ResourceLimit,
    /// The function threw a wasm exception it did not catch: the device runs it, where the
    /// exception reaches its callers.
    Exception,
    /// Clones asked the same migration (`--redundant`) answered differently, or one of them
    /// could not answer: no answer is believed.
    Mismatch,
    /// A thread's migrated call read memory another thread of the device changed while it was
    /// away (or changed files while other threads used WASI): its answer is not one a local run
    /// could have given, and the call runs here.
    Conflict,
    /// The device's runtime failed (a background thread panicked).
    Internal,
}

impl Cause {
    /// Every cause, in declaration order.
    pub const ALL: [Cause; 18] = [
        Cause::Connect,
        Cause::Resolve,
        Cause::Unreachable,
        Cause::Link,
        Cause::Timeout,
        Cause::Tls,
        Cause::Key,
        Cause::Protocol,
        Cause::Files,
        Cause::Merge,
        Cause::Unsupported,
        Cause::Unavailable,
        Cause::Trap,
        Cause::ResourceLimit,
        Cause::Exception,
        Cause::Mismatch,
        Cause::Conflict,
        Cause::Internal,
    ];

    /// Its name in `--stats` and the logs.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Connect => "connect",
            Cause::Resolve => "resolve",
            Cause::Unreachable => "unreachable",
            Cause::Link => "link",
            Cause::Timeout => "timeout",
            Cause::Tls => "tls",
            Cause::Key => "key",
            Cause::Protocol => "protocol",
            Cause::Files => "files",
            Cause::Merge => "merge",
            Cause::Unsupported => "unsupported",
            Cause::Unavailable => "unavailable",
            Cause::Trap => "trap",
            Cause::ResourceLimit => "resource-limit",
            Cause::Exception => "exception",
            Cause::Mismatch => "mismatch",
            Cause::Conflict => "conflict",
            Cause::Internal => "internal",
        }
    }

    /// Whether the clone was never reached (no session was opened, so there is none to drop).
    pub fn never_connected(self) -> bool {
        matches!(self, Cause::Connect | Cause::Resolve | Cause::Unreachable)
    }

    /// Whether the link broke under a migration, which a new connection may resume.
    pub fn link_broke(self) -> bool {
        matches!(self, Cause::Link | Cause::Tls)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
