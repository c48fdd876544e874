//! Large encrypted files, pipelined over two threads.
//!
//! Reading, encrypting and writing one after the other leaves one core
//! idle while the other does everything. For a file of at least
//! [`MIN_SIZE`] bytes the calling thread reads a chunk and writes the chunk
//! before it, while a worker thread checks the next one for zero blocks and
//! encrypts it in place; the write then goes straight from that buffer (no
//! copy into the write queue). [`BUFFERS`] buffers of [`CHUNK`] bytes
//! circulate, so memory does not grow with the file. The source is read,
//! blocks are allocated and the image is written in the same order as on
//! one thread, so the image is byte-for-byte the same.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use fscrypt::XtsKey;

use super::{next_piece, zero_flags, FileData, Placed, Writer};
use crate::extent::Extent;
use crate::{Error, Result, BLOCK_SIZE};

/// Files of at least this many bytes are pipelined; smaller ones go the
/// one-thread way (a thread hand-off per file would cost more than it saves
/// on the many small files of a source tree).
pub(super) const MIN_SIZE: u64 = 4 << 20;
/// Bytes read, encrypted and written at a time: small enough to stay in the
/// caches between the read, the encryption and the write.
const CHUNK: usize = 1 << 20;
/// Buffers in flight: one being read or written, one being encrypted, one
/// spare so that neither thread waits on a short stall of the other.
const BUFFERS: usize = 3;

/// A piece of a file on its way through the pipeline.
pub(super) struct Chunk {
    buf: Vec<u8>,
    /// Logical block of `buf[0]`.
    lblk0: u64,
    /// Bytes of `buf` in use (whole blocks).
    len: usize,
    /// Per block: all zeros (a hole; not encrypted, not written).
    zero: Vec<bool>,
}

impl Writer {
    /// [`Writer::write_contents`] for a large encrypted file; see the module
    /// documentation.
    pub(super) fn write_pipelined(&mut self, key: &XtsKey, size: u64, content: &mut dyn FileData) -> Result<(Vec<Extent>, u64)> {
        // Blocks still queued go out first (the queue is not used below).
        self.flush()?;
        let mut free: Vec<Chunk> = std::mem::take(&mut self.chunks);
        while free.len() < BUFFERS {
            free.push(Chunk {
                buf: vec![0u8; CHUNK],
                lblk0: 0,
                len: 0,
                zero: Vec::with_capacity(CHUNK / BLOCK_SIZE),
            });
        }
        let mut placed = Placed::default();
        let r = std::thread::scope(|s| {
            let (to_worker, work) = sync_channel::<Chunk>(BUFFERS);
            let (worker_done, done) = sync_channel::<Chunk>(BUFFERS);
            s.spawn(move || encrypt_worker(key, work, worker_done));
            let r = self.feed(size, content, &mut free, &mut placed, &to_worker, &done);
            // Closing the channel stops the worker; collect the buffers it
            // still holds (on an error, without writing them).
            drop(to_worker);
            free.extend(done.iter());
            r
        });
        self.chunks = free;
        r.map(|()| (placed.extents, placed.blocks))
    }

    /// The calling thread's side: reads chunks into free buffers and hands
    /// them to the worker, places and writes the chunks it gets back, in
    /// order.
    fn feed(
        &mut self,
        size: u64,
        content: &mut dyn FileData,
        free: &mut Vec<Chunk>,
        placed: &mut Placed,
        to_worker: &SyncSender<Chunk>,
        done: &Receiver<Chunk>,
    ) -> Result<()> {
        let stopped = || Error::Invalid("the encryption thread stopped".into());
        let mut in_flight = 0usize;
        let mut pos = 0u64;
        loop {
            let mut c = match free.pop() {
                Some(c) => c,
                None => {
                    let c = done.recv().map_err(|_| stopped())?;
                    in_flight -= 1;
                    self.place(placed, c.lblk0, &c.buf[..c.len], &c.zero, true)?;
                    c
                }
            };
            match next_piece(content, size, &mut pos, &mut c.buf) {
                Ok(Some((lblk0, len))) => {
                    c.lblk0 = lblk0;
                    c.len = len;
                    to_worker.send(c).map_err(|_| stopped())?;
                    in_flight += 1;
                }
                Ok(None) => {
                    free.push(c);
                    break;
                }
                Err(e) => {
                    free.push(c);
                    return Err(e);
                }
            }
        }
        while in_flight > 0 {
            let c = done.recv().map_err(|_| stopped())?;
            in_flight -= 1;
            let r = self.place(placed, c.lblk0, &c.buf[..c.len], &c.zero, true);
            free.push(c);
            r?;
        }
        Ok(())
    }
}

/// The worker: marks the zero blocks of each chunk (holes are decided on
/// the plaintext) and encrypts the others in place, tweak = logical block.
fn encrypt_worker(key: &XtsKey, work: Receiver<Chunk>, done: SyncSender<Chunk>) {
    for mut c in work {
        let data = &mut c.buf[..c.len];
        zero_flags(data, &mut c.zero);
        let mut i = 0;
        while i < c.zero.len() {
            if c.zero[i] {
                i += 1;
                continue;
            }
            let j = c.zero[i..].iter().position(|&z| z).map_or(c.zero.len(), |k| i + k);
            key.encrypt_units(c.lblk0 + i as u64, BLOCK_SIZE, &mut data[i * BLOCK_SIZE..j * BLOCK_SIZE]);
            i = j;
        }
        if done.send(c).is_err() {
            return;
        }
    }
}
