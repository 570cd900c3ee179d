#!/usr/bin/env bash
# kiln next to docker's BuildKit on the big context (bench/gen-context.py: 20,000 files,
# ~207 MB) with `FROM busybox` + `COPY . /data`: cold build, one-file edit rebuild, push of the
# image to a local docker-registry (bytes and time). Base images for both are made offline from
# Debian's busybox-static. Needs root, docker-registry, and for the BuildKit column dockerd
# (Debian's docker.io; skipped when missing). Prints a Markdown table.
#   usage: bench/vs-buildkit.sh [RUNS]        (KILN_BENCH_WORK=DIR keeps the work dir)
# Figures of the last run and the conditions: bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
. bench/lib.sh
bench_init vsbk 5077

# ext4 scans past recently deleted inodes when it allocates new ones (find_inode_bit ->
# recently_deleted): a cold build right after removing a 20,000-file store creates its files
# many times slower. Every cold build (kiln's and BuildKit's) starts after what was removed
# before it has been synced and has aged past that window.
settle() { sync; sleep "${KILN_BENCH_SETTLE:-40}"; }

[ -d "$work/ctx" ] || python3 bench/gen-context.py "$work/ctx"
printf 'FROM busybox\nCOPY . /data\n' > "$work/Dockerfile"
edit_file=$(find "$work/ctx" -name '*.rs' | sort | sed -n 1p)


# --- kiln
declare -A K
cold=(); edit=(); push=()
for i in $(seq "$runs"); do
  export KILN_ROOT="$work/kiln-store-$i"
  rm -rf "$KILN_ROOT"; examples/busybox-base.sh "$kiln" >/dev/null
  settle
  t0=$(now); "$kiln" build -q -f "$work/Dockerfile" -t "127.0.0.1:$port/big:kiln" "$work/ctx" >/dev/null; t1=$(now)
  cold+=($(ms "$t0" "$t1"))
  echo "// edit $i" >> "$edit_file"
  t0=$(now); "$kiln" build -q -f "$work/Dockerfile" -t "127.0.0.1:$port/big:kiln" "$work/ctx" >/dev/null; t1=$(now)
  edit+=($(ms "$t0" "$t1"))
  registry "$work/reg-kiln"
  t0=$(now); "$kiln" push "127.0.0.1:$port/big:kiln" >/dev/null 2>&1; t1=$(now)
  push+=($(ms "$t0" "$t1"))
  K[bytes]=$(pushed_bytes "$work/reg-kiln")
  stop_registry
done
rm -rf "$work"/kiln-store-*
K[cold]=$(median "${cold[@]}"); K[edit]=$(median "${edit[@]}"); K[push]=$(median "${push[@]}")

# --- docker BuildKit
declare -A D=([cold]=- [edit]=- [push]=- [bytes]=-)
if command -v dockerd >/dev/null; then
  dockerd_start "$work/dk"
  root=$(mktemp -d); mkdir -p "$root"/{bin,etc,tmp}; cp /bin/busybox "$root/bin/"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
  tar -C "$root" -cf - . | "$dk" import - busybox:latest >/dev/null; rm -rf "$root"
  cold=(); edit=(); push=()
  for i in $(seq "$runs"); do
    "$dk" rmi -f "127.0.0.1:$port/big:bk" >/dev/null 2>&1 || true
    "$dk" builder prune -af >/dev/null
    settle
    t0=$(now); DOCKER_BUILDKIT=1 "$dk" build -q --network=none -f "$work/Dockerfile" -t "127.0.0.1:$port/big:bk" "$work/ctx" >/dev/null; t1=$(now)
    cold+=($(ms "$t0" "$t1"))
    echo "// edit bk $i" >> "$edit_file"
    t0=$(now); DOCKER_BUILDKIT=1 "$dk" build -q --network=none -f "$work/Dockerfile" -t "127.0.0.1:$port/big:bk" "$work/ctx" >/dev/null; t1=$(now)
    edit+=($(ms "$t0" "$t1"))
    registry "$work/reg-bk"
    t0=$(now); "$dk" push -q "127.0.0.1:$port/big:bk" >/dev/null; t1=$(now)
    push+=($(ms "$t0" "$t1"))
    D[bytes]=$(pushed_bytes "$work/reg-bk")
    stop_registry
  done
  D[cold]=$(median "${cold[@]}"); D[edit]=$(median "${edit[@]}"); D[push]=$(median "${push[@]}")
fi

echo "context: $(find "$work/ctx" -type f | wc -l) files, $(du -sm "$work/ctx" | cut -f1) MB; median of $runs runs; $(nproc) cores"
echo
echo "| scenario | kiln | docker BuildKit |"
echo "|---|---:|---:|"
echo "| cold build (ms) | ${K[cold]} | ${D[cold]} |"
echo "| one-file edit rebuild (ms) | ${K[edit]} | ${D[edit]} |"
echo "| push to local registry (ms) | ${K[push]} | ${D[push]} |"
echo "| pushed bytes | ${K[bytes]} | ${D[bytes]} |"
