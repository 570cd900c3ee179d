//! sha256 digests, hashing writers and chain IDs.

use std::io::{self, Write};
use std::str::FromStr;

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The sha256 digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    from_hasher(Sha256::new_with_prefix(bytes))
}

pub(crate) fn from_hasher(h: Sha256) -> Digest {
    let hex = hex::encode(h.finalize());
    // A sha256 hex string always parses.
    match Digest::from_str(&format!("sha256:{hex}")) {
        Ok(d) => d,
        Err(_) => unreachable!("sha256 hex is a valid digest"),
    }
}

/// Parses a digest string, accepting only sha256 (the store's only algorithm).
pub fn parse_digest(s: &str) -> Result<Digest> {
    let d = Digest::from_str(s).map_err(|_| Error::InvalidDigest(s.to_owned()))?;
    if *d.algorithm() != DigestAlgorithm::Sha256 {
        return Err(Error::InvalidDigest(s.to_owned()));
    }
    Ok(d)
}

/// The chain ID of a stack of layers (OCI image spec): `chain(L0) = diffID(L0)`,
/// `chain(L0..n) = sha256(chain(L0..n-1) + " " + diffID(Ln))`. `None` for no layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut iter = diff_ids.iter();
    let mut chain = iter.next()?.clone();
    for d in iter {
        chain = sha256_digest(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
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
    fn chain_id_follows_the_spec() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        let expected = sha256_digest(format!("{a} {b}").as_bytes());
        assert_eq!(chain_id(&[a, b]), Some(expected));
    }

    #[test]
    fn sha256_of_empty_is_well_known() {
        assert_eq!(
            sha256_digest(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_other_algorithms() {
        assert!(parse_digest("sha512:00").is_err());
        assert!(parse_digest("sha256:zz").is_err());
    }
}
