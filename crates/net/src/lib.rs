//! clonecloud-net: the transport between devices and clones. TLS 1.3 over TCP (rustls, ring)
//! with mutual authentication by pinned keys: a device accepts only the server key it was given,
//! a server only device keys on its allow list, and the server knows a device by the key it
//! proved, never by anything the device says. Carries `clonecloud-wire` frames, nothing else:
//! there is no plaintext mode.

pub mod conn;
pub mod keys;
pub mod tls;

pub use conn::{Breaker, Connection, Incoming, Listener};
pub use keys::{AllowList, Identity, KeyParseError, PublicKey};

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    #[error("key: {0}")]
    Key(String),
    #[error("cannot resolve {addr}: {detail}")]
    Resolve { addr: String, detail: String },
    #[error("protocol: {0}")]
    Decode(clonecloud_wire::DecodeError),
    #[error("the peer closed the connection")]
    Closed,
}

impl NetError {
    pub fn io(what: String, source: std::io::Error) -> NetError {
        NetError::Io { what, source }
    }
}
