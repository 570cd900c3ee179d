#!/usr/bin/env bash
# Push of a debian-based image, kiln next to docker's BuildKit: the base is a Debian bookworm
# minbase rootfs (debootstrap from the configured Debian mirror, kept in the work dir), imported
# into dockerd and saved as a docker archive, which kiln loads (its layer stored uncompressed,
# as `docker save` writes it). Both build `FROM debian` + a COPY and push to a fresh local
# docker-registry: median wall-clock ms and the bytes the registry got. Needs root,
# debootstrap, docker-registry and dockerd (Debian's docker.io).
#   usage: bench/push-debian.sh [RUNS]      (KILN_BENCH_WORK=DIR keeps the work dir)
# Figures of the last run: bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
repo=$PWD
cargo build --release -q -p kiln-cli
kiln="$repo/target/release/kiln"
work=${KILN_BENCH_WORK:-$(mktemp -d -p "$repo/target" pushdeb-XXXX)}
mkdir -p "$work"
port=5079
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$work/dk/pid" ]; then kill "$(cat "$work/dk/pid")" 2>/dev/null || true; sleep 2; fi
  umount -R "$work/dk/data" 2>/dev/null || true
  [ -n "${KILN_BENCH_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
. bench/lib.sh

if [ ! -f "$work/debian.tar" ]; then
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "${KILN_BENCH_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log"
  tar --numeric-owner -C "$work/rootfs" -cf "$work/debian.tar" .
  rm -rf "$work/rootfs"
fi
mkdir -p "$work/ctx"
head -c 2000000 /dev/urandom | base64 > "$work/ctx/app.txt"
printf 'FROM debian:bookworm\nCOPY app.txt /srv/app.txt\nCMD ["cat", "/srv/app.txt"]\n' > "$work/ctx/Dockerfile"

mkdir -p "$work/dk"
dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
  --data-root "$work/dk/data" --exec-root "$work/dk/exec" -H "unix://$work/dk/docker.sock" \
  --pidfile "$work/dk/pid" >"$work/dk/log" 2>&1 &
export DOCKER_HOST="unix://$work/dk/docker.sock"
dk=$(command -v /usr/bin/docker || command -v docker)
for _ in $(seq 100); do "$dk" version >/dev/null 2>&1 && break; sleep 0.2; done
"$dk" import "$work/debian.tar" debian:bookworm >/dev/null
"$dk" save debian:bookworm -o "$work/debian-docker.tar"

declare -A K D
times=()
for i in $(seq "$runs"); do
  export KILN_ROOT="$work/kiln-store"
  rm -rf "$KILN_ROOT"
  "$kiln" load -q -i "$work/debian-docker.tar" >/dev/null
  "$kiln" build -q -t "127.0.0.1:$port/deb:kiln" "$work/ctx" >/dev/null
  registry "$work/reg-kiln"
  t0=$(now); "$kiln" push -q "127.0.0.1:$port/deb:kiln" >/dev/null; t1=$(now)
  times+=($(ms "$t0" "$t1"))
  K[bytes]=$(pushed_bytes "$work/reg-kiln")
  stop_registry
done
K[push]=$(median "${times[@]}")
rm -rf "$work/kiln-store"

times=()
for i in $(seq "$runs"); do
  "$dk" rmi -f "127.0.0.1:$port/deb:bk" >/dev/null 2>&1 || true
  "$dk" builder prune -af >/dev/null
  DOCKER_BUILDKIT=1 "$dk" build -q --network=none -t "127.0.0.1:$port/deb:bk" "$work/ctx" >/dev/null
  registry "$work/reg-bk"
  t0=$(now); "$dk" push -q "127.0.0.1:$port/deb:bk" >/dev/null; t1=$(now)
  times+=($(ms "$t0" "$t1"))
  D[bytes]=$(pushed_bytes "$work/reg-bk")
  stop_registry
done
D[push]=$(median "${times[@]}")

echo "base: debian bookworm minbase, $(du -m "$work/debian.tar" | cut -f1) MB tar; median of $runs runs; $(nproc) cores"
echo
echo "| debian-based image | kiln | docker BuildKit |"
echo "|---|---:|---:|"
echo "| push to local registry (ms) | ${K[push]} | ${D[push]} |"
echo "| pushed bytes | ${K[bytes]} | ${D[bytes]} |"
