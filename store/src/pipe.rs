//! A writer that hands its bytes to another thread: a layer tar is produced (files read,
//! headers encoded) on one core while its blob is hashed and written on another.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes per hand-over; a few are in flight at once, so memory stays bounded.
const CHUNK: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// Writes to `W` on a thread of its own. [`ThreadedWriter::finish`] returns `W` (or the
/// first error it met); an error also shows at the next `write`, since the thread stops.
pub(crate) struct ThreadedWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ThreadedWriter<W> {
    /// Starts the thread that writes to `inner`.
    pub(crate) fn new(inner: W) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("blob-writer".into())
            .spawn(move || drain(rx, inner))?;
        Ok(Self {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    /// Hands over what is buffered, waits for the thread and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.tx = None;
        self.join()
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: its error says why.
        self.tx = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(io::Error::other("blob writer thread stopped")),
        }
    }

    fn join(&mut self) -> io::Result<W> {
        let worker = self
            .worker
            .take()
            .ok_or_else(|| io::Error::other("blob writer thread already joined"))?;
        worker
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("blob writer thread panicked")))
    }
}

fn drain<W: Write>(rx: Receiver<Vec<u8>>, mut inner: W) -> io::Result<W> {
    for chunk in rx {
        inner.write_all(&chunk)?;
    }
    inner.flush()?;
    Ok(inner)
}

impl<W: Write + Send + 'static> Write for ThreadedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Bytes reach the inner writer in order; `finish` is the point where all have.
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ThreadedWriter<W> {
    fn drop(&mut self) {
        self.tx = None;
        if self.worker.is_some() {
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_errors_surface() {
        let mut w = ThreadedWriter::new(Vec::new()).unwrap();
        let data: Vec<u8> = (0..5 * CHUNK + 123).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(70_001) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data);

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = ThreadedWriter::new(Full).unwrap();
        let err = (0..IN_FLIGHT + 3)
            .try_for_each(|_| w.write_all(&vec![0u8; CHUNK]))
            .err()
            .or_else(|| w.finish().err())
            .expect("the inner writer's error");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    }
}
