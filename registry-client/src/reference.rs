//! Image references: the type lives in `kiln-oci` (the store names images with it too).

pub use kiln_oci::{DOCKER_HUB, Reference, ReferenceError};

use crate::error::Error;

impl From<ReferenceError> for Error {
    fn from(e: ReferenceError) -> Error {
        Error::InvalidReference {
            input: e.input,
            reason: e.reason,
        }
    }
}
