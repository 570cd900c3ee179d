//! Tests of the solver's internals against real directories, overlayfs and a real registry
//! (as root where they need it).

mod context;
mod copy;
mod fixture;
mod remote;
