//! End-to-end tests of the `kiln` binary.
