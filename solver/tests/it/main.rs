//! Integration tests of kiln-solver over real directories.

mod context;
mod copy;
mod fixture;
mod remote;
