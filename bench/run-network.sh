#!/usr/bin/env bash
# Per-RUN cost of the build's network modes: a Dockerfile of N trivial RUN steps built with
# --no-cache under --network=none, host and default (a namespace of its own with pasta);
# median of R builds each, and the difference per step against none. As root.
# usage: bench/run-network.sh [STEPS] [RUNS]   (KILN_BIN=path skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-10}
runs=${2:-3}
if [ -z "${KILN_BIN:-}" ]; then
  cargo build --release -q -p kiln-cli
  KILN_BIN="$PWD/target/release/kiln"
fi
work=$(mktemp -d -p "$PWD/target" bench-XXXX)
trap 'rm -rf "$work"' EXIT
export KILN_ROOT="$work/store"
examples/busybox-base.sh "$KILN_BIN" >/dev/null
mkdir -p "$work/ctx"
{
  echo 'FROM busybox'
  for i in $(seq "$steps"); do echo "RUN echo $i > /step$i"; done
} > "$work/ctx/Dockerfile"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {m=int((NR+1)/2); print a[m]}'; }
declare -A result
for mode in none host default; do
  times=()
  for _ in $(seq "$runs"); do
    s=$(date +%s%N)
    "$KILN_BIN" build -q --jobs 1 --no-cache --network "$mode" "$work/ctx" >/dev/null
    e=$(date +%s%N)
    times+=($(( (e - s) / 1000000 )))
  done
  result[$mode]=$(median "${times[@]}")
done
echo "| --network | build of $steps RUN steps (ms, median of $runs) | per step vs none (ms) |"
echo "|---|---|---|"
for mode in none host default; do
  echo "| $mode | ${result[$mode]} | $(( (result[$mode] - result[none]) / steps )) |"
done
