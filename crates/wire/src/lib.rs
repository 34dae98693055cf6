//! clonecloud-wire: the offloading protocol between a device and a clone, with no I/O.
//!
//! - [`message`]: what the two sides say (hello, module upload, migrate, return, proxied import
//!   calls and their answers, failure, error, goodbye), with the state that travels: arguments,
//!   results, mutable globals and memory page deltas.
//! - [`codec`]: one versioned, length-prefixed frame per message, with a maximum frame size; the
//!   decoder never panics and never allocates more than the bytes it holds.
//! - [`session`]: the device's and the clone's state machines, which say which message may come
//!   when.
//!
//! The transport (TLS, sockets, timeouts) lives elsewhere and only moves bytes, as quinn moves
//! quinn-proto's. Everything here can be tested without a socket.

pub mod codec;
pub mod message;
pub mod session;

pub use codec::{Compression, DecodeError, Decoder, encode, encode_with, from_bytes, to_bytes, to_bytes_with};
pub use message::{
    Clocks, Descriptors, Entry, EntryKind, Environment, FailKind, FdOp, FileOp, OpenFile, FileStat, Hash128, Message, PROTOCOL_VERSION, PageDelta, State, Tree,
    Value,
};
pub use session::{CloneEvent, CloneSession, DeviceEvent, DeviceSession, ProtocolError, Returned};
