//! Hashing readers and writers, and digests parsed into the store's error.

use std::io::{self, Write};

use kiln_oci::Digest;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Parses a digest string (sha256, the store's only algorithm) into the store's error.
pub fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|_| Error::InvalidDigest(s.to_owned()))
}

pub(crate) fn from_hasher(h: Sha256) -> Digest {
    Digest::from_hasher(h)
}

/// A writer that hashes and counts what passes through to `inner`.
pub(crate) struct HashWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) count: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (self.inner, from_hasher(self.hasher), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
pub(crate) struct HashReader<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Sha256,
    pub(crate) count: u64,
}

impl<R: io::Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (Digest, u64) {
        (from_hasher(self.hasher), self.count)
    }
}

impl<R: io::Read> io::Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_other_algorithms() {
        assert!(parse_digest("sha512:00").is_err());
        assert!(parse_digest("sha256:zz").is_err());
    }
}
