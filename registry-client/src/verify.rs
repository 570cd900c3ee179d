//! Hashing content while it streams, to verify it against its digest.

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use crate::error::{Error, Result};

/// An incremental hash for one of the digest algorithms this client verifies.
pub(crate) enum Verifier {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Verifier {
    /// A hasher for `digest`'s algorithm.
    pub(crate) fn for_digest(digest: &Digest) -> Result<Verifier> {
        Ok(match digest.algorithm() {
            DigestAlgorithm::Sha256 => Verifier::Sha256(Sha256::new()),
            DigestAlgorithm::Sha384 => Verifier::Sha384(Sha384::new()),
            DigestAlgorithm::Sha512 => Verifier::Sha512(Sha512::new()),
            _ => return Err(Error::UnsupportedDigest(digest.clone())),
        })
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Verifier::Sha256(h) => h.update(bytes),
            Verifier::Sha384(h) => h.update(bytes),
            Verifier::Sha512(h) => h.update(bytes),
        }
    }

    /// `algorithm:hex` of everything hashed.
    pub(crate) fn finish(self) -> String {
        match self {
            Verifier::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Verifier::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Verifier::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The sha256 digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let text = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    // A sha256 hex string is always a valid digest.
    Digest::try_from(text).unwrap_or_else(|_| unreachable!("sha256 hex is a valid digest"))
}

/// Checks that `bytes` hash to `expected`.
pub(crate) fn verify_bytes(what: &str, expected: &Digest, bytes: &[u8]) -> Result<()> {
    let mut v = Verifier::for_digest(expected)?;
    v.update(bytes);
    let actual = v.finish();
    if actual != expected.as_ref() {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_known_digests() {
        let empty = sha256_digest(b"");
        assert_eq!(
            empty.as_ref(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(verify_bytes("x", &empty, b"").is_ok());
        let err = verify_bytes("x", &empty, b"a");
        assert!(matches!(err, Err(Error::DigestMismatch { .. })), "{err:?}");
    }
}
