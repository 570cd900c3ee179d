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
        Self::with_members(w, c, None, None)
    }

    /// As [`Encoder::new`]; content-defined blocks are reused through `members` when given
    /// (the bytes are the same: a block is a function of its input), and taken from the
    /// previous layer `prior` where the new tar repeats it.
    pub(crate) fn with_members(
        w: W,
        c: Encoding,
        members: Option<MemberCache>,
        prior: Option<Prior>,
    ) -> io::Result<Self> {
        Ok(match c {
            Encoding::None => Encoder::Plain(w),
            Encoding::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(level.min(9)),
            )),
            Encoding::GzipParallel { level } => Encoder::ParGzip(ParGzip::new(
                w,
                level.min(9),
                BlockKind::Deflate,
                None,
                None,
            )),
            Encoding::GzipMembers { level } => Encoder::ParGzip(ParGzip::new(
                w,
                level.clamp(1, 12),
                BlockKind::Member,
                members,
                prior,
            )),
            Encoding::Zstd { level } => Encoder::ParGzip(ParGzip::new(
                w,
                level.clamp(-7, 22) as u32,
                BlockKind::ZstdFrame,
                members,
                prior,
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

/// A block's input, shared by the worker compressing it and the thread hashing the stream,
/// and where the previous layer's blob has it compressed when it is one of its blocks.
type GzJob = (u64, std::sync::Arc<Vec<u8>>, Option<Reused>);
/// A compressed block, for a cached one the key of its input, and its input's CRC-32
/// (content-defined blocks).
type GzDone = (u64, io::Result<Done>);

/// A compressed block as a worker hands it back.
struct Done {
    bytes: Vec<u8>,
    key: Option<MemberKey>,
    crc: u32,
}

/// The key of a block's input in the member cache: its BLAKE3 hash (cryptographic, as a key
/// that vouches for bytes must be, and 3.7x sha256's speed on this machine's cores:
/// 6.5 GB/s against 1.74 GB/s with SHA-NI).
type MemberKey = [u8; 32];

fn member_key(data: &[u8]) -> MemberKey {
    *blake3::hash(data).as_bytes()
}

/// A stretch of the tar being written that repeats the previous tar byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// Where it starts in the new tar and in the old one.
    new: u64,
    old: u64,
    len: u64,
}

/// The runs a tar writer declares before it writes their bytes (in order; adjacent ones
/// merged), for the encoder that reads them ([`Prior`]).
#[derive(Clone, Default)]
pub(crate) struct Runs(std::sync::Arc<std::sync::Mutex<Vec<Run>>>);

impl Runs {
    /// Declares that the `len` bytes the tar writer writes from `new` on are the old tar's
    /// from `old` on.
    pub(crate) fn declare(&self, new: u64, old: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = runs.last_mut()
            && last.new + last.len == new
            && last.old + last.len == old
        {
            last.len += len;
            return;
        }
        runs.push(Run { new, old, len });
    }

    /// Where the `len` bytes from `new` on are in the old tar, when one run holds them all.
    fn find(&self, new: u64, len: u64) -> Option<u64> {
        let runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i = runs.partition_point(|r| r.new <= new).checked_sub(1)?;
        let r = runs[i];
        (new + len <= r.new + r.len).then(|| r.old + (new - r.new))
    }
}

/// One compressed block of a layer's blob, as its layer map records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapMember {
    /// Its input's length (bytes of the tar).
    tar_len: u64,
    /// Its length in the blob.
    blob_len: u64,
    /// CRC-32 of its input.
    crc: u32,
    key: MemberKey,
}

/// The `kv` table of layer maps: `VERSION ENCODER-LEVEL DIFFID` → the blob and its
/// content-defined blocks in order ([`MapMember`]s), written by the encoder that cut them.
pub(crate) const LAYER_MAPS: &str = "layer-map";
/// Names the cut (gear table, minimum, mask, maximum) and the record's format.
const MAP_VERSION: &str = "cdc1";

/// The previous layer a content-defined encoder writes a new tar over: its blob, its blocks
/// ([`LAYER_MAPS`]) and the runs of the new tar that repeat it ([`Runs`]). Where a block
/// of the old tar starts at a point the new one repeats from, and the whole block is
/// repeated, the cut that follows is the old one (a cut depends on the bytes since the
/// block's start alone), so the block is taken from the old blob as it is, its bytes neither
/// scanned for a cut nor hashed for a key: only checked against its CRC-32 when read back.
pub(crate) struct Prior {
    blob: Digest,
    members: Vec<MapMember>,
    /// Where each member starts in the old tar and in the old blob.
    starts: Vec<(u64, u64)>,
    runs: Runs,
}

impl Prior {
    /// The map of the layer `diff_id` encoded as `zstd`/`level`, when the store has it and
    /// its blob; the tar writer declares its runs into `runs`.
    pub(crate) fn load(
        store: &crate::store::Store,
        zstd: bool,
        level: u32,
        diff_id: &Digest,
        runs: Runs,
    ) -> Option<Prior> {
        let raw = store
            .kv_get(LAYER_MAPS, &map_key(zstd, level, diff_id))
            .ok()??;
        let (blob, members) = decode_map(&raw)?;
        if !store.has_blob(&blob) {
            return None;
        }
        let mut starts = Vec::with_capacity(members.len());
        let (mut t, mut b) = (0u64, 0u64);
        for m in &members {
            starts.push((t, b));
            t += m.tar_len;
            b += m.blob_len;
        }
        Some(Prior {
            blob,
            members,
            starts,
            runs,
        })
    }

    /// The old member starting where the new tar's byte `new` repeats the old tar, if any:
    /// (its number, its input's length, where that input starts in the old tar).
    fn member_at(&self, new: u64) -> Option<(usize, usize, u64)> {
        let old = self.runs.find(new, 1)?;
        let j = self.starts.binary_search_by_key(&old, |s| s.0).ok()?;
        Some((j, self.members[j].tar_len as usize, old))
    }

    /// The old member the new block of `len` bytes from `new` on repeats whole, if any.
    fn block_at(&self, new: u64, len: usize) -> Option<Reused> {
        let old = self.runs.find(new, len as u64)?;
        let j = self.starts.binary_search_by_key(&old, |s| s.0).ok()?;
        (self.members[j].tar_len == len as u64).then(|| self.reused(j))
    }

    fn reused(&self, j: usize) -> Reused {
        let m = self.members[j];
        Reused {
            off: self.starts[j].1,
            len: m.blob_len,
            crc: m.crc,
            key: m.key,
        }
    }
}

/// A block taken from the previous layer's blob: where it is and what its input's CRC-32
/// and key are.
#[derive(Debug, Clone, Copy)]
struct Reused {
    off: u64,
    len: u64,
    crc: u32,
    key: MemberKey,
}

fn map_key(zstd: bool, level: u32, diff_id: &Digest) -> String {
    let enc = if zstd {
        format!("{FRAME_ENCODER}-{}", level as i32)
    } else {
        format!("{MEMBER_ENCODER}-{level}")
    };
    format!("{MAP_VERSION} {enc} {diff_id}")
}

/// A layer map's bytes: the blob's digest, then each member's lengths, CRC and key.
fn encode_map(blob: &Digest, members: &[MapMember]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + members.len() * 52);
    out.extend_from_slice(blob.bytes());
    for m in members {
        out.extend_from_slice(&m.tar_len.to_le_bytes());
        out.extend_from_slice(&m.blob_len.to_le_bytes());
        out.extend_from_slice(&m.crc.to_le_bytes());
        out.extend_from_slice(&m.key);
    }
    out
}

fn decode_map(raw: &[u8]) -> Option<(Digest, Vec<MapMember>)> {
    let (blob, mut rest) = raw.split_first_chunk::<32>()?;
    if rest.len() % 52 != 0 {
        return None;
    }
    let mut members = Vec::with_capacity(rest.len() / 52);
    while let Some((rec, tail)) = rest.split_first_chunk::<52>() {
        let (tar_len, r) = rec.split_first_chunk::<8>()?;
        let (blob_len, r) = r.split_first_chunk::<8>()?;
        let (crc, key) = r.split_first_chunk::<4>()?;
        members.push(MapMember {
            tar_len: u64::from_le_bytes(*tar_len),
            blob_len: u64::from_le_bytes(*blob_len),
            crc: u32::from_le_bytes(*crc),
            key: key.try_into().ok()?,
        });
        rest = tail;
    }
    Some((Digest::from_bytes(*blob), members))
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
    /// (input key, offset in the blob, the member's map record), filled as members are
    /// written.
    written: std::sync::Arc<std::sync::Mutex<Vec<(u64, MapMember)>>>,
    /// Members reused (by content) / compressed / taken from the previous layer.
    pub(crate) stats: std::sync::Arc<[std::sync::atomic::AtomicU64; 3]>,
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
    /// the input ([`check_member`]). Its input's CRC-32 with it.
    fn lookup(
        &self,
        zstd: bool,
        level: u32,
        sum: &MemberKey,
        data: &[u8],
        pool: &Pool,
    ) -> Option<(Vec<u8>, u32)> {
        let raw = self
            .store
            .kv_get(GZ_MEMBERS, &Self::key(zstd, level, sum))
            .ok()??;
        let text = String::from_utf8(raw).ok()?;
        let mut f = text.split(' ');
        let blob = crate::digest::parse_digest(f.next()?).ok()?;
        let off: u64 = f.next()?.parse().ok()?;
        let len: usize = f.next()?.parse().ok()?;
        let out = self.read_member(&blob, off, len, data.len(), pool)?;
        let crc = libdeflater::crc32(data);
        check_member(zstd, &out, data.len(), crc).then_some((out, crc))
    }

    /// The `len` bytes at `off` of the blob `blob`, a compressed block of `data_len` bytes of
    /// input (so at most a little longer).
    fn read_member(
        &self,
        blob: &Digest,
        off: u64,
        len: usize,
        data_len: usize,
        pool: &Pool,
    ) -> Option<Vec<u8>> {
        if len < 9 || len > data_len + data_len / 8 + 4096 {
            return None;
        }
        let (mut out, at) = self
            .store
            .read_blob_range(blob, off, len, pool.take(len + 8192))
            .ok()?;
        if at > 0 {
            out.copy_within(at..at + len, 0);
        }
        out.truncate(len);
        Some(out)
    }

    /// The previous layer's block `r` of its blob `blob`, for the input `data` the new tar
    /// repeats there: read back and checked against the input's CRC-32 (recorded and
    /// computed now) and length. A block that is not what the map says fails the layer (the
    /// caller writes it again without the previous one).
    fn take_prior(
        &self,
        zstd: bool,
        blob: &Digest,
        r: &Reused,
        data: &[u8],
        pool: &Pool,
    ) -> io::Result<Done> {
        let crc = libdeflater::crc32(data);
        let out = self
            .read_member(blob, r.off, r.len as usize, data.len(), pool)
            .filter(|out| crc == r.crc && check_member(zstd, out, data.len(), crc));
        match out {
            Some(bytes) => Ok(Done {
                bytes,
                key: Some(r.key),
                crc,
            }),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the previous layer's block at {} of {blob} is not the input the new tar repeats",
                    r.off
                ),
            )),
        }
    }

    /// Records where the members of the committed blob `blob` are, and the map of the layer
    /// `diff_id` (one index transaction).
    pub(crate) fn record(
        &self,
        zstd: bool,
        level: u32,
        blob: &Digest,
        diff_id: &Digest,
    ) -> crate::error::Result<()> {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        let mut entries: Vec<(&str, String, Vec<u8>)> = written
            .iter()
            .map(|(off, m)| {
                (
                    GZ_MEMBERS,
                    Self::key(zstd, level, &m.key),
                    format!("{blob} {off} {}", m.blob_len).into_bytes(),
                )
            })
            .collect();
        let members: Vec<MapMember> = written.iter().map(|(_, m)| *m).collect();
        entries.push((
            LAYER_MAPS,
            map_key(zstd, level, diff_id),
            encode_map(blob, &members),
        ));
        self.store.kv_put_tables(&entries)
    }

    /// (members reused, members compressed) so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.stats[0].load(Relaxed) + self.stats[2].load(Relaxed),
            self.stats[1].load(Relaxed),
        )
    }

    /// Members taken from the previous layer's blob ([`Prior`]) so far.
    pub fn from_prior(&self) -> u64 {
        self.stats[2].load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether `out` is a compressed block of `data_len` bytes of input whose CRC-32 is `crc`:
/// a gzip member's magic and trailer (CRC-32 and length), a zstd frame's magic and content
/// size.
fn check_member(zstd: bool, out: &[u8], data_len: usize, crc: u32) -> bool {
    if zstd {
        return out.len() >= 4
            && out[..4] == [0x28, 0xb5, 0x2f, 0xfd]
            && zstd::zstd_safe::get_frame_content_size(out).ok() == Some(Some(data_len as u64));
    }
    let len = out.len();
    len >= 18
        && out[..3] == [0x1f, 0x8b, 8]
        && out[len - 8..len - 4] == crc.to_le_bytes()
        && out[len - 4..] == (data_len as u32).to_le_bytes()
}

/// The CRC-32 of the input of a block just compressed: a gzip member's trailer has it.
fn block_crc(zstd: bool, out: &[u8], data: &[u8]) -> u32 {
    match out.len().checked_sub(8) {
        Some(at) if !zstd => u32::from_le_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]),
        _ => libdeflater::crc32(data),
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
    ready: BTreeMap<u64, (Done, u64)>,
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
    /// `buf`'s length at which to look at it again.
    next_scan: usize,
    /// The previous layer the tar repeats runs of.
    prior: Option<Prior>,
    /// Where `buf` starts in the input.
    member_start: u64,
    /// Whether the previous layer was asked for a block at `member_start`.
    looked: bool,
    /// The previous layer's block expected at `member_start`: (its number, its input's
    /// length, where that starts in the old tar).
    pending: Option<(usize, usize, u64)>,
    /// Input lengths of the blocks sent, by sequence number, until written.
    lens: BTreeMap<u64, u64>,
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
    fn new(
        out: W,
        level: u32,
        kind: BlockKind,
        members: Option<MemberCache>,
        prior: Option<Prior>,
    ) -> Self {
        // A previous layer is only of use to the content-defined kinds, with their cache.
        let prior = prior.filter(|_| kind.content_defined() && members.is_some());
        let prior_blob = prior.as_ref().map(|p| p.blob.clone());
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
                let prior_blob = prior_blob.clone();
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
                        let Ok((seq, data, reused)) = job else { return };
                        use std::sync::atomic::Ordering::Relaxed;
                        let plain = |bytes| Done {
                            bytes,
                            key: None,
                            crc: 0,
                        };
                        let done = match (&mut members, &cache) {
                            (Some(_), Some(cache)) if reused.is_some() => {
                                match (reused, &prior_blob) {
                                    (Some(r), Some(blob)) => {
                                        cache.stats[2].fetch_add(1, Relaxed);
                                        cache.take_prior(zstd, blob, &r, &data, &pool)
                                    }
                                    _ => Err(io::Error::other("a block of no previous layer")),
                                }
                            }
                            (Some(c), Some(cache)) => {
                                let sum = member_key(&data);
                                match cache.lookup(zstd, level, &sum, &data, &pool) {
                                    Some((bytes, crc)) => {
                                        cache.stats[0].fetch_add(1, Relaxed);
                                        Ok(Done {
                                            bytes,
                                            key: Some(sum),
                                            crc,
                                        })
                                    }
                                    None => {
                                        cache.stats[1].fetch_add(1, Relaxed);
                                        c.block(&data, &pool).map(|bytes| Done {
                                            crc: block_crc(zstd, &bytes, &data),
                                            bytes,
                                            key: Some(sum),
                                        })
                                    }
                                }
                            }
                            (Some(c), None) => c.block(&data, &pool).map(plain),
                            (None, _) => deflate_block(level, &data).map(plain),
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
            next_scan: if prior.is_some() { 1 } else { SCAN_CHUNK },
            prior,
            member_start: 0,
            looked: false,
            pending: None,
            lens: BTreeMap::new(),
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
        while let Some((done, tar_len)) = self.ready.remove(&self.written) {
            let b = done.bytes;
            self.out.write_all(&b)?;
            if let (Some(key), Some(m)) = (done.key, &self.members) {
                m.written.lock().unwrap_or_else(|p| p.into_inner()).push((
                    self.out_pos,
                    MapMember {
                        tar_len,
                        blob_len: b.len() as u64,
                        crc: done.crc,
                        key,
                    },
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
            let tar_len = self.lens.remove(&seq).unwrap_or(0);
            self.ready.insert(seq, (data?, tar_len));
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
        self.member_start += data.len() as u64;
        self.send(data, None)
    }

    /// Sends the block `data` to the workers (and to the input's hasher); `reused`: where
    /// the previous layer's blob has it.
    fn send(&mut self, data: Vec<u8>, reused: Option<Reused>) -> io::Result<()> {
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
        if self.members.is_some() {
            self.lens.insert(self.sent, data.len() as u64);
        }
        tx.send((self.sent, data, reused))
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
    /// and the bytes after the cut start the next one (scanned again). Where the input
    /// repeats a block of the previous layer from its start, the block is taken whole
    /// instead, once all its bytes are here.
    fn scan(&mut self) -> io::Result<()> {
        loop {
            if !self.looked && !self.buf.is_empty() {
                // The byte at the member's start is written, so its run is declared.
                self.looked = true;
                self.pending = self
                    .prior
                    .as_ref()
                    .and_then(|p| p.member_at(self.member_start));
            }
            if let Some((j, len, old)) = self.pending {
                if self.buf.len() < len {
                    self.next_scan = len;
                    return Ok(());
                }
                self.pending = None;
                let prior = self.prior.as_ref().expect("pending block of a prior");
                if prior.runs.find(self.member_start, len as u64) == Some(old) {
                    let reused = prior.reused(j);
                    self.cut(len, Some(reused))?;
                    continue;
                }
            }
            if self.scanned >= self.buf.len() {
                break;
            }
            let from = self.scanned;
            match member_cut(from, &self.buf[from..], &mut self.hash) {
                Some(take) => {
                    let cut = from + take;
                    let reused = self
                        .prior
                        .as_ref()
                        .and_then(|p| p.block_at(self.member_start, cut));
                    self.cut(cut, reused)?;
                }
                None => {
                    self.scanned = self.buf.len();
                    break;
                }
            }
        }
        self.next_scan = if self.looked {
            self.scanned + SCAN_CHUNK
        } else {
            1
        };
        Ok(())
    }

    /// Ends the member at `cut` bytes of `buf` and sends it; the bytes after the cut start
    /// the next one.
    fn cut(&mut self, cut: usize, reused: Option<Reused>) -> io::Result<()> {
        let mut next = self.pool.take(MEMBER_MAX + SCAN_CHUNK);
        next.extend_from_slice(&self.buf[cut..]);
        self.buf.truncate(cut);
        let block = std::mem::replace(&mut self.buf, next);
        self.hash = 0;
        self.scanned = 0;
        self.member_start += cut as u64;
        self.looked = false;
        self.pending = None;
        self.send(block, reused)
    }

    /// Sends the last (partial) block; an empty stream is still one (empty) gzip member.
    fn send_last(&mut self) -> io::Result<()> {
        if self.kind.content_defined() {
            self.scan()?;
            if self.pending.take().is_some() {
                // The input ended inside the block expected: it is not the old one.
                self.scan()?;
            }
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
            // A block expected from the previous layer ends where its length says: the bytes
            // after it go to the next block's buffer, not through this one.
            while let Some((_, len, _)) = self.pending
                && self.buf.len() + data.len() > len
                && self.buf.len() < len
            {
                let (head, rest) = data.split_at(len - self.buf.len());
                self.buf.extend_from_slice(head);
                data = rest;
                self.scan()?;
            }
            self.buf.extend_from_slice(data);
            if self.buf.len() >= self.next_scan {
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

    /// Encodes `data` in writes of `write_size` bytes with a member cache of `store` and
    /// `prior`: the blob's bytes, the input's digest, and blocks (reused by content,
    /// compressed, taken from `prior`).
    fn encode_over(
        store: &crate::store::Store,
        enc: Encoding,
        data: &[u8],
        write_size: usize,
        prior: Option<Prior>,
    ) -> io::Result<(Vec<u8>, Digest, [u64; 3])> {
        let cache = MemberCache::new(store.clone());
        let mut e = Encoder::with_members(Vec::new(), enc, Some(cache.clone()), prior)?;
        assert!(e.hash_input());
        for chunk in data.chunks(write_size) {
            e.write_all(chunk)?;
        }
        let (out, hashed) = e.finish_hashed()?;
        let diff_id = hashed.expect("hashed").0;
        let blob = store.write_blob(&out).unwrap();
        let zstd = matches!(enc, Encoding::Zstd { .. });
        let level = match enc {
            Encoding::Zstd { level } => level as u32,
            Encoding::GzipMembers { level } => level,
            _ => unreachable!(),
        };
        cache.record(zstd, level, &blob, &diff_id).unwrap();
        let n = |i: usize| cache.stats[i].load(std::sync::atomic::Ordering::Relaxed);
        Ok((out, diff_id, [n(0), n(1), n(2)]))
    }

    #[test]
    fn blocks_a_new_input_repeats_come_from_the_previous_blob_as_the_same_bytes() {
        let t = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(t.path().join("s")).unwrap();
        let old = sample(20 << 20);
        let (at, cut) = (7 << 20, 9 << 20);
        // The new input: bytes inserted at `at`, a stretch removed at `cut`.
        let mut new = old[..at].to_vec();
        new.extend_from_slice(b"a new line\n");
        new.extend_from_slice(&old[at..cut]);
        new.extend_from_slice(&old[cut + 5000..]);
        let runs = || {
            let r = Runs::default();
            r.declare(0, 0, at as u64);
            r.declare(at as u64 + 11, at as u64, (cut - at) as u64);
            r.declare(
                cut as u64 + 11,
                cut as u64 + 5000,
                (old.len() - cut - 5000) as u64,
            );
            r
        };
        for (enc, zstd, level) in [(Encoding::GZIP, false, 5), (Encoding::ZSTD, true, 3)] {
            let (_, old_id, _) = encode_over(&store, enc, &old, 65_536, None).unwrap();
            let fresh = compress(enc, &new, 4096);
            let blocks = cuts(&new).len() as u64;
            for write_size in [1_000, 300_007, 4 << 20] {
                let prior = Prior::load(&store, zstd, level, &old_id, runs()).expect("a map");
                let (bytes, id, [_, compressed, from_prior]) =
                    encode_over(&store, enc, &new, write_size, Some(prior)).unwrap();
                assert_eq!(bytes, fresh, "the bytes of a fresh encoding ({write_size})");
                assert_eq!(id, kiln_oci::sha256(&new));
                assert!(
                    from_prior + 4 >= blocks && compressed <= 4,
                    "{from_prior} of {blocks} blocks from the previous blob, {compressed} compressed"
                );
            }
            // Runs that lie (a stretch declared as repeated that is not) fail the write
            // rather than write blocks of other bytes.
            let mut wrong = new.clone();
            wrong[15 << 20] ^= 1;
            let prior = Prior::load(&store, zstd, level, &old_id, runs()).unwrap();
            let err = encode_over(&store, enc, &wrong, 65_536, Some(prior)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            // No map, or one of another level: no previous layer.
            assert!(Prior::load(&store, zstd, level + 1, &old_id, runs()).is_none());
            assert!(Prior::load(&store, zstd, level, &kiln_oci::sha256(b"x"), runs()).is_none());
        }
    }

    #[test]
    fn a_layer_map_reads_back_and_a_cut_one_does_not() {
        let members = vec![
            MapMember {
                tar_len: 1 << 20,
                blob_len: 5000,
                crc: 7,
                key: [1; 32],
            },
            MapMember {
                tar_len: 3,
                blob_len: 20,
                crc: 8,
                key: [2; 32],
            },
        ];
        let blob = kiln_oci::sha256(b"blob");
        let bytes = encode_map(&blob, &members);
        assert_eq!(decode_map(&bytes), Some((blob, members)));
        assert_eq!(decode_map(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_map(&bytes[..31]), None);
    }

    #[test]
    fn runs_merge_when_adjacent_and_find_only_whole_stretches() {
        let r = Runs::default();
        r.declare(0, 100, 10);
        r.declare(10, 110, 5);
        r.declare(15, 200, 5);
        r.declare(20, 205, 0);
        assert_eq!(r.0.lock().unwrap().len(), 2);
        assert_eq!(r.find(0, 15), Some(100));
        assert_eq!(r.find(3, 12), Some(103));
        assert_eq!(r.find(3, 13), None, "across two runs");
        assert_eq!(r.find(17, 3), Some(202));
        assert_eq!(r.find(20, 1), None);
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
