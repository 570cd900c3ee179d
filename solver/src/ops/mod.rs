//! Op implementations over real directories: sources, `RUN` in the sandbox, file actions (with
//! Docker's copy rules and ADD's archives), and the export of the result as an image.

mod archive;
pub mod copy;
pub mod exec;
pub mod export;
pub mod file;
pub mod http;
pub mod mounts;
pub mod source;
pub mod step;
