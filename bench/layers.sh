#!/usr/bin/env bash
# Layer export (zstd, gzip, none) and apply of a generated 200 MB / 20,000-file directory,
# through kiln-cache's benchmark (cache/benches/layers.rs). KILN_BENCH_DIR picks the disk
# (default: a temp dir under target/, the same disk as a store).   usage: bench/layers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_BENCH_DIR="${KILN_BENCH_DIR:-$PWD/target}"
cargo bench -q -p kiln-cache --bench layers
