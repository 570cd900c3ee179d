#!/usr/bin/env bash
# kiln's whole test suite: formatting, lints, then every test (as root: real runc, overlayfs,
# registry). KILN_REQUIRE_ALL=1 makes a missing system package a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
