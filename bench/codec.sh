#!/usr/bin/env bash
# Layer compression size and throughput (cache/benches/codec.rs) on the tar of the big
# context (bench/gen-context.py).   usage: bench/codec.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d -p "$PWD/target" codec-XXXX)
trap 'rm -rf "$work"' EXIT
python3 bench/gen-context.py "$work/ctx"
tar --sort=name --numeric-owner -C "$work/ctx" -cf "$work/ctx.tar" .
rm -rf "$work/ctx"
KILN_BENCH_TAR="$work/ctx.tar" cargo bench -q -p kiln-cache --bench codec
