//! End-to-end tests of the `kiln` binary live in `e2e/`; this library is empty.
