//! kiln's Dockerfile frontend: text → syntax tree (with spans) → typed instructions → build graph.
//!
//! Only `kiln_graph` types (and `kiln_oci` vocabulary) cross into the solver; nothing here does I/O beyond what the
//! caller hands in.

pub mod ast;
pub mod diagnostic;
pub mod instructions;
pub mod lint;
pub mod lower;
pub mod parser;
pub mod shell;
