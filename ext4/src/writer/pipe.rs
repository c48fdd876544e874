//! Large encrypted files, on two threads.
//!
//! Reading, encrypting and writing one after the other keeps one core busy
//! and leaves the other idle. For a file of at least [`MIN_SIZE`] bytes the
//! calling thread reads the file a chunk at a time (the source is not
//! `Send`), marks the all-zero blocks (they stay holes, decided on the
//! plaintext) and allocates the other blocks, in file order, so the image is
//! byte-for-byte the one a single thread makes. Each chunk is then queued
//! for a worker thread, the only one to write the image (two threads
//! writing one tmpfs file spin on its inode lock: 10 % of the CPU time in
//! `rwsem_spin_on_owner` when both did), straight from the chunk's buffer
//! (no copy into the write queue). Encryption, in place, is done by
//! whichever thread is free: the worker encrypts what it dequeues unless
//! the caller already did, and the caller encrypts a chunk itself when
//! chunks are already waiting for the worker or when it has no free buffer
//! to read into. [`BUFFERS`] buffers of [`CHUNK`] bytes circulate: memory
//! does not grow with the file.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use fscrypt::XtsKey;

use super::{allocate, next_piece, write_image_at, zero_flags, FileData, Placed, Writer};
use crate::extent::Extent;
use crate::{Error, Result, BLOCK_SIZE, BLOCK_SIZE_U64};

/// Bytes per chunk. Measured on one 1 GiB file (2 cores): 128 KiB to
/// 2 MiB chunks take the same time; 1 MiB stays in the caches between the
/// read, the encryption and the write.
const CHUNK: usize = 1 << 20;
/// Chunks in flight. With 2 the threads wait on each other (0.54 s instead
/// of 0.40 s for 1 GiB); 8 is no faster than 4.
const BUFFERS: usize = 4;
/// Files of at least this many bytes (two chunks) go through the pipeline;
/// smaller ones the one-thread way, where a tree's many small files share
/// large writes and no thread is started per file.
pub(super) const MIN_SIZE: u64 = 2 * CHUNK as u64;

/// A piece of a file on its way through the pipeline.
pub(super) struct Chunk {
    buf: Vec<u8>,
    /// Logical block of `buf[0]`.
    lblk0: u64,
    /// Per block of the piece: all zeros (a hole: not encrypted, not written).
    zero: Vec<bool>,
    /// Physically contiguous runs to write: (first block in `buf`, first
    /// physical block, blocks).
    runs: Vec<(usize, u64, usize)>,
    /// The runs are encrypted.
    encrypted: bool,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            buf: vec![0u8; CHUNK],
            lblk0: 0,
            zero: Vec::with_capacity(CHUNK / BLOCK_SIZE),
            runs: Vec::new(),
            encrypted: false,
        }
    }

    /// Encrypts the blocks to be written, in place (tweak = logical block).
    fn encrypt(&mut self, key: &XtsKey) {
        if !self.encrypted {
            for &(i, _, n) in &self.runs {
                key.encrypt_units(
                    self.lblk0 + i as u64,
                    BLOCK_SIZE,
                    &mut self.buf[i * BLOCK_SIZE..(i + n) * BLOCK_SIZE],
                );
            }
            self.encrypted = true;
        }
    }

    /// Writes the (encrypted) runs.
    fn write(&self, file: &File) -> Result<()> {
        for &(i, pblk, n) in &self.runs {
            write_image_at(file, pblk * BLOCK_SIZE_U64, &self.buf[i * BLOCK_SIZE..(i + n) * BLOCK_SIZE])?;
        }
        Ok(())
    }
}

/// Chunks waiting for the worker, and whether more may come.
struct Jobs {
    state: Mutex<(VecDeque<Chunk>, bool)>,
    ready: Condvar,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, (VecDeque<Chunk>, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, c: Chunk) {
        self.lock().0.push_back(c);
        self.ready.notify_one();
    }

    /// Whether a chunk is waiting for the worker.
    fn waiting(&self) -> bool {
        !self.lock().0.is_empty()
    }

    /// Takes the last queued chunk that is not encrypted yet (the worker
    /// takes them from the front), to encrypt it on the calling thread.
    fn take_unencrypted(&self) -> Option<Chunk> {
        let mut g = self.lock();
        let i = g.0.iter().rposition(|c| !c.encrypted)?;
        g.0.remove(i)
    }

    /// The next chunk; None once closed.
    fn wait_pop(&self) -> Option<Chunk> {
        let mut g = self.lock();
        loop {
            if g.1 {
                return None;
            }
            if let Some(c) = g.0.pop_front() {
                return Some(c);
            }
            g = self.ready.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// No more chunks; those still waiting are dropped.
    fn close(&self) {
        let mut g = self.lock();
        g.0.clear();
        g.1 = true;
        self.ready.notify_all();
    }
}

impl Writer {
    /// [`Writer::write_contents`] for a large encrypted file; see the module
    /// documentation.
    pub(super) fn write_pipelined(&mut self, key: &XtsKey, size: u64, content: &mut dyn FileData) -> Result<(Vec<Extent>, u64)> {
        // Blocks still queued go out first (the queue is not used below).
        self.flush()?;
        let mut free = std::mem::take(&mut self.chunks);
        while free.len() < BUFFERS {
            free.push(Chunk::new());
        }
        let mut placed = Placed::default();
        let jobs = Jobs {
            state: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
        };
        let (file, alloc) = (&self.file, &mut self.alloc);
        let r = std::thread::scope(|s| {
            let (back, returned) = channel::<(Chunk, Result<()>)>();
            let jobs = &jobs;
            s.spawn(move || worker(key, file, jobs, back));
            // Stops the worker however this closure ends (the scope then
            // waits for it).
            let _close = CloseOnDrop(jobs);
            let mut feed = Feed {
                key,
                jobs,
                returned,
                free: &mut free,
                out: 0,
            };
            feed.run(size, content, |c: &mut Chunk, lblk0, len| {
                c.lblk0 = lblk0;
                c.encrypted = false;
                zero_flags(&c.buf[..len], &mut c.zero);
                allocate(alloc, &mut placed, lblk0, &c.zero, &mut c.runs)
            })
        });
        self.chunks = free;
        r.map(|()| (placed.extents, placed.blocks))
    }
}

/// The calling thread's side of the pipeline.
struct Feed<'a> {
    key: &'a XtsKey,
    jobs: &'a Jobs,
    returned: Receiver<(Chunk, Result<()>)>,
    free: &'a mut Vec<Chunk>,
    /// Chunks queued or with the worker.
    out: usize,
}

impl Feed<'_> {
    /// Reads `size` bytes of `content` chunk by chunk; `prepare` marks and
    /// allocates each chunk's blocks (logical block, bytes) before it is
    /// queued.
    fn run(&mut self, size: u64, content: &mut dyn FileData, mut prepare: impl FnMut(&mut Chunk, u64, usize) -> Result<()>) -> Result<()> {
        let mut pos = 0u64;
        loop {
            let mut c = self.buffer()?;
            let prepared = match next_piece(content, size, &mut pos, &mut c.buf) {
                Ok(Some((lblk0, len))) => prepare(&mut c, lblk0, len).map(|()| true),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            match prepared {
                Ok(true) => {}
                Ok(false) => {
                    self.free.push(c);
                    break;
                }
                Err(e) => {
                    self.free.push(c);
                    return Err(e);
                }
            }
            if c.runs.is_empty() {
                self.free.push(c);
                continue;
            }
            // The worker is behind: encrypt this one here, while it is in
            // this core's cache.
            if self.jobs.waiting() {
                c.encrypt(self.key);
            }
            self.jobs.push(c);
            self.out += 1;
        }
        while self.out > 0 {
            let (c, r) = self.next_returned()?;
            self.free.push(c);
            r?;
        }
        Ok(())
    }

    /// A free buffer: a spare one or one the worker is done with.
    fn buffer(&mut self) -> Result<Chunk> {
        if let Some(c) = self.free.pop() {
            return Ok(c);
        }
        let (c, r) = self.next_returned()?;
        match r {
            Ok(()) => Ok(c),
            Err(e) => {
                self.free.push(c);
                Err(e)
            }
        }
    }

    /// The next chunk the worker is done with (and its write's result);
    /// while waiting for it, encrypts queued chunks the worker has not
    /// reached.
    fn next_returned(&mut self) -> Result<(Chunk, Result<()>)> {
        let x = loop {
            match self.returned.try_recv() {
                Ok(x) => break x,
                Err(TryRecvError::Disconnected) => return Err(stopped()),
                Err(TryRecvError::Empty) => match self.jobs.take_unencrypted() {
                    Some(mut c) => {
                        c.encrypt(self.key);
                        self.jobs.push(c);
                    }
                    None => break self.returned.recv().map_err(|_| stopped())?,
                },
            }
        };
        self.out -= 1;
        Ok(x)
    }
}

/// Closes the job queue when dropped.
struct CloseOnDrop<'a>(&'a Jobs);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn stopped() -> Error {
    Error::Invalid("the encryption thread stopped".into())
}

/// The worker: encrypts (unless done already) and writes chunks until the
/// queue is closed; the only thread writing the image meanwhile.
fn worker(key: &XtsKey, file: &File, jobs: &Jobs, back: Sender<(Chunk, Result<()>)>) {
    while let Some(mut c) = jobs.wait_pop() {
        c.encrypt(key);
        let r = c.write(file);
        if back.send((c, r)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use super::*;
    use crate::writer::{Attrs, Options, Run};
    use crate::ROOT_INO;

    /// File contents: `data`, whose byte ranges `holes` (zeros) the source
    /// reports as holes (they read as zeros, as a tar sparse map's gaps);
    /// reading at or past `fail_at` is an I/O error.
    struct Src {
        data: Vec<u8>,
        holes: Vec<(u64, u64)>,
        pos: u64,
        fail_at: u64,
    }

    impl Src {
        fn new(mut data: Vec<u8>, holes: Vec<(u64, u64)>) -> Src {
            for &(a, b) in &holes {
                data[a as usize..b as usize].fill(0);
            }
            Src {
                data,
                holes,
                pos: 0,
                fail_at: u64::MAX,
            }
        }
    }

    impl Read for Src {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.fail_at {
                return Err(io::Error::other("the source failed"));
            }
            let end = (self.data.len() as u64).min(self.fail_at);
            let n = buf.len().min((end - self.pos) as usize);
            buf[..n].copy_from_slice(&self.data[self.pos as usize..self.pos as usize + n]);
            self.pos += n as u64;
            Ok(n)
        }
    }

    impl FileData for Src {
        fn run(&mut self) -> io::Result<Run> {
            let len = self.data.len() as u64;
            if let Some(&(_, b)) = self.holes.iter().find(|&&(a, b)| a <= self.pos && self.pos < b) {
                return Ok(Run::Hole { end: b.min(len) });
            }
            let stop = self.holes.iter().map(|&(a, _)| a).filter(|&a| a > self.pos).min().unwrap_or(len);
            Ok(Run::Data { end: stop.min(len) })
        }

        fn skip_hole(&mut self, to: u64) -> io::Result<()> {
            let run = self.run()?;
            filedata::skip_in_hole(run, &mut self.pos, to)
        }
    }

    /// `n` bytes of xorshift noise (no zero block by chance).
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn writer(file: File, serial: bool) -> Writer {
        let opts = Options {
            blocks: 8192,
            inodes: 64,
            journal: false,
            encrypt: true,
            uuid: [0x42; 16],
            hash_seed: [7; 16],
            now: 1_700_000_000,
        };
        let mut w = Writer::new(file, opts).unwrap();
        w.serial = serial;
        w
    }

    fn attrs() -> Attrs {
        Attrs {
            mode: 0o644,
            ..Default::default()
        }
    }

    const B: usize = BLOCK_SIZE;

    /// Files meant to catch every edge of the pipeline: zero blocks across
    /// a chunk boundary, a whole zero chunk, a partial last block, source
    /// holes ending inside a block, an all-zero file, a file of exactly
    /// [`MIN_SIZE`] bytes.
    fn sources() -> Vec<(&'static [u8], Src)> {
        let mut a = noise(5 * CHUNK + 1234, 1);
        a[..B].fill(0);
        a[CHUNK - B..CHUNK + 2 * B].fill(0);
        a[2 * CHUNK..3 * CHUNK].fill(0);
        let b = noise(6 * CHUNK + 100, 2);
        let holes = vec![
            (CHUNK as u64 + 512, 3 * CHUNK as u64 + 100),
            (5 * CHUNK as u64, 5 * CHUNK as u64 + 3 * B as u64),
        ];
        vec![
            (b"a", Src::new(a, vec![])),
            (b"b", Src::new(b, holes)),
            (b"zeros", Src::new(vec![0u8; 3 * CHUNK], vec![])),
            (b"exact", Src::new(noise(MIN_SIZE as usize, 3), vec![])),
        ]
    }

    fn build(serial: bool, key: &XtsKey) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.img");
        let mut w = writer(File::create(&path).unwrap(), serial);
        for (name, mut src) in sources() {
            let size = src.data.len() as u64;
            w.file(ROOT_INO, name, attrs(), Some(([9; 40], key)), size, &mut src).unwrap();
        }
        assert!(w.chunks.len() <= BUFFERS);
        w.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn the_pipeline_writes_the_one_thread_image() {
        let key = XtsKey::from_bytes(&[5; 64]);
        let two = build(false, &key);
        let one = build(true, &key);
        assert!(one == two, "the pipelined image differs from the one-thread image");
        // And the data is encrypted: no plaintext block of file a is in it.
        let a = noise(5 * CHUNK + 1234, 1);
        let probe = &a[3 * CHUNK..3 * CHUNK + B];
        assert!(!two.chunks_exact(B).any(|blk| blk == probe));
        // File a's blocks: 5 chunks + 1 block, minus 1 + 3 + 256 zero blocks.
        let stats_blocks = two.chunks_exact(B).filter(|blk| blk.iter().any(|&x| x != 0)).count();
        assert!(stats_blocks > 5 * CHUNK / B, "{stats_blocks} non-zero blocks");
    }

    #[test]
    fn a_read_error_stops_the_pipeline_and_is_returned() {
        let key = XtsKey::from_bytes(&[5; 64]);
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(File::create(dir.path().join("i.img")).unwrap(), false);
        for fail_at in [0, 5, 3 * CHUNK as u64 + 7, 7 * CHUNK as u64] {
            let mut src = Src::new(noise(8 * CHUNK, 4), vec![]);
            src.fail_at = fail_at;
            let err = w
                .file(ROOT_INO, b"f", attrs(), Some(([9; 40], &key)), 8 * CHUNK as u64, &mut src)
                .unwrap_err();
            match err {
                Error::Io { context, source } => {
                    assert!(context.contains("reading file contents"), "{context}");
                    assert_eq!(source.to_string(), "the source failed");
                }
                other => panic!("unexpected error {other:?}"),
            }
            assert!(w.chunks.len() <= BUFFERS);
        }
        // The writer still works: a short source is an error too, then a good file.
        let mut short = Src::new(noise(3 * CHUNK, 5), vec![]);
        let err = w
            .file(ROOT_INO, b"g", attrs(), Some(([9; 40], &key)), 4 * CHUNK as u64, &mut short)
            .unwrap_err();
        assert!(
            matches!(err, Error::Io { ref source, .. } if source.kind() == io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
        let mut good = Src::new(noise(3 * CHUNK, 6), vec![]);
        w.file(ROOT_INO, b"h", attrs(), Some(([9; 40], &key)), 3 * CHUNK as u64, &mut good)
            .unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn a_write_error_stops_the_pipeline_and_is_returned() {
        let key = XtsKey::from_bytes(&[5; 64]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.img");
        File::create(&path).unwrap();
        // Opened read-only: every write fails.
        let mut w = writer(File::open(&path).unwrap(), false);
        let mut src = Src::new(noise(6 * CHUNK, 7), vec![]);
        let err = w
            .file(ROOT_INO, b"f", attrs(), Some(([9; 40], &key)), 6 * CHUNK as u64, &mut src)
            .unwrap_err();
        match err {
            Error::Io { context, .. } => assert!(context.starts_with("writing the ext4 image at byte "), "{context}"),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(w.chunks.len() <= BUFFERS);
    }
}
