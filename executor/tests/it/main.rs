//! Integration tests of kiln-executor: real runc, as root.

mod containers;
mod foreground;
mod run;
mod support;
