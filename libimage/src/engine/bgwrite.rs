//! Writing an output stream on a second thread.
//!
//! A backup reads the image and checksums what it reads on one thread; the
//! `write(2)`s of the archive (on tmpfs: the kernel copying every byte into
//! the page cache) took as long again on the same thread. [`BgWriter`]
//! gathers the stream in [`CHUNK`]-byte buffers and hands each full one to a
//! writer thread, so reading and writing overlap. [`BUFFERS`] buffers
//! circulate: memory does not grow with the stream, and a slow output makes
//! the producer wait instead of queueing.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes per hand-over.
pub const CHUNK: usize = 1 << 20;
/// Buffers in circulation (one being filled, the rest queued or written).
pub const BUFFERS: usize = 4;

/// A [`Write`] that passes full chunks to a writer thread owning `W`.
/// [`finish`](BgWriter::finish) flushes, joins the thread and returns `W`
/// (or the first write error). Dropping it without `finish` stops the
/// thread after what was handed over.
pub struct BgWriter<W: Write + Send + 'static> {
    cur: Vec<u8>,
    /// Full buffers to the writer; `None` once finished.
    full: Option<SyncSender<Vec<u8>>>,
    /// Buffers back from the writer, emptied.
    empty: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> BgWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(BUFFERS);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(BUFFERS);
        for _ in 1..BUFFERS {
            // Cannot fail: the channel holds BUFFERS and the receiver lives.
            let _ = empty_tx.send(Vec::with_capacity(CHUNK));
        }
        let thread = std::thread::Builder::new().name("archive-writer".into()).spawn(move || {
            for mut buf in full_rx {
                out.write_all(&buf)?;
                buf.clear();
                // The producer may be gone (finished or dropped): no reuse then.
                let _ = empty_tx.send(buf);
            }
            out.flush()?;
            Ok(out)
        })?;
        Ok(BgWriter {
            cur: Vec::with_capacity(CHUNK),
            full: Some(full_tx),
            empty: empty_rx,
            thread: Some(thread),
        })
    }

    /// The writer thread's error, once it has stopped (it stops only on one).
    fn thread_error(&mut self) -> io::Error {
        self.full = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the archive writer thread panicked"),
            _ => io::Error::other("the archive writer thread stopped"),
        }
    }

    /// Hands the current buffer over and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        let Some(tx) = &self.full else {
            return Err(io::Error::other("write after finish"));
        };
        let next = match self.empty.recv() {
            Ok(b) => b,
            Err(_) => return Err(self.thread_error()),
        };
        let full = std::mem::replace(&mut self.cur, next);
        if tx.send(full).is_err() {
            return Err(self.thread_error());
        }
        Ok(())
    }

    /// Writes what is left, waits for the writer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.cur.is_empty() {
            let Some(tx) = &self.full else {
                return Err(io::Error::other("write after finish"));
            };
            if tx.send(std::mem::take(&mut self.cur)).is_err() {
                return Err(self.thread_error());
            }
        }
        self.full = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the archive writer thread panicked")),
            None => Err(io::Error::other("the archive writer thread stopped")),
        }
    }
}

impl<W: Write + Send + 'static> Write for BgWriter<W> {
    fn write(&mut self, mut b: &[u8]) -> io::Result<usize> {
        let n = b.len();
        while !b.is_empty() {
            let room = CHUNK - self.cur.len();
            let k = room.min(b.len());
            self.cur.extend_from_slice(&b[..k]);
            b = &b[k..];
            if self.cur.len() == CHUNK {
                self.hand_over()?;
            }
        }
        Ok(n)
    }

    /// Buffers stay queued: the data reaches `W` by [`finish`](BgWriter::finish).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for BgWriter<W> {
    fn drop(&mut self) {
        self.full = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_byte_in_order() {
        let mut w = BgWriter::new(Vec::new()).unwrap();
        let mut want = Vec::new();
        for i in 0..5000u32 {
            let piece: Vec<u8> = (0..(i % 3001)).map(|j| (i ^ j) as u8).collect();
            w.write_all(&piece).unwrap();
            want.extend_from_slice(&piece);
        }
        w.write_all(&vec![7u8; 3 * CHUNK + 5]).unwrap();
        want.extend_from_slice(&vec![7u8; 3 * CHUNK + 5]);
        assert_eq!(w.finish().unwrap(), want);
    }

    struct Failing(usize);
    impl Write for Failing {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_comes_back_without_hanging() {
        let mut w = BgWriter::new(Failing(2)).unwrap();
        let chunk = vec![1u8; CHUNK];
        let mut err = None;
        for _ in 0..20 {
            if let Err(e) = w.write_all(&chunk) {
                err = Some(e);
                break;
            }
        }
        let e = match err {
            Some(e) => e,
            None => w.finish().err().expect("the error is reported at the latest by finish"),
        };
        assert_eq!(e.to_string(), "disk full");
    }
}
