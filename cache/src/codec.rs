//! The layer compression codec: a compressor per [`Encoding`], fed in fixed-size blocks so
//! the bytes never depend on how the tar writer's writes happen to be cut, and parallel gzips
//! whose bytes do not depend on the number of threads.
//!
//! The default gzip ([`Encoding::GZIP`]) cuts the tar into 1-4 MiB blocks where the bytes say
//! (a gear hash, `member_cut`) and compresses each into a gzip member of its own with
//! libdeflate, on every core (a member compressed before is reused, [`MemberCache`]). The
//! members follow each other in order, which RFC 1952 reads as one stream (Go's `gzip.Reader`,
//! used by containerd, docker, skopeo and podman, zlib's `gunzip`, and kiln's own reader;
//! eStargz layers are made the same way). libdeflate level 5 over these blocks is smaller than
//! Go's `compress/gzip` default level over the whole stream (BuildKit's and docker's layers)
//! and several times as fast.
//!
//! zstd ([`Encoding::Zstd`]) is cut the same way, each block an independent zstd frame (with
//! its content size) compressed on every core and reused the same way; RFC 8878 decoders
//! (klauspost's in containerd and docker, libzstd's) read concatenated frames as one stream.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::layer::Encoding;
use kiln_oci::Digest;

/// Input block size fed to compressors, so output never depends on write sizes.
const BLOCK: usize = 128 * 1024;

/// Passes data to `inner` only in blocks of exactly [`BLOCK`] bytes (the rest at finish).
pub(crate) struct FixedBlocks<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FixedBlocks<W> {
    pub(crate) fn new(inner: W) -> Self {
        FixedBlocks {
            inner,
            buf: Vec::with_capacity(BLOCK),
        }
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for FixedBlocks<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK {
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer whose writes happen on a thread of its own (a blob's hashing and writing beside
/// the work that produces its bytes); [`Offload::finish`] gives the writer back.
pub(crate) struct Offload<W: Write + Send + 'static> {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<io::Result<W>>>,
    pool: Pool,
}

impl<W: Write + Send + 'static> Offload<W> {
    pub(crate) fn new(mut w: W) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let pool = Pool::default();
        let back = pool.clone();
        let thread = std::thread::spawn(move || {
            for buf in rx {
                w.write_all(&buf)?;
                back.give(buf);
            }
            Ok(w)
        });
        Offload {
            tx: Some(tx),
            thread: Some(thread),
            pool,
        }
    }

    /// The writer's error, once its thread stopped.
    fn failed(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("writer thread died"),
        }
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("writer thread died")),
        }
    }
}

impl<W: Write + Send + 'static> Write for Offload<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut v = self.pool.take(buf.len());
        v.extend_from_slice(buf);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(v).is_ok());
        if !sent {
            return Err(self.failed());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Offload<W> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Compresses everything `r` yields into `w` as `enc` (the bytes a layer written with `enc`
/// has for the same tar); returns `w` once the stream is finished.
pub fn compress<W: Write>(r: &mut dyn io::Read, w: W, enc: Encoding) -> io::Result<W> {
    let mut e = FixedBlocks::new(Encoder::new(w, enc)?);
    io::copy(r, &mut e)?;
    e.finish()?.finish()
}

/// A compressor in front of `W`.
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    ParGzip(ParGzip<W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(w: W, c: Encoding) -> io::Result<Self> {
        Self::with_members(w, c, None)
    }

    /// As [`Encoder::new`]; gzip members are cut at tar entries and reused through `members`
    /// when given (the bytes are the same: a member is a function of its input).
    pub(crate) fn with_members(
        w: W,
        c: Encoding,
        members: Option<MemberCache>,
    ) -> io::Result<Self> {
        Ok(match c {
            Encoding::None => Encoder::Plain(w),
            Encoding::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(level.min(9)),
            )),
            Encoding::GzipParallel { level } => {
                Encoder::ParGzip(ParGzip::new(w, level.min(9), BlockKind::Deflate, None))
            }
            Encoding::GzipMembers { level } => Encoder::ParGzip(ParGzip::new(
                w,
                level.clamp(1, 12),
                BlockKind::Member,
                members,
            )),
            Encoding::Zstd { level } => Encoder::ParGzip(ParGzip::new(
                w,
                level.clamp(-7, 22) as u32,
                BlockKind::ZstdFrame,
                members,
            )),
        })
    }

    /// Has a parallel encoder hash its input (sha256, on a thread of its own) before anything
    /// is written; `false` when this encoder cannot (the caller hashes).
    pub(crate) fn hash_input(&mut self) -> bool {
        match self {
            Encoder::ParGzip(e) => {
                e.hash_input();
                e.input_hash.is_some()
            }
            _ => false,
        }
    }

    /// [`Encoder::finish`], with the sha256 and length of the input when
    /// [`Encoder::hash_input`] said it is hashed.
    pub(crate) fn finish_hashed(self) -> io::Result<(W, Option<(Digest, u64)>)> {
        match self {
            Encoder::ParGzip(e) => e.finish_hashed(),
            other => Ok((other.finish()?, None)),
        }
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::ParGzip(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::ParGzip(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::ParGzip(_) => Ok(()),
        }
    }
}

/// Parallel gzip: block size (the bytes depend on the block size only, never on the number of
/// workers).
const PAR_GZIP_BLOCK: usize = 1 << 20;

/// Worker threads of a parallel gzip: the machine's cores (at least 2, at most 8).
fn par_gzip_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// How a parallel gzip compresses one block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    /// Raw deflate ended by a full flush (zlib), inside one gzip member written around them.
    Deflate,
    /// A whole gzip member (libdeflate).
    Member,
    /// A whole zstd frame (libzstd, single-threaded per block; the level as `i32` bits).
    ZstdFrame,
}

impl BlockKind {
    /// Cut where the content says (and cached by content).
    fn content_defined(self) -> bool {
        matches!(self, BlockKind::Member | BlockKind::ZstdFrame)
    }
}

/// A block's input, shared by the worker compressing it and the thread hashing the stream.
type GzJob = (u64, std::sync::Arc<Vec<u8>>);
/// A compressed block, and for a cached one the key of its input.
type GzDone = (u64, io::Result<(Vec<u8>, Option<MemberKey>)>);

/// The key of a block's input in the member cache: its BLAKE3 hash (cryptographic, as a key
/// that vouches for bytes must be, and 3.7x sha256's speed on this machine's cores:
/// 6.5 GB/s against 1.74 GB/s with SHA-NI).
type MemberKey = [u8; 32];

fn member_key(data: &[u8]) -> MemberKey {
    *blake3::hash(data).as_bytes()
}

/// Buffers a parallel encoder reuses for blocks, compressed blocks and the bytes it hands
/// to an [`Offload`] writer. Fresh memory costs page faults and zeroing (on this VM's
/// 2 cores, fresh pages were a fifth of a one-file edit's rebuild: its 223 MB of tar went
/// through new 1-4 MiB buffers); a buffer used before costs neither.
#[derive(Clone, Default)]
pub(crate) struct Pool(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers a [`Pool`] keeps at most (each up to a block's compress bound).
const POOL_MAX: usize = 24;

impl Pool {
    /// An empty buffer of at least `cap` bytes' capacity.
    pub(crate) fn take(&self, cap: usize) -> Vec<u8> {
        let reused = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reused {
            Some(mut v) => {
                v.clear();
                v.reserve(cap);
                v
            }
            None => Vec::with_capacity(cap),
        }
    }

    /// Gives `v` back for a later [`Pool::take`].
    pub(crate) fn give(&self, v: Vec<u8>) {
        let mut free = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < POOL_MAX && v.capacity() > 0 {
            free.push(v);
        }
    }

    /// Gives back the block `data` once nobody else holds it.
    fn give_shared(&self, data: std::sync::Arc<Vec<u8>>) {
        if let Ok(v) = std::sync::Arc::try_unwrap(data) {
            self.give(v);
        }
    }
}

/// New bytes a content-defined encoder gathers before it scans them for a cut.
const SCAN_CHUNK: usize = 64 << 10;

/// Content-defined members: a member is at least this long...
const MEMBER_MIN: usize = 1 << 20;
/// ...and ends where the gear hash of its last 64 bytes has [`MEMBER_MASK`]'s bits clear
/// (about every 256 KiB past the minimum), or at this length. The cut points depend on the
/// bytes around them alone, so after an edit the members resynchronize at the next cut and
/// the rest are the same members as before.
const MEMBER_MAX: usize = 4 << 20;
const MEMBER_MASK: u64 = ((1 << 18) - 1) << 46;

/// The gear hash table: 256 fixed pseudo-random words (splitmix64 from 0).
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut x: u64 = 0;
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// Where the member in `buf` (which holds the member so far plus `data`'s bytes after it)
/// ends, as a count of `data`'s bytes to take; `None`: not in `data`.
fn member_cut(buf_len: usize, data: &[u8], hash: &mut u64) -> Option<usize> {
    // The hash only matters from 64 bytes before the minimum on (older bytes are shifted out).
    let warm = (MEMBER_MIN - 64).saturating_sub(buf_len);
    if warm >= data.len() {
        return None;
    }
    // Bytes before the minimum only feed the hash; from it on, each may end the member; the
    // maximum ends it anyway.
    let check = MEMBER_MIN
        .saturating_sub(buf_len + 1)
        .max(warm)
        .min(data.len());
    let end = (MEMBER_MAX - buf_len).min(data.len());
    let mut h = *hash;
    for b in &data[warm..check] {
        h = (h << 1).wrapping_add(GEAR[*b as usize]);
    }
    let mut from = check;
    // The hash at a byte is a function of the 64 bytes ending there alone (older ones are
    // shifted out of the word), so a long stretch is scanned as two halves side by side, the
    // second one's hash started 64 bytes early: the same cut, two independent dependency
    // chains.
    if end - check >= 8192 {
        let mid = check + (end - check) / 2;
        let mut h2 = 0u64;
        for b in &data[mid - 64..mid] {
            h2 = (h2 << 1).wrapping_add(GEAR[*b as usize]);
        }
        let mut second = None;
        for (i, (a, b)) in data[check..mid].iter().zip(&data[mid..]).enumerate() {
            h = (h << 1).wrapping_add(GEAR[*a as usize]);
            h2 = (h2 << 1).wrapping_add(GEAR[*b as usize]);
            if h & MEMBER_MASK == 0 {
                *hash = h;
                return Some(check + i + 1);
            }
            if h2 & MEMBER_MASK == 0 && second.is_none() {
                second = Some(mid + i + 1);
            }
        }
        if second.is_some() {
            return second;
        }
        h = h2;
        from = mid + (mid - check);
    }
    for (i, b) in data[from..end].iter().enumerate() {
        h = (h << 1).wrapping_add(GEAR[*b as usize]);
        if h & MEMBER_MASK == 0 {
            *hash = h;
            return Some(from + i + 1);
        }
    }
    *hash = h;
    (buf_len + end >= MEMBER_MAX).then_some(end)
}

/// The `kv` table of compressed gzip members by the BLAKE3 hash of their input:
/// `ENCODER-LEVEL-b3-HASH` → `BLOB OFFSET LENGTH`.
pub(crate) const GZ_MEMBERS: &str = "gz-member";
/// Names the compressor in member cache keys (other bytes for the same input would make a
/// cached member differ from a fresh one).
const MEMBER_ENCODER: &str = "libdeflate-1.26";
/// The same for zstd frames.
const FRAME_ENCODER: &str = "zstd-frame-1.5";

/// gzip members reused by content: a store to look compressed members up in; after the blob
/// is committed, [`MemberCache::record`] keeps where each member of it is.
#[derive(Clone)]
pub struct MemberCache {
    pub(crate) store: crate::store::Store,
    /// (input key, offset in the blob, length), filled as members are written.
    written: std::sync::Arc<std::sync::Mutex<Vec<(MemberKey, u64, u64)>>>,
    /// Members reused / compressed.
    pub(crate) stats: std::sync::Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

impl MemberCache {
    pub(crate) fn new(store: crate::store::Store) -> Self {
        MemberCache {
            store,
            written: Default::default(),
            stats: Default::default(),
        }
    }

    fn key(zstd: bool, level: u32, sum: &MemberKey) -> String {
        let sum = hex::encode(sum);
        if zstd {
            format!("{FRAME_ENCODER}-{}-b3-{sum}", level as i32)
        } else {
            format!("{MEMBER_ENCODER}-{level}-b3-{sum}")
        }
    }

    /// A member compressed before for this input, read back from its blob; checked against
    /// the input's CRC-32 and length in the member's trailer (a zstd frame: its magic and
    /// the content size in its header).
    fn lookup(
        &self,
        zstd: bool,
        level: u32,
        sum: &MemberKey,
        data: &[u8],
        pool: &Pool,
    ) -> Option<Vec<u8>> {
        let raw = self
            .store
            .kv_get(GZ_MEMBERS, &Self::key(zstd, level, sum))
            .ok()??;
        let text = String::from_utf8(raw).ok()?;
        let mut f = text.split(' ');
        let blob = crate::digest::parse_digest(f.next()?).ok()?;
        let off: u64 = f.next()?.parse().ok()?;
        let len: usize = f.next()?.parse().ok()?;
        if len < 9 || len > data.len() + data.len() / 8 + 4096 {
            return None;
        }
        let (mut out, at) = self
            .store
            .read_blob_range(&blob, off, len, pool.take(len + 8192))
            .ok()?;
        if at > 0 {
            out.copy_within(at..at + len, 0);
        }
        out.truncate(len);
        if zstd {
            let ok = out[..4] == [0x28, 0xb5, 0x2f, 0xfd]
                && zstd::zstd_safe::get_frame_content_size(&out).ok()? == Some(data.len() as u64);
            return ok.then_some(out);
        }
        if len < 18 {
            return None;
        }
        let trailer = &out[len - 8..];
        let ok = out[..3] == [0x1f, 0x8b, 8]
            && trailer[..4] == libdeflater::crc32(data).to_le_bytes()
            && trailer[4..] == (data.len() as u32).to_le_bytes();
        ok.then_some(out)
    }

    /// Records where the members of the committed blob `blob` are (one index transaction).
    pub(crate) fn record(&self, zstd: bool, level: u32, blob: &Digest) -> crate::error::Result<()> {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        let entries: Vec<(String, Vec<u8>)> = written
            .iter()
            .map(|(sum, off, len)| {
                (
                    Self::key(zstd, level, sum),
                    format!("{blob} {off} {len}").into_bytes(),
                )
            })
            .collect();
        self.store.kv_put_many(GZ_MEMBERS, &entries)
    }

    /// (members reused, members compressed) so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.stats.0.load(Relaxed), self.stats.1.load(Relaxed))
    }
}

/// Parallel gzip writer: independent blocks compressed by worker threads and written in order.
/// [`BlockKind::Deflate`]: raw-deflate blocks, each ended by a full flush, between one gzip
/// header and an empty final block and the trailer (any gzip reader reads it as one member).
/// [`BlockKind::Member`]: one gzip member per block (an empty member for an empty stream).
pub(crate) struct ParGzip<W: Write> {
    out: W,
    level: u32,
    kind: BlockKind,
    buf: Vec<u8>,
    crc: flate2::Crc,
    sent: u64,
    written: u64,
    jobs: Option<std::sync::mpsc::SyncSender<GzJob>>,
    results: std::sync::mpsc::Receiver<GzDone>,
    ready: BTreeMap<u64, (Vec<u8>, Option<MemberKey>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    header: bool,
    /// Blocks in flight at most.
    window: usize,
    /// Input bytes per block.
    block: usize,
    /// Content-defined members reused by content.
    members: Option<MemberCache>,
    /// Bytes written to `out`.
    out_pos: u64,
    /// Gear hash of the member so far (content-defined members), through `buf[..scanned]`.
    hash: u64,
    /// Bytes of `buf` scanned for a cut so far: the scan waits for [`SCAN_CHUNK`] new bytes
    /// (a tar's writes are mostly headers and small files).
    scanned: usize,
    /// The sha256 of the input, hashed block by block on a thread of its own.
    input_hash: Option<InputHasher>,
    /// Buffers of blocks and compressed blocks.
    pool: Pool,
}

/// A thread hashing the blocks of a parallel gzip's input in order (the diffID of a layer),
/// beside the workers compressing them.
struct InputHasher {
    tx: Option<std::sync::mpsc::SyncSender<std::sync::Arc<Vec<u8>>>>,
    thread: Option<std::thread::JoinHandle<(sha2::Sha256, u64)>>,
}

impl InputHasher {
    fn new(window: usize, pool: Pool) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::sync::Arc<Vec<u8>>>(window);
        let thread = std::thread::spawn(move || {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            let mut n = 0u64;
            for block in rx {
                h.update(&block[..]);
                n += block.len() as u64;
                pool.give_shared(block);
            }
            (h, n)
        });
        InputHasher {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, block: &std::sync::Arc<Vec<u8>>) -> io::Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(block.clone()).ok())
            .ok_or_else(|| io::Error::other("input hasher died"))
    }

    fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.tx = None;
        let (h, n) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .ok_or_else(|| io::Error::other("input hasher died"))?;
        Ok((crate::digest::from_hasher(h), n))
    }
}

impl Drop for InputHasher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn deflate_block(level: u32, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let done = c.total_in() as usize;
        c.compress_vec(&data[done..], &mut out, flate2::FlushCompress::Full)
            .map_err(io::Error::other)?;
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(64 * 1024);
    }
}

/// A worker's compressor of whole blocks.
enum BlockCompressor {
    Gzip(libdeflater::Compressor),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl BlockCompressor {
    fn block(&mut self, data: &[u8], pool: &Pool) -> io::Result<Vec<u8>> {
        match self {
            BlockCompressor::Gzip(c) => member_block_into(c, data, pool.take(0)),
            // One frame with its content size (deterministic for a level and input), written
            // by `ZSTD_compress2` into a reused buffer's spare capacity (nothing zeroed).
            BlockCompressor::Zstd(c) => {
                let mut out = pool.take(zstd::zstd_safe::compress_bound(data.len()));
                c.compress_to_buffer(data, &mut out)?;
                Ok(out)
            }
        }
    }
}

/// One block as a whole gzip member (libdeflate: MTIME 0, deterministic for a level).
#[cfg(test)]
fn member_block(c: &mut libdeflater::Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    member_block_into(c, data, Vec::new())
}

/// [`member_block`] into the buffer `out` (its contents are dropped).
fn member_block_into(
    c: &mut libdeflater::Compressor,
    data: &[u8],
    mut out: Vec<u8>,
) -> io::Result<Vec<u8>> {
    out.clear();
    out.resize(c.gzip_compress_bound(data.len()), 0);
    let n = c
        .gzip_compress(data, &mut out)
        .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
    out.truncate(n);
    Ok(out)
}

impl<W: Write> ParGzip<W> {
    fn new(out: W, level: u32, kind: BlockKind, members: Option<MemberCache>) -> Self {
        let workers_n = par_gzip_workers();
        let block = PAR_GZIP_BLOCK;
        let pool = Pool::default();
        let (jtx, jrx) = std::sync::mpsc::sync_channel::<GzJob>(workers_n * 2);
        let (rtx, rrx) = std::sync::mpsc::channel::<GzDone>();
        let jrx = std::sync::Arc::new(std::sync::Mutex::new(jrx));
        let workers = (0..workers_n)
            .map(|_| {
                let jrx = jrx.clone();
                let rtx = rtx.clone();
                let cache = members.clone();
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut members = match kind {
                        BlockKind::Member => {
                            let lvl =
                                libdeflater::CompressionLvl::new(level as i32).unwrap_or_default();
                            Some(BlockCompressor::Gzip(libdeflater::Compressor::new(lvl)))
                        }
                        BlockKind::ZstdFrame => match zstd::bulk::Compressor::new(level as i32) {
                            Ok(c) => Some(BlockCompressor::Zstd(c)),
                            Err(e) => {
                                let _ = rtx.send((0, Err(e)));
                                return;
                            }
                        },
                        BlockKind::Deflate => None,
                    };
                    let zstd = kind == BlockKind::ZstdFrame;
                    loop {
                        let job = match jrx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, data)) = job else { return };
                        let done = match (&mut members, &cache) {
                            (Some(c), Some(cache)) => {
                                use std::sync::atomic::Ordering::Relaxed;
                                let sum = member_key(&data);
                                match cache.lookup(zstd, level, &sum, &data, &pool) {
                                    Some(bytes) => {
                                        cache.stats.0.fetch_add(1, Relaxed);
                                        Ok((bytes, Some(sum)))
                                    }
                                    None => {
                                        cache.stats.1.fetch_add(1, Relaxed);
                                        c.block(&data, &pool).map(|b| (b, Some(sum)))
                                    }
                                }
                            }
                            (Some(c), None) => c.block(&data, &pool).map(|b| (b, None)),
                            (None, _) => deflate_block(level, &data).map(|b| (b, None)),
                        };
                        pool.give_shared(data);
                        if rtx.send((seq, done)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        ParGzip {
            out,
            level,
            kind,
            window: workers_n * 3,
            members,
            out_pos: 0,
            hash: 0,
            scanned: 0,
            input_hash: None,
            pool,
            buf: Vec::with_capacity(block),
            block,
            crc: flate2::Crc::new(),
            sent: 0,
            written: 0,
            jobs: Some(jtx),
            results: rrx,
            ready: BTreeMap::new(),
            workers,
            header: false,
        }
    }

    fn write_ready(&mut self) -> io::Result<()> {
        if !self.header && self.kind == BlockKind::Deflate {
            let xfl = if self.level >= 9 {
                2
            } else if self.level <= 1 {
                4
            } else {
                0
            };
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff])?;
            self.header = true;
        }
        while let Some((b, sum)) = self.ready.remove(&self.written) {
            self.out.write_all(&b)?;
            if let (Some(sum), Some(m)) = (sum, &self.members) {
                m.written.lock().unwrap_or_else(|p| p.into_inner()).push((
                    sum,
                    self.out_pos,
                    b.len() as u64,
                ));
            }
            self.out_pos += b.len() as u64;
            self.written += 1;
            self.pool.give(b);
        }
        Ok(())
    }

    fn collect(&mut self, block: bool) -> io::Result<()> {
        loop {
            let r = if block {
                match self.results.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return Err(io::Error::other("gzip worker died")),
                }
            } else {
                self.results.try_recv().ok()
            };
            let Some((seq, data)) = r else { break };
            self.ready.insert(seq, data?);
            if block {
                break;
            }
        }
        self.write_ready()
    }

    fn send_block(&mut self) -> io::Result<()> {
        // A content-defined block grows up to its maximum: room for it from the start.
        let cap = if self.kind.content_defined() {
            MEMBER_MAX + SCAN_CHUNK
        } else {
            self.block
        };
        let data = std::mem::replace(&mut self.buf, self.pool.take(cap));
        self.send(data)
    }

    /// Sends the block `data` to the workers (and to the input's hasher).
    fn send(&mut self, data: Vec<u8>) -> io::Result<()> {
        if self.kind == BlockKind::Deflate {
            // Members carry their own CRC; only the one-member stream needs the whole one.
            self.crc.update(&data);
        }
        // Keep at most a few blocks in flight.
        while self.sent - self.written >= self.window as u64 {
            self.collect(true)?;
        }
        let tx = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip finished"))?;
        let data = std::sync::Arc::new(data);
        if let Some(h) = &self.input_hash {
            h.send(&data)?;
        }
        tx.send((self.sent, data))
            .map_err(|_| io::Error::other("gzip worker died"))?;
        self.sent += 1;
        self.collect(false)
    }

    /// Hashes the input (sha256) on a thread of its own from now on.
    fn hash_input(&mut self) {
        if self.sent == 0 && self.buf.is_empty() {
            self.input_hash = Some(InputHasher::new(self.window, self.pool.clone()));
        }
    }

    /// [`ParGzip::finish`], with the input's sha256 and length when it was hashed.
    fn finish_hashed(mut self) -> io::Result<(W, Option<(Digest, u64)>)> {
        self.send_last()?;
        let hasher = self.input_hash.take();
        let out = self.finish()?;
        Ok((out, hasher.map(InputHasher::finish).transpose()?))
    }

    /// Scans what `buf` holds past `scanned` for the member's end; at a cut the member is sent
    /// and the bytes after the cut start the next one (scanned again).
    fn scan(&mut self) -> io::Result<()> {
        while self.scanned < self.buf.len() {
            let from = self.scanned;
            match member_cut(from, &self.buf[from..], &mut self.hash) {
                Some(take) => {
                    let cut = from + take;
                    let mut next = self.pool.take(MEMBER_MAX + SCAN_CHUNK);
                    next.extend_from_slice(&self.buf[cut..]);
                    self.buf.truncate(cut);
                    let block = std::mem::replace(&mut self.buf, next);
                    self.hash = 0;
                    self.scanned = 0;
                    self.send(block)?;
                }
                None => self.scanned = self.buf.len(),
            }
        }
        Ok(())
    }

    /// Sends the last (partial) block; an empty stream is still one (empty) gzip member.
    fn send_last(&mut self) -> io::Result<()> {
        if self.kind.content_defined() {
            self.scan()?;
        }
        if !self.buf.is_empty() || (self.sent == 0 && self.kind.content_defined()) {
            self.send_block()?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.send_last()?;
        while self.written < self.sent {
            self.collect(true)?;
        }
        self.write_ready()?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if self.kind != BlockKind::Deflate {
            return Ok(self.out);
        }
        // empty final fixed-Huffman block, then CRC32 and ISIZE
        self.out.write_all(&[0x03, 0x00])?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGzip<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        if self.kind.content_defined() {
            self.buf.extend_from_slice(data);
            if self.buf.len() - self.scanned >= SCAN_CHUNK {
                self.scan()?;
            }
            return Ok(n);
        }
        while !data.is_empty() {
            let take = (self.block - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.block {
                self.send_block()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        let mut x: u64 = 7;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    (x % 7) as u8 + b'a'
                } else {
                    (x >> 11) as u8
                }
            })
            .collect()
    }

    fn compress(c: Encoding, data: &[u8], write_size: usize) -> Vec<u8> {
        let mut e = FixedBlocks::new(Encoder::new(Vec::new(), c).unwrap());
        for chunk in data.chunks(write_size) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap().finish().unwrap()
    }

    #[test]
    fn parallel_encoders_hash_their_input_and_write_through_an_offload_thread() {
        let data = sample(3 * PAR_GZIP_BLOCK + 77);
        for enc in [
            Encoding::GZIP,
            Encoding::ZSTD,
            Encoding::GzipParallel { level: 1 },
        ] {
            let plain = compress(enc, &data, 4096);
            let mut e = Encoder::new(Offload::new(Vec::new()), enc).unwrap();
            assert!(e.hash_input());
            for chunk in data.chunks(100_000) {
                e.write_all(chunk).unwrap();
            }
            let (out, hashed) = e.finish_hashed().unwrap();
            assert_eq!(out.finish().unwrap(), plain, "the same bytes");
            assert_eq!(
                hashed,
                Some((kiln_oci::sha256(&data), data.len() as u64)),
                "the input's digest"
            );
        }
        // One-stream gzip is hashed by its caller.
        let mut e = Encoder::new(Vec::new(), Encoding::Gzip { level: 1 }).unwrap();
        assert!(!e.hash_input());
        e.write_all(b"x").unwrap();
        assert_eq!(e.finish_hashed().unwrap().1, None);
        // A writer that fails fails the write that reaches it (or a later one).
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut o = Offload::new(Full);
        let err = (0..100)
            .find_map(|_| o.write_all(b"data").err())
            .expect("an error");
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    #[test]
    fn parallel_gzip_is_valid_gzip_and_deterministic() {
        let data = sample(5 * PAR_GZIP_BLOCK + 123);
        let par = Encoding::GzipParallel { level: 1 };
        let a = compress(par, &data, 1000);
        let b = compress(par, &data, 777_777);
        assert_eq!(a, b);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let empty = compress(par, b"", 1);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn gzip_members_are_the_sequential_members_and_read_as_one_stream() {
        let data = sample(3 * PAR_GZIP_BLOCK + 4567);
        let a = compress(Encoding::GZIP, &data, 1000);
        assert_eq!(a, compress(Encoding::GZIP, &data, 3 << 20));
        // The same bytes as one thread cutting and compressing member after member.
        let Encoding::GzipMembers { level } = Encoding::GZIP else {
            panic!("the default gzip is members")
        };
        let lvl = libdeflater::CompressionLvl::new(level as i32).unwrap();
        let mut c = libdeflater::Compressor::new(lvl);
        let seq: Vec<u8> = cuts(&data)
            .iter()
            .flat_map(|m| member_block(&mut c, m).unwrap())
            .collect();
        assert_eq!(a, seq);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // gzip(1) reads it as one stream too.
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = a.clone();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
        let empty = compress(Encoding::GZIP, b"", 1);
        assert!(!empty.is_empty());
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    /// The members `data` is cut into.
    fn cuts(data: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let (mut start, mut hash) = (0, 0);
        while start < data.len() {
            let mut len = 0;
            let rest = &data[start..];
            let take = loop {
                match member_cut(len, &rest[len..(len + 4096).min(rest.len())], &mut hash) {
                    Some(t) => break len + t,
                    None if len + 4096 >= rest.len() => break rest.len(),
                    None => len += 4096,
                }
            };
            out.push(&rest[..take]);
            hash = 0;
            start += take;
        }
        out
    }

    /// The cut points `member_cut` finds feeding `data` in writes of `size` bytes.
    fn cut_points(data: &[u8], size: usize) -> Vec<usize> {
        let (mut points, mut len, mut hash, mut at) = (Vec::new(), 0, 0u64, 0);
        while at < data.len() {
            let chunk = &data[at..(at + size).min(data.len())];
            match member_cut(len, chunk, &mut hash) {
                Some(t) => {
                    at += t;
                    points.push(at);
                    len = 0;
                    hash = 0;
                }
                None => {
                    len += chunk.len();
                    at += chunk.len();
                }
            }
        }
        points
    }

    #[test]
    fn cut_points_do_not_depend_on_how_the_bytes_are_written() {
        let data = sample(30 << 20);
        let small = cut_points(&data, 4096);
        assert!(small.len() >= 8, "{small:?}");
        for size in [1000, 8191, 8192, 300_001, 5 << 20, data.len()] {
            assert_eq!(cut_points(&data, size), small, "writes of {size} bytes");
        }
        // Runs of one byte value reach the maximum without a content cut.
        let flat = vec![7u8; 9 << 20];
        assert_eq!(cut_points(&flat, flat.len()), cut_points(&flat, 4096));
        // A cut a few bytes into the second half of a long write (where that half's hash has
        // just been started) is found.
        let (s0, c) = small
            .windows(2)
            .map(|w| (w[0], w[1]))
            .find(|(a, b)| b - a >= MEMBER_MIN + 10_000)
            .expect("a member well over the minimum");
        let p = c - 5000;
        let (mut hash, mut len, mut at) = (0u64, 0, s0);
        while at < p {
            let end = (at + 4096).min(p);
            assert_eq!(member_cut(len, &data[at..end], &mut hash), None);
            len += end - at;
            at = end;
        }
        let write = &data[p..p + 2 * (c - p) - 20];
        assert_eq!(member_cut(len, write, &mut hash), Some(c - p));
    }

    #[test]
    fn members_are_content_defined_so_an_edit_changes_few() {
        let mut data = sample(24 << 20);
        let before: Vec<Vec<u8>> = cuts(&data).into_iter().map(<[u8]>::to_vec).collect();
        assert!(before.len() >= 6, "{}", before.len());
        assert!(before.iter().all(|m| m.len() <= MEMBER_MAX));
        assert!(
            before[..before.len() - 1]
                .iter()
                .all(|m| m.len() >= MEMBER_MIN)
        );
        // Insert bytes in the middle: the members before are the same, and after at most a
        // couple of new ones, the same again.
        let at = 9 << 20;
        data.splice(at..at, b"a new line\n".iter().copied());
        let after = cuts(&data);
        let same = after
            .iter()
            .filter(|m| before.iter().any(|b| b == *m))
            .count();
        assert!(
            same + 2 >= before.len(),
            "{same} of {} members kept",
            before.len()
        );
    }

    #[test]
    fn zstd_frames_are_the_sequential_frames_and_read_as_one_stream() {
        // Enough frames that the workers compress into buffers used before (more than the
        // blocks in flight), whose old bytes must not show.
        let data = sample(24 << 20);
        let a = compress(Encoding::ZSTD, &data, 1000);
        assert_eq!(a, compress(Encoding::ZSTD, &data, 3 << 20));
        // The same bytes as one thread cutting and compressing frame after frame, each into
        // a fresh buffer.
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let seq: Vec<u8> = cuts(&data)
            .iter()
            .flat_map(|m| c.compress(m).unwrap())
            .collect();
        assert_eq!(a, seq);
        assert!(
            cuts(&data).len() > 3 * par_gzip_workers(),
            "{}",
            cuts(&data).len()
        );
        assert_eq!(zstd::decode_all(&a[..]).unwrap(), data);
        // zstd(1) reads it as one stream too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.zst");
        fs_err::write(&path, &a).unwrap();
        if let Ok(out) = std::process::Command::new("zstd")
            .arg("-dc")
            .arg(&path)
            .output()
        {
            assert!(out.status.success());
            assert_eq!(out.stdout, data);
        }
        let empty = compress(Encoding::ZSTD, b"", 1);
        assert!(!empty.is_empty());
        assert!(zstd::decode_all(&empty[..]).unwrap().is_empty());
    }
}
