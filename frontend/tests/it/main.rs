//! Integration tests of the frontend: BuildKit's conformance tables and our own golden cases.

mod conformance;
mod lower;
mod parser_conformance;
mod shell_conformance;
