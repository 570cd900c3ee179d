//! Hashing content while it streams, to verify it against its digest.

use kiln_oci::Digest;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// An incremental sha256 (the only digest algorithm kiln names content by).
pub(crate) struct Verifier(Sha256);

impl Verifier {
    /// A hasher for `digest`'s algorithm.
    pub(crate) fn for_digest(_digest: &Digest) -> Result<Verifier> {
        Ok(Verifier(Sha256::new()))
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// `algorithm:hex` of everything hashed.
    pub(crate) fn finish(self) -> String {
        Digest::from_hasher(self.0).to_string()
    }
}

/// Checks that `bytes` hash to `expected`.
pub(crate) fn verify_bytes(what: &str, expected: &Digest, bytes: &[u8]) -> Result<()> {
    let mut v = Verifier::for_digest(expected)?;
    v.update(bytes);
    let actual = v.finish();
    if actual != expected.to_string() {
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
        let empty = kiln_oci::sha256(b"");
        assert_eq!(
            empty.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(verify_bytes("x", &empty, b"").is_ok());
        let err = verify_bytes("x", &empty, b"a");
        assert!(matches!(err, Err(Error::DigestMismatch { .. })), "{err:?}");
    }
}
