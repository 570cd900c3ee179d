#!/usr/bin/env bash
# Store lifecycle figures (issue 14): the ten-build scenario before and after
# `kiln system prune -af`, `kiln system df` on a store with N images, and a prune of a large
# build cache. Usage: bench/store.sh [KILN] [IMAGES] [CACHE_MB]
set -euo pipefail
kiln=${1:-target/release/kiln}
images=${2:-1000}
cache_mb=${3:-2000}
here=$(cd "$(dirname "$0")/.." && pwd)
kiln=$(realpath "$kiln")
work=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bench-store.XXXXXX")
trap 'rm -rf "$work"' EXIT
du_b() { du -s --block-size=1 "$1" | cut -f1; }

echo "== ten builds whose copied file changes"
export KILN_ROOT=$work/ten
bash "$here/examples/busybox-base.sh" "$kiln" >/dev/null
mkdir -p "$work/ctx"
printf 'FROM busybox\nCOPY data /data\nRUN wc -c /data > /size\n' > "$work/ctx/Dockerfile"
start=$(du_b "$KILN_ROOT")
for i in $(seq 1 10); do
  head -c 10000000 /dev/urandom > "$work/ctx/data"
  "$kiln" build -q -t app:latest "$work/ctx" >/dev/null
done
before=$(du_b "$KILN_ROOT")
"$kiln" system df
"$kiln" image prune -f | tail -1
"$kiln" system prune -af | tail -1
after=$(du_b "$KILN_ROOT")
echo "store: $start bytes empty, $before after ten builds, $after after system prune -af"

echo "== system df with $images images"
export KILN_ROOT=$work/many
bash "$here/examples/busybox-base.sh" "$kiln" >/dev/null
mkdir -p "$work/rootfs"
for i in $(seq 1 "$images"); do
  echo "$i" > "$work/rootfs/n"
  tar -C "$work/rootfs" -cf - n | "$kiln" import - "img$i:latest" >/dev/null
done
"$kiln" system df >/dev/null
t0=$(date +%s%N)
for _ in 1 2 3 4 5; do "$kiln" system df >/dev/null; done
t1=$(date +%s%N)
echo "system df on $((images + 1)) images: $(( (t1 - t0) / 5000000 )) ms per run (mean of 5)"

echo "== prune of ${cache_mb} MB of build cache"
export KILN_ROOT=$work/big
bash "$here/examples/busybox-base.sh" "$kiln" >/dev/null
n=$(( cache_mb / 50 ))
for i in $(seq 1 "$n"); do
  head -c 50000000 /dev/urandom > "$work/ctx/data"
  "$kiln" build -q "$work/ctx" >/dev/null
done
size=$(du_b "$KILN_ROOT")
t0=$(date +%s%N)
"$kiln" builder prune -af | tail -1
t1=$(date +%s%N)
echo "builder prune -af of $size bytes ($n builds): $(( (t1 - t0) / 1000000 )) ms; left $(du_b "$KILN_ROOT") bytes"
