//! The guest's stdin on an offloading device: the process's stdin, read exactly as far as the
//! guest asks (no read-ahead), with a journal of what proxied reads consumed during a migration.
//! If the migration is abandoned, [`Stdin::rewind`] puts those bytes back in front, so the local
//! re-run reads them again: a proxied stdin read keeps the guarantee that an aborted migration
//! changes nothing.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

/// The most one read takes from the process's stdin.
const CHUNK: usize = 64 << 10;

#[derive(Debug, Default)]
struct Inner {
    /// Bytes put back, read before anything new.
    pushback: VecDeque<u8>,
    /// What reads consumed since [`Stdin::record`], while recording.
    journal: Option<Vec<u8>>,
    closed: bool,
}

/// A rewindable stdin (cheap to clone: clones share it).
#[derive(Debug, Clone, Default)]
pub struct Stdin(Arc<Mutex<Inner>>);

impl Stdin {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a journal of what is read (a no-op while one is kept).
    pub fn record(&self) {
        let mut i = self.inner();
        if i.journal.is_none() {
            i.journal = Some(Vec::new());
        }
    }

    /// The migration committed: what was read stays read.
    pub fn commit(&self) {
        self.inner().journal = None;
    }

    /// The migration was abandoned: what was read since [`Stdin::record`] is read again next.
    pub fn rewind(&self) {
        let mut i = self.inner();
        if let Some(j) = i.journal.take() {
            for b in j.into_iter().rev() {
                i.pushback.push_front(b);
            }
        }
    }

    fn read(&self, size: usize) -> StreamResult<Bytes> {
        let mut i = self.inner();
        let mut out = Vec::new();
        if !i.pushback.is_empty() {
            let n = size.min(i.pushback.len());
            out.extend(i.pushback.drain(..n));
        } else if !i.closed && size > 0 {
            // Blocking, like a read of a terminal or pipe: the guest asked for input.
            out.resize(size.min(CHUNK), 0);
            match std::io::stdin().lock().read(&mut out) {
                Ok(0) => {
                    i.closed = true;
                    return Err(StreamError::Closed);
                }
                Ok(n) => out.truncate(n),
                Err(e) => return Err(StreamError::LastOperationFailed(e.into())),
            }
        } else if i.closed {
            return Err(StreamError::Closed);
        }
        if let Some(j) = &mut i.journal {
            j.extend_from_slice(&out);
        }
        Ok(Bytes::from(out))
    }
}

impl IsTerminal for Stdin {
    fn is_terminal(&self) -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stdin())
    }
}

impl StdinStream for Stdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(Stream(self.clone()))
    }

    /// Used only by WASI 0.3 guests; this runner runs preview 1 modules, which read through
    /// [`StdinStream::p2_stream`].
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(Bytes::new()))
    }
}

struct Stream(Stdin);

#[wasmtime_wasi::async_trait]
impl Pollable for Stream {
    /// Always ready: a read blocks until input comes, as preview 1's `fd_read` does.
    async fn ready(&mut self) {}
}

impl InputStream for Stream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.0.read(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewound_bytes_come_back_first_and_committed_ones_do_not() {
        let s = Stdin::default();
        s.inner().pushback.extend(b"hello world");
        s.record();
        assert_eq!(&s.read(5).unwrap()[..], b"hello");
        s.rewind();
        assert_eq!(&s.read(8).unwrap()[..], b"hello wo");
        s.record();
        assert_eq!(&s.read(2).unwrap()[..], b"rl");
        s.commit();
        s.rewind();
        assert_eq!(&s.read(10).unwrap()[..], b"d");
    }
}
