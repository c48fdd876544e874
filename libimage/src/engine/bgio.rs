//! Reading or writing a stream on a second thread.
//!
//! A backup reads the image and checksums what it reads on one thread; the
//! `write(2)`s of the archive (on tmpfs: the kernel copying every byte into
//! the page cache) took as long again on the same thread. A restore is the
//! mirror image: reading the archive, then parsing it and writing the image.
//! [`BgWriter`] gathers an output stream in [`CHUNK`]-byte buffers and hands
//! each full one to a writer thread; [`BgReader`] has a reader thread fill
//! buffers ahead of the consumer. Either way the two halves overlap.
//! [`BUFFERS`] buffers circulate: memory does not grow with the stream, and
//! the faster side waits for the slower one instead of queueing.

use std::io::{self, Read, Write};
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

/// A [`Read`] whose bytes a reader thread owning `R` reads ahead, up to a
/// [`CHUNK`] at a time. A read error is returned where it occurred in the
/// stream (after every byte before it).
pub struct BgReader {
    /// The chunk being consumed, and how much of it is consumed.
    cur: Vec<u8>,
    at: usize,
    /// Filled chunks (or the error that ended the stream); an empty chunk is
    /// the end of the stream.
    filled: Receiver<io::Result<Vec<u8>>>,
    /// Consumed buffers back to the reader thread.
    empty: Option<SyncSender<Vec<u8>>>,
    done: bool,
    /// Detached on drop.
    thread: Option<JoinHandle<()>>,
}

impl BgReader {
    pub fn new<R: Read + Send + 'static>(mut input: R) -> io::Result<Self> {
        let (filled_tx, filled_rx) = sync_channel::<io::Result<Vec<u8>>>(BUFFERS);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(BUFFERS);
        for _ in 1..BUFFERS {
            // Cannot fail: the channel holds BUFFERS and the receiver lives.
            let _ = empty_tx.send(Vec::new());
        }
        let thread = std::thread::Builder::new().name("archive-reader".into()).spawn(move || {
            // Stops when the consumer is gone (its ends of the channels dropped).
            while let Ok(mut buf) = empty_rx.recv() {
                buf.resize(CHUNK, 0);
                // One read per chunk: a pipe delivers what it has (a writer
                // may stall half-way), a file a whole chunk.
                let r = loop {
                    match input.read(&mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        r => break r,
                    }
                };
                match r {
                    Ok(n) => {
                        // An empty chunk is the end of the stream.
                        buf.truncate(n);
                        if filled_tx.send(Ok(buf)).is_err() || n == 0 {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = filled_tx.send(Err(e));
                        return;
                    }
                }
            }
        })?;
        Ok(BgReader {
            cur: Vec::new(),
            at: 0,
            filled: filled_rx,
            empty: Some(empty_tx),
            done: false,
            thread: Some(thread),
        })
    }
}

impl Read for BgReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            let next = match self.filled.recv() {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the archive reader thread stopped"));
                }
            };
            if next.is_empty() {
                self.done = true;
                return Ok(0);
            }
            let used = std::mem::replace(&mut self.cur, next);
            self.at = 0;
            if let Some(tx) = &self.empty {
                let _ = tx.send(used);
            }
        }
        let n = out.len().min(self.cur.len() - self.at);
        out[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for BgReader {
    fn drop(&mut self) {
        // Closing both channels ends the thread at its next send or receive.
        // It is not joined: it may be blocked reading a pipe whose writer
        // stalls, and an error path must not wait for that.
        self.empty = None;
        let (_, dead) = sync_channel(0);
        self.filled = dead;
        drop(self.thread.take());
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

    #[test]
    fn reads_every_byte_in_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut r = BgReader::new(io::Cursor::new(data.clone())).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 777];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(r.read(&mut buf).unwrap(), 0, "stays at the end");
    }

    struct FailingReader(usize);
    impl Read for FailingReader {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("bad sector"));
            }
            let n = b.len().min(self.0);
            b[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_comes_after_the_bytes_before_it() {
        let mut r = BgReader::new(FailingReader(CHUNK + 10)).unwrap();
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(e.to_string(), "bad sector");
        assert_eq!(got.len(), CHUNK + 10);
    }

    #[test]
    fn dropping_early_stops_the_thread() {
        let r = BgReader::new(io::repeat(5)).unwrap();
        drop(r);
    }
}
