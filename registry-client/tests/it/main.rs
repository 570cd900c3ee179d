//! Integration tests: the real `docker-registry`, and a misbehaving in-process server.

mod faults;
mod registry;
mod support;
