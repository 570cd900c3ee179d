#!/usr/bin/env bash
# Times whole `kiln build` runs (release binary, private store) for the issue's scenarios:
# cold, no-op rebuild and one-file-change rebuild, median of N runs each. Prints a Markdown
# table. As root (runc, overlayfs).   usage: bench/build.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
work=$(mktemp -d -p "$PWD/target" bench-XXXX)
trap 'rm -rf "$work"' EXIT
export KILN_ROOT="$work/store"
examples/busybox-base.sh "$kiln" >/dev/null

now() { date +%s%N; }
# median of the given numbers (ms)
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {m=int((NR+1)/2); print a[m]}'; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
b() { "$kiln" build -q ${JOBS:+--jobs $JOBS} "$@" >/dev/null; }

mk_seed() {
  local d=$1; mkdir -p "$d/app"
  cp examples/cache-order/Dockerfile "$d/Dockerfile"
  printf 'alpha==1.0\nbeta==2.1\n' > "$d/requirements.txt"
  echo 'echo v0' > "$d/app/main.sh"
}
mk_parallel() {
  local d=$1 s; mkdir -p "$d"
  {
    for s in a b c d; do printf 'FROM busybox AS %s\nRUN sleep 2.5 && echo %s > /%s\n\n' $s $s $s; done
    printf 'FROM busybox AS unused\nRUN sleep 30\n\n'
    printf 'FROM busybox\nCOPY main.sh /\n'
    for s in a b c d; do printf 'COPY --from=%s /%s /%s\n' $s $s $s; done
  } > "$d/Dockerfile"
  echo 'echo v0' > "$d/main.sh"
}
mk_bigctx() {
  local d=$1; mkdir -p "$d/src"
  printf 'FROM busybox\nCOPY . /ctx\n' > "$d/Dockerfile"
  # 20,000 files, 200 MB: 200 dirs x 100 files x 10 KiB of random bytes
  head -c $((10 * 1024 * 20000)) /dev/urandom > "$work/blob"
  python3 - "$d/src" "$work/blob" <<'PY'
import os, sys
root, blob = sys.argv[1], open(sys.argv[2], 'rb').read()
n = 0
for i in range(200):
    p = os.path.join(root, f"d{i:03}"); os.makedirs(p)
    for j in range(100):
        with open(os.path.join(p, f"f{j:03}"), 'wb') as f:
            f.write(blob[n*10240:(n+1)*10240]); n += 1
PY
  echo 'v0' > "$d/src/d000/f000"
}
mk_layers() {
  local d=$1; mkdir -p "$d"
  { echo 'FROM busybox'; for i in $(seq 1 40); do echo "RUN echo $i > /layer-$i"; done; echo 'COPY main.sh /'; } > "$d/Dockerfile"
  echo 'echo v0' > "$d/main.sh"
}
change() { # scenario dir → the one file to edit
  case $1 in
    seed) echo app/main.sh ;; parallel) echo main.sh ;; bigctx) echo src/d000/f000 ;; layers) echo main.sh ;;
  esac
}

echo "| scenario | cold (ms) | no-op rebuild (ms) | one-file change (ms) |"
echo "|---|---:|---:|---:|"
for s in seed parallel bigctx layers; do
  cold=(); noop=(); one=()
  JOBS=${BENCH_JOBS:-}
  for r in $(seq 1 "$runs"); do
    d="$work/$s-$r"; "mk_$s" "$d"
    rm -rf "$KILN_ROOT"; examples/busybox-base.sh "$kiln" >/dev/null
    t0=$(now); b "$d"; t1=$(now); cold+=("$(ms "$t0" "$t1")")
    b "$d" # warm the stat cache once
    t0=$(now); b "$d"; t1=$(now); noop+=("$(ms "$t0" "$t1")")
    echo "echo v$r" >> "$d/$(change $s)"
    t0=$(now); b "$d"; t1=$(now); one+=("$(ms "$t0" "$t1")")
    rm -rf "$d"
  done
  echo "| $s${JOBS:+ (--jobs $JOBS)} | $(median "${cold[@]}") | $(median "${noop[@]}") | $(median "${one[@]}") |"
done
