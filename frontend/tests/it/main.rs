//! Integration tests of the frontend: BuildKit's conformance tables, our own golden cases and
//! the fuzz targets' checks on a corpus and generated inputs.

mod checks;
mod conformance;
mod fuzz;
mod lower;
mod named;
mod parser_conformance;
mod shell_conformance;
