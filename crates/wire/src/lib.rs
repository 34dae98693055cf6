//! clonecloud-wire: the offloading protocol between a device and a clone, with no I/O.
//!
//! - [`message`]: what the two sides say (hello, module upload, migrate, return, proxied import
//!   calls and their answers, failure, error, goodbye), with the state that travels: arguments,
//!   results, mutable globals and memory page deltas; the file replicator's model (trees, the
//!   journal, descriptors, content hashes) is `clonecloud-files`', carried here.
//! - [`codec`]: one versioned, length-prefixed frame per message, with a maximum frame size; the
//!   decoder never panics and never allocates more than the bytes it holds.
//! - [`session`]: the device's and the clone's session state machines, which say which message
//!   may come when: migrations numbered by the device, each message of one naming it, several in
//!   flight at once up to the concurrency the clone's welcome gives (one per device thread), a
//!   resume naming every one it awaits.
//! - [`device`]: the device's side of the protocol as one state machine that owns its rules
//!   (dialling, opening, file sync, migration, proxied calls, resume and retry with a break
//!   budget and back-off, the zero-baseline rule), driven with time passed in.
//! - [`clone`]: the clone's side as one state machine that owns its rules (opening, what file
//!   contents may come, migration numbering, the answer kept for a resume, the resume window,
//!   the zero-baseline rule after a failure).
//! - [`Cause`]: why a migration fell back, as the core decides it and the stats count it.
//!
//! The transport (TLS, sockets, timeouts) lives elsewhere and only moves bytes, as quinn moves
//! quinn-proto's. Everything here can be tested without a socket.

mod cause;
pub mod clone;
pub mod codec;
pub mod device;
pub mod message;
pub mod probe;
pub mod session;

pub use cause::Cause;
pub use probe::{Link, LinkProbe, ProbeError};
pub use clone::{CloneConfig, CloneConn, CloneEvent as CloneConnEvent, Ending};
pub use device::{ConnEvent, DeviceConfig, DeviceConn};
pub use codec::{Compression, DecodeError, Decoder, encode, encode_with, from_bytes, to_bytes, to_bytes_with};
pub use message::{
    ACCESS_BITMAP, Access, PAGE_SIZE, Clocks, ContentHash, Descriptors, Entry, EntryKind, Environment, FailKind, FdOp, FileOp, FileStat, Kind, MAX_IN_FLIGHT, Message, MigrationId, OpenFile, PROTOCOL_VERSION, PageDelta, State, Tree, content_hash,
    Thrown, Value,
};
pub use session::{CloneEvent, CloneSession, DeviceEvent, DeviceSession, ProtocolError, Returned};
