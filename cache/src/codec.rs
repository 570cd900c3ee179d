//! The layer compression codec: a compressor per [`Encoding`], fed in fixed-size blocks so
//! the bytes never depend on how the tar writer's writes happen to be cut, and a parallel gzip
//! whose bytes do not depend on the number of threads.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::layer::Encoding;

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

/// A compressor in front of `W`.
pub(crate) enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    ParGzip(ParGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(w: W, c: Encoding) -> io::Result<Self> {
        Ok(match c {
            Encoding::None => Encoder::Plain(w),
            Encoding::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(level.min(9)),
            )),
            Encoding::GzipParallel { level } => Encoder::ParGzip(ParGzip::new(w, level.min(9))),
            Encoding::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(w, level)?;
                // Fixed worker count, never the core count (zstd's multithreaded output does
                // not depend on the worker count once it is >= 1; a unit test checks this).
                e.multithread(ZSTD_WORKERS)?;
                Encoder::Zstd(e)
            }
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::ParGzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::ParGzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::ParGzip(_) => Ok(()),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// zstd worker threads (fixed).
const ZSTD_WORKERS: u32 = 2;
/// Parallel gzip: block size and worker threads (the bytes depend on the block size only).
const PAR_GZIP_BLOCK: usize = 1 << 20;
const PAR_GZIP_WORKERS: usize = 2;

type GzJob = (u64, Vec<u8>);
type GzDone = (u64, io::Result<Vec<u8>>);

/// Parallel gzip writer: independent raw-deflate blocks, each ended by a full flush,
/// compressed by worker threads and written in order, then an empty final block and the
/// gzip trailer. Any gzip reader reads it as one member.
pub(crate) struct ParGzip<W: Write> {
    out: W,
    level: u32,
    buf: Vec<u8>,
    crc: flate2::Crc,
    sent: u64,
    written: u64,
    jobs: Option<std::sync::mpsc::SyncSender<GzJob>>,
    results: std::sync::mpsc::Receiver<GzDone>,
    ready: BTreeMap<u64, Vec<u8>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    header: bool,
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

impl<W: Write> ParGzip<W> {
    fn new(out: W, level: u32) -> Self {
        let (jtx, jrx) = std::sync::mpsc::sync_channel::<GzJob>(PAR_GZIP_WORKERS * 2);
        let (rtx, rrx) = std::sync::mpsc::channel::<GzDone>();
        let jrx = std::sync::Arc::new(std::sync::Mutex::new(jrx));
        let workers = (0..PAR_GZIP_WORKERS)
            .map(|_| {
                let jrx = jrx.clone();
                let rtx = rtx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match jrx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, data)) = job else { return };
                        if rtx.send((seq, deflate_block(level, &data))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        ParGzip {
            out,
            level,
            buf: Vec::with_capacity(PAR_GZIP_BLOCK),
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
        if !self.header {
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
        while let Some(b) = self.ready.remove(&self.written) {
            self.out.write_all(&b)?;
            self.written += 1;
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
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(PAR_GZIP_BLOCK));
        self.crc.update(&data);
        // Keep at most a few blocks in flight.
        while self.sent - self.written >= (PAR_GZIP_WORKERS * 3) as u64 {
            self.collect(true)?;
        }
        let tx = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip finished"))?;
        tx.send((self.sent, data))
            .map_err(|_| io::Error::other("gzip worker died"))?;
        self.sent += 1;
        self.collect(false)
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.send_block()?;
        }
        while self.written < self.sent {
            self.collect(true)?;
        }
        self.write_ready()?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
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
        while !data.is_empty() {
            let take = (PAR_GZIP_BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == PAR_GZIP_BLOCK {
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
    fn parallel_gzip_is_valid_gzip_and_deterministic() {
        let data = sample(5 * PAR_GZIP_BLOCK + 123);
        let a = compress(Encoding::GZIP, &data, 1000);
        let b = compress(Encoding::GZIP, &data, 777_777);
        assert_eq!(a, b);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let empty = compress(Encoding::GZIP, b"", 1);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn zstd_bytes_do_not_depend_on_worker_count() {
        let data = sample(24 << 20);
        let with = |workers: u32| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.multithread(workers).unwrap();
            for c in data.chunks(BLOCK) {
                e.write_all(c).unwrap();
            }
            e.finish().unwrap()
        };
        let one = with(1);
        assert_eq!(one, with(2));
        assert_eq!(one, with(3));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }
}
